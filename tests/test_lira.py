import itertools
import math

import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import roc_auc_score

from miascale.attacks import ATTACKS, get_attack
from miascale.attacks.lira import STD_FLOOR, LiraResult, lira_scores
from miascale.errors import MiascaleError
from miascale.membership import balanced_plan, bernoulli_plan


def naive_lira(stats, in_mask, online, variance, location, min_shadows=2):
    """Straightforward double-loop reference (independent of the vectorised code)."""
    k_models, n_ex = stats.shape
    scores = np.full((k_models, n_ex), np.nan)
    n_fallback = 0
    for k in range(k_models):
        shadows = [j for j in range(k_models) if j != k]
        groups = {}
        for name, want in (("in", True), ("out", False)):
            per_ex = []
            for n in range(n_ex):
                per_ex.append(np.array([stats[j, n] for j in shadows if in_mask[j, n] == want]))
            ss = sum(((v - v.mean()) ** 2).sum() for v in per_ex if len(v) >= 1)
            dof = sum(max(len(v) - 1, 0) for v in per_ex)
            pooled = math.sqrt(ss / dof) if dof > 0 else float("nan")
            groups[name] = (per_ex, pooled)
        for n in range(n_ex):
            params = {}
            fb = False
            ok = True
            for name in ("in", "out") if online else ("out",):
                per_ex, pooled = groups[name]
                v = per_ex[n]
                if len(v) == 0:
                    ok = False
                    break
                loc = np.mean(v) if location == "mean" else np.median(v)
                if variance == "global":
                    sd = pooled
                elif len(v) < min_shadows:
                    sd = pooled
                    fb = True
                else:
                    sd = np.std(v, ddof=1)
                params[name] = (loc, max(sd, STD_FLOOR))
            if not ok:
                continue
            x = stats[k, n]
            mo, so = params["out"]
            if online:
                mi, si = params["in"]
                s = scipy.stats.norm.logpdf(x, mi, si) - scipy.stats.norm.logpdf(x, mo, so)
            else:
                s = -scipy.stats.norm.logsf((x - mo) / so)
            scores[k, n] = s
            if not np.isnan(s) and fb:
                n_fallback += 1
    return scores, n_fallback, int(np.isnan(scores).sum())


