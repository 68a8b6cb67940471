"""Attack metrics: the one definition of ROC, TPR at fixed FPR, AUC and balanced accuracy.

Every number miascale reports about an attack comes from this module: :class:`Evaluation` validates
and sorts one attack's scores once (higher score = member; ``(K, N)`` arrays are pooled, not
averaged) and answers TPR@FPR with its bootstrap interval, AUC, balanced accuracy and the empirical
ε; the functions below are one-call shortcuts. Definitions, tie handling and the interval:
``docs/design/metrics.md``. Invalid input raises :class:`miascale.errors.MiascaleError`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from miascale.bootstrap import (
    check_groups,
    check_n_boot,
    percentile_interval,
    replicate_tprs,
)
from miascale.errors import MiascaleError

__all__ = [
    "Evaluation",
    "RocCurve",
    "TprAtFpr",
    "auc",
    "best_balanced_accuracy",
    "bootstrap_tprs",
    "clopper_pearson",
    "roc_curve",
    "tpr_at_fpr",
]

# Slack for turning the FPR level t into an integer budget of false positives (see module doc).
_REL_SLACK = 1e-12
_ABS_SLACK = 1e-9


# --------------------------------------------------------------------------------------------
# Clopper-Pearson
# --------------------------------------------------------------------------------------------


def cp_low(k: np.ndarray, n: np.ndarray, confidence: float) -> np.ndarray:
    """Lower end of the two-sided Clopper-Pearson interval, for float counts already validated
    (0 <= k <= n, n >= 1; :func:`clopper_pearson` checks them): 0 at ``k == 0``."""
    with np.errstate(invalid="ignore", divide="ignore"):  # Beta(0, .) is undefined: set below
        low = stats.beta.ppf((1.0 - confidence) / 2, np.maximum(k, 1.0), n - k + 1.0)
    return np.where(k == 0, 0.0, low)


def cp_high(k: np.ndarray, n: np.ndarray, confidence: float) -> np.ndarray:
    """Upper end of the two-sided Clopper-Pearson interval (as :func:`cp_low`): 1 at ``k == n``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        high = stats.beta.ppf(1.0 - (1.0 - confidence) / 2, k + 1.0, np.maximum(n - k, 1.0))
    return np.where(k == n, 1.0, high)


def clopper_pearson(k: Any, n: Any, confidence: float = 0.95) -> tuple[Any, Any]:
    """Exact two-sided Clopper-Pearson interval for a binomial proportion ``k / n``.

    ``k`` and ``n`` may be integers or broadcastable integer arrays. Returns ``(low, high)`` as
    plain floats for scalar input, otherwise as float arrays of the broadcast shape. ``low`` is 0
    when ``k == 0`` and ``high`` is 1 when ``k == n``.
    """
    try:
        conf = float(confidence)
    except (TypeError, ValueError):
        conf = math.nan
    if not 0.0 < conf < 1.0:
        raise MiascaleError(
            f"confidence must be a number strictly between 0 and 1, got {confidence!r}."
        )
    k_arr = np.asarray(k)
    n_arr = np.asarray(n)
    scalar = k_arr.ndim == 0 and n_arr.ndim == 0
    for name, arr in (("k", k_arr), ("n", n_arr)):
        if arr.dtype.kind not in "iub":
            if (
                arr.dtype.kind != "f"
                or not np.all(np.isfinite(arr))
                or np.any(arr != np.round(arr))
            ):
                raise MiascaleError(f"clopper_pearson: {name} must be integer counts, got {arr!r}.")
    k_arr, n_arr = np.broadcast_arrays(k_arr.astype(np.float64), n_arr.astype(np.float64))
    if np.any(n_arr < 1):
        raise MiascaleError("clopper_pearson: n (number of trials) must be at least 1.")
    if np.any(k_arr < 0) or np.any(k_arr > n_arr):
        raise MiascaleError("clopper_pearson: k (number of successes) must satisfy 0 <= k <= n.")

    low, high = cp_low(k_arr, n_arr, conf), cp_high(k_arr, n_arr, conf)
    if scalar:
        return float(low), float(high)
    return low, high


# --------------------------------------------------------------------------------------------
# Validation and the shared ROC computation
# --------------------------------------------------------------------------------------------


