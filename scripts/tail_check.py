"""The laws of the most vulnerable examples on a finished sweep, recomputed from its artifacts.

Recomputes :func:`miascale.tails.tails` from every cell's ``signals.npz`` (so a run written
before the per-example quantiles can be measured too), fits the laws with the admission rules and
prints them as markdown next to the average-case law. With ``--legacy`` it also fits the older
``tail_naive_*``/``tail_cross_*`` row fields (mean above a quantile) when the rows have them.

    .venv/bin/python scripts/tail_check.py runs/grid6 --legacy
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from miascale.experiments.store import ResultStore
from miascale.scaling import fit_power_law, tail_rows
from miascale.tails import tails

_LEGACY = re.compile(r"^tail_(naive|cross)_(q[0-9.e-]+|max)$")


def _law(lv) -> str:
    if not lv.ok:
        return f"{lv.status}"
    return f"{lv.beta_s:.3f} [{lv.ci_s[0]:.3f}, {lv.ci_s[1]:.3f}]"


def _excluded(lv) -> str:
    counts: dict[str, int] = {}
    for e in lv.excluded:
        for r in e.reasons:
            counts[r] = counts.get(r, 0) + 1
    return ", ".join(f"{n} {r}" for r, n in counts.items()) or "none"


def _legacy_rows(rows: list[dict]) -> list[dict]:
    out, seen = [], set()
    for r in rows:
        key = (r["cell_id"], float(r["fpr_level"]))
        if key in seen:
            continue
        seen.add(key)
        for name, v in r.items():
            m = _LEGACY.match(name)
            if m and v is not None:
                tpr = min(1.0, r["fpr_level"] + v)
                out.append({**{k: r[k] for k in ("dataset", "backbone", "classes", "shots",
                                                  "seed", "fpr_level")},
                            "attack": f"old-{m.group(1)}", "variant": m.group(2), "tpr": tpr,
                            "advantage": v, "ci_low": tpr, "ci_high": tpr,
                            "resolvable": True})  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--legacy", action="store_true")
    args = ap.parse_args()
    run = Path(args.run_dir)
    with ResultStore.load(run) as store:
        rows, cells = store.rows(), {c["cell_id"]: c for c in store.cells()}
    fields: dict[tuple, dict] = {}
    for cid, c in cells.items():
        if c["status"] != "done" or not c.get("artifacts"):
            continue
        with np.load(run / c["artifacts"] / "signals.npz") as z:
            tl = tails(z["stats"], z["in_mask"], c["config"]["fpr"], seed=c["config"]["seed"])
        for t in c["config"]["fpr"]:
            fields[(cid, float(t))] = tl.row_fields(t)
    fresh = []
    for r in rows:
        r = {k: v for k, v in r.items() if not k.startswith("pe_")}
        if r["classes"] is None:
            r["classes"] = r["n_classes"]
        fresh.append({**r, **fields.get((r["cell_id"], float(r["fpr_level"])), {})})
    avg = fit_power_law(fresh)
    tail = fit_power_law(tail_rows(fresh))
    print(f"## {run}: {len(cells)} cells\n")
    print("| quantity | β_S [95% CI] | fitted S | cells | excluded |")
    print("|---|---|---|---:|---|")
    for lv in avg.levels:
        rng = lv.shots_range
        s_txt = "–" if rng is None or not lv.ok else f"{rng[0]}–{rng[1]}"
        print(f"| average {lv.attack}-{lv.variant}, FPR {lv.fpr_level:g} | {_law(lv)} | "
              f"{s_txt} | {lv.n_points} | {_excluded(lv)} |")  # fmt: skip
    for lv in tail.levels:
        what = (f"separation {lv.variant}" if lv.attack == "separation"
                else f"advantage {lv.variant}, FPR {lv.fpr_level:g}")  # fmt: skip
        rng = lv.shots_range
        s_txt = "–" if rng is None or not lv.ok else f"{rng[0]}–{rng[1]}"
        print(f"| {what} | {_law(lv)} | {s_txt} | {lv.n_points} | {_excluded(lv)} |")
    if args.legacy:
        legacy = _legacy_rows(fresh)
        if legacy:
            old = fit_power_law(legacy)
            print("\nOlder fields (mean above the quantile), with the same admission rules:\n")
            print("| quantity | β_S [95% CI] | cells | excluded |")
            print("|---|---|---:|---|")
            for lv in old.levels:
                print(f"| {lv.attack} {lv.variant}, FPR {lv.fpr_level:g} | {_law(lv)} | "
                      f"{lv.n_points} | {_excluded(lv)} |")  # fmt: skip


if __name__ == "__main__":
    main()
