"""When a prediction or plan is trustworthy: the thresholds and the warnings that say why not
(``docs/design/scaling.md``, "The verdict")."""

from __future__ import annotations

import math

from miascale.plan_results import Coefficients
from miascale.plan_text import _pct

#: Fewest admitted cells (fitted points) a law may rest on before its plans are trusted.
MIN_POINTS = 4
#: Widest trusted interval of S, in decades: ``log10(S_high / S_low) > 1`` is not trustworthy.
MAX_CI_DECADES = 1.0
#: Smallest trusted coefficient of determination of the fit.
MIN_R_SQUARED = 0.9
#: Farthest trusted extrapolation, as a factor beyond the measured shots (a decade).
MAX_EXTRAPOLATION = 10.0


def _fit_warnings(c: Coefficients) -> list[str]:
    """What makes the law itself untrustworthy: no covariance, too few cells, a poor R²."""
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
    """More than a decade above (``high``) or below (``low``) the measured shots."""
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


def _interval_warnings(
    shots_ci: tuple[float, float] | None, confidence: float, max_log10_shots: float
) -> list[str]:
    """An interval of S with no upper end, or wider than :data:`MAX_CI_DECADES`."""
    if shots_ci is None:
        return []
    lo, hi = shots_ci
    if math.isinf(hi):
        return [
            f"The {_pct(confidence)} interval of S has no upper end: the upper edge of the law's "
            f"band stays above the target up to 10^{max_log10_shots:g} shots."
        ]
    if math.log10(hi / lo) > MAX_CI_DECADES:
        return [
            f"The {_pct(confidence)} interval of S spans {math.log10(hi / lo):.2g} decades (more "
            f"than {MAX_CI_DECADES:g})."
        ]
    return []
