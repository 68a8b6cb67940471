"""Benchmark: the research's audit budget end to end, and the same cells with the exact trainer.

Part 1 runs ``miascale sweep`` as a user would (through :func:`miascale.api.run_sweep`) over
fashion-mnist x efficientnet-lite0 features (cached; ``make demo`` or ``miascale features``
fills the cache), C = 10, S = 1, 2, ..., 256, M = 256 shadow models (K = 257), the given seeds,
head-only, LiRA online, and reports the wall time per S and in all.

Part 2 re-audits some of those cells with the exact trainer (``phi_tol=0``, float64 throughout,
gradient tolerance 1e-6: the trainer before the attack-facing stopping rule) and prints both
TPR@FPR with their bootstrap intervals and the difference in units of the interval's half-width.

    PYTHONPATH=src python benchmarks/bench_budget.py [--seeds 0,1,2,3,4,5] [--compare-shots 16,64,128]
        [--backend ray] [--workers N]

The local backend runs one cell per core by default (forked one-thread workers); ``--workers 1``
runs the cells one after the other in this process with all threads.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

DATASET, BACKBONE = "fashion-mnist", "efficientnet-lite0"
SHOTS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def run_budget(
    out: Path, seeds: list[int], models: int, backend: str = "local", workers: int | None = None
) -> float:
    from miascale.api import run_sweep

    t0 = time.perf_counter()
    run_sweep(
        out=out,
        datasets=[DATASET],
        backbones=[BACKBONE],
        shots=list(SHOTS),
        seeds=seeds,
        shadow_models=models,
        on_error="raise",
        backend=backend,
        workers=workers,
    )
    return time.perf_counter() - t0


def compare_exact(out: Path, shots: list[int], models: int) -> None:
    from miascale.api import load_run, run_audit
    from miascale.training.heads import HeadConfig

    rows = load_run(out).rows
    exact_head = HeadConfig(phi_tol=0.0, dtype="float64")
    print()
    print("| S | FPR | TPR fast [95% CI] | TPR exact [95% CI] | difference / CI half-width |")
    print("|---|---|---|---|---|")
    for s in shots:
        t0 = time.perf_counter()
        exact = run_audit(
            dataset=DATASET, backbone=BACKBONE, shots=s, shadow_models=models, seed=0,
            head=exact_head,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        cell = rows[(rows.shots == s) & (rows.seed == 0) & (rows.variant == "online")]
        for m in exact.outcomes[0].metrics:
            fast = cell[cell.fpr_level == m.fpr_level].iloc[0]
            half = (m.ci_high - m.ci_low) / 2
            print(
                f"| {s} | {m.fpr_level:g} | {fast.tpr:.4f} [{fast.ci_low:.4f}, {fast.ci_high:.4f}]"
                f" | {m.tpr:.4f} [{m.ci_low:.4f}, {m.ci_high:.4f}] | {(fast.tpr - m.tpr) / half:+.2f} |"
            )
        print(f"| {s} | exact audit wall time | | {wall:.1f} s | |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2,3,4,5")
    ap.add_argument("--shadow-models", type=int, default=256)
    ap.add_argument("--compare-shots", default="16,64,128", help="'' to skip part 2")
    ap.add_argument("--out", help="run directory (default: a temporary one)")
    ap.add_argument(
        "--backend",
        default="local",
        help="'ray': a local Ray instance runs the cells, one per CPU (needs miascale[ray])",
    )
    ap.add_argument("--workers", type=int, help="local backend: cells at once (default: per core)")
    args = ap.parse_args()
    seeds = _ints(args.seeds)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or Path(tmp) / "budget")
        wall = run_budget(out, seeds, args.shadow_models, args.backend, args.workers)
        n_cells = len(SHOTS) * len(seeds)
        print(
            f"research budget: C = 10, S = 1..256, M = {args.shadow_models}, seeds {args.seeds}: "
            f"{n_cells} cells in {wall:.1f} s ({wall / 60:.2f} min), backend {args.backend}"
            + (f", --workers {args.workers}" if args.workers else "")
        )
        if args.compare_shots:
            compare_exact(out, _ints(args.compare_shots), args.shadow_models)


if __name__ == "__main__":
    main()
