"""Membership plans: which pool examples each of the K models trains on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from miascale.errors import MiascaleError

__all__ = ["DESIGNS", "MembershipPlan", "balanced_plan", "bernoulli_plan", "make_plan"]

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
