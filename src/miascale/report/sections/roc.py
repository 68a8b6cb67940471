"""ROC curves of ordinarily trained cells from their ``signals.npz`` artifacts: per group, the
smallest, a middle and the largest S with artifacts, every attack variant."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from miascale.audit.signals import Signals
from miascale.errors import MiascaleError
from miascale.report import plots
from miascale.report.common import group_key, group_title, variant_name
from miascale.report.rundata import RunData, _load_signals, _resolve_artifacts
from miascale.report.sections.base import Section
from miascale.report.templating import figure

MAX_ROC_GROUPS = 6


def _roc_for(sig: Signals, attack: str, variant: str, single: bool):
    from miascale.metrics import roc_curve

    name = variant_name(attack, variant)
    if name not in sig.scores:
        if not (single and sig.primary == "scores"):  # version 1: one attack, "scores"
            raise ValueError(f"no scores__{name} in signals.npz")
        name = "scores"
    scores = np.asarray(sig.scores[name], dtype=np.float64)
    mask = sig.in_mask
    if scores.shape != mask.shape:
        raise ValueError(f"{name} has shape {scores.shape} but in_mask {mask.shape}")
    ok = np.isfinite(scores)
    try:
        return roc_curve(scores[ok], mask[ok])
    except MiascaleError as e:
        raise ValueError(str(e)) from None


def _pick_shots(shots: list[int]) -> list[int]:
    shots = sorted(set(shots))
    if len(shots) <= 3:
        return shots
    return sorted({shots[0], shots[(len(shots) - 1) // 2], shots[-1]})


def _artifact_folders(run: RunData) -> tuple[dict[tuple, dict[int, list[tuple[int, Path]]]], int]:
    """group -> shots -> [(seed, artifacts folder)] of the done non-DP cells, and how many have none."""
    by_group: dict[tuple, dict[int, list[tuple[int, Path]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    n_without = 0
    for c in run.cells:
        cfg = c.get("config") or {}
        if c.get("status") != "done" or cfg.get("epsilon") is not None:
            continue  # DP cells: see the privacy section
        folder = _resolve_artifacts(run.run_dir, c.get("artifacts"))
        if folder is None:
            n_without += 1
            continue
        g = (cfg.get("dataset"), cfg.get("backbone"), cfg.get("classes"))
        by_group[g][int(cfg.get("shots"))].append((int(cfg.get("seed", 0)), folder))
    return by_group, n_without


def _chosen(title: str, by_s: dict[int, list[tuple[int, Path]]], notes: list[str]) -> dict:
    """Per S, the lowest seed whose signals.npz exists (missing ones are noted)."""
    chosen: dict[int, tuple[int, Path]] = {}
    for s in sorted(by_s):
        cands = sorted(by_s[s], key=lambda t: t[0])
        present = [t for t in cands if (t[1] / "signals.npz").is_file()]
        if present:
            chosen[s] = present[0]
        else:
            missing = ", ".join(str(f / "signals.npz") for _, f in cands)
            notes.append(f"{title}, S={s}: artifacts recorded but missing ({missing}).")
    return chosen


def _group_series(chosen: dict, avs: list[tuple[str, str]], notes: list[str]) -> list:
    single = len(avs) == 1
    series = []
    for ci, s in enumerate(_pick_shots(list(chosen))):
        seed, folder = chosen[s]
        try:
            sig = _load_signals(folder)
        except ValueError as e:
            notes.append(f"S={s} seed={seed}: {e}.")
            continue
        for si, (attack, variant) in enumerate(avs):
            try:
                roc = _roc_for(sig, attack, variant, single)
            except ValueError as e:
                notes.append(f"S={s} seed={seed} {attack}-{variant}: {e}.")
                continue
            auc = float(np.trapezoid(roc.tpr, roc.fpr))
            label = f"S={s} seed {seed}, {attack}-{variant} (AUC {auc:.3f})"
            series.append(plots.RocSeries(label, roc.fpr, roc.tpr, color=ci, style=si))
    return series


def context(run: RunData) -> dict[str, Any]:
    by_group, n_without = _artifact_folders(run)
    if not by_group:
        empty = (
            "No ROC curves here: DP cells are shown in the Differential privacy section."
            if run.dp_rows and not run.plain_rows
            else "No ROC curves: no cell of this run recorded signal artifacts (signals.npz), "
            "so only the summary metrics are available."
        )
        return {"empty": empty, "figures": [], "notes": []}
    groups = sorted(by_group, key=group_key)
    notes: list[str] = []
    if n_without:
        notes.append(f"{n_without} done cell(s) have no artifacts.")
    if len(groups) > MAX_ROC_GROUPS:
        notes.append(
            f"Showing the first {MAX_ROC_GROUPS} of {len(groups)} (dataset, backbone, classes) "
            f"combinations."
        )
        groups = groups[:MAX_ROC_GROUPS]
    figures = []
    for g in groups:
        title = group_title(g)
        chosen = _chosen(title, by_group[g], notes)
        series = _group_series(chosen, run.plain_attack_variants, notes)
        if series:
            figures.append(figure(plots.roc_plot(title, series), f"ROC curves: {title}"))
        else:
            notes.append(f"No usable signals for {title}.")
    return {"empty": None, "figures": figures, "notes": notes}


SECTION = Section("roc", "ROC curves", context, nav="ROC")
