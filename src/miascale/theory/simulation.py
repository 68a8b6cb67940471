"""The simulation: K = M + 1 models of the simplified model, attacked with the product's LiRA.

Two population modes, ``fresh`` (matches the closed forms) and ``pool`` (a real audit); their
semantics and seeding are in docs/theory.md §3 and docs/design/theory.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from miascale.attacks.lira import lira_scores
from miascale.errors import MiascaleError
from miascale.membership import make_plan
from miascale.metrics import TprAtFpr, check_fpr_levels, tpr_at_fpr
from miascale.theory._numerics import _clean
from miascale.theory.model import HEADS, POPULATIONS, FixedExample, class_means

#: (stats (K, N), in_mask (K, N), closed-form fresh δ (N,)) of one simulated block.
Block = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class SimulationPoint:
    """The product's LiRA on simulated scores at one S and population mode.

    ``metrics``: one :class:`TprAtFpr` per FPR level, pooled over all (target, example) pairs.
    ``separation_ratio``: median over examples of the measured ``(mean_IN − mean_OUT)/sd_OUT`` of
    the score across models, divided by the closed-form fresh δ of the same example — ≈ 1 for
    ``fresh`` and ≈ √2 for ``pool`` at large S.
    """

    shots: int
    population: str
    example: str
    n_models: int
    n_targets: int
    metrics: tuple[TprAtFpr, ...]
    separation_ratio: float

    def to_dict(self) -> dict:
        return {
            "shots": self.shots,
            "population": self.population,
            "example": self.example,
            "n_models": self.n_models,
            "n_targets": self.n_targets,
            "separation_ratio": _clean(self.separation_ratio),
            "metrics": [_metric_dict(m) for m in self.metrics],
        }


def _metric_dict(m: TprAtFpr) -> dict:
    d = m.to_dict()
    d.pop("threshold", None)  # may be inf; not needed here
    return d


def _stats_from_logits(
    own: np.ndarray, others: np.ndarray | None, head: str, logit_scale: float
) -> np.ndarray:
    """LiRA statistic from the true-class score ``own`` (K, N) and other classes (K, N, C−1)."""
    if head == "linear":
        return own
    from scipy.special import logsumexp

    return logit_scale * own - logsumexp(logit_scale * others, axis=-1)


def _measured_separation(stats: np.ndarray, in_mask: np.ndarray) -> np.ndarray:
    """Per column ``(mean_IN − mean_OUT)/sd_OUT`` of the statistic across models."""
    m = in_mask.astype(np.float64)
    n_in = m.sum(0)
    n_out = (1 - m).sum(0)
    mu_in = (stats * m).sum(0) / n_in
    mu_out = (stats * (1 - m)).sum(0) / n_out
    var_out = (((stats - mu_out) ** 2) * (1 - m)).sum(0) / np.maximum(n_out - 1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (mu_in - mu_out) / np.sqrt(var_out)


def _attack(stats: np.ndarray, in_mask: np.ndarray, fpr: np.ndarray) -> tuple[TprAtFpr, ...]:
    """Online LiRA with the audit defaults, then TPR@FPR pooled over all (model, column) pairs."""
    res = lira_scores(stats, in_mask, online=True, variance="per-example", location="mean")
    if res.n_unscored:
        raise MiascaleError(f"{res.n_unscored} LiRA scores are undefined; use more models.")
    return tpr_at_fpr(res.scores, in_mask, fpr)


def _point(
    block: Block, shots: int, population: str, example: str, levels: np.ndarray
) -> SimulationPoint:
    """Attack one simulated block and measure its separation ratio against the fresh δ."""
    stats, mask, delta = block
    metrics = _attack(stats, mask, levels)
    ratio = np.nanmedian(_measured_separation(stats, mask) / delta) if shots > 1 else np.nan
    n_models, n_targets = mask.shape
    return SimulationPoint(
        int(shots), population, example, n_models, int(n_targets), metrics, float(ratio)
    )


def _other_classes(labels: np.ndarray, classes: int) -> np.ndarray:
    """``(N, C−1)`` indices of every class but each example's own."""
    return (labels[:, None] + np.arange(1, classes)[None, :]) % classes


def _simulate_fresh(
    x: np.ndarray,
    labels: np.ndarray,
    means: np.ndarray,
    sigma: float,
    shots: int,
    n_models: int,
    rng: np.random.Generator,
    head: str,
    logit_scale: float,
) -> Block:
    """Fresh fellow examples: every model's other training examples are new draws.

    ``⟨x, sum of S−1 (or S) fresh class-mates⟩`` is sampled exactly as a 1-D Gaussian given x;
    other classes' means (softmax head) likewise.
    """
    s = float(shots)
    plan = make_plan("balanced", labels, n_models, int(rng.integers(2**31)))
    mask = plan.in_mask
    proj = x @ means.T  # (N, C): ⟨x, m_c⟩
    a = proj[np.arange(x.shape[0]), labels]
    r2 = np.einsum("nd,nd->n", x, x)
    v = sigma**2 * r2
    xi = rng.standard_normal(mask.shape)
    s_in = r2 / s + ((s - 1.0) * a + np.sqrt((s - 1.0) * v) * xi) / s
    s_out = a + np.sqrt(v / s) * xi
    own = np.where(mask, s_in, s_out)
    others = None
    if head == "softmax":
        mu = np.take_along_axis(proj, _other_classes(labels, means.shape[0]), axis=1)
        others = mu[None] + np.sqrt(v / s)[None, :, None] * rng.standard_normal(
            (n_models, *mu.shape)
        )
    delta = (r2 - a) / np.sqrt(v * s)
    return _stats_from_logits(own, others, head, logit_scale), mask, delta


