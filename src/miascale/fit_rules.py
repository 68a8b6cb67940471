"""Which measured cells may enter a power-law fit, what each one weighs, and the weighted fit.

A *cell* is one (dataset, backbone, classes, shots) setting at one FPR level, measured with one or
more seeds. :func:`summarize_cell` gives its mean advantage and standard error (bootstrap within
seeds, spread between seeds), :func:`admission_reasons` the rules it fails (the ``REASON_*``
constants: too few false positives, chance or noise floor, ceiling), and :func:`wls_fit` the
weighted least squares of ``log10`` advantage with intervals that never shrink below the errors.

Contract: docs/design/fit_rules.md (DESIGN §3; user guide: docs/sweep.md "Fit admission").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from miascale.metrics import fp_budget

MIN_FALSE_POSITIVES = 10
"""Default minimum of false positives an FPR level must allow (``floor(t·Q)``) in every seed."""
CEILING_MARGIN = 0.02
"""Default margin: a cell whose TPR interval reaches ``1 - CEILING_MARGIN`` is saturated."""

REASON_FEW_FP = "too few false positives"
REASON_UNRESOLVED = "level not resolvable"
REASON_NONPOSITIVE = "TPR <= FPR"
REASON_CHANCE = "indistinguishable from chance"
REASON_CEILING = "at the ceiling"
REASON_FLOOR = "at the noise floor"
REASON_ORDER = (
    REASON_FEW_FP,
    REASON_UNRESOLVED,
    REASON_NONPOSITIVE,
    REASON_CHANCE,
    REASON_FLOOR,
    REASON_CEILING,
)


@dataclass(frozen=True)
class CellSummary:
    """One cell at one FPR level: mean over seeds and uncertainty (docs/design/fit_rules.md)."""

    fpr_level: float
    n_seeds: int
    tpr: float
    advantage: float
    se: float  # standard error of ``advantage`` (and of ``tpr``)
    ci_low: float  # of the TPR: tpr - z·se (clipped to [0, 1])
    ci_high: float
    fp_budget: int | None  # smallest floor(t·Q) over seeds (None: unknown, no n_neg)
    se_source: str  # "bootstrap", "interval" (rows without a bootstrap SE) or a mix "mixed"
    z: float
    floor: float = 0.0  # the value on null data (mean over seeds)
    ceiling: float | None = None  # the largest possible value (None: 1 - fpr_level)

    @property
    def y(self) -> float:
        return math.log10(self.advantage) if self.advantage > 0 else math.nan

    @property
    def y_se(self) -> float:
        if not self.advantage > 0:
            return math.nan
        return self.se / (self.advantage * math.log(10.0))


def z_value(confidence: float) -> float:
    """Two-sided normal quantile for ``confidence`` (1.96 at 0.95)."""
    return float(stats.norm.ppf(0.5 + confidence / 2.0))


def summarize_cell(
    fpr_level: float,
    tpr: list[float],
    ci_low: list[float],
    ci_high: list[float],
    se: list[float | None],
    n_neg: list[int | None],
    confidence: float = 0.95,
    cp: list[tuple[float, float] | None] | None = None,
    floor: list[float | None] | None = None,
    ceiling: list[float | None] | None = None,
) -> CellSummary:
    """Combine the seeds of one cell (lists aligned by seed) into a :class:`CellSummary`."""
    z = z_value(confidence)
    m = len(tpr)
    t = np.asarray(tpr, dtype=np.float64)
    sources = set()
    within = []
    cp = cp if cp is not None else [None] * m
    for s, lo, hi, c in zip(se, ci_low, ci_high, cp, strict=True):
        floor_lo, floor_hi = (lo, hi) if c is None else c
        cp_var = ((float(floor_hi) - float(floor_lo)) / (2.0 * z)) ** 2
        if s is not None and math.isfinite(s):
            within.append(max(float(s) ** 2, cp_var))
            sources.add("bootstrap")
        else:  # older rows: an interval only (Clopper–Pearson over pairs, too narrow)
            within.append(cp_var)
            sources.add("interval")
    var_within = float(np.mean(within))
    var_between = float(np.var(t, ddof=1)) if m >= 2 else 0.0
    se_cell = math.sqrt(max(var_within, var_between) / m)
    mean_tpr = float(t.mean())
    budgets = [None if q is None else int(fp_budget(np.float64(fpr_level), q)) for q in n_neg]
    known = [b for b in budgets if b is not None]
    return CellSummary(
        fpr_level=float(fpr_level),
        n_seeds=m,
        tpr=mean_tpr,
        advantage=mean_tpr - float(fpr_level),
        se=se_cell,
        ci_low=max(0.0, mean_tpr - z * se_cell),
        ci_high=min(1.0, mean_tpr + z * se_cell),
        fp_budget=min(known) if len(known) == len(budgets) else None,
        se_source=sources.pop() if len(sources) == 1 else "mixed",
        z=z,
        floor=float(np.mean([f or 0.0 for f in floor])) if floor else 0.0,
        ceiling=None
        if not ceiling or all(c is None for c in ceiling)
        else float(min(c for c in ceiling if c is not None)),
    )


def admission_reasons(
    cell: CellSummary,
    *,
    min_false_positives: int = MIN_FALSE_POSITIVES,
    ceiling_margin: float = CEILING_MARGIN,
    check_budget: bool = True,
    check_chance: bool = True,
    check_ceiling: bool = True,
    resolvable: bool = True,
) -> tuple[str, ...]:
    """Every rule of docs/design/fit_rules.md that ``cell`` fails, in :data:`REASON_ORDER`.

    ``resolvable=False`` (some seed allowed no false positive at all) fails the budget rule even
    when the rows carry no ``n_neg``.
    """
    reasons = []
    if check_budget:
        if cell.fp_budget is None and not resolvable:  # no counts: e.g. a per-example level
            reasons.append(REASON_UNRESOLVED)
        elif not resolvable or (
            cell.fp_budget is not None and cell.fp_budget < min_false_positives
        ):
            reasons.append(REASON_FEW_FP)
    if cell.advantage <= 0:
        reasons.append(REASON_NONPOSITIVE)
    if check_chance and cell.advantage - cell.z * cell.se <= max(cell.floor, 0.0):
        reasons.append(REASON_FLOOR if cell.floor > 0 else REASON_CHANCE)
    top = 1.0 - cell.fpr_level if cell.ceiling is None else cell.ceiling
    if check_ceiling and cell.advantage + cell.z * cell.se >= top - ceiling_margin:
        reasons.append(REASON_CEILING)
    return tuple(reasons)


@dataclass(frozen=True)
class WlsResult:
    params: np.ndarray  # (p,)
    cov: np.ndarray  # (p, p)
    ci: np.ndarray  # (p, 2)
    se: np.ndarray  # (p,)
    r_squared: float
    dof: int
    scale: float  # weighted residual variance (reduced chi-square)


def wls_fit(x: np.ndarray, y: np.ndarray, y_se: np.ndarray, confidence: float) -> WlsResult:
    """Weighted least squares of ``y`` on the design ``x`` with weights ``1/y_se^2``."""
    n, p = x.shape
    w = 1.0 / np.square(y_se)
    sw = np.sqrt(w)
    xw, yw = x * sw[:, None], y * sw
    beta, *_ = np.linalg.lstsq(xw, yw, rcond=None)
    resid = yw - xw @ beta
    dof = n - p
    scale = float(resid @ resid / dof) if dof > 0 else math.nan
    xtwx_inv = np.linalg.pinv(xw.T @ xw)
    cov = xtwx_inv * max(1.0, scale if math.isfinite(scale) else 1.0)
    se = np.sqrt(np.diag(cov))
    q = float(stats.t.ppf(0.5 + confidence / 2.0, dof)) if dof > 0 else math.inf
    ci = np.column_stack([beta - q * se, beta + q * se])
    ybar = float(np.sum(w * y) / np.sum(w))
    ss_tot = float(np.sum(w * (y - ybar) ** 2))
    r2 = 1.0 - float(resid @ resid) / ss_tot if ss_tot > 0 else math.nan
    return WlsResult(beta, cov, ci, se, r2, dof, scale)
