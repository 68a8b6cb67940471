"""LiRA-online TPR@FPR with and without the complementary partner among the shadow models.

Reads a finished sweep (each done cell's ``signals.npz``: ``stats``, ``in_mask``), rescores it with
``lira_scores(exclude_partner=False)`` (plain leave-one-out, the partner is a shadow) and with the
default ``exclude_partner=True`` (DESIGN §3), and prints a markdown table of the TPR at each of the
cell's FPR levels, averaged over seeds, for the chosen shots. TPR is pooled over (target, example)
pairs with the bootstrap over pool examples, exactly as ``audit.run_attack`` computes it.

    .venv/bin/python scripts/partner_effect.py runs/grid6 --shots 64,128
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from miascale.attacks.lira import lira_scores
from miascale.experiments.store import ResultStore
from miascale.membership import complement_partners
from miascale.metrics import tpr_at_fpr


def _tprs(stats, in_mask, fpr, exclude, n_boot, seed):
    res = lira_scores(stats, in_mask, online=True, exclude_partner=exclude)
    ok = np.isfinite(res.scores)
    example = np.broadcast_to(np.arange(stats.shape[1]), stats.shape)[ok]
    m = tpr_at_fpr(res.scores[ok], in_mask[ok], fpr, groups=example, n_boot=n_boot, seed=seed)
    return res, [(x.tpr, x.se) for x in m]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", nargs="?", default="runs/grid6")
    ap.add_argument("--shots", default="64,128", help="comma-separated shots per class")
    ap.add_argument("--bootstrap", type=int, default=200)
    args = ap.parse_args()
    shots = [int(s) for s in args.shots.split(",")]
    with ResultStore.load(args.run_dir) as store:
        cells = [c for c in store.cells() if c["status"] == "done"]
    # (S, fpr, exclude) -> list over seeds of (tpr, se)
    table: dict[tuple, list] = defaultdict(list)
    info: dict[int, list] = defaultdict(list)
    for c in sorted(cells, key=lambda c: (c["config"]["shots"], c["config"]["seed"])):
        cfg = c["config"]
        if cfg["shots"] not in shots or not c["artifacts"]:
            continue
        with np.load(Path(args.run_dir) / c["artifacts"] / "signals.npz") as z:
            stats, in_mask = z["stats"], z["in_mask"]
            stored = z["scores__lira-online"] if "scores__lira-online" in z.files else None
        fpr, same = cfg["fpr"], None
        for exclude in (False, True):
            res, vals = _tprs(stats, in_mask, fpr, exclude, args.bootstrap, cfg["seed"])
            for f, v in zip(fpr, vals, strict=True):
                table[(cfg["shots"], f, exclude)].append(v)
            if not exclude and stored is not None:
                same = np.allclose(res.scores, stored, equal_nan=True, rtol=1e-9, atol=1e-9)
        partners = complement_partners(in_mask)
        info[cfg["shots"]].append((cfg["seed"], stats.shape, int((partners >= 0).sum()), same))
    for s in shots:
        for seed, shape, n_pairs, same in info[s]:
            print(
                f"<!-- S={s} seed={seed}: K×N={shape[0]}×{shape[1]}, {n_pairs} models with a "
                f"partner, stored scores == leave-one-out rescoring: {same} -->"
            )
    print()
    print("| S | FPR | seeds | TPR, partner in shadows | TPR, partner excluded | Δ (excl − in) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for s in shots:
        fprs = sorted({f for (ss, f, _) in table if ss == s}, reverse=True)
        for f in fprs:
            old = np.array(table[(s, f, False)])
            new = np.array(table[(s, f, True)])
            d = new[:, 0] - old[:, 0]
            print(
                f"| {s} | {f:g} | {len(old)} | {old[:, 0].mean():.4f} (±{old[:, 1].mean():.4f}) "
                f"| {new[:, 0].mean():.4f} (±{new[:, 1].mean():.4f}) "
                f"| {d.mean():+.4f} ± {d.std(ddof=1) / np.sqrt(d.size):.4f} "
                f"({int((d > 0).sum())}/{d.size} seeds up) |"
            )
    print()
    print(
        "TPR: mean over seeds; (±…): mean bootstrap standard error of one seed's TPR. Δ: mean "
        "over seeds of the paired per-seed difference ± its standard error over seeds."
    )


if __name__ == "__main__":
    main()
