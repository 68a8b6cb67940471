"""RMIA (Zarifzadeh, Liu, Shokri, ICML 2024), vectorised over targets and examples.

:func:`rmia_scores` attacks every model as the target against its reference models (all others
but its complementary partner by default, DESIGN §3): an example's score is the fraction of
population points ``z`` whose likelihood ratio ``LR(x, z)`` is at least ``gamma`` (inclusive, in
log space, one ``searchsorted`` per target). Online RMIA averages ``p(x)`` over all references;
offline uses the OUT references with the coefficient ``a``, tuned per target on a shadow model
(:func:`pseudo_target`) when ``a=None``.

Contract (LR, the marginals, tuning ``a``, reference sums): docs/design/attacks.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from miascale.attacks.lira import check_signals
from miascale.errors import MiascaleError
from miascale.membership import complement_partners
from miascale.metrics import auc

__all__ = ["A_GRID", "MIN_POPULATION", "RmiaResult", "pseudo_target", "rmia_scores"]

#: Default grid for tuning the offline coefficient ``a``: 0, 0.05, …, 1.
A_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(21))
#: Fewest population points accepted: the score resolution is 1/Z.
MIN_POPULATION = 100


@dataclass(frozen=True)
class RmiaResult:
    """RMIA scores for every (target model, pool example).

    Attributes:
        scores: ``(K, N)`` float64 in [0, 1], the fraction of population points ``z`` with
            ``LR(x, z) ≥ gamma``; higher = more likely a member. NaN where offline RMIA has no
            OUT reference for the example.
        n_unscored: number of NaN scores.
        n_fallback_variance: always 0 (RMIA fits no variance; kept for a uniform interface).
        online: the setting used.
        gamma: the threshold γ on the likelihood ratio.
        a: ``(K,)`` float64, the offline coefficient used for each target (NaN when online).
        a_tuned: whether ``a`` was tuned per target on a pseudo-target (offline, ``a=None``).
        pseudo_targets: ``(K,)`` int64, the shadow model that played the target when tuning
            ``a`` for each target (−1 when not tuned).
        n_population: number of population points Z.
        exclude_partner: whether each target's complementary partner was left out of its
            references (and of the tuning of ``a``).
        n_partners_excluded: number of targets that had a partner to leave out.
    """

    scores: np.ndarray
    n_unscored: int
    n_fallback_variance: int
    online: bool
    gamma: float
    a: np.ndarray
    a_tuned: bool
    pseudo_targets: np.ndarray
    n_population: int
    exclude_partner: bool
    n_partners_excluded: int

    @property
    def n_models(self) -> int:
        return int(self.scores.shape[0])

    @property
    def n_examples(self) -> int:
        return int(self.scores.shape[1])


def pseudo_target(k: int, n_models: int) -> int:
    """Shadow model playing the target when tuning ``a`` for target ``k`` (docs/design/attacks.md).

    The nearest model outside ``k``'s complementary pair ``{2i, 2i+1}``; always within two
    indices of ``k``. Needs ``n_models ≥ 3``.
    """
    if n_models < 3 or not 0 <= k < n_models:
        raise MiascaleError(
            f"pseudo_target needs 0 <= k < n_models and n_models >= 3, got k={k}, "
            f"n_models={n_models}."
        )
    if k % 2 == 0:
        return k - 1 if k >= 2 else k + 2
    return k + 1 if k + 1 < n_models else k - 2


def _log_true_prob(phi: np.ndarray) -> np.ndarray:
    """``log p_y = log_sigmoid(φ) = −log(1 + exp(−φ))``, exact for large |φ|."""
    return -np.logaddexp(0.0, -phi)


@dataclass(frozen=True)
class _RefSums:
    """Prefix/suffix log-sums of reference probabilities over the model axis, each ``(K+1, C)``.

    ``pre[i]`` covers models ``< i`` and ``suf[i]`` models ``≥ i``; the ``cnt_*`` arrays count the
    models that enter (the weight mask ``use``).
    """

    masked: np.ndarray  # (K, C) log p where used, −inf elsewhere
    use: np.ndarray  # (K, C) bool
    pre: np.ndarray
    suf: np.ndarray
    cnt_pre: np.ndarray
    cnt_suf: np.ndarray

    @classmethod
    def build(cls, log_p: np.ndarray, use: np.ndarray) -> _RefSums:
        cols = log_p.shape[1]
        masked = np.where(use, log_p, -np.inf)
        neg = np.full((1, cols), -np.inf)
        pre = np.concatenate([neg, np.logaddexp.accumulate(masked, axis=0)])
        suf = np.concatenate([np.logaddexp.accumulate(masked[::-1], axis=0)[::-1], neg])
        zero = np.zeros((1, cols), dtype=np.int64)
        cnt = use.astype(np.int64)
        cnt_pre = np.concatenate([zero, np.cumsum(cnt, axis=0)])
        cnt_suf = np.concatenate([np.cumsum(cnt[::-1], axis=0)[::-1], zero])
        return cls(masked, use, pre, suf, cnt_pre, cnt_suf)

    def log_mean_excluding(self, excl: np.ndarray) -> np.ndarray:
        """Log of the mean used probability over the models (positions) not in ``excl``.

        ``excl``: ``(T, m)`` int positions per row, repeats allowed. The sum is the prefix before
        the smallest and the suffix after the largest excluded position, plus the non-excluded
        models in between added one at a time (every caller's span is at most 3 positions). Returns
        ``(T, C)``; NaN where no model is used.
        """
        lo, hi = excl.min(axis=1), excl.max(axis=1)
        log_sum = np.logaddexp(self.pre[lo], self.suf[hi + 1])
        count = self.cnt_pre[lo] + self.cnt_suf[hi + 1]
        for d in range(1, int((hi - lo).max(initial=0))):
            gap = (lo + d < hi) & ~np.any(excl == (lo + d)[:, None], axis=1)
            if np.any(gap):
                mid = np.minimum(lo + d, self.masked.shape[0] - 1)
                log_sum = np.where(gap[:, None], np.logaddexp(log_sum, self.masked[mid]), log_sum)
                count = count + np.where(gap[:, None], self.use[mid], False)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(count > 0, log_sum - np.log(np.maximum(count, 1)), np.nan)


def _pair_order(partners: np.ndarray) -> np.ndarray:
    """Model order with complementary partners adjacent: each pair (by its lower index), then the
    unpaired models in index order. The identity for balanced and Bernoulli plans."""
    idx = np.arange(partners.size)
    first = idx[partners > idx]
    pairs = np.stack([first, partners[first]], axis=1).reshape(-1)
    return np.concatenate([pairs, idx[partners < 0]]).astype(np.int64)


def _n_left(excl: np.ndarray, k_models: int) -> np.ndarray:
    """Per row of ``excl`` (positions, repeats allowed): the number of models not excluded."""
    srt = np.sort(excl, axis=1)
    return k_models - 1 - np.count_nonzero(np.diff(srt, axis=1), axis=1)


def _no_reference_error(k: int, what: str) -> MiascaleError:
    return MiascaleError(
        f"RMIA {what} for target {k} leaves no reference model: the target, its complementary "
        "partner (never a reference, DESIGN §3) and any pseudo-target are all the models there "
        "are. Train more models, pass exclude_partner=False, or (offline) pass a explicitly."
    )


def _offline_log_marginal(log_mean_out: np.ndarray, a: Any) -> np.ndarray:
    """``log(½·((1 + a)·p_OUT + (1 − a)))``; ``a`` scalar or broadcastable array in [0, 1]."""
    a = np.asarray(a, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # a = 1; NaN (no OUT reference)
        return math.log(0.5) + np.logaddexp(np.log1p(a) + log_mean_out, np.log1p(-a))


def _fraction_at_most(log_ratio: np.ndarray, n_pool: int, log_gamma: float) -> np.ndarray:
    """Per row: fraction of population ratios ``r_z ≤ r_x − log γ`` for each pool ratio ``r_x``.

    ``log_ratio``: ``(T, N + Z)``, pool columns first. NaN pool ratios give NaN.
    """
    pop = np.sort(log_ratio[:, n_pool:], axis=1)
    n_pop = pop.shape[1]
    x = log_ratio[:, :n_pool]
    thresh = x - log_gamma  # exact for γ = 1 (log γ = 0)
    counts = np.empty(x.shape, dtype=np.float64)
    for t in range(x.shape[0]):
        counts[t] = np.searchsorted(pop[t], thresh[t], side="right")
    return np.where(np.isnan(x), np.nan, counts / n_pop)


def _check_unit_interval(value: Any, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise MiascaleError(f"{name} must be a number in [0, 1], got {value!r}.")
    v = float(value)
    if not 0.0 <= v <= 1.0:  # also rejects NaN
        raise MiascaleError(
            f"{name} must lie in [0, 1] (it mixes p_OUT(x) with 1 to approximate p(x); 0 uses "
            f"½·(p_OUT + 1), 1 uses p_OUT alone), got {value!r}."
        )
    return v


def _validate(
    stats: Any,
    in_mask: Any,
    population_stats: Any,
    online: Any,
    gamma: Any,
    a: Any,
    a_grid: Any,
    exclude_partner: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float | None, np.ndarray]:
    if not isinstance(online, (bool, np.bool_)):
        raise MiascaleError(f"online must be True or False, got {online!r}.")
    if not isinstance(exclude_partner, (bool, np.bool_)):
        raise MiascaleError(f"exclude_partner must be True or False, got {exclude_partner!r}.")
    if isinstance(gamma, (bool, np.bool_)) or not isinstance(gamma, (int, float, np.number)):
        raise MiascaleError(f"RMIA gamma must be a positive number, got {gamma!r}.")
    g = float(gamma)
    if not (math.isfinite(g) and g > 0.0):
        raise MiascaleError(
            f"RMIA gamma must be a finite number > 0 (the likelihood-ratio threshold; 1 is the "
            f"default, the paper uses values such as 2), got {gamma!r}."
        )
    a_val = None if a is None else _check_unit_interval(a, "RMIA offline coefficient a")
    try:
        grid = np.asarray(a_grid, dtype=np.float64)
    except (TypeError, ValueError):
        raise MiascaleError(f"a_grid must be numbers in [0, 1], got {a_grid!r}.") from None
    if grid.ndim != 1 or grid.size == 0 or not np.all((grid >= 0.0) & (grid <= 1.0)):
        raise MiascaleError(
            f"a_grid must be a non-empty 1-D sequence of numbers in [0, 1], got {a_grid!r}."
        )
    s, mask = check_signals(stats, in_mask)
    if population_stats is None:
        raise MiascaleError(
            "RMIA needs population_stats: the (models, Z) statistics of Z >= "
            f"{MIN_POPULATION} population points that no model trained on (e.g. held-out test "
            "examples)."
        )
    pop = np.asarray(population_stats)
    if pop.ndim != 2 or pop.shape[0] != s.shape[0]:
        raise MiascaleError(
            f"population_stats must have shape (models, Z) = ({s.shape[0]}, Z) to match stats of "
            f"shape {s.shape}, got {pop.shape}."
        )
    if not np.issubdtype(pop.dtype, np.number) or np.issubdtype(pop.dtype, np.complexfloating):
        raise MiascaleError(f"population_stats must be real numbers, got dtype {pop.dtype}.")
    if pop.shape[1] < MIN_POPULATION:
        raise MiascaleError(
            f"RMIA needs at least {MIN_POPULATION} population points (its scores are fractions "
            f"of the population, resolution 1/Z), got Z={pop.shape[1]}. Use more held-out "
            "examples."
        )
    pop = pop.astype(np.float64)
    if not np.all(np.isfinite(pop)):
        raise MiascaleError(
            "population_stats contain NaN or infinite values; compute them with "
            "miascale.signals.lira_statistic from finite logits."
        )
    k_models = s.shape[0]
    if k_models < 2:
        raise MiascaleError(
            f"RMIA needs at least 2 models (each target needs reference models), got {k_models}."
        )
    if not online and a_val is None and k_models < 3:
        raise MiascaleError(
            f"Tuning RMIA's offline coefficient a needs at least 3 models (a shadow model plays "
            f"the target with the remaining ones as references), got {k_models}. Pass a "
            "explicitly (e.g. a=0.3) or train more models."
        )
    return s, mask, pop, g, a_val, grid


def rmia_scores(
    stats: np.ndarray,
    in_mask: np.ndarray,
    population_stats: np.ndarray | None = None,
    *,
    online: bool = True,
    gamma: float = 1.0,
    a: float | None = None,
    a_grid: Any = A_GRID,
    exclude_partner: bool = True,
) -> RmiaResult:
    """RMIA scores for every model as target, against all other models but its partner.

    Args:
        stats: ``(K, N)`` LiRA statistic φ of the audited pool examples under each model (K ≥ 2).
        in_mask: ``(K, N)`` bool membership.
        population_stats: ``(K, Z)`` φ of Z ≥ 100 population points no model trained on.
        online: online (all K−1 references) or offline (only references where x is OUT).
        gamma: threshold γ > 0 on the likelihood ratio ``LR(x, z)`` (inclusive: ``≥ γ``).
        a: offline coefficient in [0, 1]; ``None`` tunes it per target on a pseudo-target
            (needs K ≥ 3). Ignored when online.
        a_grid: candidate values of ``a`` for tuning.
        exclude_partner: leave each target's complementary partner out of its references and
            of the tuning of ``a`` (DESIGN §3, docs/design/attacks.md); False gives plain
            leave-one-out over all K−1 other models.

    Returns:
        :class:`RmiaResult`; higher scores mean "more likely member".
    """
    s, mask, pop, g, a_val, grid = _validate(
        stats, in_mask, population_stats, online, gamma, a, a_grid, exclude_partner
    )
    k_models, n_pool = s.shape
    log_p = _log_true_prob(np.concatenate([s, pop], axis=1))  # (K, N + Z)
    # Population points are OUT for every model.
    out = np.concatenate([~mask, np.ones(pop.shape, dtype=bool)], axis=1)
    log_gamma = math.log(g)
    idx = np.arange(k_models)
    # Sums run over the models in `order`; `pos[k]` is model k's position, `mate[q]` the position
    # of the partner of the model at position q (q itself when it has none).
    partners = complement_partners(mask) if exclude_partner else np.full(k_models, -1)
    order = _pair_order(partners)
    pos = np.empty(k_models, dtype=np.int64)
    pos[order] = idx
    has = partners[order] >= 0
    mate = np.where(has, pos[np.where(has, partners[order], 0)], idx)
    excl = np.stack([pos, mate[pos]], axis=1)  # (K, 2): target and its partner
    if np.any(_n_left(excl, k_models) == 0):
        raise _no_reference_error(int(np.argmin(_n_left(excl, k_models))), "scoring")
    identity = bool(np.array_equal(order, idx))
    a_used = np.full(k_models, np.nan)
    pseudo = np.full(k_models, -1, dtype=np.int64)
    a_tuned = False
    if online:
        use = np.ones(log_p.shape, dtype=bool)
        sums = _RefSums.build(log_p if identity else log_p[order], use)
        log_marg = sums.log_mean_excluding(excl)
    else:
        sums = _RefSums.build(log_p if identity else log_p[order], out if identity else out[order])
        log_mean_out = sums.log_mean_excluding(excl)
        if a_val is None:
            q = np.array([pseudo_target(int(p), k_models) for p in pos], np.int64)
            pseudo = order[q]
            # pseudo-attack on j: exclude k, partner(k), j, partner(j) (only k, j when the plan
            # has no pairs or exclude_partner is False: excl then repeats positions)
            excl_t = np.concatenate([excl, np.stack([q, mate[q]], axis=1)], axis=1)
            left = _n_left(excl_t, k_models)
            if np.any(left == 0):
                raise _no_reference_error(int(np.argmin(left)), "tuning a")
            a_used = _tune_a(sums, log_p, mask, pseudo, excl_t, n_pool, log_gamma, grid)
            a_tuned = True
        else:
            a_used = np.full(k_models, a_val)
        log_marg = _offline_log_marginal(log_mean_out, a_used[:, None])
    scores = _fraction_at_most(log_p - log_marg, n_pool, log_gamma)
    return RmiaResult(
        scores=scores,
        n_unscored=int(np.count_nonzero(np.isnan(scores))),
        n_fallback_variance=0,
        online=bool(online),
        gamma=g,
        a=a_used,
        a_tuned=a_tuned,
        pseudo_targets=pseudo,
        n_population=int(pop.shape[1]),
        exclude_partner=bool(exclude_partner),
        n_partners_excluded=int(np.count_nonzero(partners >= 0)),
    )


def _tune_a(
    sums: _RefSums,
    log_p: np.ndarray,
    mask: np.ndarray,
    pseudo: np.ndarray,
    excl: np.ndarray,
    n_pool: int,
    log_gamma: float,
    grid: np.ndarray,
) -> np.ndarray:
    """Per target k: the grid value of ``a`` maximising the AUC of offline RMIA on the pseudo-target
    ``pseudo[k]`` with references excluding the positions ``excl[k]`` (k, ``pseudo[k]`` and, with
    partner exclusion, their partners; first maximum on ties)."""
    k_models = log_p.shape[0]
    log_mean_out = sums.log_mean_excluding(excl)  # (K, C): references for pseudo-target of k
    target_log_p = log_p[pseudo]  # (K, C)
    labels = mask[pseudo]  # (K, N): membership of the pseudo-targets, never row k
    aucs = np.empty((k_models, grid.size))
    for i, a in enumerate(grid):
        sc = _fraction_at_most(
            target_log_p - _offline_log_marginal(log_mean_out, a), n_pool, log_gamma
        )
        for k in range(k_models):
            ok = ~np.isnan(sc[k])
            lab = labels[k, ok]
            if not (lab.any() and not lab.all()):
                raise MiascaleError(
                    f"Cannot tune RMIA's offline coefficient a for target {k}: the pseudo-target "
                    f"model {pseudo[k]} has no scored members or no scored non-members. Pass a "
                    "explicitly (e.g. a=0.3) or train more models."
                )
            aucs[k, i] = auc(sc[k, ok], lab)
    return grid[np.argmax(aucs, axis=1)].astype(np.float64)
