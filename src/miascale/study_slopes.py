"""Does one slope in S serve every dataset of a study? (the companion of the intercept test).

On a level's admitted cells, the law with one intercept per dataset and common slopes
(``k + 2`` parameters for ``k`` datasets, ``k + 1`` without a C term) is nested in the law with
one intercept and one ``beta_S`` per dataset (``beta_C`` still shared). With weighted residual
sums of squares ``RSS_common`` and ``RSS_own``::

    F = ((RSS_common - RSS_own) / (k - 1)) / max(1, RSS_own / (n - p_own))

against ``F(k - 1, n - p_own)``, as in :func:`miascale.study_fit.intercept_test`. ``p < alpha``:
the datasets fall with S at different rates, so a pooled ``beta_S`` is a compromise between
their laws rather than one law they share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from miascale.fit_rules import wls_fit


@dataclass(frozen=True)
class NestedTest:
    """A nested-model F-test between datasets' laws; ``separate`` is ``None`` when it could not
    be made (``reason`` says why)."""

    datasets: tuple[str, ...]
    n_points: int
    separate: bool | None = None
    reason: str | None = None
    f: float | None = None
    df_num: int | None = None
    df_den: int | None = None
    p_value: float | None = None
    alpha: float = 0.05

    def evidence(self) -> str:
        return f"F = {self.f:.3g} on ({self.df_num}, {self.df_den}) df, p = {self.p_value:.3g}"


def nested_f(x_r: np.ndarray, x_f: np.ndarray, y: np.ndarray, se: np.ndarray, alpha: float):
    """Weighted fits of the reduced and the full design, and the F-test between them:
    ``(fields of NestedTest, fit_reduced, fit_full, rss_reduced, rss_full)``."""
    fits = [wls_fit(x, y, se, 0.95) for x in (x_r, x_f)]
    rss = [
        float((((y - x @ f.params) / se) ** 2).sum()) for x, f in zip((x_r, x_f), fits, strict=True)
    ]
    df_num, df_den = x_f.shape[1] - x_r.shape[1], len(y) - x_f.shape[1]
    f = max(rss[0] - rss[1], 0.0) / df_num / max(1.0, rss[1] / df_den)
    p = float(stats.f.sf(f, df_num, df_den))
    test = {"separate": bool(p < alpha), "f": f, "df_num": df_num, "df_den": df_den, "p_value": p}
    return test, fits[0], fits[1], rss[0], rss[1]


@dataclass(frozen=True)
class SlopeTest(NestedTest):
    """Does one beta_S serve every dataset? (module docstring)."""

    def to_dict(self) -> dict:
        return dict(self.__dict__, datasets=list(self.datasets))

    @classmethod
    def from_dict(cls, d: dict) -> SlopeTest:
        return cls(**{**d, "datasets": tuple(d.get("datasets", ()))})

    def verdict(self) -> str:
        if self.separate is None:
            return f"The slope test was not made: {self.reason}."
        if self.separate:
            return (
                f"The datasets fall with S at different rates ({self.evidence()} < "
                f"{self.alpha:g}): the pooled β_S is a compromise between their laws, not one law "
                f"they share."
            )
        return f"One β_S serves all datasets ({self.evidence()} >= {self.alpha:g})."


def _design(labels: list[str], s: np.ndarray, c: np.ndarray | None, datasets, own_slope: bool):
    ind = [np.array([x == d for x in labels], dtype=np.float64) for d in datasets]
    cols = list(ind) + ([i * s for i in ind] if own_slope else [s])
    if c is not None:
        cols.append(c)
    return np.column_stack(cols)


def slope_test(
    labels: Sequence[str],
    shots: Sequence[float],
    classes: Sequence[float] | None,
    y: np.ndarray,
    se: np.ndarray,
    alpha: float = 0.05,
) -> SlopeTest:
    """The nested F-test of the module docstring; ``labels`` names each cell's dataset."""
    datasets = tuple(sorted(set(labels)))
    base = {"datasets": datasets, "n_points": len(labels), "alpha": float(alpha)}
    k = len(datasets)
    if k < 2:
        return SlopeTest(**base, reason="the fitted cells come from one dataset only")
    s = np.log10(np.asarray(shots, dtype=np.float64))
    c = None if classes is None else np.log10(np.asarray(classes, dtype=np.float64))
    x_r = _design(list(labels), s, c, datasets, own_slope=False)
    x_f = _design(list(labels), s, c, datasets, own_slope=True)
    p_f = x_f.shape[1]
    if len(labels) <= p_f or np.linalg.matrix_rank(x_f) < p_f:
        return SlopeTest(**base, reason=f"{len(labels)} cells do not pin down {p_f} coefficients")
    return SlopeTest(**base, **nested_f(x_r, x_f, y, se, alpha)[0])
