"""A 16-cell sweep, local backend vs Ray backend on this machine: Ray's overhead per cell.

    .venv/bin/python benchmarks/bench_ray.py [--shadow-models 16] [--json]

Cells: scikit-learn's digits as 64-d features (identity backbone), S ∈ {2, 4, 8, 16} × 4 seeds,
LiRA online and offline, FPR ∈ {0.1, 0.01}. Runs, each into a fresh run directory:

1. local backend (in this process, in order);
2. Ray, one task at a time (cold: the first tasks start the worker processes);
3. Ray, one task at a time again (warm workers) — the per-cell overhead is measured here:
   (wall − Σ in-task compute seconds) / cells;
4. Ray, all CPUs (up to 2 × CPUs tasks in flight).

Ray's start-up (``ray.init``) is timed on its own. Every Ray run's stored rows must equal the local
run's (checked).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np

from miascale.experiments import ResultStore, SweepSpec, expand, run_sweep
from miascale.experiments.backends import LocalBackend, RayBackend
from miascale.experiments.cells import FeatureMemo, make_run_cell


def _cell_seconds(run_dir: Path) -> float:
    con = sqlite3.connect(run_dir / "results.sqlite")
    try:
        return float(
            con.execute("SELECT sum(seconds) FROM cells WHERE status='done'").fetchone()[0]
        )
    finally:
        con.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shadow-models", type=int, default=16)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import ray
    from sklearn.datasets import load_digits

    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    d = load_digits()
    npz = tmp / "digits.npz"
    np.savez(npz, features=d.data.astype(np.float32), labels=d.target)
    spec = SweepSpec(
        datasets=(f"npz:{npz}",), backbones=("identity",), shots=(2, 4, 8, 16),
        seeds=(0, 1, 2, 3), variants=("lira-online", "lira-offline"),
        shadow_models=args.shadow_models, fpr=(0.1, 0.01),
    )  # fmt: skip
    cells = expand(spec)
    assert len(cells) == 16
    memo = FeatureMemo(quiet=True)
    memo.get(f"npz:{npz}", "identity", None, None)  # load once, outside the timings

    def sweep(name: str, backend, parallel: bool = False) -> dict:
        run_dir = tmp / name
        with ResultStore.open(run_dir, spec.to_dict()) as store:
            t = time.perf_counter()
            s = run_sweep(cells, store, quiet=True, on_error="raise", backend=backend)
            wall = time.perf_counter() - t
            rows = store.rows()
        assert s.ran == 16 and s.failed == 0
        compute = _cell_seconds(run_dir)
        return {"run": name, "wall_s": wall, "compute_s": compute,
                "overhead_per_cell_ms": 1000 * (wall - compute) / 16, "parallel": parallel,
                "rows": rows}  # fmt: skip

    results = [sweep("local", LocalBackend(make_run_cell(tmp / "local", memo)))]
    n_cpus = os.cpu_count() or 1
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    t = time.perf_counter()
    ray.init(num_cpus=n_cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    init_s = time.perf_counter() - t
    try:
        results.append(sweep("ray-serial-cold", RayBackend(memo, max_in_flight=1)))
        results.append(sweep("ray-serial-warm", RayBackend(memo, max_in_flight=1)))
        results.append(sweep(f"ray-{n_cpus}cpu", RayBackend(memo), parallel=True))
    finally:
        ray.shutdown()
    for r in results[1:]:
        assert r["rows"] == results[0]["rows"], f"{r['run']}: rows differ from the local run"
    for r in results:
        del r["rows"]
    local_wall = results[0]["wall_s"]
    for r in results:
        r["speedup_vs_local"] = local_wall / r["wall_s"]
    doc = {"cells": 16, "shadow_models": args.shadow_models, "cpus": n_cpus,
           "ray_init_s": init_s, "ray_version": ray.__version__, "runs": results}  # fmt: skip
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    print(f"16 cells, K = {args.shadow_models + 1}, {n_cpus} CPUs, ray {ray.__version__}; "
          f"ray.init {init_s:.1f} s (not in the walls below)\n")  # fmt: skip
    print("| run | wall | Σ cell compute | overhead / cell | vs local |")
    print("|---|---|---|---|---|")
    for r in results:
        over = "n/a (parallel)" if r["parallel"] else f"{r['overhead_per_cell_ms']:.0f} ms"
        print(f"| {r['run']} | {r['wall_s']:.2f} s | {r['compute_s']:.2f} s | {over} | "
              f"{r['speedup_vs_local']:.2f}× |")  # fmt: skip


if __name__ == "__main__":
    main()
