"""Predict and plan with the fitted scaling law, carrying the fit's uncertainty.

The law (fitted by :func:`miascale.scaling.fit_power_law`)::

    log10(TPR - FPR) = beta_S * log10(S) + beta_C * log10(C) + beta_0

Prediction
----------
:func:`predict` evaluates the law at ``(S, C)``. When the coefficients carry their covariance
``Sigma`` (order ``[beta_0, beta_S, (beta_C)]``, as fitted), the predicted ``log10`` advantage has
standard error ``sqrt(x' Sigma x)`` with ``x = [1, log10 S, (log10 C)]`` and the interval is
``prediction ± q · se`` with ``q`` the Student-t quantile at the fit's residual degrees of freedom
(the normal quantile when ``dof`` is unknown). It is a confidence interval for the *law* at that
point (where the mean advantage lies), not for one new measurement. The advantage interval is
``10 ** (log10 interval)``; the TPR interval is ``FPR + advantage interval`` clipped to
``[FPR, 1]`` (``tpr_ci_clipped`` says when the upper end was clipped).

Planning
--------
:func:`plan` inverts the law: the smallest integer ``S >= 1`` whose predicted advantage is at most
a target, given directly or as the largest advantage an ``(epsilon, delta)``-DP mechanism allows
at the level's FPR. Differential privacy confines every test's ``(FPR, TPR)`` to the region

    TPR <= e^epsilon * FPR + delta   and   1 - FPR <= e^epsilon * (1 - TPR) + delta,

so ``TPR <= min(e^epsilon * FPR + delta, 1 - e^-epsilon * (1 - delta - FPR))``
(:func:`dp_max_tpr`); the first branch binds at small FPR, the second at large FPR and epsilon
(e.g. FPR 0.5, epsilon 2). The target advantage is that minus FPR (:func:`dp_max_advantage`).

The bound must use the guarantee for the neighbouring relation of the membership game. By
default (``relation="add_remove"``) ``(epsilon, delta)`` is used as given: the add/remove
guarantee DP-SGD is calibrated to, right for a game of independent membership (the
``bernoulli`` design) and what reproduces the research's Table 1; also the way to pass a
guarantee that already is for the game played (a DP audit's ``epsilon_game``). With
``relation="replace_one"`` the given ``(epsilon, delta)`` is still add/remove but the game
replaces one example (the ``balanced`` design): the bound uses the group-privacy guarantee
``(2 epsilon, (1 + e^epsilon) delta)`` (:func:`miascale.privacy.replace_one_from_add_remove`),
which allows more advantage, so fewer shots reach it. Without the mechanism (σ, q, T) this is
the only valid conversion; the accountant's own replace-one ε of a DP audit is tighter.

With a covariance the plan also gives ``shots_ci``: the ``confidence`` interval of the ``S`` at
which the law reaches the target, found by inverting the prediction band (Fieller's method). In
``u = log10 S`` the band ``mean(u) ± q · se(u)`` is a hyperbola; ``S_low`` is where its *lower*
branch reaches the target (1 when it is already below at ``S = 1``) and ``S_high`` where its
*upper* branch does (``inf`` when the upper branch is still above the target at ``S = 10^15``, which
is what happens when the slope is not clearly negative). Both are found by bisection in
``u`` on ``[0, 15]``; the lower branch is concave and the upper convex, so each crossing is unique.

The verdict
-----------
A plan is ``trustworthy`` only when none of these holds (each adds a plain sentence to
``warnings``):

* the law was not fitted with an interval (no covariance, e.g. hand-typed betas);
* fewer than :data:`MIN_POINTS` admitted cells entered the fit;
* the fit's ``R^2`` is below :data:`MIN_R_SQUARED`;
* the interval of ``S`` is wider than :data:`MAX_CI_DECADES` decades
  (``log10(S_high / S_low) > MAX_CI_DECADES``, always when ``S_high`` is infinite);
* the plan extrapolates beyond the measured shots by more than a decade
  (``shots_real > 10 · max measured S``, or ``shots < min measured S / 10``).

A :class:`Prediction` gets the same verdict without the interval-width rule. :func:`plan_sentence`
says the result in words, and for an untrustworthy plan gives only an order of magnitude.

All functions are pure and do no I/O; results are frozen dataclasses whose ``to_dict()`` returns
JSON-ready plain Python types (non-finite numbers become ``None``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from miascale.errors import MiascaleError
from miascale.plan_results import (
    Coefficients,
    Plan,
    Prediction,
    _bound_args,
    _check_fpr,
    _check_relation,
    _is_number,
    _pow10,
    dp_max_advantage,
    dp_max_tpr,
)
from miascale.plan_text import _pct, format_shots, plan_sentence

if TYPE_CHECKING:  # scaling imports this module; import it back lazily, inside functions
    from miascale.scaling import LevelFit

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

#: Fewest admitted cells (fitted points) a law may rest on before its plans are trusted.
MIN_POINTS = 4
#: Widest trusted interval of S, in decades: ``log10(S_high / S_low) > 1`` is not trustworthy.
MAX_CI_DECADES = 1.0
#: Smallest trusted coefficient of determination of the fit.
MIN_R_SQUARED = 0.9
#: Farthest trusted extrapolation, as a factor beyond the measured shots (a decade).
MAX_EXTRAPOLATION = 10.0
#: Plans and intervals are searched for ``S`` up to ``10 ** MAX_LOG10_SHOTS``.
MAX_LOG10_SHOTS = 15.0

# Relative slack (times the magnitudes of the terms of the log10 law) that absorbs floating-point
# error when plan() compares a predicted advantage with its target, so that an exact-integer
# solution such as S* = 4 gives S = 4 and not 5. A few ulps: far below the change in predicted
# advantage between neighbouring integers S for any S up to 10^15.
_PLAN_REL_TOL = 16 * np.finfo(np.float64).eps


# ----------------------------------------------------------------------------------------------
# Prediction and planning
# ----------------------------------------------------------------------------------------------


def _coefficients(coeffs: LevelFit | Coefficients) -> Coefficients:
    from miascale.scaling import LevelFit

    if isinstance(coeffs, LevelFit):
        return coeffs.coefficients()
    if isinstance(coeffs, Coefficients):
        return coeffs
    raise MiascaleError(
        f"Expected a LevelFit (from fit_power_law / ScalingFit.level) or Coefficients, got "
        f"{type(coeffs).__name__}."
    )


def _positive(x: Any, name: str) -> float:
    if (
        isinstance(x, bool)
        or not isinstance(x, int | float | np.number)
        or not (math.isfinite(float(x)) and float(x) > 0)
    ):
        raise MiascaleError(f"{name} must be a positive finite number, got {x!r}.")
    return float(x)


def _check_confidence(confidence: Any) -> float:
    if not _is_number(confidence) or not (0.0 < float(confidence) < 1.0):
        raise MiascaleError(
            f"confidence must be a number strictly between 0 and 1 (e.g. 0.95), got {confidence!r}."
        )
    return float(confidence)


def _classes_term(c: Coefficients, classes: Any) -> tuple[float, int | None]:
    if classes is not None:
        cls = _positive(classes, "classes")
        if cls != int(cls):
            raise MiascaleError(f"classes must be a whole number, got {classes!r}.")
        classes = int(cls)
    if c.beta_c is None:
        return 0.0, classes
    if classes is None:
        raise MiascaleError(
            f"This scaling law has a classes term (beta_C = {c.beta_c:.4g}), fitted because the "
            f"sweep varied the number of classes, so a prediction needs the number of classes: "
            f"pass classes=C."
        )
    return c.beta_c * math.log10(classes), classes


def _log_adv(c: Coefficients, shots: float, c_term: float) -> float:
    return c.beta_s * math.log10(shots) + c_term + c.beta_0


class _Band:
    """The law's mean and standard error in ``u = log10 S`` at fixed classes."""

    def __init__(self, c: Coefficients, classes: int | None, c_term: float, confidence: float):
        self.c, self.c_term, self.confidence = c, c_term, confidence
        self.cov = None if c.cov is None else np.array(c.cov, dtype=np.float64)
        self.log_c = None if c.beta_c is None else math.log10(classes)  # type: ignore[arg-type]
        self.q = math.nan
        if self.cov is not None:
            from scipy import stats

            p = 0.5 + confidence / 2.0
            self.q = float(stats.norm.ppf(p) if c.dof is None else stats.t.ppf(p, c.dof))

    def mean(self, u: float) -> float:
        return self.c.beta_s * u + self.c_term + self.c.beta_0

    def se(self, u: float) -> float:
        x = np.array([1.0, u] + ([] if self.log_c is None else [self.log_c]))
        return math.sqrt(max(float(x @ self.cov @ x), 0.0))

    def lower(self, u: float) -> float:
        return self.mean(u) - self.q * self.se(u)

    def upper(self, u: float) -> float:
        return self.mean(u) + self.q * self.se(u)


