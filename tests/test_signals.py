import numpy as np
import pytest

from miascale.errors import MiascaleError
from miascale.signals import cross_entropy_loss, lira_statistic


def test_matches_naive_formula():
    rng = np.random.default_rng(0)
    z = rng.normal(scale=3.0, size=(3, 20, 5))
    y = rng.integers(0, 5, size=20)
    p = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
    py = p[:, np.arange(20), y]
    naive = np.log(py) - np.log(1 - py)
    phi = lira_statistic(z, y)
    assert phi.dtype == np.float64 and phi.shape == (3, 20)
    np.testing.assert_allclose(phi, naive, rtol=1e-9, atol=1e-9)
    ce = cross_entropy_loss(z, y)
    np.testing.assert_allclose(ce, -np.log(py), rtol=1e-12, atol=1e-12)


def test_extreme_logits_finite():
    z = np.array([[1e4, 0.0, 0.0], [-1e4, 0.0, 0.0], [0.0, 1e4, -1e4]])
    y = np.array([0, 0, 0])
    phi = lira_statistic(z, y)
    assert np.all(np.isfinite(phi))
    np.testing.assert_allclose(phi[0], 1e4 - np.log(2), rtol=1e-12)
    np.testing.assert_allclose(phi[1], -1e4 - np.log(2), rtol=1e-12)
    np.testing.assert_allclose(phi[2], -1e4, rtol=1e-12)
    assert np.all(np.isfinite(cross_entropy_loss(z, y)))
    # two classes: phi = z_y - z_other exactly
    np.testing.assert_allclose(lira_statistic(np.array([[1e4, 0.0]]), np.array([0])), [1e4])


def test_relation_to_cross_entropy():
    rng = np.random.default_rng(1)
    z = rng.normal(scale=2.0, size=(50, 4))
    y = rng.integers(0, 4, size=50)
    ce = cross_entropy_loss(z, y)
    # phi = log p - log(1 - p) with p = exp(-ce)
    np.testing.assert_allclose(lira_statistic(z, y), -ce - np.log(-np.expm1(-ce)), rtol=1e-9)


def test_input_errors():
    with pytest.raises(MiascaleError):
        lira_statistic(np.zeros((3, 4)), np.array([0, 1]))
    with pytest.raises(MiascaleError):
        lira_statistic(np.zeros((2, 4)), np.array([0, 4]))
    with pytest.raises(MiascaleError):
        lira_statistic(np.array([[np.nan, 0.0]]), np.array([0]))