def _inputs(design, k=6, n=24, seed=0):
    rng = np.random.default_rng(seed)
    if design == "balanced":
        mask = balanced_plan(np.repeat(np.arange(3), n // 3), k, seed).in_mask
    else:
        mask = bernoulli_plan(n, k, seed).in_mask
    stats = rng.normal(size=(k, n)) + 1.5 * mask + rng.normal(size=n)[None, :]
    return stats, mask


COMBOS = list(itertools.product([True, False], ["per-example", "global"], ["mean", "median"]))


@pytest.mark.parametrize("design", ["balanced", "bernoulli"])
@pytest.mark.parametrize(("online", "variance", "location"), COMBOS)
def test_matches_naive_reference(design, online, variance, location):
    for k, min_shadows in ((6, 2), (7, 3), (4, 2)):
        stats, mask = _inputs(design, k=k, seed=k)
        # naive_lira is plain leave-one-out: the balanced plan's complementary partners stay in
        # the shadows only with exclude_partner=False (the default leaves them out; that path is
        # checked against its own reference in test_partners.py).
        res = lira_scores(
            stats,
            mask,
            online=online,
            variance=variance,
            location=location,
            min_shadows=min_shadows,
            exclude_partner=False,
        )
        ref, n_fb, n_un = naive_lira(stats, mask, online, variance, location, min_shadows)
        assert isinstance(res, LiraResult)
        assert res.scores.dtype == np.float64 and res.scores.shape == stats.shape
        np.testing.assert_array_equal(np.isnan(res.scores), np.isnan(ref))
        np.testing.assert_allclose(res.scores, ref, rtol=1e-8, atol=1e-8, equal_nan=True)
        assert (res.n_fallback_variance, res.n_unscored) == (n_fb, n_un)
        assert (res.online, res.variance, res.location) == (online, variance, location)


def test_bernoulli_small_k_exercises_fallback_and_unscored():
    stats, mask = _inputs("bernoulli", k=4, n=60, seed=11)
    res = lira_scores(stats, mask, min_shadows=3)
    assert res.n_fallback_variance > 0 and res.n_unscored > 0
    assert res.n_unscored == np.isnan(res.scores).sum()


@pytest.mark.parametrize(("online", "variance", "location"), COMBOS)
def test_target_row_not_used(online, variance, location):
    stats, mask = _inputs("bernoulli", k=8, n=30, seed=3)
    kw = {"online": online, "variance": variance, "location": location}
    base = lira_scores(stats, mask, **kw).scores
    k = 2
    n = int(np.flatnonzero(~mask[k])[0])  # OUT for k, so it is an OUT shadow for other targets
    pert = stats.copy()
    pert[k, n] += 7.0
    new = lira_scores(pert, mask, **kw).scores
    others = np.ones(stats.shape[1], bool)
    others[n] = False
    # target k's parameters are unaffected by its own row: only its own score at n moves
    np.testing.assert_array_equal(new[k, others], base[k, others])
    assert new[k, n] != base[k, n]
    # ... while other targets use row k as a shadow
    assert not np.allclose(np.delete(new, k, axis=0), np.delete(base, k, axis=0), equal_nan=True)
    ref, _, _ = naive_lira(pert, mask, online, variance, location)
    np.testing.assert_allclose(new, ref, rtol=1e-8, atol=1e-8, equal_nan=True)


def test_whole_target_row_replacement_only_changes_through_phi():
    stats, mask = _inputs("balanced", k=8, n=30, seed=4)
    k = 3
    pert = stats.copy()
    pert[k] = np.random.default_rng(9).normal(size=30) * 5
    a = lira_scores(stats, mask, online=False).scores[k]
    b = lira_scores(pert, mask, online=False).scores[k]
    # offline score is monotone in phi with identical shadow parameters
    assert np.all(np.sign(b - a) == np.sign(pert[k] - stats[k]))


@pytest.mark.parametrize("online", [True, False])
def test_synthetic_auc(online):
    rng = np.random.default_rng(0)
    k, n = 16, 400
    mask = bernoulli_plan(n, k, seed=0).in_mask
    stats = rng.normal(size=(k, n)) + mask.astype(float)
    res = lira_scores(stats, mask, online=online)
    ok = ~np.isnan(res.scores)
    assert roc_auc_score(mask[ok], res.scores[ok]) > 0.6


def test_extreme_tail_finite():
    stats, mask = _inputs("balanced", k=6, seed=1)
    stats[0, 0] = 1e3
    res = lira_scores(stats, mask, online=False)
    assert np.isfinite(res.scores[0, 0]) and res.scores[0, 0] > 1e3


def test_validation_errors():
    stats, mask = _inputs("balanced")
    with pytest.raises(MiascaleError, match="per-example, global"):
        lira_scores(stats, mask, variance="pooled")
    with pytest.raises(MiascaleError, match="mean, median"):
        lira_scores(stats, mask, location="mode")
    with pytest.raises(MiascaleError, match="shape"):
        lira_scores(stats, mask[:, :-1])
    with pytest.raises(MiascaleError, match="at least 3"):
        lira_scores(stats[:2], mask[:2])
    with pytest.raises(MiascaleError, match="min_shadows"):
        lira_scores(stats, mask, min_shadows=1)
    bad = stats.copy()
    bad[0, 0] = np.nan
    with pytest.raises(MiascaleError, match="NaN"):
        lira_scores(bad, mask)


def test_registry():
    rng = np.random.default_rng(0)
    stats = rng.normal(size=(6, 10))
    mask = rng.random((6, 10)) < 0.5
    # the registry's uniform call (population_stats accepted and ignored) is lira_scores
    for online in (True, False):
        via = get_attack("lira")(stats, mask, online=online, population_stats=None)
        np.testing.assert_array_equal(via.scores, lira_scores(stats, mask, online=online).scores)
    assert ATTACKS["lira"] is get_attack("lira")
    with pytest.raises(MiascaleError, match="lira"):
        get_attack("nope")
