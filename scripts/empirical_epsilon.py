"""Empirical ε lower bound of every finished cell of a sweep run directory, from its signals.npz.

    python scripts/empirical_epsilon.py runs/demo [--variant lira-online]

Prints, per S, the median over seeds of the empirical ε lower bound (at the default δ for the
cell's training-set size) — what `miascale sweep` now records in every row, recomputed for runs
written before that.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from collections import defaultdict
from pathlib import Path

import numpy as np

from miascale.privacy import default_delta, empirical_epsilon


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--variant", default="lira-online")
    args = ap.parse_args()
    con = sqlite3.connect(args.run_dir / "results.sqlite")
    by_s: dict[int, list[float]] = defaultdict(list)
    for config, artifacts in con.execute(
        "SELECT config, artifacts FROM cells WHERE status = 'done' AND artifacts IS NOT NULL"
    ):
        cfg = json.loads(config)
        if cfg.get("epsilon") is not None:
            continue
        with np.load(args.run_dir / artifacts / "signals.npz") as z:
            key = f"scores__{args.variant}" if f"scores__{args.variant}" in z.files else "scores"
            scores, mask = z[key], z["in_mask"].astype(bool)
        ok = np.isfinite(scores)
        n = int(mask.sum(1).max())
        e = empirical_epsilon(scores[ok], mask[ok], delta=default_delta(n))
        by_s[int(cfg["shots"])].append(e.epsilon_lb)
    print("| S | empirical ε (median over seeds) | seeds: min–max |")
    print("|---|---|---|")
    for s in sorted(by_s):
        v = by_s[s]
        print(f"| {s} | {np.median(v):.2f} | {min(v):.2f}–{max(v):.2f} |")


if __name__ == "__main__":
    main()
