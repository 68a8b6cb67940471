"""Seeded, class-balanced audit pools.

An audit pool holds ``2·S`` examples of each of ``C`` classes (``N = 2·C·S``). Membership plans
(:mod:`miascale.membership`) then let every model train on ``S`` examples per class, so "shots" (S)
is the number of training examples per class each model sees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from miascale.errors import MiascaleError

__all__ = ["Pool", "draw_pool"]


@dataclass(frozen=True)
class Pool:
    """A drawn audit pool.

    Attributes:
        indices: ``(N,)`` int64 positions into the dataset's train arrays, grouped by class
            (ascending remapped label) and ascending within a class.
        labels: ``(N,)`` int64 labels remapped to ``0..C-1`` (position in :attr:`classes`).
        classes: ``(C,)`` int64 original class ids, sorted ascending.
        shots: S, the number of training examples per class each model sees (pool has 2·S).
        seed: the seed the pool was drawn with.
    """

    indices: np.ndarray
    labels: np.ndarray
    classes: np.ndarray
    shots: int
    seed: int

    @property
    def n_classes(self) -> int:
        return int(self.classes.shape[0])

    @property
    def size(self) -> int:
        return int(self.indices.shape[0])

    def relabel(self, labels: np.ndarray) -> np.ndarray:
        """Original class ids → pool labels ``0..C-1``; ``-1`` for classes outside the pool."""
        y = np.asarray(labels, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.classes, y), self.n_classes - 1)
        return np.where(self.classes[pos] == y, pos, -1).astype(np.int64)


def _class_name(c: int, class_names: Sequence[str] | Mapping[int, str] | None) -> str:
    if class_names is not None:
        try:
            return f"'{class_names[c]}' (id {c})"
        except (IndexError, KeyError, TypeError):
            pass
    return f"id {c}"


def _as_int_labels(labels: np.ndarray) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.size == 0:
        raise MiascaleError(
            f"Pool labels must be a non-empty 1-D array of integer class ids, got shape "
            f"{arr.shape}. Pass the dataset's train labels as a flat integer array."
        )
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)):
            if np.all(arr == np.round(arr)):
                return arr.astype(np.int64)
        raise MiascaleError(
            f"Pool labels must be integer class ids, got dtype {arr.dtype}. Convert string or "
            "one-hot labels to integer class ids before drawing a pool."
        )
    return arr.astype(np.int64, copy=False)


def draw_pool(
    labels: np.ndarray,
    shots: int,
    n_classes: int | None = None,
    seed: int = 0,
    class_names: Sequence[str] | Mapping[int, str] | None = None,
) -> Pool:
    """Draw a class-balanced pool of ``2·shots`` examples per class.

    Args:
        labels: ``(M,)`` integer class ids of the dataset's train split.
        shots: S ≥ 1; each selected class contributes 2·S distinct examples.
        n_classes: number of classes C to use; ``None`` uses every class present. Otherwise a
            seeded random subset (2 ≤ C ≤ number of classes present).
        seed: seed for :func:`numpy.random.default_rng`; same inputs and seed ⇒ same pool.
        class_names: optional names indexed by original class id, used in error messages.

    Raises:
        MiascaleError: invalid ``shots``/``n_classes`` or a selected class that is too small.
    """
    y = _as_int_labels(labels)
    if isinstance(shots, bool) or not isinstance(shots, (int, np.integer)) or shots < 1:
        raise MiascaleError(
            f"shots must be a positive integer (training examples per class), got {shots!r}. "
            "Use shots >= 1; the pool holds 2*shots examples of each class."
        )
    shots = int(shots)
    available, counts_all = np.unique(y, return_counts=True)
    n_avail = int(available.shape[0])
    rng = np.random.default_rng(seed)

    if n_classes is None:
        classes = available
        if n_avail < 2:
            raise MiascaleError(
                f"The labels contain only {n_avail} class; a membership audit needs at least 2 "
                "classes. Check that the right label array was passed."
            )
    else:
        if (
            isinstance(n_classes, bool)
            or not isinstance(n_classes, (int, np.integer))
            or n_classes < 2
            or n_classes > n_avail
        ):
            raise MiascaleError(
                f"n_classes must be an integer between 2 and {n_avail} (the number of classes "
                f"present in the labels), got {n_classes!r}. Pass a value in that range, or "
                "omit it to use all classes."
            )
        classes = np.sort(rng.choice(available, size=int(n_classes), replace=False))
    classes = classes.astype(np.int64)

    counts = counts_all[np.searchsorted(available, classes)]
    need = 2 * shots
    too_small = counts < need
    if np.any(too_small):
        max_s = int(counts.min() // 2)
        bad = np.flatnonzero(too_small)
        listed = ", ".join(
            f"class {_class_name(int(classes[i]), class_names)} has {int(counts[i])}"
            for i in bad[:5]
        )
        more = f" (and {bad.size - 5} more)" if bad.size > 5 else ""
        hint = (
            f"The largest feasible shots for the selected classes is {max_s}; use shots <= {max_s}"
            if max_s >= 1
            else "No shots value is feasible with these classes; choose other classes"
        )
        raise MiascaleError(
            f"shots={shots} needs {need} examples per class, but {listed} example(s){more}. "
            f"{hint}, or reduce n_classes so that small classes can be left out."
        )

    # Vectorised per-class sampling without replacement: shuffle the candidate examples, group
    # them by class with a stable sort (keeps the random order within a class), keep the first
    # 2·S of each class.
    cand = np.flatnonzero(np.isin(y, classes))
    cand = cand[rng.permutation(cand.size)]
    cls = np.searchsorted(classes, y[cand])
    order = np.argsort(cls, kind="stable")
    cand, cls = cand[order], cls[order]
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.arange(cand.size) - starts[cls]
    keep = rank < need
    cand, cls = cand[keep], cls[keep]
    order = np.lexsort((cand, cls))
    indices = cand[order].astype(np.int64)
    remapped = cls[order].astype(np.int64)
    return Pool(indices=indices, labels=remapped, classes=classes, shots=shots, seed=int(seed))
