import itertools
import warnings

import numpy as np
import pytest
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from miascale.attacks.rmia import A_GRID, RmiaResult, pseudo_target, rmia_scores
from miascale.errors import MiascaleError
from miascale.membership import balanced_plan, bernoulli_plan


def naive_rmia(stats, in_mask, pop, online, gamma, a):
    """Plain triple loop in probability space (independent of the vectorised code)."""
    k_models, n_ex = stats.shape
    n_pop = pop.shape[1]
    p = expit(stats)
    q = expit(pop)
    scores = np.full((k_models, n_ex), np.nan)
    for k in range(k_models):
        refs = [j for j in range(k_models) if j != k]
        ratio_z = []
        for z in range(n_pop):
            pz = np.mean([q[j, z] for j in refs])
            if not online:
                pz = 0.5 * ((1 + a) * pz + (1 - a))
            ratio_z.append(q[k, z] / pz)
        for n in range(n_ex):
            if online:
                px = np.mean([p[j, n] for j in refs])
            else:
                outs = [p[j, n] for j in refs if not in_mask[j, n]]
                if not outs:
                    continue
                px = 0.5 * ((1 + a) * np.mean(outs) + (1 - a))
            ratio_x = p[k, n] / px
            scores[k, n] = sum(ratio_x / rz >= gamma for rz in ratio_z) / n_pop
    return scores


