"""Benchmark: batched heads (miascale.training.heads) vs a loop of scikit-learn fits.

By default the pool is REAL: cached fashion-mnist x efficientnet-lite0 features, a balanced pool
of S shots per class (N = 2*C*S, default S=64) and a balanced membership plan with K models
(default 65). ``--synthetic`` uses a synthetic low-rank pool instead; ``--features`` an npz.

Reports (a) wall time of ``train_heads`` against one ``LogisticRegression`` per model with the
same objective (per-model standardisation, ``C = 1/(l2*n_k)``, same ``tol``), their ratio and the
largest probability difference on the whole pool; (b) the trainer's achieved GFLOP/s, counting
the matmuls it performs (two N x D x K*C GEMMs per objective evaluation, the preconditioner's
two D x r x K*C GEMMs per application and one per curvature estimate, the masked statistics and
the preconditioner set-up), against this machine's fp32 (and fp64) matmul rate measured in the
same run.

    PYTHONPATH=src python benchmarks/bench_heads.py [--shots 64] [--models 65] [--synthetic]
        [--repeat 3]

The trainer's time is the best of ``--repeat`` runs; the fp32 rate of its GEMM shapes is the
best measured after each run and at the end (each best of 5): on a shared or virtual machine
single measurements vary by 10-40%.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from miascale.training import objective as objective_mod
from miascale.training.heads import STD_FLOOR, HeadConfig, head_logits, train_heads


def synthetic_pool(
    n_classes: int, shots: int, dim: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Features shaped like pooled CNN embeddings: non-negative, low-rank, class signal."""
    rng = np.random.default_rng(seed)
    n = 2 * n_classes * shots
    y = np.repeat(np.arange(n_classes), 2 * shots)
    rank = 64
    basis = rng.normal(size=(rank, dim)) / np.sqrt(rank)
    means = 0.3 * rng.normal(size=(n_classes, rank))
    latent = rng.normal(size=(n, rank)) + means[y]
    x = np.maximum(latent @ basis + 0.5 * rng.normal(size=(n, dim)), 0.0) * 0.5
    return x.astype(np.float32), y


def matmul_rate(dtype: torch.dtype, size: int = 2048, reps: int = 5) -> float:
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2.0 * size**3 / best / 1e9


