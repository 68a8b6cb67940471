"""Tests for the batched multinomial logistic-regression heads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from miascale.errors import MiascaleError
from miascale.training.heads import (
    HeadConfig,
    TrainedHeads,
    head_logits,
    train_head_single,
    train_heads,
)

K, N, D, C = 5, 120, 20, 4
EXACT = HeadConfig(l2=1e-2, tol=1e-9, max_iter=5000, phi_tol=0.0, dtype="float64")


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def pool() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(C), N // C)
    centers = rng.normal(size=(C, D))
    scales = rng.uniform(0.5, 3.0, size=D)
    x = ((centers[y] + 1.5 * rng.normal(size=(N, D))) * scales + 5.0).astype(np.float32)
    mask = np.zeros((K, N), dtype=bool)
    for k in range(K):
        mask[k, rng.permutation(N)[: N // 2]] = True
    return x, y, mask


@pytest.fixture(scope="module")
def exact_heads(pool) -> TrainedHeads:
    x, y, mask = pool
    return train_heads(x, y, mask, C, EXACT)


def _half_masks(rng: np.random.Generator, k: int, n: int) -> np.ndarray:
    """(k, n) masks, each with exactly n // 2 random members."""
    mask = np.zeros((k, n), dtype=bool)
    for i in range(k):
        mask[i, rng.permutation(n)[: n // 2]] = True
    return mask


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def test_shapes_and_convergence(exact_heads: TrainedHeads) -> None:
    h = exact_heads
    assert h.weights.shape == (K, D, C) and h.weights.dtype == np.float64
    assert h.bias.shape == (K, C)
    assert h.converged.shape == (K,) and h.converged.all()
    assert (h.final_grad_norm < EXACT.tol).all()
    assert h.n_iter >= 1


RECIPES = ("pool", "subset", "none")


@pytest.mark.parametrize("standardize", RECIPES)
def test_batched_matches_one_at_a_time(pool, standardize: str) -> None:
    x, y, mask = pool
    cfg = HeadConfig(**{**EXACT.__dict__, "standardize": standardize})
    heads = train_heads(x, y, mask, C, cfg)
    assert heads.converged.all()
    for k in range(K):
        w, b = train_head_single(x[mask[k]], y[mask[k]], C, cfg, pool_features=x)
        assert _rel(heads.weights[k], w) < 1e-4
        assert _rel(heads.bias[k], b) < 1e-4


def test_pool_recipe_needs_the_pool_for_the_reference(pool) -> None:
    x, y, mask = pool
    with pytest.raises(MiascaleError, match="pool_features"):
        train_head_single(x[mask[0]], y[mask[0]], C, EXACT)


@pytest.mark.parametrize("standardize", RECIPES)
def test_matches_sklearn(pool, standardize: str) -> None:
    x, y, mask = pool
    x64 = x.astype(np.float64)
    cfg = HeadConfig(**{**EXACT.__dict__, "standardize": standardize})
    exact_heads = train_heads(x, y, mask, C, cfg)
    for k in range(K):
        xk, yk = x64[mask[k]], y[mask[k]]
        ref = {"pool": x64, "subset": xk, "none": None}[standardize]
        mu = np.zeros(D) if ref is None else ref.mean(axis=0)
        sd = np.ones(D) if ref is None else ref.std(axis=0)
        clf = LogisticRegression(C=1.0 / (EXACT.l2 * len(yk)), tol=1e-12, max_iter=100_000)
        clf.fit((xk - mu) / sd, yk)
        # Coefficients in standardised space: V = W * sd.
        v = exact_heads.weights[k] * sd[:, None]
        assert _rel(v, clf.coef_.T) < 1e-4
        # Probabilities on the whole pool (members and non-members).
        p_ours = _softmax(head_logits(exact_heads, x)[k])
        p_sk = clf.predict_proba((x64 - mu) / sd)
        assert np.abs(p_ours - p_sk).max() < 1e-4


def test_head_logits_is_affine_map(pool, exact_heads: TrainedHeads) -> None:
    x, _, _ = pool
    z = head_logits(exact_heads, x[:17], batch_size=5)
    assert z.shape == (K, 17, C) and z.dtype == np.float64
    expected = np.einsum("md,kdc->kmc", x[:17].astype(np.float64), exact_heads.weights)
    np.testing.assert_allclose(z, expected + exact_heads.bias[:, None, :], rtol=1e-12, atol=1e-10)


def test_deterministic_lbfgs(pool, exact_heads: TrainedHeads) -> None:
    x, y, mask = pool
    again = train_heads(x, y, mask, C, EXACT)
    assert np.array_equal(again.weights, exact_heads.weights)
    assert np.array_equal(again.bias, exact_heads.bias)
    assert again.n_iter == exact_heads.n_iter


def test_float32_close_to_float64(pool, exact_heads: TrainedHeads) -> None:
    x, y, mask = pool
    cfg = HeadConfig(l2=1e-2, tol=1e-5, max_iter=300, dtype="float32", phi_tol=0.0)
    h32 = train_heads(x, y, mask, C, cfg)
    p32 = _softmax(head_logits(h32, x))
    p64 = _softmax(head_logits(exact_heads, x))
    assert np.abs(p32 - p64).max() < 1e-3


def test_adam_deterministic_and_near_optimum(pool, exact_heads: TrainedHeads) -> None:
    x, y, mask = pool
    cfg = HeadConfig(
        l2=1e-2, optimizer="adam", epochs=150, batch_size=16, learning_rate=1e-2, seed=3
    )
    a1 = train_heads(x, y, mask, C, cfg)
    a2 = train_heads(x, y, mask, C, cfg)
    assert np.array_equal(a1.weights, a2.weights) and np.array_equal(a1.bias, a2.bias)
    a3 = train_heads(x, y, mask, C, HeadConfig(**{**cfg.__dict__, "seed": 4}))
    assert not np.array_equal(a1.weights, a3.weights)
    assert a1.n_iter == 150 * 4  # 60 examples per model, batches of 16
    p_adam = _softmax(head_logits(a1, x))
    p_exact = _softmax(head_logits(exact_heads, x))
    assert np.abs(p_adam - p_exact).max() < 0.1


def test_progress_callback(pool) -> None:
    x, y, mask = pool
    calls: list[tuple[int, float]] = []
    h = train_heads(
        x, y, mask, C, HeadConfig(max_iter=7), progress=lambda i, g: calls.append((i, g))
    )
    assert [i for i, _ in calls] == list(range(1, h.n_iter + 1))
    assert all(isinstance(g, float) for _, g in calls)


def test_empty_subset_and_missing_class_allowed(pool) -> None:
    x, y, mask = pool
    m = mask.copy()
    m[0] = False
    m[1] &= y != 0  # model 1 never sees class 0
    h = train_heads(x, y, m, C, HeadConfig(l2=1e-2, tol=1e-8))
    assert np.all(h.weights[0] == 0) and np.all(h.bias[0] == 0)
    assert np.isfinite(h.weights).all() and h.converged.all()
    assert (head_logits(h, x)[1].argmax(axis=1) != 0).all()


def test_nan_features_rejected(pool) -> None:
    x, y, mask = pool
    bad = x.copy()
    bad[3, 2] = np.nan
    bad[7, 0] = np.inf
    with pytest.raises(MiascaleError, match="2 non-finite"):
        train_heads(bad, y, mask, C)
    with pytest.raises(MiascaleError, match="non-finite"):
        head_logits(train_heads(x, y, mask, C, HeadConfig(max_iter=2)), bad)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"labels_shift": C}, "labels must lie"),
        ({"mask": np.ones((K, N - 1), bool)}, "in_mask must have shape"),
        ({"mask": np.ones(N, bool)}, "in_mask must have shape"),
        ({"n_classes": 1}, "n_classes"),
    ],
)
def test_input_validation(pool, kwargs, match) -> None:
    x, y, mask = pool
    labels = y + kwargs.get("labels_shift", 0)
    with pytest.raises(MiascaleError, match=match):
        train_heads(x, labels, kwargs.get("mask", mask), kwargs.get("n_classes", C))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"l2": -1.0},
        {"optimizer": "sgd"},
        {"dtype": "float16"},
        {"tol": 0.0},
        {"max_iter": 0},
        {"precondition": 1},
    ],
)
def test_config_validation(kwargs) -> None:
    with pytest.raises(MiascaleError):
        HeadConfig(**kwargs)