def _inputs(design, k=5, n=24, z=120, seed=0):
    rng = np.random.default_rng(seed)
    if design == "balanced":
        mask = balanced_plan(np.repeat(np.arange(3), n // 3), k, seed).in_mask
    else:
        mask = bernoulli_plan(n, k, seed).in_mask
    stats = rng.normal(size=(k, n)) + 1.5 * mask + rng.normal(size=n)[None, :]
    pop = rng.normal(size=(k, z)) + rng.normal(size=z)[None, :]
    return stats, mask, pop


CASES = [(True, None), (False, 0.0), (False, 0.3), (False, 1.0)]


@pytest.mark.parametrize("design", ["balanced", "bernoulli"])
@pytest.mark.parametrize(("online", "a"), CASES)
@pytest.mark.parametrize("gamma", [1.0, 2.0])
def test_matches_naive_reference(design, online, a, gamma):
    for k in (4, 5):
        stats, mask, pop = _inputs(design, k=k, seed=k)
        # naive_rmia is plain leave-one-out, so the balanced plan's partners stay references
        # (exclude_partner=False); the default path is checked in test_partners.py.
        res = rmia_scores(stats, mask, pop, online=online, gamma=gamma, a=a, exclude_partner=False)
        ref = naive_rmia(stats, mask, pop, online, gamma, a)
        assert isinstance(res, RmiaResult)
        assert res.scores.dtype == np.float64 and res.scores.shape == stats.shape
        np.testing.assert_array_equal(res.scores, ref)
        assert res.n_unscored == int(np.isnan(ref).sum())
        assert res.n_fallback_variance == 0
        assert (res.online, res.gamma, res.n_population) == (online, gamma, pop.shape[1])
        assert res.a.shape == (k,) and not res.a_tuned
        if online:
            assert np.all(np.isnan(res.a))
        else:
            np.testing.assert_array_equal(res.a, np.full(k, a))


def test_offline_unscored_when_no_out_reference():
    stats, mask, pop = _inputs("bernoulli", k=4, n=60, seed=11)
    res = rmia_scores(stats, mask, pop, online=False, a=0.5)
    no_out = np.array(
        [[not np.any(~np.delete(mask[:, n], k)) for n in range(60)] for k in range(4)]
    )
    assert no_out.any()
    np.testing.assert_array_equal(np.isnan(res.scores), no_out)
    assert res.n_unscored == int(no_out.sum())
    assert np.all(np.isfinite(rmia_scores(stats, mask, pop, online=True).scores))


@pytest.mark.parametrize(("online", "a"), CASES)
def test_heavy_ties_match_naive(online, a):
    rng = np.random.default_rng(5)
    k, n, z = 5, 30, 120
    mask = balanced_plan(np.repeat(np.arange(3), n // 3), k, 5).in_mask
    stats = np.round(rng.normal(size=(k, n)) + mask, 1)
    stats[:, 1::3] = stats[:, 0::3]  # duplicated pool columns
    pop = np.round(rng.normal(size=(k, z)), 1)
    pop[:, :n] = stats  # population columns identical to pool columns: LR exactly 1 online
    pop[:, 60:90] = pop[:, 30:60]  # duplicated population columns
    # leave-one-out reference: keep the partners (exclude_partner=False)
    res = rmia_scores(stats, mask, pop, online=online, a=a, exclude_partner=False)
    ref = naive_rmia(stats, mask, pop, online, 1.0, a)
    np.testing.assert_array_equal(res.scores, ref)
    if online:
        # the ≥ is inclusive: every x counts its identical population copy
        strict = np.array(
            [
                [
                    np.mean(
                        _log_ratio(stats, pop, kk, online)[0][nn]
                        > _log_ratio(stats, pop, kk, online)[1]
                    )
                    for nn in range(n)
                ]
                for kk in range(k)
            ]
        )
        assert np.all(res.scores > strict)


def _log_ratio(stats, pop, k, online):
    log_p = -np.logaddexp(0.0, -np.concatenate([stats, pop], axis=1))
    others = np.delete(np.arange(stats.shape[0]), k)
    marg = np.log(np.mean(np.exp(log_p[others]), axis=0))
    r = log_p[k] - marg
    return r[: stats.shape[1]], r[stats.shape[1] :]


def test_pseudo_target_rule():
    for n_models in range(3, 12):
        for k in range(n_models):
            j = pseudo_target(k, n_models)
            assert 0 <= j < n_models and j != k and j != (k ^ 1)
            assert abs(j - k) <= 2
    with pytest.raises(MiascaleError):
        pseudo_target(0, 2)


def _tuning_inputs(seed=2, k=8, n=60, z=150):
    rng = np.random.default_rng(seed)
    mask = balanced_plan(np.repeat(np.arange(3), n // 3), k, seed).in_mask
    stats = rng.normal(size=(k, n)) + 0.8 * mask + rng.normal(size=n)[None, :]
    pop = rng.normal(size=(k, z)) + rng.normal(size=z)[None, :]
    return stats, mask, pop


def test_tuned_a_independent_of_target_membership():
    stats, mask, pop = _tuning_inputs()
    base = rmia_scores(stats, mask, pop, online=False)
    assert base.a_tuned and np.all(np.isin(base.a, np.asarray(A_GRID)))
    rng = np.random.default_rng(123)
    for k in range(stats.shape[0]):
        # The partner k ^ 1 takes no part in tuning either (DESIGN §3), so its row changes with
        # the target's; the mask keeps the pair complementary so the pairing itself is unchanged.
        m2 = mask.copy()
        m2[k] = rng.random(stats.shape[1]) < 0.5
        m2[k ^ 1] = ~m2[k]
        s2 = stats.copy()
        s2[k] = rng.normal(size=stats.shape[1]) * 3
        s2[k ^ 1] = rng.normal(size=stats.shape[1]) * 3
        for st, mk in ((stats, m2), (s2, mask), (s2, m2)):
            assert rmia_scores(st, mk, pop, online=False).a[k] == base.a[k]


def test_tuned_a_reproduced_by_fixed_a():
    stats, mask, pop = _tuning_inputs(seed=3)
    tuned = rmia_scores(stats, mask, pop, online=False)
    np.testing.assert_array_equal(
        tuned.pseudo_targets, [pseudo_target(k, stats.shape[0]) for k in range(stats.shape[0])]
    )
    for k in range(stats.shape[0]):
        fixed = rmia_scores(stats, mask, pop, online=False, a=float(tuned.a[k]))
        np.testing.assert_array_equal(fixed.scores[k], tuned.scores[k])


def test_tuned_a_matches_naive_tuning():
    stats, mask, pop = _tuning_inputs(seed=4, k=6, n=48, z=100)
    grid = (0.0, 0.25, 0.5, 0.75, 1.0)
    # leave-one-out tuning (the reference below keeps the partners): exclude_partner=False
    res = rmia_scores(stats, mask, pop, online=False, a_grid=grid, exclude_partner=False)
    for k in range(stats.shape[0]):
        j = pseudo_target(k, stats.shape[0])
        sub = [m for m in range(stats.shape[0]) if m != k]  # the target never takes part
        row = sub.index(j)
        aucs = []
        for a in grid:
            sc = naive_rmia(stats[sub], mask[sub], pop[sub], False, 1.0, a)[row]
            ok = ~np.isnan(sc)
            aucs.append(roc_auc_score(mask[j, ok], sc[ok]))
        assert res.a[k] == grid[int(np.argmax(aucs))]


@pytest.mark.parametrize("online", [True, False])
def test_separable_synthetic_auc(online):
    rng = np.random.default_rng(0)
    k, n, z = 16, 300, 300
    mask = bernoulli_plan(n, k, seed=0).in_mask
    hardness = rng.normal(size=n)[None, :]
    stats = rng.normal(scale=0.5, size=(k, n)) + 3.0 * mask + hardness
    pop = rng.normal(scale=0.5, size=(k, z)) + rng.normal(size=z)[None, :]
    res = rmia_scores(stats, mask, pop, online=online)
    ok = ~np.isnan(res.scores)
    assert roc_auc_score(mask[ok], res.scores[ok]) > 0.9


def test_extreme_statistics_are_finite_and_quiet():
    stats, mask, pop = _inputs("balanced", k=6, seed=1)
    stats = stats * 400  # |φ| up to ~1e3: p_y underflows in linear space
    pop = pop * 400
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for online, a in CASES:
            res = rmia_scores(stats, mask, pop, online=online, a=a)
            assert np.all(np.isfinite(res.scores))
            assert np.all((res.scores >= 0) & (res.scores <= 1))


def test_validation_errors():
    stats, mask, pop = _inputs("balanced", k=5)
    bad_calls = {
        "gamma": [{"gamma": 0.0}, {"gamma": -1.0}, {"gamma": np.nan}, {"gamma": np.inf}],
        "a must lie": [{"online": False, "a": -0.1}, {"online": False, "a": 1.5}],
        "a must": [{"a": np.nan}, {"a": "0.3"}],
        "a_grid": [{"a_grid": ()}, {"a_grid": (0.0, 2.0)}, {"a_grid": "x"}],
        "online": [{"online": "yes"}],
    }
    for match, calls in bad_calls.items():
        for kw in calls:
            with pytest.raises(MiascaleError, match=match):
                rmia_scores(stats, mask, pop, **kw)
    with pytest.raises(MiascaleError, match="gamma"):
        rmia_scores(stats, mask, pop, gamma=True)
    with pytest.raises(MiascaleError, match="at least 100"):
        rmia_scores(stats, mask, pop[:, :99])
    with pytest.raises(MiascaleError, match="population_stats"):
        rmia_scores(stats, mask)
    with pytest.raises(MiascaleError, match="shape"):
        rmia_scores(stats, mask, pop[:-1])
    with pytest.raises(MiascaleError, match="shape"):
        rmia_scores(stats, mask, pop[0])
    with pytest.raises(MiascaleError, match="shape"):
        rmia_scores(stats, mask[:, :-1], pop)
    with pytest.raises(MiascaleError, match="at least 2 models"):
        rmia_scores(stats[:1], mask[:1], pop[:1])
    with pytest.raises(MiascaleError, match="at least 3 models"):
        rmia_scores(stats[:2], mask[:2], pop[:2], online=False)
    # models 0 and 1 are complementary partners: with the default exclude_partner=True they have
    # no reference left; leave-one-out with a fixed a works with K=2
    with pytest.raises(MiascaleError, match="no reference model"):
        rmia_scores(stats[:2], mask[:2], pop[:2], online=False, a=0.3)
    rmia_scores(stats[:2], mask[:2], pop[:2], online=False, a=0.3, exclude_partner=False)
    bad = stats.copy()
    bad[0, 0] = np.nan
    with pytest.raises(MiascaleError, match="NaN"):
        rmia_scores(bad, mask, pop)
    for value in (np.nan, np.inf):
        badp = pop.copy()
        badp[1, 2] = value
        with pytest.raises(MiascaleError, match="population_stats contain"):
            rmia_scores(stats, mask, badp)
    with pytest.raises(MiascaleError, match="real"):
        rmia_scores(stats, mask, pop.astype(str))


def test_online_ignores_a_and_grid_is_first_maximum():
    stats, mask, pop = _inputs("balanced", k=5)
    a = rmia_scores(stats, mask, pop, online=True, a=0.2).scores
    b = rmia_scores(stats, mask, pop, online=True).scores
    np.testing.assert_array_equal(a, b)
    # a single-value grid forces that value
    res = rmia_scores(stats, mask, pop, online=False, a_grid=[0.4])
    np.testing.assert_array_equal(res.a, np.full(5, 0.4))


def test_population_order_irrelevant():
    stats, mask, pop = _inputs("bernoulli", k=6, seed=8)
    perm = np.random.default_rng(0).permutation(pop.shape[1])
    for online, a in itertools.islice(CASES, 3):
        a_ = rmia_scores(stats, mask, pop, online=online, a=a).scores
        b_ = rmia_scores(stats, mask, pop[:, perm], online=online, a=a).scores
        np.testing.assert_array_equal(a_, b_)
