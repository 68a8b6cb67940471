"""Power-law fits of advantage against S, and which simulated points may enter them.

The fit rules are in docs/theory.md §4.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from miascale.metrics import TprAtFpr
from miascale.theory._numerics import _clean


@dataclass(frozen=True)
class PowerFit:
    """OLS of log10(advantage) on log10(S): ``slope``, ``intercept`` (log10), their 95% CIs."""

    slope: float | None
    intercept: float | None
    slope_ci: tuple[float, float] | None
    intercept_ci: tuple[float, float] | None
    shots: tuple[int, ...]

    def to_dict(self) -> dict:
        def pair(p):
            return None if p is None else [_clean(p[0]), _clean(p[1])]

        return {
            "slope": None if self.slope is None else _clean(self.slope),
            "intercept": None if self.intercept is None else _clean(self.intercept),
            "slope_ci": pair(self.slope_ci),
            "intercept_ci": pair(self.intercept_ci),
            "shots": list(self.shots),
        }


def fit_slope(shots: Sequence[float], advantage: Sequence[float]) -> PowerFit:
    """Power-law fit over the points with positive advantage (statsmodels OLS, as scaling.py)."""
    import statsmodels.api as sm

    s = np.asarray(shots, dtype=np.float64)
    a = np.asarray(advantage, dtype=np.float64)
    keep = np.isfinite(a) & (a > 0)
    s, a = s[keep], a[keep]
    used = tuple(int(v) for v in np.rint(s))
    if np.unique(s).size < 2:
        return PowerFit(None, None, None, None, used)
    x = sm.add_constant(np.log10(s))
    res = sm.OLS(np.log10(a), x).fit()
    p = np.asarray(res.params)
    if s.size > 2:
        ci = np.asarray(res.conf_int(0.05))
        sci, ici = (float(ci[1, 0]), float(ci[1, 1])), (float(ci[0, 0]), float(ci[0, 1]))
    else:
        sci = ici = None
    return PowerFit(float(p[1]), float(p[0]), sci, ici, used)


def _usable(m: TprAtFpr) -> bool:
    """Kept in a fit: resolvable, positive advantage, not saturated (CI reaches 1)."""
    return m.resolvable and m.advantage > 0 and m.ci_high < 1.0