def _fit_warnings(c: Coefficients) -> list[str]:
    out = []
    if c.cov is None:
        out.append(
            "The law was not fitted with an interval (no covariance), so its uncertainty is "
            "unknown."
        )
    if c.n_points is not None and c.n_points < MIN_POINTS:
        out.append(
            f"The law rests on only {c.n_points} admitted cell(s); at least {MIN_POINTS} are "
            f"needed to trust it."
        )
    if c.r_squared is not None and c.r_squared < MIN_R_SQUARED:
        out.append(
            f"The power law fits the measured cells poorly (R² = {c.r_squared:.3g}, below "
            f"{MIN_R_SQUARED:g})."
        )
    return out


def _extrapolation_warnings(c: Coefficients, high: float, low: float, what: str) -> list[str]:
    if c.shots_range is None:
        return []
    s_min, s_max = c.shots_range
    out = []
    if high > MAX_EXTRAPOLATION * s_max:
        out.append(
            f"The {what} extrapolates beyond the measured shots by more than a decade (max "
            f"measured S = {s_max:,.0f})."
        )
    if low < s_min / MAX_EXTRAPOLATION:
        out.append(
            f"The {what} extrapolates below the measured shots by more than a decade (min "
            f"measured S = {s_min:,.0f})."
        )
    return out


