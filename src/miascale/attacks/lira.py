"""LiRA (Carlini et al., 2022), vectorised over targets and examples.

Each of the K models is the target once against Gaussians fitted to its shadows' IN and OUT
statistics, without the target's own row nor (by default) its complementary partner's;
leave-one-out sums are removed from per-example totals for all targets at once.
Contract: docs/design/attacks.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import norm

from miascale.errors import MiascaleError
from miascale.membership import complement_partners

__all__ = ["LOCATIONS", "STD_FLOOR", "VARIANCES", "LiraResult", "lira_scores"]

VARIANCES = ("per-example", "global")
LOCATIONS = ("mean", "median")
#: Standard deviations are floored at this value so that degenerate (constant) shadow statistics
#: give finite scores, as in the reference implementation's ``std + 1e-30``.
STD_FLOOR = 1e-30


@dataclass(frozen=True)
class LiraResult:
    """LiRA scores for every (target model, pool example).

    Attributes:
        scores: ``(K, N)`` float64; higher = more likely a member of the target's training set.
            NaN where a required shadow group (IN for online, OUT always) is empty.
        n_fallback_variance: number of scored (k, n) pairs where a required group had between 1
            and ``min_shadows − 1`` shadows, so the target's pooled ("global") std was used.
        n_unscored: number of NaN scores.
        online, variance, location, min_shadows, exclude_partner: the settings used.
        n_partners_excluded: number of targets whose complementary partner was left out of the
            shadows (0 when ``exclude_partner`` is False or the plan has no pairs).
    """

    scores: np.ndarray
    n_fallback_variance: int
    n_unscored: int
    online: bool
    variance: str
    location: str
    min_shadows: int
    exclude_partner: bool
    n_partners_excluded: int

    @property
    def n_models(self) -> int:
        return int(self.scores.shape[0])

    @property
    def n_examples(self) -> int:
        return int(self.scores.shape[1])


@dataclass(frozen=True)
class _GroupFit:
    """Leave-one-out Gaussian parameters for one group, each ``(K, N)``."""

    count: np.ndarray  # int, number of shadows in the group
    loc: np.ndarray  # location (NaN when count == 0)
    std: np.ndarray  # per-example std, ddof=1 (NaN when count < 2)
    pooled_std: np.ndarray  # (K, 1) per-target pooled within-example std over shadows


def _loo_median(
    stats: np.ndarray,
    member: np.ndarray,
    count: np.ndarray,
    partner: np.ndarray | None = None,
    partner_member: np.ndarray | None = None,
) -> np.ndarray:
    """Leave-one-out medians of ``stats`` restricted to ``member`` rows, per column; with
    ``partner`` (``(K,)`` row indices, valid where ``partner_member``) leave-two-out."""
    k_models = stats.shape[0]
    vals = np.where(member, stats, np.inf)
    order = np.argsort(vals, axis=0, kind="stable")
    sorted_vals = np.take_along_axis(vals, order, axis=0)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(k_models)[:, None], order.shape), 0)
    # Leave-one-out set size for target k is `count`; its sorted sequence is the group's sorted
    # sequence with the target's own rank removed (when the target is in the group).
    lo = np.maximum((count - 1) // 2, 0)
    hi = np.maximum(count // 2, 0)

    if partner is not None:
        # Two ranks removed: map reduced positions past the smaller, then past the larger one.
        r_own = np.where(member, rank, k_models)
        r_par = np.where(partner_member, rank[partner], k_models)
        r1, r2 = np.minimum(r_own, r_par), np.maximum(r_own, r_par)

    def gather(pos: np.ndarray) -> np.ndarray:
        if partner is None:
            orig = pos + (member & (pos >= rank))
        else:
            orig = pos + (pos >= r1)
            orig = orig + (orig >= r2)
        orig = np.minimum(orig, k_models - 1)
        return np.take_along_axis(sorted_vals, orig, axis=0)

    med = 0.5 * (gather(lo) + gather(hi))
    return np.where(count > 0, med, np.nan)


def _fit_group(
    stats: np.ndarray, member: np.ndarray, location: str, partners: np.ndarray | None = None
) -> _GroupFit:
    """Leave-one-out fit of one group (IN or OUT) for every target at once; with ``partners``
    (``(K,)``, −1 = none) each target's partner row is removed as well (leave-two-out)."""
    m = member.astype(np.float64)
    total = member.sum(axis=0)  # (N,) models in the group, target included
    count = total[None, :] - member.astype(np.int64)  # (K, N) shadows in the group
    # Centre on the all-model group mean for numerically stable down-dating.
    with np.errstate(invalid="ignore", divide="ignore"):
        centre = np.where(total > 0, (stats * m).sum(axis=0) / np.maximum(total, 1), 0.0)
    c = np.where(member, stats - centre[None, :], 0.0)
    s_c = c.sum(axis=0)
    ss_c = (c * c).sum(axis=0)
    loo_sum = s_c[None, :] - c  # c is 0 where the target is not a member
    loo_ss = ss_c[None, :] - c * c
    p_row = p_member = None
    if partners is not None:
        has = partners >= 0
        p_row = np.where(has, partners, 0)
        p_member = member[p_row] & has[:, None]  # (K, N): the partner is in the group
        c_p = np.where(p_member, c[p_row], 0.0)
        count = count - p_member
        loo_sum = loo_sum - c_p
        loo_ss = loo_ss - c_p * c_p
    safe = np.maximum(count, 1)
    loo_mean_c = loo_sum / safe
    dev_ss = np.maximum(loo_ss - loo_sum * loo_mean_c, 0.0)
    dev_ss = np.where(count >= 2, dev_ss, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.where(count >= 2, np.sqrt(dev_ss / np.maximum(count - 1, 1)), np.nan)
        dof = np.maximum(count - 1, 0).sum(axis=1, keepdims=True)
        pooled = np.where(dof > 0, np.sqrt(dev_ss.sum(axis=1, keepdims=True) / dof), np.nan)
    if location == "mean":
        loc = np.where(count > 0, centre[None, :] + loo_mean_c, np.nan)
    else:
        loc = _loo_median(stats, member, count, p_row, p_member)
    return _GroupFit(count=count, loc=loc, std=std, pooled_std=pooled)


def _choose_std(fit: _GroupFit, variance: str, min_shadows: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (std, fallback mask) for a group."""
    pooled = np.broadcast_to(fit.pooled_std, fit.std.shape)
    if variance == "global":
        return np.maximum(pooled, STD_FLOOR), np.zeros(fit.std.shape, dtype=bool)
    fallback = (fit.count >= 1) & (fit.count < min_shadows)
    std = np.where(fallback, pooled, fit.std)
    return np.maximum(std, STD_FLOOR), fallback


def _validate(
    stats: np.ndarray,
    in_mask: np.ndarray,
    online: bool,
    variance: str,
    location: str,
    min_sh: int,
    exclude_partner: bool,
) -> tuple[np.ndarray, np.ndarray]:
    if variance not in VARIANCES:
        raise MiascaleError(
            f"Unknown LiRA variance mode {variance!r}. Valid modes are: {', '.join(VARIANCES)} "
            "('per-example' fits a std per example, 'global' pools one std over all examples)."
        )
    if location not in LOCATIONS:
        raise MiascaleError(
            f"Unknown LiRA location {location!r}. Valid locations are: {', '.join(LOCATIONS)}."
        )
    if not isinstance(online, (bool, np.bool_)):
        raise MiascaleError(f"online must be True or False, got {online!r}.")
    if not isinstance(exclude_partner, (bool, np.bool_)):
        raise MiascaleError(f"exclude_partner must be True or False, got {exclude_partner!r}.")
    if isinstance(min_sh, bool) or not isinstance(min_sh, (int, np.integer)) or min_sh < 2:
        raise MiascaleError(
            f"min_shadows must be an integer >= 2 (a std needs at least two values), got "
            f"{min_sh!r}."
        )
    s, mask = check_signals(stats, in_mask)
    if s.shape[0] < 3:
        raise MiascaleError(
            f"LiRA needs at least 3 models (each target needs shadows both IN and OUT), got "
            f"{s.shape[0]}. Train more models; 16 or more is recommended."
        )
    return s, mask


def check_signals(stats: Any, in_mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate (models, examples) statistics and membership mask; return float64 and bool."""
    s = np.asarray(stats)
    mask = np.asarray(in_mask)
    if s.ndim != 2 or s.shape[0] < 1 or s.shape[1] < 1:
        raise MiascaleError(
            f"LiRA statistics must be a non-empty 2-D (models, examples) array, got shape "
            f"{s.shape}."
        )
    if mask.shape != s.shape:
        raise MiascaleError(
            f"in_mask shape {mask.shape} does not match statistics shape {s.shape}; both must be "
            "(models, examples) from the same membership plan."
        )
    if not np.issubdtype(s.dtype, np.number) or np.issubdtype(s.dtype, np.complexfloating):
        raise MiascaleError(f"LiRA statistics must be real numbers, got dtype {s.dtype}.")
    s = s.astype(np.float64)
    if not np.all(np.isfinite(s)):
        raise MiascaleError(
            "LiRA statistics contain NaN or infinite values; compute them with "
            "miascale.signals.lira_statistic from finite logits."
        )
    if mask.dtype != np.bool_:
        if not np.issubdtype(mask.dtype, np.integer) or not np.all((mask == 0) | (mask == 1)):
            raise MiascaleError(
                f"in_mask must be boolean (or 0/1 integers), got dtype {mask.dtype}. Use "
                "MembershipPlan.in_mask."
            )
        mask = mask.astype(bool)
    return s, mask


def lira_scores(
    stats: np.ndarray,
    in_mask: np.ndarray,
    *,
    online: bool = True,
    variance: str = "per-example",
    location: str = "mean",
    min_shadows: int = 2,
    exclude_partner: bool = True,
) -> LiraResult:
    """LiRA scores for every model as target, against all other models but its partner.

    Args:
        stats: ``(K, N)`` LiRA statistic φ of pool example n under model k (K ≥ 3).
        in_mask: ``(K, N)`` bool membership.
        online: online test (IN vs OUT likelihood ratio) or offline one-sided test against OUT.
        variance: "per-example" (each example's own shadow std, ddof=1) or "global" (one pooled
            within-example std per target and group, over the shadows only).
        location: "mean" or "median" of the shadow statistics.
        min_shadows: with per-example variance, groups with 1..min_shadows−1 shadows fall back to
            the target's pooled std (counted in ``n_fallback_variance``).
        exclude_partner: leave each target's complementary partner out of its shadows (DESIGN
            §3, see the module doc); False gives plain leave-one-out over all K−1 other models.

    Returns:
        :class:`LiraResult`; higher scores mean "more likely member".
    """
    s, mask = _validate(stats, in_mask, online, variance, location, min_shadows, exclude_partner)
    partners = complement_partners(mask) if exclude_partner else None
    if partners is not None and s.shape[0] < 5 and np.any(partners >= 0):
        raise MiascaleError(
            f"LiRA with exclude_partner=True (the default, DESIGN §3) leaves a target that has a "
            f"complementary partner K − 2 = {s.shape[0] - 2} shadow model(s); it needs at least 3 "
            "(two shadows forming a pair give one IN and one OUT value per example, from which no "
            "spread can be estimated). Train at least 5 models (M >= 4 shadow models), or pass "
            "exclude_partner=False for plain leave-one-out."
        )
    out_fit = _fit_group(s, ~mask, location, partners)
    out_std, out_fb = _choose_std(out_fit, variance, min_shadows)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if online:
            in_fit = _fit_group(s, mask, location, partners)
            in_std, in_fb = _choose_std(in_fit, variance, min_shadows)
            scores = norm.logpdf(s, in_fit.loc, in_std) - norm.logpdf(s, out_fit.loc, out_std)
            unscorable = (in_fit.count == 0) | (out_fit.count == 0)
            fallback = in_fb | out_fb
        else:
            z = (s - out_fit.loc) / out_std
            scores = -norm.logsf(z)
            unscorable = out_fit.count == 0
            fallback = out_fb
    scores = np.where(unscorable, np.nan, scores).astype(np.float64)
    unscored = np.isnan(scores)
    return LiraResult(
        scores=scores,
        n_fallback_variance=int(np.count_nonzero(fallback & ~unscored)),
        n_unscored=int(np.count_nonzero(unscored)),
        online=bool(online),
        variance=variance,
        location=location,
        min_shadows=int(min_shadows),
        exclude_partner=bool(exclude_partner),
        n_partners_excluded=0 if partners is None else int(np.count_nonzero(partners >= 0)),
    )
