"""Benchmark: wall time of the default ``miascale theory`` run (target < 120 s on 2 cores).

Defaults: d = 100, σ = 0.1, C = 10, S = 1, 2, 4, …, 1024, M = 64 (K = 65), FPR 0.1/0.01/0.001,
both populations, 2,048 targets per S (+ 3 fixed examples × 512 replicate columns, fresh).
Times the command itself (``miascale theory --json`` in a subprocess, so imports count too) and
the library call :func:`miascale.theory.run_theory` alone, then prints the slope table.

    .venv/bin/python benchmarks/bench_theory.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from miascale.theory import TheoryConfig, run_theory


def main() -> None:
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "miascale.cli", "theory", "--json"], capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(r.stderr)
    doc = json.loads(r.stdout)
    t1 = time.perf_counter()
    run_theory(TheoryConfig())
    lib = time.perf_counter() - t1
    print(f"miascale theory (defaults), whole command: {wall:.1f} s; run_theory alone: {lib:.1f} s")
    print(f"target < 120 s: {'met' if wall < 120 else 'MISSED'}")
    print("| FPR | slope sim fresh | slope sim pool | slope exact | asymptotic | −½ from S |")
    print("|---|---|---|---|---|---|")
    for lvl in doc["levels"]:
        print(
            f"| {lvl['fpr']:g} | {lvl['slope_simulation_fresh']:.3f} | "
            f"{lvl['slope_simulation_pool']:.3f} | {lvl['slope_exact']:.3f} | -0.5 | "
            f"{lvl['asymptotic_onset_shots']:,.0f} |"
        )


if __name__ == "__main__":
    main()
