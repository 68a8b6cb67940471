"""The law's confidence band in ``u = log10 S`` and its inversion into an interval of ``S``
(Fieller's method; ``docs/design/scaling.md``, "Prediction" and "The interval of S")."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from miascale.plan_results import Coefficients

#: Plans and intervals are searched for ``S`` up to ``10 ** MAX_LOG10_SHOTS``.
MAX_LOG10_SHOTS = 15.0


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
