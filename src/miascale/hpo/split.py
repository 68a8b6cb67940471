"""The seeded, stratified 70/30 split of one target-like training set: :func:`hpo_split`."""

from __future__ import annotations

import math

import numpy as np

from miascale.errors import MiascaleError
from miascale.hpo.space import _is_int, _is_real

DEFAULT_VAL_FRACTION = 0.3
"""Share of each class of the HPO training set held out for validation."""


def _check_split_args(labels: np.ndarray, shots: object, seed: object, val_fraction: object) -> int:
    """Validate the arguments of :func:`hpo_split`; returns ``shots`` as an int."""
    y = labels
    if y.ndim != 1 or y.size == 0 or not np.issubdtype(y.dtype, np.integer):
        raise MiascaleError(
            f"hpo_split needs a non-empty 1-D integer label array (the pool's labels), got shape "
            f"{y.shape} and dtype {y.dtype}. Pass Pool.labels."
        )
    if not _is_int(shots) or int(shots) < 1:
        raise MiascaleError(f"shots must be a positive integer, got {shots!r}.")
    if not (_is_real(val_fraction) and 0.0 < float(val_fraction) < 1.0):
        raise MiascaleError(
            f"val_fraction must lie strictly between 0 and 1, got {val_fraction!r}."
        )
    if not _is_int(seed) or int(seed) < 0:
        raise MiascaleError(f"seed must be an integer >= 0, got {seed!r}.")
    return int(shots)


def _check_class_sizes(classes: np.ndarray, counts: np.ndarray, shots: int) -> None:
    """Every class needs S examples (S = 1: 2, one more to validate on)."""
    need = 2 if shots == 1 else shots
    small = counts < need
    if np.any(small):
        bad = ", ".join(
            f"class {int(c)} has {int(n)}"
            for c, n in zip(classes[small], counts[small], strict=True)
        )
        raise MiascaleError(
            f"HPO with shots={shots} draws {shots} training example(s) per class"
            + (" and validates on one more" if shots == 1 else "")
            + f", but {bad}. Pass the labels of a pool drawn with the same shots "
            "(miascale.pool.draw_pool gives 2*shots per class)."
        )


def _class_ranks(inv: np.ndarray, counts: np.ndarray, seed: int) -> np.ndarray:
    """Random rank of every example within its class (as the balanced plan draws a half)."""
    rng = np.random.default_rng(seed)
    n = inv.size
    order = np.lexsort((rng.random(n), inv))
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[inv[order]]
    return rank


def hpo_split(
    labels: np.ndarray,
    shots: int,
    seed: int,
    val_fraction: float = DEFAULT_VAL_FRACTION,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one target-like training set from the pool and split it for validation.

    From each class of the pool (``labels``: the pool's labels, normally 2·S per class) a
    random ``S = shots`` examples are drawn -- the training set of one target model under the
    balanced membership plan -- and split per class (stratified): ``n_val = round(val_fraction
    · S)`` of each class (half up, clamped to ``[1, S-1]``) for validation, the other
    ``S - n_val`` for training. With the default 0.3 that is exactly 70/30 when ``0.3·S`` is
    an integer (S = 10: 7/3 per class), and S = 2 gives 1/1.

    S = 1 fallback: a one-example-per-class training set cannot be split without leaving a
    class untrained, so the model trains on the whole drawn training set (1 per class) and is
    validated on one further pool example of each class -- the complementary half of the
    pool, i.e. examples that this target-like model does not train on. Needs at least 2
    examples per class (a pool always has them).

    Args:
        labels: ``(N,)`` integer labels of the pool.
        shots: S >= 1, training examples per class of one model.
        seed: seed for :func:`numpy.random.default_rng`.
        val_fraction: share held out per class, strictly between 0 and 1.

    Returns:
        ``(train_idx, val_idx)``: sorted int64 positions into ``labels``, disjoint.

    Raises:
        MiascaleError: bad arguments, or a class with fewer than S (S = 1: 2) examples.
    """
    y = np.asarray(labels)
    shots = _check_split_args(y, shots, seed, val_fraction)
    classes, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    _check_class_sizes(classes, counts, shots)
    rank = _class_ranks(inv, counts, int(seed))
    if shots == 1:
        train = rank == 0
        val = rank == 1
    else:
        n_val = min(max(math.floor(float(val_fraction) * shots + 0.5), 1), shots - 1)
        train = rank < shots - n_val
        val = (rank >= shots - n_val) & (rank < shots)
    return np.flatnonzero(train).astype(np.int64), np.flatnonzero(val).astype(np.int64)