def _prediction(
    c: Coefficients, shots: float, classes: int | None, c_term: float, band: _Band
) -> Prediction:
    la = _log_adv(c, shots, c_term)
    adv = _pow10(la)
    raw_tpr = c.fpr_level + adv
    ci: dict[str, Any] = {}
    if band.cov is not None:
        half = band.q * band.se(math.log10(shots))
        lo, hi = la - half, la + half
        a_lo, a_hi = _pow10(lo), _pow10(hi)
        t_hi = c.fpr_level + a_hi
        ci = {
            "log10_advantage_ci": (lo, hi),
            "advantage_ci": (a_lo, a_hi),
            "tpr_ci": (min(1.0, max(c.fpr_level, c.fpr_level + a_lo)), min(1.0, t_hi)),
            "tpr_ci_clipped": t_hi > 1.0,
        }
    warnings = _fit_warnings(c) + _extrapolation_warnings(c, shots, shots, "prediction")
    return Prediction(
        shots=float(shots),
        classes=classes,
        fpr_level=c.fpr_level,
        log10_advantage=la,
        advantage=adv,
        tpr=min(1.0, raw_tpr),
        clipped=raw_tpr > 1.0,
        confidence=band.confidence,
        **ci,
        trustworthy=not warnings,
        warnings=tuple(warnings),
    )


def predict(
    coeffs: LevelFit | Coefficients,
    shots: float,
    classes: int | None = None,
    confidence: float = 0.95,
) -> Prediction:
    """Evaluate the law at ``shots`` (``> 0``; need not be an integer) and ``classes``.

    ``classes`` is required when the law has a classes term and otherwise only recorded. With a
    covariance in the coefficients the prediction carries its ``confidence`` intervals.
    """
    c = _coefficients(coeffs)
    s = _positive(shots, "shots")
    conf = _check_confidence(confidence)
    c_term, cls = _classes_term(c, classes)
    return _prediction(c, s, cls, c_term, _Band(c, cls, c_term, conf))


def _bisect(f: Callable[[float], float], lo: float, hi: float) -> float:
    """The point where ``f`` changes from ``> 0`` (at ``lo``) to ``<= 0`` (at ``hi``)."""
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if f(mid) > 0:
            lo = mid
        else:
            hi = mid
    return hi


