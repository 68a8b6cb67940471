"""Complementary partners (DESIGN §3): found exactly, never a shadow / reference of their target,
and kept on the same side by cross-fitting."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.stats
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from miascale.attacks import get_attack
from miascale.attacks.lira import STD_FLOOR, lira_scores
from miascale.attacks.rmia import pseudo_target, rmia_scores
from miascale.audit import run_attack
from miascale.errors import MiascaleError
from miascale.membership import balanced_plan, bernoulli_plan, complement_partners
from miascale.vulnerability import cross_fitted_tail, paired_halves, per_example


def naive_partners(mask):
    """Brute force over all pairs; first-come one-to-one matching in index order."""
    k_models = mask.shape[0]
    out = np.full(k_models, -1)
    for k in range(k_models):
        if out[k] >= 0:
            continue
        for j in range(k_models):
            if j != k and out[j] < 0 and np.array_equal(mask[j], ~mask[k]):
                out[k], out[j] = j, k
                break
    return out


def _labels(n=24, classes=3):
    return np.repeat(np.arange(classes), n // classes)


def _shuffled_plan(k=7, n=24, seed=0):
    """A balanced plan with its model rows shuffled: pairs are not adjacent, the unpaired model
    sits in the middle."""
    mask = balanced_plan(_labels(n), k, seed).in_mask
    return mask[np.random.default_rng(seed + 100).permutation(k)]


def _stats(mask, seed):
    rng = np.random.default_rng(seed)
    k, n = mask.shape
    return rng.normal(size=(k, n)) + 1.5 * mask + rng.normal(size=n)[None, :]


# --------------------------------------------------------------------------------------------
# complement_partners
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 6, 7, 64, 65])
def test_balanced_plan_partners(k):
    plan = balanced_plan(_labels(30, 3), k, seed=k)
    expect = np.arange(k) ^ 1
    if k % 2:
        expect[-1] = -1  # the odd last model has its own random half
    got = complement_partners(plan.in_mask)
    assert got.dtype == np.int64 and got.shape == (k,)
    np.testing.assert_array_equal(got, expect)
    np.testing.assert_array_equal(plan.partners, expect)


def test_bernoulli_plan_has_no_partners():
    np.testing.assert_array_equal(bernoulli_plan(200, 9, seed=1).partners, np.full(9, -1))


def test_hand_made_mask_duplicates_and_padding():
    # N = 11 (not a multiple of 8: the packed padding bits must not break complements)
    a = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0], bool)
    b = a.copy()
    b[-1] = True  # differs from a in the last (padded byte) bit only
    mask = np.stack([a, ~a, a, b, ~b, ~a, a, ~a[::-1], np.ones(11, bool), np.zeros(11, bool)])
    got = complement_partners(mask)
    # a-rows 0, 2, 6 and ~a-rows 1, 5: matched in index order (0↔1, 2↔5), row 6 left over;
    # b↔~b; row 7 is nobody's complement; all-ones ↔ all-zeros.
    np.testing.assert_array_equal(got, [1, 0, 5, 4, 3, 2, -1, -1, 9, 8])
    np.testing.assert_array_equal(got, naive_partners(mask))
    paired = got >= 0
    np.testing.assert_array_equal(got[got[paired]], np.flatnonzero(paired))  # symmetric
    np.testing.assert_array_equal(complement_partners(mask.astype(int)), got)


def test_exact_on_random_masks_with_near_complements():
    rng = np.random.default_rng(3)
    for n in (1, 7, 8, 9, 200):
        base = rng.random((6, n)) < 0.5
        near = ~base.copy()
        near[::2, rng.integers(n)] ^= True  # one bit off: not a complement
        mask = np.concatenate([base, near])[rng.permutation(12)]
        np.testing.assert_array_equal(complement_partners(mask), naive_partners(mask))


def test_partner_errors():
    with pytest.raises(MiascaleError, match="2-D"):
        complement_partners(np.zeros((3, 0), bool))
    with pytest.raises(MiascaleError, match="2-D"):
        complement_partners(np.zeros(5, bool))
    with pytest.raises(MiascaleError, match="boolean"):
        complement_partners(np.full((2, 3), 0.5))


# --------------------------------------------------------------------------------------------
# LiRA
# --------------------------------------------------------------------------------------------


def naive_lira_partner(stats, in_mask, online, variance, location, min_shadows=2):
    """Loop over targets: shadows = all models but k and its partner (naive_partners)."""
    k_models, n_ex = stats.shape
    partner = naive_partners(in_mask)
    scores = np.full((k_models, n_ex), np.nan)
    for k in range(k_models):
        shadows = [j for j in range(k_models) if j not in (k, partner[k])]
        fit = {}
        for name, want in (("in", True), ("out", False)):
            vals = [stats[shadows, n][in_mask[shadows, n] == want] for n in range(n_ex)]
            ss = sum(((v - v.mean()) ** 2).sum() for v in vals if len(v) >= 1)
            dof = sum(max(len(v) - 1, 0) for v in vals)
            fit[name] = (vals, math.sqrt(ss / dof) if dof > 0 else math.nan)
        for n in range(n_ex):
            par = {}
            for name in ("in", "out") if online else ("out",):
                vals, pooled = fit[name]
                v = vals[n]
                if len(v) == 0:
                    break
                loc = v.mean() if location == "mean" else np.median(v)
                use_pooled = variance == "global" or len(v) < min_shadows
                par[name] = (loc, max(pooled if use_pooled else v.std(ddof=1), STD_FLOOR))
            else:
                x, (mo, so) = stats[k, n], par["out"]
                if online:
                    mi, si = par["in"]
                    s = scipy.stats.norm.logpdf(x, mi, si) - scipy.stats.norm.logpdf(x, mo, so)
                else:
                    s = -scipy.stats.norm.logsf((x - mo) / so)
                scores[k, n] = s
    return scores


COMBOS = list(itertools.product([True, False], ["per-example", "global"], ["mean", "median"]))


@pytest.mark.parametrize(("online", "variance", "location"), COMBOS)
def test_lira_matches_naive_without_partner(online, variance, location):
    masks = [balanced_plan(_labels(), 6, 1).in_mask, balanced_plan(_labels(), 7, 2).in_mask]
    masks.append(_shuffled_plan(9, seed=3))
    for i, mask in enumerate(masks):
        stats = _stats(mask, i)
        kw = {"online": online, "variance": variance, "location": location}
        res = lira_scores(stats, mask, min_shadows=3, **kw)
        ref = naive_lira_partner(stats, mask, min_shadows=3, **kw)
        np.testing.assert_array_equal(np.isnan(res.scores), np.isnan(ref))
        np.testing.assert_allclose(res.scores, ref, rtol=1e-10, atol=1e-10, equal_nan=True)
        assert res.exclude_partner and res.n_partners_excluded == 2 * (mask.shape[0] // 2)
        assert res.n_unscored == int(np.isnan(ref).sum())


@pytest.mark.parametrize(("online", "variance", "location"), COMBOS)
def test_lira_partner_row_has_no_influence(online, variance, location):
    mask = _shuffled_plan(9, n=30, seed=5)
    stats = _stats(mask, 5)
    partner = complement_partners(mask)
    kw = {"online": online, "variance": variance, "location": location}
    base = lira_scores(stats, mask, **kw).scores
    for k in np.flatnonzero(partner >= 0):
        pert = stats.copy()
        pert[partner[k]] = np.random.default_rng(int(k)).normal(size=30) * 10 + 5
        new = lira_scores(pert, mask, **kw).scores
        np.testing.assert_allclose(new[k], base[k], rtol=1e-10, atol=1e-10)
        # ... but the partner is a shadow of every other target (except its own partner, k)
        others = [j for j in range(9) if j not in (k, partner[k])]
        assert not np.allclose(new[others], base[others])
    # with the partner kept as a shadow (leave-one-out), its row does move the target's scores
    k = int(np.flatnonzero(partner >= 0)[0])
    pert = stats.copy()
    pert[partner[k]] += 5.0
    old = lira_scores(stats, mask, exclude_partner=False, **kw).scores[k]
    assert not np.allclose(lira_scores(pert, mask, exclude_partner=False, **kw).scores[k], old)


@pytest.mark.parametrize(("online", "variance", "location"), COMBOS)
def test_lira_without_pairs_is_leave_one_out_bit_for_bit(online, variance, location):
    mask = bernoulli_plan(40, 8, seed=2).in_mask
    stats = _stats(mask, 2)
    kw = {"online": online, "variance": variance, "location": location}
    new, old = lira_scores(stats, mask, **kw), lira_scores(stats, mask, exclude_partner=False, **kw)
    np.testing.assert_array_equal(new.scores, old.scores)
    assert new.n_partners_excluded == old.n_partners_excluded == 0
    assert new.exclude_partner and not old.exclude_partner


def test_default_flows_through_registry_and_audit():
    mask = balanced_plan(_labels(), 8, 0).in_mask
    stats = _stats(mask, 0)
    default = lira_scores(stats, mask).scores
    assert not np.allclose(default, lira_scores(stats, mask, exclude_partner=False).scores)
    np.testing.assert_array_equal(get_attack("lira")(stats, mask).scores, default)
    out = run_attack(stats, mask, [0.1], variant="lira-online", bootstrap=0)
    np.testing.assert_array_equal(out.scores, default)
    with pytest.raises(MiascaleError, match="exclude_partner"):
        lira_scores(stats, mask, exclude_partner="yes")


def test_lira_needs_three_shadows_besides_the_partner():
    mask = balanced_plan(_labels(), 4, 0).in_mask  # two pairs: a target keeps one pair only
    stats = _stats(mask, 0)
    with pytest.raises(MiascaleError, match="at least 5 models"):
        lira_scores(stats, mask)
    assert np.isfinite(lira_scores(stats, mask, exclude_partner=False).scores).any()
    five = balanced_plan(_labels(), 5, 0).in_mask  # K = 5: a pair and the unpaired model
    assert np.isfinite(lira_scores(_stats(five, 0), five).scores).any()
    bern = bernoulli_plan(24, 4, seed=0).in_mask  # no pairs: plain leave-one-out, K >= 3
    assert lira_scores(_stats(bern, 0), bern).n_partners_excluded == 0


# --------------------------------------------------------------------------------------------
# RMIA
# --------------------------------------------------------------------------------------------


def naive_rmia_row(stats, mask, pop, t, refs, online, a, gamma=1.0):
    """Scores of target t with the given reference models, in probability space."""
    p, q = expit(stats), expit(pop)
    pz = q[refs].mean(axis=0)
    if not online:
        pz = 0.5 * ((1 + a) * pz + (1 - a))
    ratio_z = q[t] / pz
    out = np.full(stats.shape[1], np.nan)
    for n in range(stats.shape[1]):
        if online:
            px = p[refs, n].mean()
        else:
            outs = [p[j, n] for j in refs if not mask[j, n]]
            if not outs:
                continue
            px = 0.5 * ((1 + a) * np.mean(outs) + (1 - a))
        out[n] = np.mean(p[t, n] / px / ratio_z >= gamma)
    return out


def _rmia_inputs(mask, seed, z=120):
    rng = np.random.default_rng(seed)
    pop = rng.normal(size=(mask.shape[0], z)) + rng.normal(size=z)[None, :]
    return _stats(mask, seed), pop


@pytest.mark.parametrize(("online", "a"), [(True, None), (False, 0.0), (False, 0.3)])
def test_rmia_matches_naive_without_partner(online, a):
    for i, mask in enumerate([balanced_plan(_labels(), 6, 1).in_mask, _shuffled_plan(7, seed=4)]):
        stats, pop = _rmia_inputs(mask, i)
        partner = naive_partners(mask)
        res = rmia_scores(stats, mask, pop, online=online, a=a)
        for k in range(mask.shape[0]):
            refs = [j for j in range(mask.shape[0]) if j not in (k, partner[k])]
            np.testing.assert_array_equal(
                res.scores[k], naive_rmia_row(stats, mask, pop, k, refs, online, a)
            )
        assert res.exclude_partner and res.n_partners_excluded == 2 * (mask.shape[0] // 2)


@pytest.mark.parametrize("mask_kind", ["balanced", "shuffled"])
def test_rmia_tuning_never_uses_the_partner(mask_kind):
    k_models, n = 9, 60
    if mask_kind == "balanced":
        mask = balanced_plan(_labels(n), k_models, 7).in_mask
    else:
        mask = _shuffled_plan(k_models, n=n, seed=7)
    stats, pop = _rmia_inputs(mask, 7, z=100)
    partner = naive_partners(mask)
    grid = (0.0, 0.5, 1.0)
    res = rmia_scores(stats, mask, pop, online=False, a_grid=grid)
    if mask_kind == "balanced":  # identity order: the documented index rule
        np.testing.assert_array_equal(
            res.pseudo_targets, [pseudo_target(k, k_models) for k in range(k_models)]
        )
    for k in range(k_models):
        j = int(res.pseudo_targets[k])
        assert j not in (k, partner[k])
        refs = [m for m in range(k_models) if m not in (k, partner[k], j, partner[j])]
        aucs = []
        for a in grid:
            sc = naive_rmia_row(stats, mask, pop, j, refs, False, a)
            ok = ~np.isnan(sc)
            aucs.append(roc_auc_score(mask[j, ok], sc[ok]))
        assert res.a[k] == grid[int(np.argmax(aucs))]
    # the partner's statistics move neither the target's scores nor its tuned a
    for k in np.flatnonzero(partner >= 0):
        s2, p2 = stats.copy(), pop.copy()
        rng = np.random.default_rng(int(k))
        s2[partner[k]] = rng.normal(size=n) * 3
        p2[partner[k]] = rng.normal(size=pop.shape[1]) * 3
        new = rmia_scores(s2, mask, p2, online=False, a_grid=grid)
        np.testing.assert_array_equal(new.scores[k], res.scores[k])
        assert new.a[k] == res.a[k]
        on_old = rmia_scores(stats, mask, pop, online=True).scores[k]
        np.testing.assert_array_equal(rmia_scores(s2, mask, p2, online=True).scores[k], on_old)


def test_rmia_without_pairs_is_leave_one_out_bit_for_bit():
    mask = bernoulli_plan(40, 7, seed=3).in_mask
    stats, pop = _rmia_inputs(mask, 3)
    for online, a in ((True, None), (False, 0.3), (False, None)):
        new = rmia_scores(stats, mask, pop, online=online, a=a)
        old = rmia_scores(stats, mask, pop, online=online, a=a, exclude_partner=False)
        np.testing.assert_array_equal(new.scores, old.scores)
        np.testing.assert_array_equal(new.a, old.a)
        assert new.n_partners_excluded == 0


def test_rmia_errors_when_nothing_is_left():
    mask = balanced_plan(_labels(), 4, 0).in_mask
    stats, pop = _rmia_inputs(mask, 0)
    rmia_scores(stats, mask, pop, online=False, a=0.5)  # two references left per target
    with pytest.raises(MiascaleError, match="tuning a for target 0 leaves no reference"):
        rmia_scores(stats, mask, pop, online=False)  # k, partner, j, partner(j): all four
    rmia_scores(stats, mask, pop, online=False, exclude_partner=False)
    with pytest.raises(MiascaleError, match="exclude_partner"):
        rmia_scores(stats, mask, pop, exclude_partner=1)


# --------------------------------------------------------------------------------------------
# Cross-fitting
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "sizes"), [(64, (32, 32)), (9, (4, 5)), (10, (4, 6)), (12, (6, 6))])
def test_pairs_never_straddle_halves(k, sizes):
    for seed in range(5):
        mask = balanced_plan(_labels(30), k, seed).in_mask
        mask = mask[np.random.default_rng(seed).permutation(k)]
        a, b = paired_halves(mask, seed)
        assert (a.size, b.size) == sizes
        np.testing.assert_array_equal(np.sort(np.concatenate([a, b])), np.arange(k))
        partner = complement_partners(mask)
        in_a = np.isin(np.arange(k), a)
        has = partner >= 0
        np.testing.assert_array_equal(in_a[has], in_a[partner[has]])


def test_split_without_pairs_is_the_old_permutation():
    mask = bernoulli_plan(50, 11, seed=0).in_mask
    a, b = paired_halves(mask, 4)
    perm = np.random.default_rng(4).permutation(11)
    np.testing.assert_array_equal(a, perm[:5])
    np.testing.assert_array_equal(b, perm[5:])


@pytest.mark.parametrize("rho", [0.0, 1.0])
def test_null_cross_fitted_tail_stays_at_the_noise_floor(rho):
    """Null data: statistics independent of membership (K = 64 balanced, N = 2000, FPR 0.01).

    ``rho`` is the (negative) correlation of complementary partners' statistics: 0 = i.i.d.
    normal; 1 = partner's statistic is exactly minus the target's (the simplified theory model).
    The noise floor is the mean half-model (K/2 = 32) advantage with no selection; measured
    (mean ± sd over 10 reps): 0.0044 ± 0.0002 (rho 0) and 0.0106 ± 0.0006 (rho 1). Cross-fitted
    top-1% with partners kept together: 0.0040 ± 0.0014 and 0.0102 ± 0.0070. The old random
    split (pairs straddling the halves) gave 0.0052 ± 0.0019 and 0.033 ± 0.015: with
    anti-correlated partners selection on one half leaked into the measurement on the other.
    """
    k_models, n, reps = 64, 2000, 8
    labels = np.repeat(np.arange(10), n // 10)
    cf, floor = [], []
    for r in range(reps):
        mask = balanced_plan(labels, k_models, seed=r).in_mask
        rng = np.random.default_rng(100 + r)
        shared = rng.normal(size=(k_models // 2, n))
        stats = math.sqrt(1 - rho) * rng.normal(size=(k_models, n))
        stats[0::2] += math.sqrt(rho) * shared
        stats[1::2] -= math.sqrt(rho) * shared
        res = cross_fitted_tail(stats, mask, 0.01, quantiles=(0.99,), seed=r)
        assert res.n_models_a == res.n_models_b == 32
        cf.append(res.cross_fitted[0])
        floor.append(np.nanmean(per_example(stats[:32], mask[:32], 0.01).advantage[0]))
    # 4 standard errors of the mean over reps (sd per rep ≈ 0.0015 and 0.007)
    tol = 4 * (0.0015 if rho == 0 else 0.007) / math.sqrt(reps)
    assert abs(np.mean(cf) - np.mean(floor)) < tol
