"""Tests for miascale.metrics against independent references (sklearn, scipy, naive loops)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from miascale.errors import MiascaleError
from miascale.metrics import (
    RocCurve,
    TprAtFpr,
    auc,
    best_balanced_accuracy,
    clopper_pearson,
    roc_curve,
    tpr_at_fpr,
)

LEVELS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.29, 0.5, 0.9)


def _random_case(seed: int, n: int, decimals: int | None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < rng.uniform(0.2, 0.8)
    scores = rng.normal(size=n) + 0.8 * labels
    if decimals is not None:
        scores = np.round(scores, decimals)  # heavy ties, many mixing both classes
    return scores, labels


CASES = [(seed, n, dec) for seed in range(4) for n, dec in ((1000, None), (3000, 1), (500, 0))]


def _naive_tpr_at_fpr(scores: np.ndarray, labels: np.ndarray, t: float) -> tuple[float, float]:
    """Max TPR over all thresholds (unique scores and +inf) with FPR <= t, by direct counting.

    Returns (TPR, FPR); among thresholds reaching the max TPR the largest admissible FPR is
    reported, i.e. the last ROC vertex with FPR <= t.
    """
    n_pos = labels.sum()
    n_neg = (~labels).sum()
    best = (0, 0)  # (tp, fp)
    for thr in np.concatenate([[np.inf], np.unique(scores)]):
        pred = scores >= thr
        tp = int(np.sum(pred & labels))
        fp = int(np.sum(pred & ~labels))
        # Exact rational comparison fp/n_neg <= t, with t given as a short decimal.
        if fp * 10**6 <= round(t * 10**6) * n_neg:
            best = max(best, (tp, fp))
    return best[0] / n_pos, best[1] / n_neg


@pytest.mark.parametrize(("seed", "n", "decimals"), CASES)
def test_roc_matches_sklearn(seed: int, n: int, decimals: int | None) -> None:
    scores, labels = _random_case(seed, n, decimals)
    roc = roc_curve(scores, labels)
    fpr, tpr, thr = skm.roc_curve(labels, scores, drop_intermediate=False)
    assert isinstance(roc, RocCurve)
    assert roc.n_pos == labels.sum() and roc.n_neg == (~labels).sum()
    np.testing.assert_array_equal(roc.thresholds, thr)
    np.testing.assert_allclose(roc.fpr, fpr, rtol=0, atol=1e-15)
    np.testing.assert_allclose(roc.tpr, tpr, rtol=0, atol=1e-15)
    assert auc(scores, labels) == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)
    assert best_balanced_accuracy(scores, labels) == pytest.approx(
        np.max((tpr + 1 - fpr) / 2), abs=1e-15
    )


@pytest.mark.parametrize(("seed", "n", "decimals"), CASES)
def test_tpr_at_fpr_matches_naive_loop(seed: int, n: int, decimals: int | None) -> None:
    scores, labels = _random_case(seed, n, decimals)
    results = tpr_at_fpr(scores, labels, LEVELS)
    assert len(results) == len(LEVELS)
    for t, r in zip(LEVELS, results, strict=True):
        ref_tpr, ref_fpr = _naive_tpr_at_fpr(scores, labels, t)
        assert r.fpr_level == t
        assert r.tpr == pytest.approx(ref_tpr, abs=1e-15)
        assert r.achieved_fpr == pytest.approx(ref_fpr, abs=1e-15)
        assert r.achieved_fpr <= t
        # The reported threshold really produces the reported counts.
        pred = scores >= r.threshold
        assert r.true_positives == np.sum(pred & labels)
        assert r.false_positives == np.sum(pred & ~labels)
        assert r.n_pos == labels.sum() and r.n_neg == (~labels).sum()
        assert r.ci_low <= r.tpr <= r.ci_high


def test_multidimensional_input_is_pooled() -> None:
    scores, labels = _random_case(7, 1200, 1)
    flat = tpr_at_fpr(scores, labels, [0.1])[0]
    pooled = tpr_at_fpr(scores.reshape(4, 300), labels.reshape(4, 300), [0.1])[0]
    assert flat == pooled
    assert auc(scores.reshape(4, 300), labels.reshape(4, 300)) == auc(scores, labels)


def test_float_error_in_level_does_not_flip_vertex() -> None:
    # 0.29 * 100 == 28.999999999999996 in floating point; 29 false positives must be allowed.
    n_neg = 100
    scores = np.concatenate([np.arange(n_neg, 0, -1.0), [1000.0]])
    labels = np.concatenate([np.zeros(n_neg, bool), [True]])
    assert 0.29 * n_neg < 29
    r = tpr_at_fpr(scores, labels, 0.29)[0]
    assert r.false_positives == 29
    assert r.achieved_fpr == pytest.approx(0.29)


def test_tie_case() -> None:
    scores = np.array([3.0, 2.0, 2.0, 1.0])
    labels = np.array([True, True, False, False])
    roc = roc_curve(scores, labels)
    np.testing.assert_array_equal(roc.fpr, [0, 0, 0.5, 1])
    np.testing.assert_array_equal(roc.tpr, [0, 0.5, 1, 1])
    np.testing.assert_array_equal(roc.thresholds, [np.inf, 3, 2, 1])
    r = tpr_at_fpr(scores, labels, 0.25)[0]
    assert r.tpr == 0.5  # not 1: the tie at score 2 is never split
    assert r.achieved_fpr == 0.0
    assert r.threshold == 3.0
    assert (r.true_positives, r.false_positives, r.n_pos, r.n_neg) == (1, 0, 2, 2)
    assert r.advantage == pytest.approx(0.25)
    assert r.resolvable is False  # 0.25 * 2 < 1
    assert tpr_at_fpr(scores, labels, 0.5)[0].tpr == 1.0
    assert auc(scores, labels) == pytest.approx(0.875)  # (1 + 1 + 1 + 0.5) / 4
    assert best_balanced_accuracy(scores, labels) == pytest.approx(0.75)


def test_no_qualifying_vertex_gives_threshold_inf() -> None:
    # The top score is a negative, so only the (0, 0) vertex has FPR <= 0.1.
    scores = np.array([5.0, 4.0, 3.0])
    labels = np.array([False, True, True])
    r = tpr_at_fpr(scores, labels, 0.1)[0]
    assert (r.tpr, r.achieved_fpr, r.threshold, r.true_positives) == (0.0, 0.0, math.inf, 0)
    assert r.ci_low == 0.0 and r.ci_high > 0


def _roc_analytic(t: float, d: float) -> float:
    return float(stats.norm.sf(stats.norm.isf(t) - d))


def _delta_sd(t: float, d: float, n_pos: int, n_neg: int) -> float:
    """Sampling sd of empirical TPR at empirical FPR-quantile t (delta method)."""
    tpr = _roc_analytic(t, d)
    x = stats.norm.isf(t)
    slope = math.exp(d * x - d * d / 2)  # likelihood ratio = ROC slope at this threshold
    return math.sqrt(tpr * (1 - tpr) / n_pos + slope**2 * t * (1 - t) / n_neg)


GAUSS_LEVELS = (0.001, 0.01, 0.1, 0.3)


def test_gaussian_random_samples_match_analytic_roc() -> None:
    d, n = 2.0, 200_000
    rng = np.random.default_rng(12345)
    scores = np.concatenate([rng.normal(d, 1, n), rng.normal(0, 1, n)])
    labels = np.concatenate([np.ones(n, bool), np.zeros(n, bool)])
    results = tpr_at_fpr(scores, labels, GAUSS_LEVELS)
    for t, r in zip(GAUSS_LEVELS, results, strict=True):
        expected = _roc_analytic(t, d)
        tol = 5 * _delta_sd(t, d, n, n) + 1e-4
        assert abs(r.tpr - expected) <= tol, (t, r.tpr, expected, tol)
        assert r.resolvable
        assert t - 1 / n <= r.achieved_fpr <= t
    assert auc(scores, labels) == pytest.approx(stats.norm.cdf(d / math.sqrt(2)), abs=3e-3)


def test_gaussian_quantile_samples_ci_covers_analytic() -> None:
    # Deterministic "perfectly spread" samples: the empirical ROC equals the analytic one up to
    # discretisation (~1/n), so the 95% CI of the TPR must cover the analytic value.
    d, n = 2.0, 200_000
    q = stats.norm.ppf((np.arange(n) + 0.5) / n)
    scores = np.concatenate([q + d, q])
    labels = np.concatenate([np.ones(n, bool), np.zeros(n, bool)])
    for t, r in zip(GAUSS_LEVELS, tpr_at_fpr(scores, labels, GAUSS_LEVELS), strict=True):
        expected = _roc_analytic(t, d)
        assert r.ci_low <= expected <= r.ci_high, (t, r.ci_low, expected, r.ci_high)
        assert r.ci_high - r.ci_low < 0.01
        assert abs(r.tpr - expected) < 1e-3


@pytest.mark.parametrize(
    ("k", "n", "conf"),
    [
        (0, 10, 0.95),
        (10, 10, 0.95),
        (3, 10, 0.95),
        (1, 1, 0.95),
        (0, 1, 0.9),
        (500, 1000, 0.99),
        (7, 200_000, 0.95),
        (123, 457, 0.8),
    ],
)
def test_clopper_pearson_matches_scipy_binomtest(k: int, n: int, conf: float) -> None:
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=conf, method="exact")
    low, high = clopper_pearson(k, n, conf)
    assert isinstance(low, float) and isinstance(high, float)
    assert low == pytest.approx(ref.low, abs=1e-9)
    assert high == pytest.approx(ref.high, abs=1e-9)
    if k == 0:
        assert low == 0.0
    if k == n:
        assert high == 1.0


def test_clopper_pearson_vectorised() -> None:
    ks = np.array([0, 1, 5, 10])
    low, high = clopper_pearson(ks, 10)
    assert low.shape == high.shape == (4,)
    for k, lo, hi in zip(ks, low, high, strict=True):
        assert (lo, hi) == pytest.approx(clopper_pearson(int(k), 10), abs=1e-15)


@pytest.mark.parametrize(
    ("k", "n", "conf"),
    [(-1, 5, 0.95), (6, 5, 0.95), (0, 0, 0.95), (1, 5, 1.0), (1, 5, 0.0), (1.5, 5, 0.95)],
)
def test_clopper_pearson_rejects_bad_input(k: float, n: int, conf: float) -> None:
    with pytest.raises(MiascaleError):
        clopper_pearson(k, n, conf)


@pytest.mark.parametrize(("n_neg", "expected"), [(999, False), (1000, True)])
def test_resolvable_flag(n_neg: int, expected: bool) -> None:
    scores = np.arange(n_neg + 5, dtype=float)
    labels = np.zeros(n_neg + 5, bool)
    labels[-5:] = True
    r = tpr_at_fpr(scores, labels, 0.001)[0]
    assert r.resolvable is expected
    assert r.n_neg == n_neg


def test_to_dict_is_plain_json() -> None:
    scores, labels = _random_case(1, 500, 1)
    r = tpr_at_fpr(scores, labels, [0.05])[0]
    assert isinstance(r, TprAtFpr)
    d = r.to_dict()
    assert set(d) == {
        "fpr_level",
        "tpr",
        "achieved_fpr",
        "threshold",
        "true_positives",
        "false_positives",
        "n_pos",
        "n_neg",
        "ci_low",
        "ci_high",
        "resolvable",
        "advantage",
        "ci_method",
        "cp_low",
        "cp_high",
        "se",
        "n_groups",
        "n_boot",
    }
    assert d["ci_method"] == "clopper-pearson" and d["se"] is None
    assert (d["cp_low"], d["cp_high"]) == (d["ci_low"], d["ci_high"])
    assert (d["n_groups"], d["n_boot"]) == (0, 0)
    plain = {k: v for k, v in d.items() if k not in ("ci_method", "se")}
    assert all(type(v) in (float, int, bool) for v in plain.values())
    assert type(d["resolvable"]) is bool and type(d["true_positives"]) is int
    assert d["advantage"] == pytest.approx(r.tpr - 0.05)
    assert json.loads(json.dumps(d)) == d
    with pytest.raises(AttributeError):
        r.tpr = 1.0  # type: ignore[misc]


def test_int_labels_accepted() -> None:
    scores, labels = _random_case(2, 300, None)
    assert auc(scores, labels.astype(int)) == auc(scores, labels)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_raise(bad: float) -> None:
    scores = np.array([0.1, bad, 0.3, bad])
    labels = np.array([True, False, True, False])
    for fn in (roc_curve, auc, best_balanced_accuracy):
        with pytest.raises(MiascaleError, match="2 of 4 scores"):
            fn(scores, labels)
    with pytest.raises(MiascaleError, match="not finite"):
        tpr_at_fpr(scores, labels, 0.1)


@pytest.mark.parametrize("level", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_fpr_level_outside_open_interval_raises(level: float) -> None:
    with pytest.raises(MiascaleError, match="strictly between 0 and 1"):
        tpr_at_fpr([0.1, 0.2], [True, False], [0.1, level])


@pytest.mark.parametrize("labels", [[True, True, True], [False, False, False], [1, 1, 1]])
def test_single_class_raises(labels: list) -> None:
    with pytest.raises(MiascaleError, match="at least one of each"):
        tpr_at_fpr([0.1, 0.2, 0.3], labels, 0.1)
    with pytest.raises(MiascaleError):
        auc([0.1, 0.2, 0.3], labels)


def test_shape_mismatch_and_empty_raise() -> None:
    with pytest.raises(MiascaleError, match="same shape"):
        roc_curve(np.zeros((2, 3)), np.zeros(6, bool))
    with pytest.raises(MiascaleError, match="empty"):
        roc_curve([], [])
    with pytest.raises(MiascaleError, match="0/1"):
        roc_curve([0.1, 0.2], [0, 2])
