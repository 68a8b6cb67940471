"""The law evaluated at ``(S, C)`` with its confidence interval (:func:`predict`), and the input
checks prediction and planning share (``docs/design/scaling.md``, "Prediction")."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from miascale.errors import MiascaleError
from miascale.plan_results import Coefficients, Prediction, _is_number, _pow10
from miascale.planning.band import _Band
from miascale.planning.verdict import _extrapolation_warnings, _fit_warnings

if TYPE_CHECKING:  # miascale.scaling imports this package; import it back lazily, in functions
    from miascale.scaling import LevelFit


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
    """``beta_C * log10 C`` (0 without a classes term) and the checked number of classes."""
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


def _intervals(c: Coefficients, shots: float, la: float, band: _Band) -> dict[str, Any]:
    """The prediction's interval fields (none without a covariance)."""
    if band.cov is None:
        return {}
    half = band.q * band.se(math.log10(shots))
    lo, hi = la - half, la + half
    a_lo, a_hi = _pow10(lo), _pow10(hi)
    t_hi = c.fpr_level + a_hi
    return {
        "log10_advantage_ci": (lo, hi),
        "advantage_ci": (a_lo, a_hi),
        "tpr_ci": (min(1.0, max(c.fpr_level, c.fpr_level + a_lo)), min(1.0, t_hi)),
        "tpr_ci_clipped": t_hi > 1.0,
    }


def _prediction(
    c: Coefficients, shots: float, classes: int | None, c_term: float, band: _Band
) -> Prediction:
    la = _log_adv(c, shots, c_term)
    adv = _pow10(la)
    raw_tpr = c.fpr_level + adv
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
        **_intervals(c, shots, la, band),
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