def _shots_interval(band: _Band, log_t: float) -> tuple[float, float] | None:
    """``(S_low, S_high)``: where the lower / upper edge of the band reaches ``log_t``.

    In ``u = log10 S`` the lower edge ``mean - q se`` is concave and the upper edge ``mean + q se``
    convex (``se`` is the norm of an affine function of ``u``), so ``{lower > t}`` is one interval
    starting at 0 and ``{upper < t}`` one interval ending at the top: each crossing is unique.
    """
    if band.cov is None:
        return None
    top = MAX_LOG10_SHOTS

    def low(u: float) -> float:
        return band.lower(u) - log_t

    def up(u: float) -> float:
        return band.upper(u) - log_t

    if low(0.0) <= 0.0:
        u_lo = 0.0
    elif low(top) > 0.0:  # only when S* sits at 10^15 up to rounding
        u_lo = top
    else:
        u_lo = _bisect(low, 0.0, top)
    if up(top) > 0.0:  # the upper edge is still above the target at 10^15 (or turns back up)
        return 10.0**u_lo, math.inf
    u_hi = 0.0 if up(0.0) <= 0.0 else _bisect(up, 0.0, top)
    return 10.0**u_lo, 10.0**u_hi


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
    ``confidence``; ``trustworthy`` and ``warnings`` give the verdict (module docstring).
    ``relation`` (only with ``epsilon``) is the membership game's neighbouring relation:
    ``"add_remove"`` (default) uses ``(epsilon, delta)`` as given, ``"replace_one"`` takes them
    as an add/remove guarantee and bounds the replace-one game by group privacy (module
    docstring).
    """
    c = _coefficients(coeffs)
    rel = _check_relation(relation)
    if fpr_level is None:
        fpr = c.fpr_level
    else:
        fpr = _check_fpr(fpr_level)
        if not math.isclose(fpr, c.fpr_level, rel_tol=1e-9, abs_tol=0.0):
            raise MiascaleError(
                f"plan() was asked for fpr_level={fpr}, but the scaling law was fitted at "
                f"fpr_level={c.fpr_level}; the law differs between levels. Use the fit of level "
                f"{fpr} (ScalingFit.level(...)) or pass fpr_level={c.fpr_level}."
            )
    if (target_advantage is None) == (epsilon is None):
        raise MiascaleError(
            "plan() needs exactly one of target_advantage (the largest acceptable TPR - FPR) or "
            "epsilon (a differential-privacy budget, with optional delta)."
        )
    if isinstance(delta, bool) or not isinstance(delta, int | float) or not (0.0 <= delta < 1.0):
        raise MiascaleError(f"delta must be a number in [0, 1), got {delta!r}.")
    delta = float(delta)
    conf = _check_confidence(confidence)
    if rel != "add_remove" and epsilon is None:
        raise MiascaleError(
            f"relation={rel!r} converts a differential-privacy budget for the membership game; "
            f"it needs epsilon, not target_advantage (a target advantage is the same in any game)."
        )
    bound: tuple[float | None, float | None] = (None, None)
    if epsilon is not None:
        if (
            isinstance(epsilon, bool)
            or not isinstance(epsilon, int | float)
            or not math.isfinite(epsilon)
            or epsilon < 0
        ):
            raise MiascaleError(f"epsilon must be a finite number >= 0, got {epsilon!r}.")
        target = dp_max_advantage(fpr, float(epsilon), delta, rel)
        bound = _bound_args(float(epsilon), delta, rel)
        game = (
            ""
            if rel == "add_remove"
            else f" (add/remove; for the replace-one game epsilon={bound[0]:.6g}, "
            f"delta={bound[1]:.6g} by group privacy)"
        )
        if not (0.0 < target < 1.0 - fpr):
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
    else:
        if (
            isinstance(target_advantage, bool)
            or not isinstance(target_advantage, int | float)
            or not (0.0 < target_advantage < 1.0)
        ):
            raise MiascaleError(
                f"target_advantage (largest acceptable TPR - FPR) must lie strictly between 0 "
                f"and 1, got {target_advantage!r}."
            )
        target = float(target_advantage)
    if not c.beta_s < 0.0:
        raise MiascaleError(
            f"The fitted scaling law has slope beta_S = {c.beta_s:.4g} >= 0: the predicted "
            f"advantage does not decrease as shots grow, so no number of shots achieves the "
            f"target advantage {target:.4g}. Check the fit (its points and exclusions); more "
            f"shots will not make this attack weaker according to these results."
        )
    c_term, cls = _classes_term(c, classes)
    log_t = math.log10(target)
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

    band = _Band(c, cls, c_term, conf)
    shots_ci = _shots_interval(band, log_t)
    warnings = _fit_warnings(c)
    if shots_ci is not None:
        lo, hi = shots_ci
        if math.isinf(hi):
            warnings.append(
                f"The {_pct(conf)} interval of S has no upper end: the upper edge of the law's "
                f"band stays above the target up to 10^{MAX_LOG10_SHOTS:g} shots."
            )
        elif math.log10(hi / lo) > MAX_CI_DECADES:
            warnings.append(
                f"The {_pct(conf)} interval of S spans {math.log10(hi / lo):.2g} decades (more "
                f"than {MAX_CI_DECADES:g})."
            )
    warnings += _extrapolation_warnings(c, s_real, s, "plan")
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