def _simulate_pool(
    labels_one: np.ndarray,
    means: np.ndarray,
    sigma: float,
    shots: int,
    n_models: int,
    rng: np.random.Generator,
    head: str,
    logit_scale: float,
) -> Block:
    """One fixed pool of 2S examples per class, the balanced plan, class means by matmul."""
    c, d = means.shape
    x = means[labels_one] + sigma * rng.standard_normal((labels_one.size, d))
    plan = make_plan("balanced", labels_one, n_models, int(rng.integers(2**31)))
    mask = plan.in_mask
    w = mask.astype(np.float64) / shots  # (K, N)
    own = np.empty(mask.shape)
    mhat = np.empty((n_models, c, d))
    for k in range(c):
        idx = np.flatnonzero(labels_one == k)
        mhat[:, k] = w[:, idx] @ x[idx]  # (K, d)
        own[:, idx] = mhat[:, k] @ x[idx].T
    others = None
    if head == "softmax":
        logits = np.einsum("nd,kcd->knc", x, mhat)
        other_idx = _other_classes(labels_one, c)
        others = np.take_along_axis(
            logits, np.broadcast_to(other_idx, (n_models, *other_idx.shape)), axis=2
        )
    a = np.einsum("nd,nd->n", x, means[labels_one])
    r2 = np.einsum("nd,nd->n", x, x)
    delta = (r2 - a) / np.sqrt(sigma**2 * r2 * shots)
    return _stats_from_logits(own, others, head, logit_scale), mask, delta


def _check_simulation(population: str, head: str, classes: int) -> None:
    if population not in POPULATIONS:
        raise MiascaleError(f"Unknown population {population!r}; choose fresh or pool.")
    if head not in HEADS:
        raise MiascaleError(f"Unknown head {head!r}; choose linear or softmax.")
    if head == "softmax" and classes < 2:
        raise MiascaleError("The softmax head needs at least 2 classes.")


def _fresh_targets(
    means: np.ndarray, sigma: float, n_targets: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and vectors of the fresh-mode targets: seeded by ``seed`` only (same for every S),
    an even number per class (the balanced plan)."""
    classes, dim = means.shape
    trng = np.random.default_rng([seed, 7])
    per_class = 2 * max(1, -(-n_targets // (2 * classes)))
    labels = np.repeat(np.arange(classes), per_class).astype(np.int64)
    x = means[labels] + sigma * trng.standard_normal((labels.size, dim))
    return labels, x


def simulate(
    shots: int,
    population: str,
    *,
    dim: int,
    sigma: float,
    classes: int,
    shadow_models: int,
    fpr: Sequence[float],
    n_targets: int,
    seed: int,
    head: str = "linear",
    logit_scale: float = 1.0,
    fixed: Sequence[FixedExample] = (),
    n_fixed: int = 512,
) -> list[SimulationPoint]:
    """Simulate K = M + 1 models at one S and score them with the product's LiRA and metrics.

    ``population="fresh"``: ``n_targets`` targets drawn from the class distributions, fellow
    training examples fresh per model, plus ``n_fixed`` replicate columns of each ``fixed``
    example. ``population="pool"``: pools of 2S examples per class, as many independent pools as
    needed for ``n_targets`` targets (docs/theory.md §3).
    """
    _check_simulation(population, head, classes)
    levels = check_fpr_levels(fpr)
    means = class_means(classes, dim)
    k = shadow_models + 1
    rng = np.random.default_rng([seed, int(shots), POPULATIONS.index(population)])
    if population == "fresh":
        labels, x = _fresh_targets(means, sigma, n_targets, seed)
        blocks = [(labels, x, "average")]
        for ex in fixed:
            blocks.append((np.zeros(n_fixed, dtype=np.int64), np.tile(ex.x, (n_fixed, 1)), ex.name))
        points = []
        for lab, xx, name in blocks:
            block = _simulate_fresh(xx, lab, means, sigma, shots, k, rng, head, logit_scale)
            points.append(_point(block, shots, population, name, levels))
        return points
    reps = max(1, -(-n_targets // (2 * classes * shots)))
    labels_one = np.repeat(np.arange(classes), 2 * shots).astype(np.int64)
    parts = [
        _simulate_pool(labels_one, means, sigma, shots, k, rng, head, logit_scale)
        for _ in range(reps)
    ]
    block = (
        np.concatenate([p[0] for p in parts], axis=1),
        np.concatenate([p[1] for p in parts], axis=1),
        np.concatenate([p[2] for p in parts]),
    )
    return [_point(block, shots, population, "average", levels)]
