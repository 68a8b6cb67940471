"""Differential privacy glue: accountant, DP bounds on the ROC, empirical ε lower bounds.

Specification (mechanism, accountants, neighbouring relations, calibration, default δ, the DP
ROC bound and the empirical ε): ``docs/design/privacy.md``. Modules:

* :mod:`~miascale.privacy.checks`: argument checks, :func:`game_relation`;
* :mod:`~miascale.privacy.accounting`: :func:`epsilon_for`, :func:`calibrate_noise`,
  :func:`default_delta`, :func:`replace_one_from_add_remove`;
* :mod:`~miascale.privacy.roc`: :func:`dp_roc_bound`, :func:`empirical_epsilon`
  (its vertex search in :mod:`~miascale.privacy.vertex_bounds`).
"""

from miascale.privacy.accounting import (
    MIN_NOISE_MULTIPLIER,
    PLD_DISCRETIZATION,
    calibrate_noise,
    default_delta,
    epsilon_for,
    replace_one_from_add_remove,
)

# private helpers that miascale.training.dp, miascale.plan_results and the tests use
from miascale.privacy.accounting import _group_privacy_epsilon as _group_privacy_epsilon
from miascale.privacy.checks import ACCOUNTANTS, DESIGN_RELATIONS, RELATIONS, game_relation
from miascale.privacy.checks import _check_accountant as _check_accountant
from miascale.privacy.checks import _check_delta as _check_delta
from miascale.privacy.checks import _check_epsilon as _check_epsilon
from miascale.privacy.checks import _check_rate as _check_rate
from miascale.privacy.checks import _check_relation as _check_relation
from miascale.privacy.checks import _check_steps as _check_steps
from miascale.privacy.roc import (
    EmpiricalEpsilon,
    dp_roc_bound,
    empirical_epsilon,
    epsilon_from_roc,
)

__all__ = [
    "ACCOUNTANTS",
    "DESIGN_RELATIONS",
    "MIN_NOISE_MULTIPLIER",
    "PLD_DISCRETIZATION",
    "RELATIONS",
    "EmpiricalEpsilon",
    "calibrate_noise",
    "default_delta",
    "dp_roc_bound",
    "empirical_epsilon",
    "epsilon_for",
    "epsilon_from_roc",
    "game_relation",
    "replace_one_from_add_remove",
]
