"""Bootstrap interval for TPR at fixed FPR that resamples groups of pairs (pool examples).

One pool example appears under all K targets, so its pairs are not independent: each resample
draws the units (normally pool examples) with replacement and weights all their pairs by the
draw counts (:func:`bootstrap_counts`). :func:`replicate_tprs` computes the weighted TPR@FPR of
every resample from sparse (vertex × unit) counts, and :func:`percentile_interval` gives the
interval and SE, for :func:`miascale.metrics.tpr_at_fpr` with ``groups``.

Contract (the definition, the cost): docs/design/bootstrap.md.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
from scipy import sparse

from miascale.errors import MiascaleError

__all__ = [
    "bootstrap_counts",
    "check_groups",
    "check_n_boot",
    "percentile_interval",
    "replicate_tprs",
]

_BLOCK_BYTES = 160 * 2**20  # working memory of one block of resamples, roughly
# First pass over the vertices up to this multiple of the largest level's unweighted FP budget
# (plus _PREFIX_MIN false positives); resamples that need more are redone on all vertices.
_PREFIX_FACTOR = 2.0
_PREFIX_MIN = 64


def check_n_boot(n_boot: Any) -> int:
    """``n_boot`` as an int; it must be an integer >= 0 (0 = no bootstrap)."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 0:
        raise MiascaleError(
            f"n_boot (the number of bootstrap resamples) must be an integer >= 0, got "
            f"{n_boot!r}; use e.g. 200 for a 95% interval, or 0 to report only the "
            "Clopper-Pearson interval."
        )
    return int(n_boot)