def same_shape_rate(n: int, d: int, kc: int, reps: int = 5) -> float:
    """fp32 rate of the trainer's two GEMMs as it runs them (class-major, the K*C axis first):
    (K*C, D) @ (D, N) and (K*C, N) @ (N, D)."""
    x = torch.randn(n, d)
    x_t = x.t().contiguous()
    u_t = torch.randn(kc, d)
    r = torch.randn(kc, n)
    u_t @ x_t
    r @ x
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        u_t @ x_t
        r @ x
        best = min(best, time.perf_counter() - t0)
    return 2 * 2.0 * n * d * kc / best / 1e9


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", help="npz with arrays 'features' (N, D) and 'labels' (N,)")
    ap.add_argument("--synthetic", action="store_true", help="synthetic pool, not real features")
    ap.add_argument("--no-precondition", action="store_true", help="plain L-BFGS")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--shots", type=int, default=64, help="S; the pool has N = 2*C*S examples")
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--models", type=int, default=65, help="K")
    ap.add_argument("--l2", type=float, default=HeadConfig().l2)
    ap.add_argument("--tol", type=float, default=HeadConfig().tol)
    ap.add_argument("--dtype", default=HeadConfig().dtype, choices=["mixed", "float64", "float32"])
    ap.add_argument(
        "--phi-tol",
        type=float,
        default=HeadConfig().phi_tol,
        help="attack-facing stopping rule (0 = gradient tolerance only, the exact solution)",
    )
    ap.add_argument(
        "--sklearn-models",
        type=int,
        default=8,
        help="time only this many sklearn fits and extrapolate to K (0 = all K)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="train this many times and count the best time (the matmul rates are best of 5)",
    )
    args = ap.parse_args()

    plan_mask = None
    if args.features:
        data = np.load(args.features)
        x, y = np.asarray(data["features"]), np.asarray(data["labels"]).astype(np.int64)
        source = args.features
    elif args.synthetic:
        x, y = synthetic_pool(args.classes, args.shots, args.dim, args.seed)
        source = "synthetic"
    else:
        from miascale.backbones import resolve
        from miascale.backbones.cache import features_for
        from miascale.data import load_dataset
        from miascale.membership import make_plan
        from miascale.pool import draw_pool

        fs = features_for(load_dataset("fashion-mnist"), resolve("efficientnet-lite0"), quiet=True)
        pool = draw_pool(fs.y_train, args.shots, None, seed=args.seed)
        plan_mask = make_plan("balanced", pool.labels, args.models, 1).in_mask
        x, y = fs.x_train[pool.indices], np.asarray(pool.labels).astype(np.int64)
        source = f"fashion-mnist x efficientnet-lite0, S={args.shots}, balanced plan"
    n, d = x.shape
    n_classes = int(y.max()) + 1
    k = args.models
    if plan_mask is not None:
        mask = np.asarray(plan_mask, dtype=bool)
    else:
        rng = np.random.default_rng(args.seed + 1)
        mask = np.zeros((k, n), dtype=bool)
        for i in range(k):
            mask[i, rng.permutation(n)[: n // 2]] = True
    config = HeadConfig(
        l2=args.l2,
        tol=args.tol,
        dtype=args.dtype,
        phi_tol=args.phi_tol,
        precondition=not args.no_precondition,
    )

    # Capture the problems to read their evaluation / preconditioner counters (flop counting):
    # the K heads' and the one head on the whole pool that they start from.
    captured: list = []
    original = objective_mod.HeadObjective.__init__

    def capturing(self, *a, **kw):  # type: ignore[no-untyped-def]
        original(self, *a, **kw)
        captured.append(self)

    train_heads(x[:64], y[:64], mask[:2, :64], n_classes, HeadConfig(max_iter=2))  # warm-up
    peaks = (matmul_rate(torch.float32), matmul_rate(torch.float64))  # again at the end: the best
    objective_mod.HeadObjective.__init__ = capturing  # type: ignore[method-assign]
    times = []
    same32 = 0.0  # the reference: the best fp32 rate of the trainer's shapes, measured between runs
    for _ in range(args.repeat):  # the same (deterministic) training; the best time counts
        captured.clear()
        t0 = time.perf_counter()
        trained = train_heads(x, y, mask, n_classes, config)
        times.append(time.perf_counter() - t0)
        prob = next(p for p in captured if p.k == k)
        same32 = max(same32, same_shape_rate(n, prob.d, k * n_classes))
    t_ours = min(times)
    objective_mod.HeadObjective.__init__ = original  # type: ignore[method-assign]
    prob = next(p for p in captured if p.k == k)
    n_evals = prob.n_evals
    # the problem as trained: with N < D the heads train on r <= N - 1 span coordinates
    d_run = prob.d
    kc = k * n_classes
    # each evaluation is two GEMMs over the heads it evaluates (a line-search trial evaluates
    # only the heads whose step is pending)
    head_evals = sum(p.n_head_evals for p in captured)  # the start head's evaluations too
    flops = head_evals * n_classes * 2 * (2.0 * n * d_run) + 2 * (2.0 * k * n * d_run)
    pre = prob.preconditioner
    rank, n_apply, n_curv = 0, 0, 0
    if pre is not None:
        rank, n_apply, n_curv = pre.rank, pre.n_apply, pre.n_curv
        m_eig = min(n, d_run)
        flops += 2.0 * n * d_run * m_eig + 4.0 / 3.0 * m_eig**3  # covariance/Gram + eigh (approx.)
        flops += (2 * n_apply + n_curv) * (2.0 * d_run * rank * n_classes)  # per head
        if pre.block is not None:  # the start head's exact curvature block (Preconditioner.at)
            m_blk = pre.block.shape[0]
            flops += n_apply * 2.0 * m_blk**2 + n_classes**2 * n * (rank + 1) ** 2 + 4.0 * m_blk**3
    gflops = flops / t_ours / 1e9
    p_ours = softmax(head_logits(trained, x))

    n_sk = k if args.sklearn_models <= 0 else min(args.sklearn_models, k)
    x64 = x.astype(np.float64)
    max_dp = 0.0
    logp_sk = np.zeros((n_sk, n, n_classes))
    t0 = time.perf_counter()
    for i in range(n_sk):
        xi, yi = x64[mask[i]], y[mask[i]]
        ref = x64 if config.standardize == "pool" else xi  # the heads' recipe (default: pool)
        mu, sd = ref.mean(axis=0), np.maximum(ref.std(axis=0), STD_FLOOR)
        clf = LogisticRegression(C=1.0 / (args.l2 * len(yi)), tol=args.tol, max_iter=10_000)
        clf.fit((xi - mu) / sd, yi)
        p_sk = clf.predict_proba((x64 - mu) / sd)
        logp_sk[i] = clf.predict_log_proba((x64 - mu) / sd)
        max_dp = max(max_dp, float(np.abs(p_sk - p_ours[i]).max()))
    t_sk = (time.perf_counter() - t0) * k / n_sk

    same32 = max(same32, same_shape_rate(n, d_run, kc))
    peak32 = max(peaks[0], matmul_rate(torch.float32))
    peak64 = max(peaks[1], matmul_rate(torch.float64))
    threads = torch.get_num_threads()

    print(
        f"pool: {source}, N={n}, D={d} (trained on {d_run}), C={n_classes}, K={k}, l2={args.l2}, tol={args.tol}, "
        f"dtype={args.dtype}, torch threads={threads}"
    )
    print()
    print("| metric | value |")
    print("|---|---|")
    runs = "" if len(times) == 1 else f", best of {' / '.join(f'{t:.2f}' for t in times)}"
    print(f"| train_heads wall time (K={k}{runs}) | {t_ours:.2f} s |")
    sk_note = "" if n_sk == k else f" (extrapolated from {n_sk} fits)"
    print(f"| sklearn loop wall time{sk_note} | {t_sk:.2f} s |")
    print(f"| speed-up | {t_sk / t_ours:.1f}x |")
    print(f"| L-BFGS iterations / objective evaluations | {trained.n_iter} / {n_evals} |")
    print(f"| preconditioner rank / applications (in all K heads) | {rank} / {n_apply / k:.1f} |")
    print(f"| heads converged | {int(trained.converged.sum())}/{k} |")
    print(f"| max grad (max-abs) | {trained.final_grad_norm.max():.2e} |")
    print(f"| max abs prob difference vs sklearn | {max_dp:.2e} |")
    print(f"| trainer achieved | {gflops:.1f} GFLOP/s |")
    print(f"| torch fp32 matmul rate, 2048^3 | {peak32:.1f} GFLOP/s |")
    print(f"| torch fp32 matmul rate, the trainer's two GEMM shapes | {same32:.1f} GFLOP/s |")
    print(f"| trainer / fp32 rate of the same shapes | {100 * gflops / same32:.0f}% |")
    print(f"| torch fp64 matmul rate | {peak64:.1f} GFLOP/s |")
    print(f"| trainer / fp32 rate | {100 * gflops / peak32:.0f}% |")
    print(f"| trainer / fp64 rate | {100 * gflops / peak64:.0f}% |")
    if n_sk == k:  # the attack on both sets of models: TPR@FPR must agree within the CIs
        from miascale.attacks.lira import lira_scores
        from miascale.metrics import tpr_at_fpr
        from miascale.signals import lira_statistic

        print()
        print("| models | FPR | TPR [95% CI] (LiRA online, per-example variance) |")
        print("|---|---|---|")
        for name, logits in (
            ("miascale batched", head_logits(trained, x)),
            ("sklearn loop", logp_sk),
        ):
            scores = lira_scores(lira_statistic(logits, y), mask).scores
            for m in tpr_at_fpr(scores, mask, (0.1, 0.01, 0.001)):
                print(
                    f"| {name} | {m.fpr_level:g} | {m.tpr:.4f} [{m.ci_low:.4f}, {m.ci_high:.4f}] |"
                )


if __name__ == "__main__":
    main()