def test_precondition_off_reaches_same_optimum(pool, exact_heads: TrainedHeads) -> None:
    x, y, mask = pool
    plain = train_heads(x, y, mask, C, HeadConfig(**{**EXACT.__dict__, "precondition": False}))
    assert plain.converged.all()
    assert _rel(plain.weights, exact_heads.weights) < 1e-4
    assert _rel(plain.bias, exact_heads.bias) < 1e-4


def test_preconditioner_helps_on_correlated_features() -> None:
    # Strongly correlated features (a few dominant directions), like standardised CNN embeddings.
    rng = np.random.default_rng(1)
    n, d, c, k = 160, 60, 3, 4
    y = np.repeat(np.arange(c), -(-n // c))[:n]
    latent = rng.normal(size=(n, 3)) + rng.normal(size=(c, 3))[y]
    x = latent @ rng.normal(size=(3, d)) * 3.0 + 0.3 * rng.normal(size=(n, d))
    mask = _half_masks(rng, k, n)
    cfg = HeadConfig(l2=1e-3, tol=1e-7, max_iter=3000, phi_tol=0.0, dtype="float64")
    pre = train_heads(x, y, mask, c, cfg)
    plain = train_heads(x, y, mask, c, HeadConfig(**{**cfg.__dict__, "precondition": False}))
    assert pre.converged.all() and plain.converged.all()
    assert pre.n_iter < plain.n_iter
    p_pre = _softmax(head_logits(pre, x))
    p_plain = _softmax(head_logits(plain, x))
    assert np.abs(p_pre - p_plain).max() < 1e-4
    w, _ = train_head_single(x[mask[0]], y[mask[0]], c, cfg, pool_features=x)
    assert _rel(pre.weights[0], w) < 1e-3


def test_feature_constant_on_a_subset_gets_no_weight(pool) -> None:
    # Feature 0 is constant on model 0's subset but varies on the rest of the pool (like a
    # sparse ReLU feature); the shared preconditioner must not leak weight into it, since the
    # folding W = V / sd_k would blow any such weight up by 1/STD_FLOOR.
    x, y, mask = pool
    x = x.astype(np.float64).copy()
    x[mask[0], 0] = 0.0
    # to the gradient tolerance (the phi rule may stop earlier, ~1e-3 off in probability)
    cfg = HeadConfig(l2=1e-2, tol=1e-6, standardize="subset", phi_tol=0.0)
    h = train_heads(x, y, mask, C, cfg)
    assert h.converged.all()
    assert np.abs(h.weights[0, 0]).max() < 1e-8
    w, b = train_head_single(
        x[mask[0]], y[mask[0]], C, HeadConfig(l2=1e-2, tol=1e-9, standardize="subset")
    )
    p = _softmax(head_logits(h, x)[0])
    assert np.abs(p - _softmax(x @ w + b)).max() < 1e-3


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_feature_constant_on_a_subset_has_no_gradient_there(pool, dtype) -> None:
    # Its data gradient is a cancellation scaled by 1/STD_FLOOR (noise; in bfloat16 of order 1):
    # it must be exactly 0 where the weight is 0, or plain L-BFGS (no preconditioner mask)
    # moves the weight. Elsewhere the gradient is the float64 one.
    from miascale.training.objective import HeadObjective

    x, y, mask = pool
    x = x.astype(np.float64).copy()
    x[mask[0], 0] = 0.0
    cpu = torch.device("cpu")
    args = (x, y, mask, C, 1e-2)
    prob = HeadObjective(*args, dtype, cpu, "subset", bf16_gradient=True)
    exact = HeadObjective(*args, torch.float64, cpu, "subset")
    theta = torch.as_tensor(np.random.default_rng(1).normal(size=(K, prob.n_params)) * 0.1)
    theta[0, : D * C].view(C, D)[:, 0] = 0.0  # class-major weights (objective.py)
    g = prob.value_and_grad(theta)[1]
    want = exact.value_and_grad(theta)[1]
    assert g.dtype == dtype
    assert (g[0, : D * C].view(C, D)[:, 0] == 0).all()
    want[0, : D * C].view(C, D)[:, 0] = 0.0
    tol = 1e-12 if dtype == torch.float64 else 1e-2  # bfloat16 gradient GEMM where native
    assert float((g.double() - want).abs().max()) <= tol * float(want.abs().max())


def test_fallback_to_plain_lbfgs_reaches_same_optimum(pool, exact_heads, monkeypatch) -> None:
    # heads whose preconditioned phase "crawls" (here: any progress under 1e12x in 3
    # iterations) finish with plain L-BFGS from where they are
    import miascale.training.lbfgs as lbfgs_mod

    monkeypatch.setattr(lbfgs_mod, "CRAWL_WINDOW", 3)
    monkeypatch.setattr(lbfgs_mod, "CRAWL_FACTOR", 1e12)
    phases: list[bool] = []  # the precondition flag of each phase actually run
    run = lbfgs_mod._run

    def recording(prob, opts, theta, done, precondition, it0, progress):  # type: ignore[no-untyped-def]
        if prob.k == K:  # not the one head on the whole pool that the K heads start from
            phases.append(precondition)
        return run(prob, opts, theta, done, precondition, it0, progress)

    monkeypatch.setattr(lbfgs_mod, "_run", recording)
    x, y, mask = pool
    seen: list[int] = []
    mixed = train_heads(x, y, mask, C, EXACT, progress=lambda it, g: seen.append(it))
    assert phases == [True, False]
    assert mixed.converged.all() and mixed.n_iter > 3
    assert seen == list(range(1, mixed.n_iter + 1))  # iterations numbered across both phases
    assert _rel(mixed.weights, exact_heads.weights) < 1e-4
    assert _rel(mixed.bias, exact_heads.bias) < 1e-4


def test_pool_recipe_is_scale_invariant_and_raw_scale_is_checked(pool) -> None:
    x, y, mask = pool
    cfg = HeadConfig(l2=1e-2, tol=1e-9, max_iter=5000)
    base = train_heads(x, y, mask, C, cfg)
    for factor in (1e-3, 1e12):  # pool standardisation: same predictions at any feature scale
        # (above the absolute STD_FLOOR of 1e-6 feature units)
        scaled = train_heads(x.astype(np.float64) * factor, y, mask, C, cfg)
        p0 = _softmax(head_logits(base, x))
        p1 = _softmax(head_logits(scaled, x.astype(np.float64) * factor))
        assert np.abs(p0 - p1).max() < 1e-5
    raw = HeadConfig(l2=1e-2, standardize="none")
    with pytest.raises(MiascaleError, match="standardize='pool'"):
        train_heads(x.astype(np.float64) * 1e12, y, mask, C, raw)


def test_mixed_precision_reaches_the_float64_optimum(pool, exact_heads, monkeypatch) -> None:
    # float32 GEMMs and L-BFGS vector state until rounding stops a line search, then float64
    # to the tight tolerance; the biases (a float32 state let them drift along their common
    # shift, to which the objective is blind) match too
    import miascale.training.lbfgs as lbfgs

    stored = []
    real = lbfgs._Pairs.store

    def recording(self, g_new):
        stored.append((g_new.dtype, self.y.dtype, self.s.dtype))
        return real(self, g_new)

    monkeypatch.setattr(lbfgs._Pairs, "store", recording)
    x, y, mask = pool
    cfg = HeadConfig(**{**EXACT.__dict__, "dtype": "mixed"})
    mixed = train_heads(x, y, mask, C, cfg)
    assert mixed.converged.all() and (mixed.final_grad_norm < EXACT.tol).all()
    assert not mixed.phi_stopped.any()
    assert _rel(mixed.weights, exact_heads.weights) < 1e-4
    assert _rel(mixed.bias, exact_heads.bias) < 1e-4
    f32, f64 = (torch.float32,) * 3, (torch.float64,) * 3
    assert stored[0] == f32 and stored[-1] == f64 and set(stored) == {f32, f64}


def test_phi_rule_stops_heads_near_the_attack_statistics_of_the_optimum() -> None:
    # the default stops a head once its LiRA statistics on the pool stop moving (relative to
    # their spread across models); they stay close to those of the exact optimum
    from miascale.signals import lira_statistic

    rng = np.random.default_rng(5)
    k, n, d, c = 16, 400, 60, 5
    y = np.repeat(np.arange(c), n // c)
    x = rng.normal(size=(n, d)) + 0.7 * rng.normal(size=(c, d))[y]
    mask = _half_masks(rng, k, n)
    exact = train_heads(x, y, mask, c, HeadConfig(tol=1e-10, phi_tol=0.0, dtype="float64"))
    fast = train_heads(x, y, mask, c, HeadConfig(tol=1e-10))
    assert fast.phi_stopped.all() and fast.converged.all()
    assert (fast.final_grad_norm < 100 * 1e-10).all()  # the gradient guard of the phi rule
    # the rule saves iterations (compared in one precision: the default's float32 -> float64
    # switch costs a few of its own)
    fast64 = train_heads(x, y, mask, c, HeadConfig(tol=1e-10, dtype="float64"))
    assert fast64.phi_stopped.all() and fast64.n_iter < exact.n_iter
    phi_exact = lira_statistic(head_logits(exact, x), y)
    phi_fast = lira_statistic(head_logits(fast, x), y)
    spread = np.median(phi_exact.std(axis=0))
    err = np.abs(phi_fast - phi_exact) / spread
    assert np.median(err) < 0.02 and err.max() < 0.5
    off = train_heads(x, y, mask[:3], c, HeadConfig(tol=1e-10))  # K < 4: no spread, rule off
    assert not off.phi_stopped.any()


@pytest.mark.parametrize("standardize", ("pool", "none"))
def test_fewer_examples_than_dimensions_trains_exactly_in_the_pools_span(standardize) -> None:
    # N < D: the heads are trained on the pool's coordinates in its span (r = N - 1 dims) and
    # lifted back; the optimum is the full-space one (scipy on all D dims, one head at a time)
    from miascale.training.span import pool_span

    rng = np.random.default_rng(7)
    k, n, d, c = 5, 40, 100, 4
    y = np.repeat(np.arange(c), n // c)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 2, size=d) + rng.normal(size=(c, d))[y]
    mask = _half_masks(rng, k, n)
    assert pool_span(x, standardize).rank == n - 1
    assert pool_span(x, "subset") is None
    cfg = HeadConfig(l2=1e-2, tol=1e-9, max_iter=5000, phi_tol=0.0, standardize=standardize)
    heads = train_heads(x, y, mask, c, cfg)
    assert heads.converged.all() and (heads.final_grad_norm < cfg.tol).all()
    for i in range(k):
        w, b = train_head_single(x[mask[i]], y[mask[i]], c, cfg, pool_features=x)
        assert _rel(heads.weights[i], w) < 1e-4
        assert _rel(heads.bias[i], b) < 1e-4
    fast = train_heads(x, y, mask, c, HeadConfig(l2=1e-2, standardize=standardize))
    p_fast = _softmax(head_logits(fast, x))
    assert np.abs(p_fast - _softmax(head_logits(heads, x))).max() < 0.05


@pytest.mark.parametrize(("n", "k"), [(40, 5), (160, 5), (400, 17)])
def test_same_heads_whatever_the_thread_count(n, k) -> None:
    # A sweep must store the same numbers in a one-thread Ray worker as locally. MKL rounds some
    # small float32 GEMM shapes differently with 1 and 2 threads (a line search evaluating one
    # or two heads); those run in the orientation whose result does not depend on it.
    import torch
    from sklearn.datasets import load_digits

    xd, yd = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    rows = rng.choice(len(yd), n, replace=False)
    mask = rng.random((k, n)) < 0.5
    before = torch.get_num_threads()
    runs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            runs.append(train_heads(xd[rows].astype(np.float32), yd[rows], mask, 10, HeadConfig()))
    finally:
        torch.set_num_threads(before)
    assert runs[0].n_iter == runs[1].n_iter
    assert np.array_equal(runs[0].weights, runs[1].weights)
    assert np.array_equal(runs[0].bias, runs[1].bias)


def test_head_predictions_are_the_argmax_of_the_logits(pool, exact_heads: TrainedHeads) -> None:
    from miascale.training.heads import head_predictions

    x, _, _ = pool
    pred = head_predictions(exact_heads, x, batch_size=7)
    assert pred.shape == (K, len(x)) and pred.dtype == np.int64
    assert np.array_equal(pred, head_logits(exact_heads, x).argmax(-1))


def test_phi_rule_applies_in_the_pools_span(monkeypatch) -> None:
    # N < D trains in the span with a reduced gradient tolerance tol/sqrt(r); the phi rule's
    # gradient guard stays PHI_GRAD_GUARD x the contract's tol there (relative to the reduced
    # tolerance it kept the rule off at S <= 32 on real features), and phi stays close to the
    # exact optimum's
    import miascale.training.heads as heads_mod
    from miascale.signals import lira_statistic
    from miascale.training.lbfgs import PHI_GRAD_GUARD

    rng = np.random.default_rng(11)
    k, n, d, c = 16, 120, 400, 5
    y = np.repeat(np.arange(c), n // c)
    x = rng.normal(size=(n, d)) + 0.5 * rng.normal(size=(c, d))[y]
    mask = _half_masks(rng, k, n)
    seen = []
    real = heads_mod.minimize
    monkeypatch.setattr(heads_mod, "minimize", lambda p, o, *a: seen.append(o) or real(p, o, *a))
    cfg = HeadConfig()
    fast = train_heads(x, y, mask, c, cfg)
    start, opts = seen  # the head on the whole pool that the K heads start from, then theirs
    assert opts.tol < cfg.tol / 10 and opts.phi_guard == PHI_GRAD_GUARD * cfg.tol
    assert start.tol == opts.phi_guard and start.phi_tol == 0
    assert fast.phi_stopped.mean() > 0.5
    exact = train_heads(x, y, mask, c, HeadConfig(tol=1e-10, phi_tol=0.0, dtype="float64"))
    phi_exact = lira_statistic(head_logits(exact, x), y)
    err = np.abs(lira_statistic(head_logits(fast, x), y) - phi_exact)
    assert np.median(err) / np.median(phi_exact.std(axis=0)) < 0.05


@pytest.mark.parametrize("standardize", ("pool", "subset"))
def test_heads_start_from_one_head_trained_on_the_whole_pool(pool, monkeypatch, standardize):
    # With a shared standardisation the K heads start from one head fitted to the whole pool
    # (a head without data from zero, its exact optimum); with "subset" scales from zero. The
    # optimum is the same either way (checked against scikit-learn in test_matches_sklearn).
    import miascale.training.heads as heads_mod

    x, y, mask = pool
    m = mask.copy()
    m[0] = False
    calls = []
    real = heads_mod.minimize

    def recording(prob, opts, progress=None, theta0=None):  # type: ignore[no-untyped-def]
        res = real(prob, opts, progress, theta0)
        calls.append((prob.k, None if theta0 is None else theta0.numpy().copy(), res.theta))
        return res

    monkeypatch.setattr(heads_mod, "minimize", recording)
    train_heads(x, y, m, C, HeadConfig(standardize=standardize))
    if standardize == "subset":
        assert [(k, t0) for k, t0, _ in calls] == [(K, None)]
        return
    (one, _, fitted), (k, theta0, _) = calls
    assert one == 1 and k == K
    assert np.all(theta0[0] == 0)
    assert np.array_equal(theta0[1:], np.repeat(fitted.numpy(), K - 1, axis=0))


@pytest.mark.parametrize(("n", "d"), [(40, 100), (300, 20)])  # in the pool's span, and not
@pytest.mark.parametrize("dtype", ("float64", "mixed"))
def test_heads_stop_at_the_rounding_floor_below_an_unreachable_tolerance(n, d, dtype) -> None:
    # A head whose objective no longer decreases sits out; with several such heads they used to
    # take turns (a head sitting out had its stall count reset) and ran to max_iter.
    rng = np.random.default_rng(7)
    c = 4 if n == 40 else 3
    y = np.repeat(np.arange(c), n // c)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 2, size=d) + rng.normal(size=(c, d))[y]
    mask = rng.random((8, n)) < 0.5
    cfg = HeadConfig(l2=1e-2, tol=1e-15, max_iter=5000, phi_tol=0.0, dtype=dtype)
    heads = train_heads(x, y, mask, c, cfg)
    assert heads.n_iter < 200
    assert not heads.converged.any() and (heads.final_grad_norm < 1e-8).all()


def test_heads_trained_in_the_span_are_applied_through_it_with_the_same_logits() -> None:
    from dataclasses import replace

    from miascale.training.apply import _span_is_cheaper
    from miascale.training.heads import head_predictions

    rng = np.random.default_rng(3)
    k, n, d, c = 40, 30, 200, 3
    y = np.repeat(np.arange(c), n // c)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 2, size=d) + rng.normal(size=(c, d))[y] + 3.0
    heads = train_heads(x, y, rng.random((k, n)) < 0.5, c, HeadConfig())
    assert heads.span is not None and heads.span[0].rank == n - 1
    assert _span_is_cheaper(n - 1, d, k * c)
    full = replace(heads, span=None)  # the (K, D, C) weights
    test = rng.normal(size=(50, d)) * 2.0 + 3.0
    z, z_full = head_logits(heads, test, batch_size=7), head_logits(full, test)
    assert np.abs(z - z_full).max() < 1e-10 * np.abs(z_full).max()
    assert np.array_equal(head_predictions(heads, test), z_full.argmax(-1))
