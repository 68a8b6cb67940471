"""Per-example quantiles of the separation and advantage (miascale.tails) against known truths."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from miascale.errors import MiascaleError
from miascale.membership import balanced_plan
from miascale.tails import QUANTILES, cross_ranked, pair_groups, tails
from miascale.vulnerability import paired_halves


def _plan(k: int, n: int, seed: int = 0) -> np.ndarray:
    return balanced_plan(np.repeat(np.arange(10), n // 10), k, seed).in_mask


def test_null_data_stays_at_the_noise_floor():
    """IN and OUT statistics from one law: every quantile, the max and the cross-fitted max sit
    at their documented floors (within a few bootstrap SEs), so none would enter a fit."""
    rng = np.random.default_rng(0)
    m = _plan(65, 2000)
    s = rng.normal(size=m.shape) * 3.0 + 1.0  # scale and shift do not matter
    tl = tails(s, m, [0.1, 0.01], n_boot=60)
    z = np.abs(tl.separation - tl.separation_floor) / tl.separation_se
    assert (z < 3.0).all(), (tl.separation, tl.separation_floor, tl.separation_se)
    # nothing is distinguishable from its floor: value − 1.96 SE ≤ floor
    assert (tl.separation - 1.96 * tl.separation_se <= tl.separation_floor + 1e-12).all()
    adv_gap = tl.advantage - 1.96 * tl.advantage_se - tl.advantage_floor
    assert (adv_gap <= 1e-12).all()
    # the level an example's ~32 OUT models cannot resolve is marked
    assert tl.resolvable.tolist() == [True, False]


@pytest.mark.parametrize("k", [17, 65, 257])
def test_quantiles_converge_to_the_true_separations(k):
    """Known per-example separations u_n: the quantiles approach those of u as K grows."""
    rng = np.random.default_rng(1)
    n = 3000
    u = rng.gamma(2.0, 0.6, size=n)
    m = _plan(k, n)
    s = rng.normal(size=m.shape) + m * u[None, :]
    tl = tails(s, m, [0.1], n_boot=20)
    truth = np.quantile(u, QUANTILES[:5])  # q0.999 of 3000 examples is too noisy to pin down
    err = np.abs(tl.separation[:5] - truth)
    tol = {17: 0.8, 65: 0.35, 257: 0.15}[k]
    assert (err < tol).all(), (k, tl.separation[:5], truth)
    # the Gaussian advantage is the documented function of the separation
    t = 0.1
    expect = norm.sf(norm.isf(t) - tl.separation) - t
    np.testing.assert_allclose(tl.advantage[0], expect, rtol=1e-12)


def test_pairs_resample_and_split_together():
    """The bootstrap resamples a model with its partner (one group id), and the cross-fitting
    halves (vulnerability.paired_halves, shared with cross_fitted_tail) never split a group."""
    m = _plan(65, 400)
    groups = pair_groups(m)
    assert (groups[0::2][:32] == groups[1::2][:32]).all() and groups[64] == 64
    assert len(np.unique(groups)) == 33
    for seed in range(5):
        a, b = paired_halves(m, seed)
        assert abs(len(a) - len(b)) <= 1
        assert set(groups[a]).isdisjoint(set(groups[b]))


def test_cross_ranked_measures_on_the_other_half():
    rng = np.random.default_rng(2)
    m = _plan(33, 1000)
    u = np.zeros(1000)
    u[:5] = 3.0  # five truly exposed examples
    s = rng.normal(size=m.shape) + m * u[None, :]
    r = cross_ranked(s, m, top=5)
    assert set(r.indices.tolist()) == set(range(5))
    assert np.all(np.abs(r.separation - 3.0) < 4 * r.se)
    with pytest.raises(MiascaleError, match="8 models"):
        cross_ranked(s[:4], m[:4])


def test_bad_input():
    m = _plan(9, 100)
    s = np.zeros(m.shape)
    with pytest.raises(MiascaleError, match="n_boot"):
        tails(s, m, [0.1], n_boot=1)
    with pytest.raises(MiascaleError, match="8 models"):
        tails(s[:5], m[:5], [0.1])
    row = tails(np.random.default_rng(0).normal(size=m.shape), m, [0.1], n_boot=5).row_fields(0.1)
    assert {"pe_adv_q0.99", "pe_sep_max", "pe_adv_floor_cross_max", "pe_resolvable"} <= set(row)
