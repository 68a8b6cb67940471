"""Tests for miascale.training.dp: batched DP-SGD heads."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from miascale.errors import MiascaleError
from miascale.privacy import default_delta, empirical_epsilon, epsilon_for
from miascale.training.dp import (
    DPConfig,
    DPTrainedHeads,
    clipped_gradient_sums,
    dp_head_logits,
    dp_sgd_heads,
    normalize_features,
    train_dp_heads,
)
from miascale.training.heads import HeadConfig, head_logits, train_heads


def _problem(k=4, n=24, d=6, c=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0, size=(n, 1))
    y = np.arange(n) % c
    mask = rng.random((k, n)) < 0.5
    return x, y, mask


def _naive_clipped_sum(x1, y, theta, clip):
    """Per-example autograd, clip each gradient, sum (one model)."""
    total = torch.zeros_like(theta)
    for i in range(x1.shape[0]):
        t = theta.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy((x1[i : i + 1] @ t), y[i : i + 1])
        (g,) = torch.autograd.grad(loss, t)
        total += g * min(1.0, clip / float(g.norm()))
    return total


def test_clipped_gradient_sums_equal_per_example_autograd():
    rng = np.random.default_rng(1)
    k, b, d1, c = 3, 7, 5, 4
    xb = torch.as_tensor(rng.normal(size=(k, b, d1)) * rng.uniform(0.2, 3, size=(k, b, 1)))
    yl = torch.as_tensor(rng.integers(0, c, size=(k, b)))
    yb = torch.nn.functional.one_hot(yl, c).double()
    theta = torch.as_tensor(rng.normal(size=(k, d1, c)))
    valid = torch.ones(k, b, dtype=torch.float64)
    valid[1, 5:] = 0.0  # padding
    clip = 0.7
    got = clipped_gradient_sums(xb, yb, valid, theta, clip)
    for j in range(k):
        nb = int(valid[j].sum())
        want = _naive_clipped_sum(xb[j, :nb], yl[j, :nb], theta[j], clip)
        np.testing.assert_allclose(got[j].numpy(), want.numpy(), atol=1e-10)


def test_dp_sgd_sigma0_fixed_batches_equals_naive_autograd():
    """sigma = 0, fixed batches: the batched update of every model equals a naive loop."""
    x, y, mask = _problem()
    k, n = mask.shape
    c = 3
    steps, lr, mom, l2, clip = 3, 0.8, 0.5, 0.01, 0.9
    rng = np.random.default_rng(7)
    batches = rng.random((steps, k, n)) < 0.6
    w, b = dp_sgd_heads(
        x, y, mask, c, noise_multiplier=0.0, sampling_rate=0.6, steps=steps, clip=clip,
        learning_rate=lr, momentum=mom, l2=l2, batch_masks=lambda s: batches[s],
    )  # fmt: skip
    x1 = torch.as_tensor(np.concatenate([normalize_features(x), np.ones((n, 1))], axis=1))
    yt = torch.as_tensor(y)
    for j in range(k):
        theta = torch.zeros(x.shape[1] + 1, c, dtype=torch.float64)
        vel = torch.zeros_like(theta)
        n_j = int(mask[j].sum())
        for s in range(steps):
            sel = np.flatnonzero(mask[j] & batches[s, j])
            g = _naive_clipped_sum(x1[sel], yt[sel], theta, clip) / (0.6 * n_j)
            g[:-1] += l2 * theta[:-1]
            vel = mom * vel + g
            theta = theta - lr * vel
        np.testing.assert_allclose(w[j], theta[:-1].numpy(), atol=1e-6, rtol=0)
        np.testing.assert_allclose(b[j], theta[-1].numpy(), atol=1e-6, rtol=0)


def test_model_trained_in_batch_equals_trained_alone():
    x, y, mask = _problem(k=5, n=40)
    kw = {"noise_multiplier": 1.3, "sampling_rate": 0.3, "steps": 20, "seed": 11}
    w_all, b_all = dp_sgd_heads(x, y, mask, 3, **kw)
    for j in (0, 3):
        w_one, b_one = dp_sgd_heads(x, y, mask[j : j + 1], 3, first_model=j, **kw)
        np.testing.assert_allclose(w_one[0], w_all[j], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(b_one[0], b_all[j], rtol=1e-12, atol=1e-12)
    # Same seed -> same numbers; another seed -> different noise.
    w_again, _ = dp_sgd_heads(x, y, mask, 3, **kw)
    np.testing.assert_array_equal(w_again, w_all)
    w_other, _ = dp_sgd_heads(x, y, mask, 3, **(kw | {"seed": 12}))
    assert not np.allclose(w_other, w_all)


def test_train_dp_heads_metadata_and_logits():
    x, y, mask = _problem(k=3, n=60)
    mask = np.zeros_like(mask)
    for j in range(3):
        mask[j, np.random.default_rng(j).permutation(60)[:30]] = True
    cfg = DPConfig(epsilon=3.0, steps=30)
    heads = train_dp_heads(x, y, mask, 3, cfg)
    assert isinstance(heads, DPTrainedHeads) and heads.n_models == 3 and heads.n_classes == 3
    assert heads.sampling_rate == 1.0  # 30 examples <= 128 expected batch: full batch
    assert heads.delta == default_delta(30) == 1e-3
    assert heads.epsilon <= 3.0 * (1 + 1e-6)
    assert heads.epsilon == pytest.approx(3.0, rel=0.01)
    assert heads.epsilon == pytest.approx(epsilon_for(heads.noise_multiplier, 1.0, 30, 1e-3))
    info = heads.privacy_dict()
    assert info["steps"] == 30 and info["normalization"] == "l2-per-example"
    # Logits apply the normalisation; plain head_logits refuses DP heads.
    z = dp_head_logits(heads, x)
    want = normalize_features(x) @ heads.weights[1] + heads.bias[1]
    np.testing.assert_allclose(z[1], want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(heads.logits(x), z)
    with pytest.raises(MiascaleError):
        head_logits(heads, x)
    plain = train_heads(x, y, mask, 3)
    np.testing.assert_allclose(dp_head_logits(plain, x), head_logits(plain, x))
    with pytest.raises(MiascaleError):
        dp_head_logits(heads, x[:, :2])
    # Larger sets: q = 128 / n, delta from n.
    assert DPConfig(epsilon=1.0).resolve(640) == (0.2, 1e-4)
    assert DPConfig(epsilon=1.0, sampling_rate=0.05, delta=1e-6).resolve(640) == (0.05, 1e-6)


def test_dp_run_empirical_epsilon_below_accountant_and_non_dp_vulnerable():
    from sklearn.datasets import load_digits

    x_all, y_all = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    pool = np.concatenate([np.flatnonzero(y_all == c)[:10] for c in range(10)])  # N = 100
    x, y = x_all[pool], y_all[pool]
    test = np.setdiff1d(np.arange(y_all.size), pool)[:500]
    k, n = 16, pool.size
    mask = np.zeros((k, n), dtype=bool)
    for j in range(0, k, 2):  # complementary halves: every example IN for half the models
        perm = rng.permutation(n)
        mask[j, perm[: n // 2]] = True
        mask[j + 1] = ~mask[j]

    def loss_scores(logits):  # LOSS attack: log p_y (higher = member)
        logp = logits - np.logaddexp.reduce(logits, axis=2, keepdims=True)
        return logp[:, np.arange(n), y]

    # fixed-size halves: the member / non-member worlds differ by a replacement
    heads = train_dp_heads(x, y, mask, 10, DPConfig(epsilon=4.0, seed=1), relation="replace_one")
    acc = (dp_head_logits(heads, x_all[test]).argmax(2) == y_all[test]).mean()
    assert acc > 0.15  # better than chance (10 classes, only 50 examples per model)
    emp = empirical_epsilon(loss_scores(dp_head_logits(heads, x)), mask, delta=heads.delta_game)
    assert heads.epsilon_game > heads.epsilon  # the bound uses the game's (replace-one) ε
    assert 0.0 <= emp.epsilon_lb <= heads.epsilon_game

    plain = train_heads(x, y, mask, 10, HeadConfig(l2=1e-4))
    emp_plain = empirical_epsilon(loss_scores(head_logits(plain, x)), mask, delta=heads.delta)
    assert emp_plain.epsilon_lb > 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epsilon": 0.0},
        {"epsilon": math.inf},
        {"delta": 1.0},
        {"clip": 0.0},
        {"sampling_rate": 0.0},
        {"sampling_rate": 1.2},
        {"expected_batch_size": 0},
        {"steps": 0},
        {"learning_rate": -1.0},
        {"momentum": 1.0},
        {"l2": -0.1},
        {"accountant": "gdp"},
        {"seed": 1.5},
        {"dtype": "float16"},
    ],
)
def test_dp_config_validation(kwargs):
    with pytest.raises(MiascaleError):
        DPConfig(**({"epsilon": 1.0} | kwargs))


def test_train_dp_heads_bad_input():
    x, y, mask = _problem(k=2, n=10)
    with pytest.raises(MiascaleError):
        train_dp_heads(x, y, mask, 3, HeadConfig())
    with pytest.raises(MiascaleError):
        train_dp_heads(x, y, np.zeros_like(mask), 3, DPConfig(epsilon=1.0))
    with pytest.raises(MiascaleError):
        train_dp_heads(x, y, mask[:, :5], 3, DPConfig(epsilon=1.0))
    with pytest.raises(MiascaleError):
        dp_sgd_heads(x, y, mask, 3, noise_multiplier=-1.0, sampling_rate=0.5, steps=1)


def test_float32_close_to_float64_and_normalize():
    x, y, mask = _problem()
    kw = {"noise_multiplier": 0.0, "sampling_rate": 0.5, "steps": 5}  # same batches
    w64, _ = dp_sgd_heads(x, y, mask, 3, **kw)
    w32, _ = dp_sgd_heads(x, y, mask, 3, dtype="float32", **kw)
    np.testing.assert_allclose(w32, w64, atol=1e-4)
    xn = normalize_features(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(xn, [[0.6, 0.8], [0.0, 0.0]])