def check_groups(groups: Any, shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
    """Flat unit index (0..G-1, in the order of the sorted distinct values) of each pair, and G.

    ``groups`` must be an integer array with the shape of the scores.
    """
    g = np.asarray(groups)
    if g.shape != tuple(shape):
        raise MiascaleError(
            f"groups must have the same shape as scores, got groups {g.shape} and scores "
            f"{tuple(shape)}. Pass the resampling unit of every pair, e.g. the pool example "
            "index np.broadcast_to(np.arange(N), (K, N)) for (K, N) scores."
        )
    if g.dtype.kind not in "iu":
        raise MiascaleError(
            f"groups must be an integer array (the pool example index of each pair), got dtype "
            f"{g.dtype}."
        )
    uniq, gid = np.unique(g.ravel(), return_inverse=True)
    return gid.astype(np.int64, copy=False).ravel(), int(uniq.size)


def _rng(seed: Any) -> np.random.Generator:
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise MiascaleError(
            f"bootstrap seed must be a non-negative integer (or a SeedSequence), got {seed!r}."
        ) from exc


def _count_blocks(n_groups: int, n_boot: int, seed: Any, block: int) -> Iterator[np.ndarray]:
    """Resample counts, ``block`` resamples (rows) at a time, G columns, from one generator.

    Each resample draws G unit indices uniformly with replacement (``rng.integers``) and counts
    them, so a row is multinomial(G, 1/G). Drawing in blocks gives the same numbers as drawing
    all ``n_boot`` rows at once.
    """
    rng = _rng(seed)
    for start in range(0, n_boot, block):
        b = min(block, n_boot - start)
        draws = rng.integers(n_groups, size=(b, n_groups))
        draws += np.arange(b, dtype=draws.dtype)[:, None] * n_groups
        yield np.bincount(draws.ravel(), minlength=b * n_groups).reshape(b, n_groups)


def bootstrap_counts(n_groups: int, n_boot: int, seed: Any = 0) -> np.ndarray:
    """All ``(n_boot, n_groups)`` resample counts that the bootstrap with ``seed`` uses."""
    return next(_count_blocks(n_groups, n_boot, seed, max(n_boot, 1)))


def _tp_at_budget(
    a_pos: sparse.csr_matrix, a_neg: sparse.csr_matrix, ct: np.ndarray, budget: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted TP of the last vertex with weighted FP <= budget, for the vertices (rows) of
    ``a_pos``/``a_neg``; also the weighted FP of the last of those vertices.

    ``ct`` (G, B) holds the counts of B resamples and ``budget`` (B, L) their FP budgets.
    """
    b = ct.shape[1]
    n_vert = a_pos.shape[0]
    tp = np.zeros((b, n_vert + 1), dtype=np.int64)  # vertex 0 is (0, 0)
    fp = np.zeros((b, n_vert + 1), dtype=np.int64)
    np.cumsum((a_pos @ ct).T, axis=1, out=tp[:, 1:])
    np.cumsum((a_neg @ ct).T, axis=1, out=fp[:, 1:])
    fp_end = fp[:, -1].copy()
    # One searchsorted for all rows: shift row r by r * (max budget + 1) so that the flattened
    # FP counts stay non-decreasing and every query lands inside its own row.
    shift = (np.arange(b, dtype=np.int64) * (int(max(budget.max(), fp_end.max())) + 1))[:, None]
    fp += shift
    idx = np.searchsorted(fp.ravel(), (budget + shift).ravel(), side="right") - 1
    return tp.ravel()[idx].reshape(budget.shape), fp_end


def replicate_tprs(
    y_sorted: np.ndarray,
    gid_sorted: np.ndarray,
    ends: np.ndarray,
    n_groups: int,
    levels: np.ndarray,
    n_boot: int,
    seed: Any = 0,
    block: int | None = None,
) -> np.ndarray:
    """``(n_boot, L)`` bootstrap TPRs from pairs already sorted by decreasing score.

    ``y_sorted`` are the labels and ``gid_sorted`` the unit index (0..G-1) of the sorted pairs,
    ``ends`` the last index of every run of tied scores (as in :mod:`miascale.metrics`).
    ``block`` (resamples per block) defaults to what fits in ``_BLOCK_BYTES``.

    Only the top of the ROC matters for small levels, so each block first uses the vertices up to
    about ``_PREFIX_FACTOR`` times the largest level's unweighted FP budget; a resample whose
    budget is not exceeded within them is redone on all vertices, so the result is exact.
    """
    from miascale.metrics import fp_budget

    n_vert = ends.size
    run = np.repeat(np.arange(n_vert), np.diff(ends, prepend=-1))  # vertex of every sorted pair

    def counts_matrix(mask: np.ndarray) -> sparse.csr_matrix:
        ones = np.ones(int(np.count_nonzero(mask)), dtype=np.int64)
        m = sparse.coo_matrix((ones, (run[mask], gid_sorted[mask])), shape=(n_vert, n_groups))
        return m.tocsr()  # duplicates summed: pairs of unit g in vertex v

    a_pos, a_neg = counts_matrix(y_sorted), counts_matrix(~y_sorted)
    pos_per_unit = np.asarray(a_pos.sum(axis=0)).ravel()
    neg_per_unit = np.asarray(a_neg.sum(axis=0)).ravel()
    fp_unweighted = np.cumsum(~y_sorted, dtype=np.int64)[ends]
    reach = _PREFIX_FACTOR * float(levels.max(initial=0.0)) * fp_unweighted[-1] + _PREFIX_MIN
    n_pre = min(n_vert, int(np.searchsorted(fp_unweighted, reach, side="right")) + 1)
    pre_pos, pre_neg = a_pos[:n_pre], a_neg[:n_pre]
    if block is None:
        block = _BLOCK_BYTES // (40 * (n_vert + 1) + 16 * n_groups)
    block = int(min(max(block, 1), max(n_boot, 1)))
    out = np.empty((n_boot, levels.size))
    done = 0
    for c in _count_blocks(n_groups, n_boot, seed, block):
        ct = np.ascontiguousarray(c.T)
        n_pos, n_neg = c @ pos_per_unit, c @ neg_per_unit
        budget = np.minimum(fp_budget(levels[None, :], n_neg[:, None]), n_neg[:, None])
        tp_b, fp_end = _tp_at_budget(pre_pos, pre_neg, ct, budget)
        if n_pre < n_vert:
            redo = fp_end <= budget.max(axis=1)  # the crossing may lie beyond the prefix
            if redo.any():
                tp_b[redo] = _tp_at_budget(a_pos, a_neg, ct[:, redo], budget[redo])[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            tpr = tp_b / n_pos[:, None]
        tpr[(n_pos == 0) | (n_neg == 0)] = np.nan
        out[done : done + c.shape[0]] = tpr
        done += c.shape[0]
    return out


def percentile_interval(
    reps: np.ndarray, confidence: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of ``reps`` (resamples × levels): percentile ``(low, high)`` and ``se``.

    NaN resamples are left out; a column without any finite resample gives NaN.
    """
    alpha = 1.0 - float(confidence)
    if not 0.0 < alpha < 1.0 or math.isnan(alpha):
        raise MiascaleError(
            f"confidence must be a number strictly between 0 and 1, got {confidence!r}."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns, fewer than 2 values
        low, high = np.nanquantile(reps, [alpha / 2, 1 - alpha / 2], axis=0)
        se = np.nanstd(reps, axis=0, ddof=1)
    return low, high, se
