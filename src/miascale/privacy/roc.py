"""DP bounds on the ROC, and the empirical ε lower bound from attack scores.

Both invert the hypothesis-testing view of (ε, δ)-DP; the inequalities, the conservative
Clopper–Pearson ends and the multiple-comparison correction are in ``docs/design/privacy.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from miascale.errors import MiascaleError
from miascale.metrics import RocCurve, clopper_pearson, roc_curve
from miascale.privacy.checks import _check_delta, _check_nonnegative_epsilon
from miascale.privacy.vertex_bounds import _VertexBounds


def dp_roc_bound(fpr: Any, epsilon: float, delta: float) -> np.ndarray:
    """Largest TPR an (ε, δ)-DP mechanism allows at each FPR (float64, same shape as ``fpr``).

    ``min(e^ε FPR + δ, 1 − e^{−ε}(1 − δ − FPR))`` clipped to [0, 1]. ``epsilon`` may be 0
    (then the bound is ``min(FPR + δ, 1)``) or ``inf`` (bound 1 for FPR > 0); ``delta`` in
    [0, 1).
    """
    e = _check_nonnegative_epsilon(epsilon)
    d = _check_delta(delta, allow_zero=True)
    try:
        f = np.asarray(fpr, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MiascaleError(f"fpr must be numbers, got {fpr!r}.") from exc
    if not np.all((f >= 0.0) & (f <= 1.0)):
        raise MiascaleError("fpr values must lie in [0, 1] (NaN is not allowed).")
    with np.errstate(over="ignore", invalid="ignore"):
        first = np.where(f > 0, np.exp(e) * f, 0.0) + d
        second = 1.0 - math.exp(-e) * (1.0 - d - f)
    return np.clip(np.minimum(first, second), 0.0, 1.0)


@dataclass(frozen=True)
class EmpiricalEpsilon:
    """Empirical lower bound on ε from attack scores (``docs/design/privacy.md``).

    Attributes:
        epsilon_lb: max over ROC vertices and both forms of the bound, floored at 0.
        form: ``"tpr"`` (log((TPR_low − δ)/FPR_high)), ``"fnr"``
            (log((1 − δ − FPR_high)/(1 − TPR_low))) or ``"none"`` when no bound is positive.
        threshold: score threshold of the vertex (predict member when score >= threshold);
            ``nan`` when ``form == "none"``.
        tpr, fpr: empirical rates at that vertex (nan when ``form == "none"``).
        tpr_low, fpr_high: the Clopper–Pearson bounds used (nan when ``form == "none"``).
        true_positives, false_positives: counts at that vertex (-1 when ``form == "none"``).
        n_pos, n_neg: members and non-members pooled.
        delta: δ used.
        confidence: overall confidence asked for.
        level: two-sided Clopper–Pearson level used at each vertex (``confidence``, or its
            Bonferroni correction when ``simultaneous``).
    """

    epsilon_lb: float
    form: str
    threshold: float
    tpr: float
    fpr: float
    tpr_low: float
    fpr_high: float
    true_positives: int
    false_positives: int
    n_pos: int
    n_neg: int
    delta: float
    confidence: float
    level: float

    def to_dict(self) -> dict[str, float | int | str | None]:
        """Plain Python values; non-finite floats become ``None`` (JSON-safe)."""
        out: dict[str, float | int | str | None] = {}
        for key, value in self.__dict__.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
            else:
                out[key] = value
        return out


def _bonferroni_level(confidence: float, n_vertices: int, simultaneous: bool) -> float:
    """Per-vertex two-sided level: ``confidence`` corrected for the interior vertices."""
    m = max(n_vertices - 2, 1)
    return 1.0 - (1.0 - confidence) / m if simultaneous else confidence


def empirical_epsilon(
    scores: Any,
    labels: Any,
    delta: float = 0.0,
    confidence: float = 0.95,
    simultaneous: bool = True,
) -> EmpiricalEpsilon:
    """Lower bound on ε from membership scores (higher = member; pooled like ``roc_curve``).

    Vectorised over every ROC vertex (one sort). ``delta`` in [0, 1) is the δ of the
    hypothesis being tested (use the run's δ for DP runs, 0 or the same default δ otherwise).
    ``simultaneous`` Bonferroni-corrects the Clopper–Pearson level for the number of
    thresholds (``docs/design/privacy.md``).
    """
    return epsilon_from_roc(roc_curve(scores, labels), delta, confidence, simultaneous)


def epsilon_from_roc(
    roc: RocCurve, delta: float = 0.0, confidence: float = 0.95, simultaneous: bool = True
) -> EmpiricalEpsilon:
    """:func:`empirical_epsilon` on an ROC curve already computed (one sort per attack)."""
    d = _check_delta(delta, allow_zero=True)
    if not isinstance(simultaneous, bool):
        raise MiascaleError(f"simultaneous must be a bool, got {simultaneous!r}.")
    clopper_pearson(0, 1, confidence)  # validates confidence
    conf = float(confidence)
    level = _bonferroni_level(conf, roc.tpr.size, simultaneous)
    n_pos, n_neg = roc.n_pos, roc.n_neg
    tp = np.rint(roc.tpr * n_pos).astype(np.int64)
    fp = np.rint(roc.fpr * n_neg).astype(np.int64)
    bounds = _VertexBounds(tp, fp, n_pos, n_neg, level, d)
    ia, best_a = bounds.best("tpr")
    ib, best_b = bounds.best("fnr")
    if max(best_a, best_b) <= 0.0:
        nan = math.nan
        return EmpiricalEpsilon(
            0.0, "none", nan, nan, nan, nan, nan, -1, -1, n_pos, n_neg, d, conf, level
        )
    i, form, value = (ia, "tpr", best_a) if best_a >= best_b else (ib, "fnr", best_b)
    tpr_low, fpr_high = bounds.at(i)
    return EmpiricalEpsilon(
        epsilon_lb=value,
        form=form,
        threshold=float(roc.thresholds[i]),
        tpr=float(roc.tpr[i]),
        fpr=float(roc.fpr[i]),
        tpr_low=tpr_low,
        fpr_high=fpr_high,
        true_positives=int(tp[i]),
        false_positives=int(fp[i]),
        n_pos=n_pos,
        n_neg=n_neg,
        delta=d,
        confidence=conf,
        level=level,
    )
