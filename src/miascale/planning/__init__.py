"""Predict and plan with the fitted scaling law, carrying the fit's uncertainty.

:func:`predict` evaluates ``log10(TPR - FPR) = beta_S log10 S + beta_C log10 C + beta_0`` with
its confidence interval; :func:`plan` finds the smallest ``S`` whose predicted advantage is at
most a target, given directly or by an ``(epsilon, delta)`` guarantee (:func:`dp_max_advantage`),
with the interval of ``S`` and a trustworthiness verdict. The contracts (the interval, both
branches of the DP region, the neighbouring relation, the verdict) are in
``docs/design/scaling.md``. Modules:

- :mod:`~miascale.planning.prediction`: :func:`predict` and the shared input checks;
- :mod:`~miascale.planning.required`: :func:`plan`, the required number of shots;
- :mod:`~miascale.planning.band`: the confidence band and its inversion into an interval of S;
- :mod:`~miascale.planning.verdict`: the trust thresholds and warnings;
- :mod:`~miascale.planning.dp_region`: the ``(epsilon, delta)`` region (:func:`dp_max_tpr`).

The result types are in :mod:`miascale.plan_results`, the words
(:func:`plan_sentence`) in :mod:`miascale.plan_text`. All functions are pure and do no I/O.
"""

from miascale.plan_results import Coefficients, Plan, Prediction
from miascale.plan_text import format_shots, plan_sentence
from miascale.planning.band import MAX_LOG10_SHOTS
from miascale.planning.dp_region import dp_max_advantage, dp_max_tpr
from miascale.planning.prediction import predict
from miascale.planning.required import plan
from miascale.planning.verdict import (
    MAX_CI_DECADES,
    MAX_EXTRAPOLATION,
    MIN_POINTS,
    MIN_R_SQUARED,
)

__all__ = [
    "MAX_CI_DECADES",
    "MAX_EXTRAPOLATION",
    "MAX_LOG10_SHOTS",
    "MIN_POINTS",
    "MIN_R_SQUARED",
    "Coefficients",
    "Plan",
    "Prediction",
    "dp_max_advantage",
    "dp_max_tpr",
    "format_shots",
    "plan",
    "plan_sentence",
    "predict",
]
