"""Tests for miascale.privacy: accountant glue, DP ROC bound, empirical ε."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from miascale.errors import MiascaleError
from miascale.metrics import clopper_pearson
from miascale.privacy import (
    EmpiricalEpsilon,
    calibrate_noise,
    default_delta,
    dp_roc_bound,
    empirical_epsilon,
    epsilon_for,
)


def _library_epsilon(sigma, q, steps, delta, accountant):
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
    )
    acc = PLDAccountant() if accountant == "pld" else RdpAccountant()  # library defaults
    return acc.compose(event).get_epsilon(delta)


# --------------------------------------------------------------------------------------------
# Accountant
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("epsilon", "q", "steps", "accountant"),
    [(2.0, 0.1, 200, "pld"), (8.0, 0.4, 100, "pld"), (0.5, 1.0, 50, "pld"), (4.0, 0.2, 200, "rdp")],
)
def test_calibration_round_trip_within_one_percent(epsilon, q, steps, accountant):
    delta = 1e-5
    sigma = calibrate_noise(epsilon, delta, q, steps, accountant)
    assert sigma > 0
    lib = _library_epsilon(sigma, q, steps, delta, accountant)
    assert lib == pytest.approx(epsilon, rel=0.01)
    ours = epsilon_for(sigma, q, steps, delta, accountant)
    assert ours <= epsilon * (1 + 1e-6)
    assert ours == pytest.approx(lib, rel=0.01)
    # Slightly less noise must exceed the target: sigma is (near) the smallest that fits.
    assert epsilon_for(sigma * 0.98, q, steps, delta, accountant) > epsilon


def test_rdp_is_looser_than_pld_and_epsilon_decreases_with_noise():
    q, steps, delta = 0.1, 300, 1e-5
    e_pld = [epsilon_for(s, q, steps, delta, "pld") for s in (0.8, 1.5, 3.0)]
    e_rdp = [epsilon_for(s, q, steps, delta, "rdp") for s in (0.8, 1.5, 3.0)]
    assert e_pld[0] > e_pld[1] > e_pld[2] > 0
    for p, r in zip(e_pld, e_rdp, strict=True):
        assert r >= p * 0.999
    assert calibrate_noise(2.0, delta, q, steps, "rdp") >= calibrate_noise(2.0, delta, q, steps)


@pytest.mark.parametrize(
    ("n", "expected"), [(1, 0.1), (9, 0.01), (10, 0.01), (11, 0.001), (640, 1e-4), (1000, 1e-4)]
)
def test_default_delta(n, expected):
    d = default_delta(n)
    assert d == pytest.approx(expected, rel=1e-12)
    assert d <= 0.1 / n < 1 / n
    assert d > 0.01 / n


def test_default_delta_many():
    for n in range(1, 5000, 37):
        d = default_delta(n)
        assert 0.01 / n < d <= 0.1 / n
        assert math.log10(d) == pytest.approx(round(math.log10(d)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epsilon": 0.0},
        {"epsilon": -1.0},
        {"epsilon": math.inf},
        {"epsilon": "x"},
        {"delta": 0.0},
        {"delta": 1.0},
        {"sampling_rate": 0.0},
        {"sampling_rate": 1.5},
        {"steps": 0},
        {"steps": 2.5},
        {"accountant": "moments"},
        {"epsilon": 1e6},  # needs sigma ~ 0: no meaningful protection
    ],
)
def test_calibrate_noise_rejects_bad_input(kwargs):
    args = {"epsilon": 1.0, "delta": 1e-5, "sampling_rate": 0.1, "steps": 100} | kwargs
    with pytest.raises(MiascaleError):
        calibrate_noise(**args)


def test_epsilon_for_rejects_bad_input():
    with pytest.raises(MiascaleError):
        epsilon_for(0.0, 0.1, 10, 1e-5)
    with pytest.raises(MiascaleError):
        epsilon_for(1.0, 0.1, 10, 0.0)
    with pytest.raises(MiascaleError):
        default_delta(0)


# --------------------------------------------------------------------------------------------
# DP ROC bound
# --------------------------------------------------------------------------------------------


def test_dp_roc_bound_hand_values():
    # eps = 1, delta = 0.01: first = e*f + 0.01, second = 1 - e^-1 * (0.99 - f).
    fpr = np.array([0.0, 0.1, 0.5, 0.9, 1.0])
    expected = np.array(
        [
            0.01,  # first: 0.01 (second: 0.6358)
            0.2818281828459045,  # first: 0.1 e + 0.01 (second: 0.6726)
            1.0 - 0.36787944117144233 * 0.49,  # second: 0.81974 (first 1.369)
            1.0 - 0.36787944117144233 * 0.09,  # second: 0.96689
            1.0,  # second 1.0037 clipped
        ]
    )
    np.testing.assert_allclose(dp_roc_bound(fpr, 1.0, 0.01), expected, rtol=1e-12)


def test_dp_roc_bound_special_cases_and_shape():
    f = np.linspace(0, 1, 11).reshape(11, 1)
    out = dp_roc_bound(f, 0.0, 0.05)
    assert out.shape == (11, 1)
    np.testing.assert_allclose(out, np.clip(f + 0.05, 0, 1))  # eps = 0: TPR <= FPR + delta
    np.testing.assert_allclose(dp_roc_bound([0.0, 0.3], math.inf, 0.0), [0.0, 1.0])
    expected = min(math.e**2 * 0.2, 1.0 - math.exp(-2.0) * 0.8)  # = 0.8917 (second form)
    assert float(dp_roc_bound(0.2, 2.0, 0.0)) == pytest.approx(expected, rel=1e-12)
    b = dp_roc_bound(np.linspace(0, 1, 101), 1.5, 1e-3)
    assert np.all(np.diff(b) >= 0) and np.all((b >= 0) & (b <= 1))
    for bad in ([-0.1], [1.1], [np.nan]):
        with pytest.raises(MiascaleError):
            dp_roc_bound(bad, 1.0, 0.0)
    with pytest.raises(MiascaleError):
        dp_roc_bound([0.1], -1.0, 0.0)
    with pytest.raises(MiascaleError):
        dp_roc_bound([0.1], 1.0, 1.0)


# --------------------------------------------------------------------------------------------
# Empirical epsilon
# --------------------------------------------------------------------------------------------


def _brute_force(scores, labels, delta, confidence, simultaneous):
    s = np.asarray(scores, float).ravel()
    y = np.asarray(labels, bool).ravel()
    p, n = int(y.sum()), int((~y).sum())
    thresholds = np.unique(s)
    if simultaneous:  # Bonferroni over the interior vertices (all but the lowest threshold)
        confidence = 1 - (1 - confidence) / max(thresholds.size - 1, 1)
    best = 0.0
    for t in thresholds:
        tp = int(((s >= t) & y).sum())
        fp = int(((s >= t) & ~y).sum())
        tpr_low, _ = clopper_pearson(tp, p, confidence)
        _, fpr_high = clopper_pearson(fp, n, confidence)
        if tpr_low - delta > 0:
            best = max(best, math.log((tpr_low - delta) / fpr_high))
        if 1 - delta - fpr_high > 0:
            best = max(best, math.log((1 - delta - fpr_high) / (1 - tpr_low)))
    return best


def test_empirical_epsilon_matches_brute_force():
    rng = np.random.default_rng(3)
    labels = rng.random((6, 50)) < 0.5
    scores = np.round(rng.normal(size=(6, 50)) + 1.2 * labels, 1)  # ties included
    for delta, simultaneous in ((0.0, True), (1e-2, True), (0.0, False), (1e-2, False)):
        res = empirical_epsilon(scores, labels, delta, 0.9, simultaneous)
        expected = _brute_force(scores, labels, delta, 0.9, simultaneous)
        assert expected > 0
        assert res.epsilon_lb == pytest.approx(expected, rel=1e-12)
        assert res.n_pos + res.n_neg == 300
        assert res.delta == delta


def test_empirical_epsilon_vulnerable_non_dp_scores_positive():
    rng = np.random.default_rng(0)
    labels = np.repeat([True, False], 2000)
    scores = rng.normal(size=4000) + 3.0 * labels  # a clearly vulnerable (non-DP) model
    res = empirical_epsilon(scores, labels, delta=1e-4)
    assert isinstance(res, EmpiricalEpsilon)
    assert res.epsilon_lb > 1.0
    assert res.form in ("tpr", "fnr")
    assert res.tpr_low <= res.tpr and res.fpr_high >= res.fpr
    # The reported vertex reproduces the bound.
    if res.form == "tpr":
        assert res.epsilon_lb == pytest.approx(math.log((res.tpr_low - 1e-4) / res.fpr_high))
    d = res.to_dict()
    assert d["epsilon_lb"] == res.epsilon_lb and d["form"] == res.form


def test_empirical_epsilon_randomized_response_below_true_epsilon():
    # Randomised response is exactly eps-DP: the bound must approach eps from below.
    eps = 1.0
    rng = np.random.default_rng(1)
    labels = np.repeat([True, False], 20000)
    p_one = np.where(labels, math.e / (1 + math.e), 1 / (1 + math.e))
    scores = (rng.random(labels.size) < p_one).astype(float)
    res = empirical_epsilon(scores, labels)
    assert 0.85 < res.epsilon_lb <= eps


def test_empirical_epsilon_fnr_form():
    # Members always score 1, half the non-members too: TPR = 1 at FPR = 0.5 -> the FNR form.
    labels = np.repeat([True, False], 500)
    scores = np.concatenate([np.ones(500), np.tile([1.0, 0.0], 250)])
    res = empirical_epsilon(scores, labels)
    assert res.form == "fnr"
    assert res.epsilon_lb == pytest.approx(
        math.log((1 - res.fpr_high) / (1 - res.tpr_low)), rel=1e-12
    )
    assert res.epsilon_lb > 3.0


def test_empirical_epsilon_no_signal_is_zero_or_small():
    rng = np.random.default_rng(2)
    labels = np.repeat([True, False], 1000)
    scores = rng.normal(size=2000)
    # Without the multiple-threshold correction a lucky vertex gives a spurious bound.
    assert empirical_epsilon(scores, labels, simultaneous=False).epsilon_lb > 0.3
    res = empirical_epsilon(scores, labels)
    assert res.epsilon_lb == 0.0 and res.form == "none"
    const = empirical_epsilon(np.zeros(10), np.arange(10) % 2 == 0)
    assert const.epsilon_lb == 0.0 and const.form == "none"
    assert math.isnan(const.threshold) and const.to_dict()["threshold"] is None


def test_empirical_epsilon_bad_input():
    with pytest.raises(MiascaleError):
        empirical_epsilon([0.1, 0.2], [True, False], delta=1.0)
    with pytest.raises(MiascaleError):
        empirical_epsilon([0.1, 0.2], [True, True])
    with pytest.raises(MiascaleError):
        empirical_epsilon([0.1, 0.2], [True, False], confidence=1.5)
    with pytest.raises(MiascaleError):
        empirical_epsilon([0.1, 0.2], [True, False], simultaneous="yes")


def test_empirical_epsilon_equals_the_maximum_over_every_vertex_on_a_large_roc():
    # The search evaluates only vertices whose cheap upper bound can still win; the answer must
    # be the maximum over all vertices, computed here at every vertex with scipy's beta.
    from scipy.stats import beta

    rng = np.random.default_rng(11)
    labels = rng.random(40_000) < 0.5
    scores = rng.normal(size=40_000) + 0.3 * labels
    for delta, conf in ((0.0, 0.95), (1e-3, 0.9)):
        res = empirical_epsilon(scores, labels, delta, conf)
        order = np.argsort(-scores)
        tp = np.cumsum(labels[order])
        fp = np.cumsum(~labels[order])
        p, n = int(labels.sum()), int((~labels).sum())
        a = (1 - res.level) / 2
        low = np.where(tp > 0, beta.ppf(a, tp, p - tp + 1), 0.0)
        high = np.where(fp < n, beta.ppf(1 - a, fp + 1, n - fp), 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            eps_a = np.where(low - delta > 0, np.log((low - delta) / high), -np.inf)
            eps_b = np.where(1 - delta - high > 0, np.log((1 - delta - high) / (1 - low)), -np.inf)
        expected = max(float(eps_a.max()), float(eps_b.max()), 0.0)
        assert expected > 0
        assert res.epsilon_lb == pytest.approx(expected, rel=1e-9)