def _validate(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return flat float64 scores and flat bool labels, or raise MiascaleError."""
    s = np.asarray(scores)
    y = np.asarray(labels)
    if s.shape != y.shape:
        raise MiascaleError(
            f"scores and labels must have the same shape, got scores {s.shape} and labels "
            f"{y.shape}."
        )
    if s.size == 0:
        raise MiascaleError(
            "scores and labels are empty; need at least one member and one non-member."
        )
    if s.dtype.kind not in "iufb":
        raise MiascaleError(f"scores must be real numbers, got dtype {s.dtype}.")
    s = s.astype(np.float64, copy=False).ravel()
    bad = ~np.isfinite(s)
    n_bad = int(np.count_nonzero(bad))
    if n_bad:
        n_nan = int(np.count_nonzero(np.isnan(s)))
        raise MiascaleError(
            f"{n_bad} of {s.size} scores are not finite ({n_nan} NaN, {n_bad - n_nan} +/-inf). "
            "Every example needs a finite attack score; check the model outputs or drop those "
            "examples before computing metrics."
        )
    y = y.ravel()
    if y.dtype.kind == "b":
        yb = y
    elif y.dtype.kind in "iuf":
        if not np.all((y == 0) | (y == 1)):
            raise MiascaleError(
                "labels must be boolean (True = member) or 0/1; found other values."
            )
        yb = y == 1
    else:
        raise MiascaleError(f"labels must be boolean (True = member), got dtype {y.dtype}.")
    n_pos = int(np.count_nonzero(yb))
    n_neg = int(yb.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise MiascaleError(
            f"labels contain {n_pos} members and {n_neg} non-members; attack metrics need at "
            "least one of each."
        )
    return s, yb


@dataclass(frozen=True)
class _Counts:
    tp: np.ndarray  # int64, cumulative true positives per vertex, tp[0] == 0
    fp: np.ndarray  # int64, cumulative false positives per vertex, fp[0] == 0
    thresholds: np.ndarray  # float64, thresholds[0] == +inf, then distinct scores decreasing
    n_pos: int
    n_neg: int
    y_sorted: np.ndarray  # bool, labels sorted by decreasing score (stable)
    order: np.ndarray  # the sorting permutation of the flattened pairs
    ends: np.ndarray  # last sorted index of every run of tied scores (one per vertex after 0)


def _roc_counts(scores: Any, labels: Any) -> _Counts:
    s, y = _validate(scores, labels)
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    y_sorted = y[order]
    # Last index of every run of equal scores: a tie enters the curve as one vertex.
    ends = np.flatnonzero(np.diff(s_sorted) != 0)
    ends = np.append(ends, s_sorted.size - 1)
    tp_cum = np.cumsum(y_sorted, dtype=np.int64)[ends]
    fp_cum = (ends + 1).astype(np.int64) - tp_cum
    zero = np.zeros(1, dtype=np.int64)
    tp = np.concatenate([zero, tp_cum])
    fp = np.concatenate([zero, fp_cum])
    thresholds = np.concatenate([[np.inf], s_sorted[ends]])
    return _Counts(tp, fp, thresholds, int(tp[-1]), int(fp[-1]), y_sorted, order, ends)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


# --------------------------------------------------------------------------------------------
# ROC curve
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RocCurve:
    """ROC vertices, ordered by decreasing threshold; the first vertex is (0, 0) at ``+inf``.

    ``fpr[i]`` / ``tpr[i]`` are the rates when predicting *member* for ``score >=
    thresholds[i]``. The arrays are read-only.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    n_pos: int
    n_neg: int


def roc_curve(scores: Any, labels: Any) -> RocCurve:
    """All ROC vertices (one per distinct score, plus (0, 0)); see docs/design/metrics.md."""
    return Evaluation(scores, labels).roc()


# --------------------------------------------------------------------------------------------
# TPR at fixed FPR
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TprAtFpr:
    """TPR of the last ROC vertex with FPR <= ``fpr_level`` (docs/design/metrics.md).

    ``ci_low``/``ci_high`` is the reported interval, computed by ``ci_method``: ``"bootstrap"``
    (over ``n_groups`` resampling units, ``n_boot`` resamples, standard error ``se``) or
    ``"clopper-pearson"``. ``cp_low``/``cp_high`` is always Clopper-Pearson (independent pairs).
    """

    fpr_level: float
    tpr: float
    achieved_fpr: float
    threshold: float
    true_positives: int
    false_positives: int
    n_pos: int
    n_neg: int
    ci_low: float
    ci_high: float
    resolvable: bool
    ci_method: str = "clopper-pearson"
    cp_low: float = math.nan  # NaN = same as ci_low (filled in when ci_method is clopper-pearson)
    cp_high: float = math.nan
    se: float = math.nan  # bootstrap standard error of the TPR; NaN without bootstrap
    n_groups: int = 0  # resampling units of the bootstrap; 0 without groups
    n_boot: int = 0  # bootstrap resamples; 0 without bootstrap

    def __post_init__(self) -> None:
        if self.ci_method == "clopper-pearson":
            if math.isnan(self.cp_low):
                object.__setattr__(self, "cp_low", self.ci_low)
            if math.isnan(self.cp_high):
                object.__setattr__(self, "cp_high", self.ci_high)

    @property
    def advantage(self) -> float:
        """``tpr - fpr_level``: how much the attack beats random guessing at this level."""
        return self.tpr - self.fpr_level

    def to_dict(self) -> dict[str, float | int | bool | str | None]:
        """Plain Python values (``threshold`` may be ``inf``; a NaN ``se`` is None), plus
        ``advantage``."""
        return {
            "fpr_level": float(self.fpr_level),
            "tpr": float(self.tpr),
            "achieved_fpr": float(self.achieved_fpr),
            "threshold": float(self.threshold),
            "true_positives": int(self.true_positives),
            "false_positives": int(self.false_positives),
            "n_pos": int(self.n_pos),
            "n_neg": int(self.n_neg),
            "ci_low": float(self.ci_low),
            "ci_high": float(self.ci_high),
            "resolvable": bool(self.resolvable),
            "advantage": float(self.advantage),
            "ci_method": str(self.ci_method),
            "cp_low": _float_or_none(self.cp_low),
            "cp_high": _float_or_none(self.cp_high),
            "se": _float_or_none(self.se),
            "n_groups": int(self.n_groups),
            "n_boot": int(self.n_boot),
        }


def _float_or_none(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def check_fpr_levels(fpr_levels: float | Iterable[float]) -> np.ndarray:
    """FPR levels as a float64 array; each must lie in the open interval (0, 1)."""
    try:
        t = np.asarray(fpr_levels, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise MiascaleError(f"fpr_levels must be numbers, got {fpr_levels!r}.") from exc
    bad = ~((t > 0.0) & (t < 1.0))  # also catches NaN
    if np.any(bad):
        raise MiascaleError(
            f"FPR levels must lie strictly between 0 and 1, got {t[bad].tolist()}; e.g. use "
            "0.001 for TPR at 0.1% FPR."
        )
    return t


def fp_budget(t: np.ndarray, n_neg: Any) -> np.ndarray:
    """Largest integer number of false positives allowed at FPR level ``t`` (broadcasts)."""
    x = t * n_neg
    return np.floor(x * (1.0 + _REL_SLACK) + _ABS_SLACK).astype(np.int64)


def tpr_at_fpr(
    scores: Any,
    labels: Any,
    fpr_levels: float | Iterable[float],
    confidence: float = 0.95,
    *,
    groups: Any = None,
    n_boot: int = 200,
    seed: Any = 0,
) -> tuple[TprAtFpr, ...]:
    """TPR at each FPR level (one result per level, in the given order): see
    :meth:`Evaluation.tpr_at_fpr`."""
    return Evaluation(scores, labels, groups).tpr_at_fpr(
        fpr_levels, confidence, n_boot=n_boot, seed=seed
    )


def bootstrap_tprs(
    scores: Any,
    labels: Any,
    fpr_levels: float | Iterable[float],
    groups: Any,
    n_boot: int = 200,
    seed: Any = 0,
    *,
    block: int | None = None,
) -> np.ndarray:
    """The ``(n_boot, L)`` bootstrap TPRs behind :func:`tpr_at_fpr`'s interval (NaN = a
    resample without members or non-members); ``block`` = resamples per block (tests)."""
    c = _roc_counts(scores, labels)
    levels = check_fpr_levels(fpr_levels)
    n_boot = check_n_boot(n_boot)
    gid, n_groups = check_groups(groups, np.shape(scores))
    return replicate_tprs(c.y_sorted, gid[c.order], c.ends, n_groups, levels, n_boot, seed, block)


def auc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve; ties count one half (equals ``sklearn`` ``roc_auc_score``)."""
    return Evaluation(scores, labels).auc()


def best_balanced_accuracy(scores: Any, labels: Any) -> float:
    """``max over ROC vertices of (TPR + 1 - FPR) / 2``."""
    return Evaluation(scores, labels).best_balanced_accuracy()


# --------------------------------------------------------------------------------------------
# One evaluation: validate and sort once
# --------------------------------------------------------------------------------------------


class Evaluation:
    """One attack's scores and membership labels, validated and sorted once.

    ``groups`` (integers of the scores' shape) is the resampling unit of every pair — in an audit
    the pool example, shared by all K targets — used for TPR@FPR's bootstrap interval.
    """

    def __init__(self, scores: Any, labels: Any, groups: Any = None) -> None:
        self._c = _roc_counts(scores, labels)
        self._groups = None if groups is None else check_groups(groups, np.shape(scores))

    @property
    def n_pos(self) -> int:
        return self._c.n_pos

    @property
    def n_neg(self) -> int:
        return self._c.n_neg

    def roc(self) -> RocCurve:
        c = self._c
        return RocCurve(
            fpr=_readonly(c.fp / c.n_neg),
            tpr=_readonly(c.tp / c.n_pos),
            thresholds=_readonly(c.thresholds.copy()),
            n_pos=c.n_pos,
            n_neg=c.n_neg,
        )

    def tpr_at_fpr(
        self,
        fpr_levels: float | Iterable[float],
        confidence: float = 0.95,
        *,
        n_boot: int = 200,
        seed: Any = 0,
    ) -> tuple[TprAtFpr, ...]:
        """TPR at each FPR level with its interval: the bootstrap over ``groups`` when given and
        ``n_boot > 0`` (``numpy.random.default_rng(seed)``), otherwise Clopper-Pearson."""
        c = self._c
        levels = check_fpr_levels(fpr_levels)
        n_boot = check_n_boot(n_boot)
        gid, n_groups = (None, 0) if self._groups is None else self._groups
        if levels.size == 0:
            return ()
        budget = fp_budget(levels, c.n_neg)
        # fp is non-decreasing and fp[0] == 0, so the index is always >= 0; tp is
        # non-decreasing, so the last admissible vertex has the largest TPR.
        idx = np.searchsorted(c.fp, budget, side="right") - 1
        tp = c.tp[idx]
        fp = c.fp[idx]
        cp_low, cp_high = clopper_pearson(tp, np.full_like(tp, c.n_pos), confidence)
        low, high, se = cp_low, cp_high, np.full(levels.size, np.nan)
        boot = gid is not None and n_boot > 0
        if boot:
            reps = replicate_tprs(c.y_sorted, gid[c.order], c.ends, n_groups, levels, n_boot, seed)
            low, high, se = percentile_interval(reps, confidence)
        return tuple(
            TprAtFpr(
                fpr_level=float(levels[i]),
                tpr=float(tp[i] / c.n_pos),
                achieved_fpr=float(fp[i] / c.n_neg),
                threshold=float(c.thresholds[idx[i]]),
                true_positives=int(tp[i]),
                false_positives=int(fp[i]),
                n_pos=c.n_pos,
                n_neg=c.n_neg,
                ci_low=float(low[i]),
                ci_high=float(high[i]),
                resolvable=bool(budget[i] >= 1),
                ci_method="bootstrap" if boot else "clopper-pearson",
                cp_low=float(cp_low[i]),
                cp_high=float(cp_high[i]),
                # math.nan itself (one object) keeps results without an se equal under ==
                se=float(se[i]) if np.isfinite(se[i]) else math.nan,
                n_groups=n_groups,
                n_boot=n_boot if boot else 0,
            )
            for i in range(levels.size)
        )

    def auc(self) -> float:
        """Area under the ROC curve; ties count one half (the Mann-Whitney statistic)."""
        c = self._c
        # Trapezoid on integer counts: sum dFP * (TP_prev + TP) / 2, exact in float64 for the
        # sizes we handle (products stay far below 2**53 per term).
        d_fp = np.diff(c.fp).astype(np.float64)
        tp_mid = (c.tp[:-1] + c.tp[1:]).astype(np.float64)
        return float(np.dot(d_fp, tp_mid) / 2.0 / (float(c.n_pos) * float(c.n_neg)))

    def best_balanced_accuracy(self) -> float:
        """``max over ROC vertices of (TPR + 1 - FPR) / 2``."""
        c = self._c
        return float(np.max((c.tp / c.n_pos + 1.0 - c.fp / c.n_neg) / 2.0))

    def empirical_epsilon(self, delta: float = 0.0, confidence: float = 0.95):
        """The lower bound on ε of :func:`miascale.privacy.empirical_epsilon` on this ROC."""
        from miascale.privacy import epsilon_from_roc

        return epsilon_from_roc(self.roc(), delta, confidence)
