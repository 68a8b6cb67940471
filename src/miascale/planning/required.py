"""The required number of shots: :func:`plan` inverts the law for a target advantage, given
directly or by an ``(epsilon, delta)`` guarantee (``docs/design/scaling.md``, "Planning")."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from miascale.errors import MiascaleError
from miascale.plan_results import Coefficients, Plan, _check_fpr
from miascale.planning.band import MAX_LOG10_SHOTS, _Band, _shots_interval
from miascale.planning.dp_region import _bound_args, _check_relation, dp_max_advantage
from miascale.planning.prediction import (
    _check_confidence,
    _classes_term,
    _coefficients,
    _log_adv,
    _prediction,
)
from miascale.planning.verdict import _extrapolation_warnings, _fit_warnings, _interval_warnings

if TYPE_CHECKING:  # miascale.scaling imports this package; import it back lazily, in functions
    from miascale.scaling import LevelFit

# Relative slack (times the magnitudes of the terms of the log10 law) that absorbs floating-point
# error when plan() compares a predicted advantage with its target, so that an exact-integer
# solution such as S* = 4 gives S = 4 and not 5. A few ulps: far below the change in predicted
# advantage between neighbouring integers S for any S up to 10^15.
_PLAN_REL_TOL = 16 * np.finfo(np.float64).eps


def _plan_level(c: Coefficients, fpr_level: Any) -> float:
    """The FPR level to plan at: the law's own (``None``), or a matching one."""
    if fpr_level is None:
        return c.fpr_level
    fpr = _check_fpr(fpr_level)
    if not math.isclose(fpr, c.fpr_level, rel_tol=1e-9, abs_tol=0.0):
        raise MiascaleError(
            f"plan() was asked for fpr_level={fpr}, but the scaling law was fitted at "
            f"fpr_level={c.fpr_level}; the law differs between levels. Use the fit of level "
            f"{fpr} (ScalingFit.level(...)) or pass fpr_level={c.fpr_level}."
        )
    return fpr


def _check_goal(target_advantage: Any, epsilon: Any, delta: Any) -> float:
    """Exactly one of the two goals, and a valid ``delta``; returns ``delta``."""
    if (target_advantage is None) == (epsilon is None):
        raise MiascaleError(
            "plan() needs exactly one of target_advantage (the largest acceptable TPR - FPR) or "
            "epsilon (a differential-privacy budget, with optional delta)."
        )
    if isinstance(delta, bool) or not isinstance(delta, int | float) or not (0.0 <= delta < 1.0):
        raise MiascaleError(f"delta must be a number in [0, 1), got {delta!r}.")
    return float(delta)


def _dp_target(
    fpr: float, epsilon: Any, delta: float, rel: str
) -> tuple[float, tuple[float, float]]:
    """The largest advantage ``(epsilon, delta)`` allows at ``fpr``, and the bound's guarantee."""
    if (
        isinstance(epsilon, bool)
        or not isinstance(epsilon, int | float)
        or not math.isfinite(epsilon)
        or epsilon < 0
    ):
        raise MiascaleError(f"epsilon must be a finite number >= 0, got {epsilon!r}.")
    target = dp_max_advantage(fpr, float(epsilon), delta, rel)
    bound = _bound_args(float(epsilon), delta, rel)
    if 0.0 < target < 1.0 - fpr:
        return target, bound
    game = (
        ""
        if rel == "add_remove"
        else f" (add/remove; for the replace-one game epsilon={bound[0]:.6g}, "
        f"delta={bound[1]:.6g} by group privacy)"
    )
    raise MiascaleError(
        f"epsilon={epsilon} and delta={delta}{game} at FPR {fpr} allow an advantage of "
        f"min((e^epsilon - 1) * FPR + delta, (1 - e^-epsilon) * (1 - FPR) + "
        f"delta * e^-epsilon) = {target:.6g}, which is "
        + (
            "0: no power law ever reaches zero advantage. Use epsilon > 0 or delta > 0."
            if target <= 0.0
            else f">= 1 - FPR = {1.0 - fpr:.6g} (TPR 1): the privacy bound is vacuous at "
            "this FPR, any S satisfies it. Use a smaller epsilon or delta."
        )
    )


def _direct_target(target_advantage: Any) -> float:
    if (
        isinstance(target_advantage, bool)
        or not isinstance(target_advantage, int | float)
        or not (0.0 < target_advantage < 1.0)
    ):
        raise MiascaleError(
            f"target_advantage (largest acceptable TPR - FPR) must lie strictly between 0 "
            f"and 1, got {target_advantage!r}."
        )
    return float(target_advantage)


