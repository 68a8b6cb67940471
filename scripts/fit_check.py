"""Check a sweep's fit the way issue "Numbers a reader can trust" asks, and print a markdown report.

For every level: admitted cells and their S range, β_S with its 95% interval and width, weighted
R², the ε = 1 plan as an interval; the same fit on two disjoint halves of the seeds and whether
they agree (difference within 1.96 combined standard errors, each estimate inside the other's
interval); and whether the median TPR over seeds ever rises with S beyond the interval of the
previous S.

    .venv/bin/python scripts/fit_check.py runs/grid6 --halves 0,1,2:3,4,5
"""

from __future__ import annotations

import argparse
import itertools
import math
from collections import defaultdict

import numpy as np

from miascale.experiments.store import ResultStore
from miascale.fit_rules import summarize_cell
from miascale.planning import plan_sentence
from miascale.scaling import fit_power_law, plan


def _rows(run_dir: str) -> list[dict]:
    with ResultStore.load(run_dir) as store:
        rows = store.rows()
    for r in rows:
        if r["classes"] is None:
            r["classes"] = r["n_classes"]
    return rows


def _fmt(lv) -> str:
    if not lv.ok:
        return f"{lv.status} ({lv.n_points} admitted)"
    lo, hi = lv.ci_s
    s0, s1 = lv.shots_range
    return (
        f"β_S {lv.beta_s:.3f} [{lo:.3f}, {hi:.3f}] (width {hi - lo:.3f}), R² {lv.r_squared:.3f}, "
        f"{lv.n_points} cells, S {s0}–{s1}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--halves", default="0,1,2:3,4,5")
    ap.add_argument("--classes", type=int, default=10)
    args = ap.parse_args()
    rows = _rows(args.run_dir)
    halves = [[int(x) for x in h.split(",")] for h in args.halves.split(":")]
    full = fit_power_law(rows)
    parts = [fit_power_law([r for r in rows if r["seed"] in h]) for h in halves]
    print(f"## {args.run_dir}: {len({r['seed'] for r in rows})} seeds\n")
    for lv in full.levels:
        key = (lv.attack, lv.variant, lv.fpr_level)
        print(f"### {lv.attack}-{lv.variant} FPR {lv.fpr_level:g}\n")
        print(f"- all seeds: {_fmt(lv)}")
        if lv.ok:
            print(f"  - plan: {plan_sentence(plan(lv, lv.fpr_level, args.classes, epsilon=1.0))}")
        for h, f in zip(halves, parts, strict=True):
            print(f"- seeds {h}: {_fmt(f.level(*key))}")
        a, b = (f.level(*key) for f in parts)
        if a.ok and b.ok:
            diff = abs(a.beta_s - b.beta_s)
            comb = 1.96 * math.hypot(a.se_s, b.se_s)
            inside = a.ci_s[0] <= b.beta_s <= a.ci_s[1] and b.ci_s[0] <= a.beta_s <= b.ci_s[1]
            print(f"- halves agree: |Δβ_S| = {diff:.3f} vs 1.96·combined SE {comb:.3f} → "
                  f"{'yes' if diff <= comb else 'NO'}; each inside the other's interval: "
                  f"{'yes' if inside else 'no'}")  # fmt: skip
        # monotonicity of the median TPR over seeds
        by_s: dict[int, list[dict]] = defaultdict(list)
        for r in rows:
            if (r["attack"], r["variant"], r["fpr_level"]) == key:
                by_s[r["shots"]].append(r)
        shots = sorted(by_s)
        rises = []
        for s0, s1 in itertools.pairwise(shots):
            c0 = by_s[s0]
            summ = summarize_cell(
                lv.fpr_level, [r["tpr"] for r in c0], [r["ci_low"] for r in c0],
                [r["ci_high"] for r in c0], [r.get("se") for r in c0],
                [r.get("n_neg") for r in c0], 0.95,
                [None if r.get("cp_low") is None else (r["cp_low"], r["cp_high"]) for r in c0],
            )  # fmt: skip
            m1 = float(np.median([r["tpr"] for r in by_s[s1]]))
            if m1 > summ.ci_high:
                rises.append(f"S {s0}→{s1}: {np.median([r['tpr'] for r in c0]):.4f}→{m1:.4f}")
        print(f"- median TPR rises beyond the CI: {'; '.join(rises) if rises else 'never'}")
        medians = ", ".join(f"{s}: {np.median([r['tpr'] for r in by_s[s]]):.3f}" for s in shots)
        print(f"- median TPR by S: {medians}")
        if lv.excluded:
            ex = "; ".join(f"S={e.shots}: {', '.join(e.reasons)}" for e in lv.excluded)
            print(f"- excluded: {ex}")
        print()


if __name__ == "__main__":
    main()
