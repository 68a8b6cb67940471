"""Membership plans: which pool examples each of the K models trains on.

Contract: a plan is a ``(K, N)`` bool ``in_mask``. :func:`complement_partners` finds, exactly,
the model trained on the complement of each model's set (its *complementary partner*, DESIGN §3:
the balanced design pairs models ``2j``/``2j+1``); the attacks leave a target's partner out of its
shadow models and cross-fitting keeps partners on the same side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from miascale.errors import MiascaleError

__all__ = [
    "DESIGNS",
    "MembershipPlan",
    "balanced_plan",
    "bernoulli_plan",
    "complement_partners",
    "make_plan",
]

DESIGNS = ("balanced", "bernoulli")


@dataclass(frozen=True)
class MembershipPlan:
    """A membership plan.

    Attributes:
        in_mask: ``(K, N)`` bool; ``in_mask[k, n]`` is True when model k trains on pool example n.
        design: the design name ("balanced" or "bernoulli").
        seed: the seed the plan was drawn with.
    """

    in_mask: np.ndarray
    design: str
    seed: int

    @property
    def n_models(self) -> int:
        return int(self.in_mask.shape[0])

    @property
    def n_examples(self) -> int:
        return int(self.in_mask.shape[1])

    @property
    def partners(self) -> np.ndarray:
        """``(K,)`` int64 complementary partner of each model, −1 if none (see
        :func:`complement_partners`)."""
        return complement_partners(self.in_mask)


def complement_partners(in_mask: np.ndarray) -> np.ndarray:
    """The complementary partner of every model: ``j ≠ k`` with ``in_mask[j] == ~in_mask[k]``.

    Exact (rows are bit-packed and compared byte for byte, no hashing), O(K·N/8) memory beyond the
    mask. When several models share a membership set (a duplicated plan), the i-th of them in index
    order is matched with the i-th model of the complementary set, so the matching is one-to-one
    and symmetric (``partners[partners[k]] == k``); models left over get −1.

    Args:
        in_mask: ``(K, N)`` bool (or 0/1 integer) membership, N ≥ 1.

    Returns:
        ``(K,)`` int64, the partner's model index or −1 when model k has none.
    """
    mask = np.asarray(in_mask)
    if mask.ndim != 2 or mask.shape[0] < 1 or mask.shape[1] < 1:
        raise MiascaleError(
            f"complement_partners needs a non-empty 2-D (models, examples) membership mask, got "
            f"shape {mask.shape}. Pass MembershipPlan.in_mask."
        )
    if mask.dtype != np.bool_:
        if not np.issubdtype(mask.dtype, np.integer) or not np.all((mask == 0) | (mask == 1)):
            raise MiascaleError(
                f"in_mask must be boolean (or 0/1 integers), got dtype {mask.dtype}. Use "
                "MembershipPlan.in_mask."
            )
        mask = mask.astype(bool)
    k_models, n = mask.shape
    packed = np.packbits(mask, axis=1)  # (K, ⌈N/8⌉), zero padding bits at the end of each row
    comp = ~packed
    pad = (-n) % 8
    if pad:
        comp[:, -1] &= np.uint8((0xFF << pad) & 0xFF)  # restore the zero padding bits
    _, ids = np.unique(np.concatenate([packed, comp]), axis=0, return_inverse=True)
    ids = ids.reshape(-1).astype(np.int64)
    row_id, comp_id = ids[:k_models], ids[k_models:]  # comp_id[k] ≠ row_id[k] since N ≥ 1
    order = np.argsort(row_id, kind="stable")  # models grouped by membership set, index order
    counts = np.bincount(row_id, minlength=int(ids.max()) + 1)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.empty(k_models, dtype=np.int64)
    rank[order] = np.arange(k_models) - starts[row_id[order]]
    ok = rank < counts[comp_id]
    return np.where(ok, order[np.where(ok, starts[comp_id] + rank, 0)], -1).astype(np.int64)


def _check_n_models(n_models: int) -> int:
    if isinstance(n_models, bool) or not isinstance(n_models, (int, np.integer)) or n_models < 2:
        raise MiascaleError(
            f"n_models must be an integer >= 2, got {n_models!r}: every model is audited as a "
            "target against the other models as shadows, so at least one shadow is needed "
            "(LiRA itself needs at least 3 models; 16 or more is recommended)."
        )
    return int(n_models)


def balanced_plan(labels: np.ndarray, n_models: int, seed: int) -> MembershipPlan:
    """Class-stratified, balanced plan.

    Every model trains on exactly half of each class's pool examples. Models come in
    complementary pairs (model 2j gets a random half of each class, model 2j+1 the complement),
    so with an even K every example is IN for exactly K/2 models. An odd last model gets its own
    random stratified half.

    Args:
        labels: ``(N,)`` integer pool labels; every class must have an even count.
        n_models: K ≥ 2.
        seed: seed for :func:`numpy.random.default_rng`.
    """
    k = _check_n_models(n_models)
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0 or not np.issubdtype(y.dtype, np.integer):
        raise MiascaleError(
            f"balanced_plan needs a non-empty 1-D integer label array (the pool's labels), got "
            f"shape {y.shape} and dtype {y.dtype}. Pass Pool.labels."
        )
    classes, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    odd = counts % 2 == 1
    if np.any(odd):
        bad = ", ".join(
            f"class {int(c)} has {int(n)}" for c, n in zip(classes[odd], counts[odd], strict=True)
        )
        raise MiascaleError(
            f"A balanced membership plan splits every class into two equal halves, but {bad} "
            "example(s) (an odd count). Draw the pool with miascale.pool.draw_pool, which takes "
            "2*shots examples per class, or use the 'bernoulli' design."
        )
    rng = np.random.default_rng(seed)
    n_pairs = (k + 1) // 2
    n = y.size
    # Random order within each class: sort by (class, random key) per pair, vectorised over pairs.
    keys = rng.random((n_pairs, n))
    order = np.lexsort((keys, np.broadcast_to(inv, (n_pairs, n))), axis=-1)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    sorted_cls = inv[order]  # (P, N) class of the example at each sorted position
    rank_sorted = np.arange(n)[None, :] - starts[sorted_cls]
    first_half_sorted = rank_sorted < (counts[sorted_cls] // 2)
    half = np.empty((n_pairs, n), dtype=bool)
    np.put_along_axis(half, order, first_half_sorted, axis=-1)
    in_mask = np.empty((2 * n_pairs, n), dtype=bool)
    in_mask[0::2] = half
    in_mask[1::2] = ~half
    return MembershipPlan(in_mask=in_mask[:k].copy(), design="balanced", seed=int(seed))


def bernoulli_plan(n_examples: int, n_models: int, seed: int) -> MembershipPlan:
    """Independent membership: each (model, example) is IN with probability ½."""
    k = _check_n_models(n_models)
    if (
        isinstance(n_examples, bool)
        or not isinstance(n_examples, (int, np.integer))
        or (n_examples < 1)
    ):
        raise MiascaleError(
            f"n_examples must be a positive integer (the pool size), got {n_examples!r}."
        )
    rng = np.random.default_rng(seed)
    in_mask = rng.random((k, int(n_examples))) < 0.5
    return MembershipPlan(in_mask=in_mask, design="bernoulli", seed=int(seed))


def make_plan(design: str, labels: np.ndarray, n_models: int, seed: int) -> MembershipPlan:
    """Build a plan by design name: "balanced" or "bernoulli"."""
    if design == "balanced":
        return balanced_plan(labels, n_models, seed)
    if design == "bernoulli":
        return bernoulli_plan(int(np.asarray(labels).shape[0]), n_models, seed)
    raise MiascaleError(
        f"Unknown membership design {design!r}. Valid designs are: {', '.join(DESIGNS)} "
        "('balanced' is class-stratified with every example IN for half the models)."
    )