def _check_slope(c: Coefficients, target: float) -> None:
    if not c.beta_s < 0.0:
        raise MiascaleError(
            f"The fitted scaling law has slope beta_S = {c.beta_s:.4g} >= 0: the predicted "
            f"advantage does not decrease as shots grow, so no number of shots achieves the "
            f"target advantage {target:.4g}. Check the fit (its points and exclusions); more "
            f"shots will not make this attack weaker according to these results."
        )


def _smallest_shots(
    c: Coefficients, c_term: float, log_t: float, target: float
) -> tuple[int, float]:
    """The smallest integer ``S`` reaching ``log_t`` (a few ulps of slack), and the real ``S*``."""
    log_s_star = (log_t - c.beta_0 - c_term) / c.beta_s
    if log_s_star > MAX_LOG10_SHOTS:
        raise MiascaleError(
            f"The scaling law would need about 10^{log_s_star:.1f} shots to reach advantage "
            f"{target:.4g}, far beyond any dataset; the target is unreachable in practice. "
            f"Relax the target (or epsilon) or check the fit."
        )
    s_real = 10.0**log_s_star

    def ok(s: int) -> bool:
        terms = (c.beta_s * math.log10(s), c_term, c.beta_0, log_t)
        tol = _PLAN_REL_TOL * sum(abs(t) for t in terms)  # a few ulps of the terms' magnitude
        return _log_adv(c, s, c_term) <= log_t + tol

    s = max(1, math.ceil(s_real))
    while s > 1 and ok(s - 1):  # float error pushed S* just above an integer
        s -= 1
    while not ok(s):  # float error pushed S* just below an integer
        s += 1
    return s, s_real


def plan(
    coeffs: LevelFit | Coefficients,
    fpr_level: float | None,
    classes: int | None = None,
    *,
    target_advantage: float | None = None,
    epsilon: float | None = None,
    delta: float = 0.0,
    confidence: float = 0.95,
    relation: str = "add_remove",
) -> Plan:
    """The smallest integer ``S >= 1`` whose predicted advantage is at most the target.

    Give exactly one of ``target_advantage`` (in ``(0, 1)``) or ``epsilon`` (``>= 0``; then the
    target is :func:`dp_max_advantage`, the advantage an ``(epsilon, delta)``-DP mechanism allows
    at ``fpr_level`` on both branches of its region, with ``delta`` in ``[0, 1)``).
    ``fpr_level`` must match the law's level (``None`` takes it from ``coeffs``). The law must
    decrease with ``S`` (``beta_S < 0``). The comparison with the target allows a few ulps of
    floating-point error, so an exact-integer ``S*`` is returned as itself. Targets needing more
    than ``10^15`` shots raise. With a covariance the plan carries ``shots_ci`` at
    ``confidence``; ``trustworthy`` and ``warnings`` give the verdict. ``relation`` (only with
    ``epsilon``) is the membership game's neighbouring relation: ``"add_remove"`` (default) uses
    ``(epsilon, delta)`` as given, ``"replace_one"`` takes them as an add/remove guarantee and
    bounds the replace-one game by group privacy (``docs/design/scaling.md``).
    """
    c = _coefficients(coeffs)
    rel = _check_relation(relation)
    fpr = _plan_level(c, fpr_level)
    delta = _check_goal(target_advantage, epsilon, delta)
    conf = _check_confidence(confidence)
    if rel != "add_remove" and epsilon is None:
        raise MiascaleError(
            f"relation={rel!r} converts a differential-privacy budget for the membership game; "
            f"it needs epsilon, not target_advantage (a target advantage is the same in any game)."
        )
    bound: tuple[float | None, float | None] = (None, None)
    if epsilon is not None:
        target, bound = _dp_target(fpr, epsilon, delta, rel)
    else:
        target = _direct_target(target_advantage)
    _check_slope(c, target)
    c_term, cls = _classes_term(c, classes)
    log_t = math.log10(target)
    s, s_real = _smallest_shots(c, c_term, log_t, target)
    band = _Band(c, cls, c_term, conf)
    shots_ci = _shots_interval(band, log_t)
    warnings = (
        _fit_warnings(c)
        + _interval_warnings(shots_ci, conf, MAX_LOG10_SHOTS)
        + _extrapolation_warnings(c, s_real, s, "plan")
    )
    return Plan(
        shots=s,
        shots_real=s_real,
        target_advantage=target,
        epsilon=None if epsilon is None else float(epsilon),
        delta=delta,
        fpr_level=fpr,
        classes=cls,
        coefficients=c,
        predicted=_prediction(c, float(s), cls, c_term, band),
        confidence=conf,
        shots_ci=shots_ci,
        trustworthy=not warnings,
        warnings=tuple(warnings),
        relation=rel,
        bound_epsilon=bound[0],
        bound_delta=bound[1],
    )
