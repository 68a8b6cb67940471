"""The scaling law of membership-inference vulnerability, fitted per ``(attack, variant,
fpr_level)``::

    log10(TPR - FPR) = beta_S * log10(S) + beta_C * log10(C) + beta_0

``S`` is the number of shots (examples per class), ``C`` the number of classes. The fit
contract (cells, admission, weighted fit, statuses, leave-one-dataset-out, ``fit.json``) is in
``docs/design/scaling.md``. Modules:

- :mod:`~miascale.scaling.rows`: sweep rows validated and grouped into levels and cells;
- :mod:`~miascale.scaling.fitting`: :func:`fit_power_law` (admission, weighted fit, LODO);
- :mod:`~miascale.scaling.points`, :mod:`~miascale.scaling.results`: the result types;
- :mod:`~miascale.scaling.tail_laws`: :func:`tail_rows`, the most vulnerable examples' rows.

:func:`predict`, :func:`plan` and their result types live in :mod:`miascale.planning`; they are
re-exported here so ``from miascale.scaling import plan`` keeps working. All functions are pure
and do no I/O.
"""

from miascale.fit_rules import REASON_CEILING, REASON_FEW_FP
from miascale.planning import Coefficients, Plan, Prediction, plan, predict
from miascale.scaling.fitting import fit_power_law
from miascale.scaling.points import ExcludedPoint, FitPoint, LodoResult
from miascale.scaling.results import (
    SCHEMA_VERSION,
    STATUS_DEGENERATE,
    STATUS_INSUFFICIENT,
    STATUS_OK,
    LevelFit,
    ScalingFit,
)
from miascale.scaling.rows import REQUIRED_KEYS
from miascale.scaling.tail_laws import SEPARATION_LEVEL, tail_rows

# the admission rules and their reasons live in miascale.fit_rules
REASON_UNRESOLVABLE = REASON_FEW_FP
REASON_SATURATED = REASON_CEILING

__all__ = [
    "REASON_SATURATED",
    "REASON_UNRESOLVABLE",
    "REQUIRED_KEYS",
    "SCHEMA_VERSION",
    "SEPARATION_LEVEL",
    "STATUS_DEGENERATE",
    "STATUS_INSUFFICIENT",
    "STATUS_OK",
    "Coefficients",
    "ExcludedPoint",
    "FitPoint",
    "LevelFit",
    "LodoResult",
    "Plan",
    "Prediction",
    "ScalingFit",
    "fit_power_law",
    "plan",
    "predict",
    "tail_rows",
]
