import numpy as np
import pytest

from miascale.errors import MiascaleError
from miascale.membership import MembershipPlan, balanced_plan, bernoulli_plan, make_plan


def _pool_labels(n_classes=4, shots=3):
    rng = np.random.default_rng(0)
    return rng.permutation(np.repeat(np.arange(n_classes), 2 * shots))


@pytest.mark.parametrize("k", [2, 6, 7])
def test_balanced_rows_and_columns(k):
    y = _pool_labels(4, 3)
    plan = balanced_plan(y, k, seed=3)
    assert isinstance(plan, MembershipPlan)
    assert plan.in_mask.shape == (k, y.size) and plan.in_mask.dtype == bool
    assert plan.n_models == k and plan.n_examples == y.size
    for row in plan.in_mask:
        np.testing.assert_array_equal(np.bincount(y[row], minlength=4), np.full(4, 3))
    pairs = k // 2
    for j in range(pairs):
        np.testing.assert_array_equal(plan.in_mask[2 * j], ~plan.in_mask[2 * j + 1])
    if k % 2 == 0:
        np.testing.assert_array_equal(plan.in_mask.sum(axis=0), np.full(y.size, k // 2))


def test_balanced_halves_are_random():
    y = _pool_labels(2, 5)
    plan = balanced_plan(y, 40, seed=0)
    rows = {tuple(r) for r in plan.in_mask}
    assert len(rows) > 10
    frac = plan.in_mask.mean(axis=0)
    np.testing.assert_allclose(frac, 0.5)


def test_seed_reproducibility():
    y = _pool_labels()
    a = balanced_plan(y, 8, seed=5).in_mask
    np.testing.assert_array_equal(a, balanced_plan(y, 8, seed=5).in_mask)
    assert not np.array_equal(a, balanced_plan(y, 8, seed=6).in_mask)
    b = bernoulli_plan(30, 8, seed=5).in_mask
    np.testing.assert_array_equal(b, bernoulli_plan(30, 8, seed=5).in_mask)


def test_bernoulli_mean():
    plan = bernoulli_plan(2000, 50, seed=1)
    assert plan.design == "bernoulli"
    assert abs(plan.in_mask.mean() - 0.5) < 0.01


def test_make_plan_dispatch_and_errors():
    y = _pool_labels()
    assert make_plan("balanced", y, 4, 0).design == "balanced"
    bern = make_plan("bernoulli", y, 4, 0)
    assert bern.in_mask.shape == (4, y.size)
    with pytest.raises(MiascaleError, match="balanced, bernoulli"):
        make_plan("poisson", y, 4, 0)
    with pytest.raises(MiascaleError, match="n_models"):
        balanced_plan(y, 1, 0)
    with pytest.raises(MiascaleError, match="n_models"):
        bernoulli_plan(10, 1, 0)
    with pytest.raises(MiascaleError, match="odd"):
        balanced_plan(np.array([0, 0, 1, 1, 1]), 4, 0)
