"""The most vulnerable examples: their separation and per-example advantage against S (with the
noise floor), and thumbnails or texts of the top examples of one cell (docs/vulnerability.md)."""

from __future__ import annotations

import json
import zipfile
from collections import defaultdict
from typing import Any

import numpy as np

from miascale.audit.signals import Signals
from miascale.errors import MiascaleError
from miascale.experiments.workflows import numeric_classes
from miascale.report import plots
from miascale.report.rundata import FIT_NAME, RunData, _resolve_artifacts
from miascale.report.sections import advantage
from miascale.report.sections.base import Section
from miascale.report.templating import figure
from miascale.scaling import ScalingFit, fit_power_law

TAIL_SHOWN = {"separation": ("q0.5", "q0.99", "cross_max"), "tail": ("q0.99", "cross_max")}
THUMBNAILS = 16


def _tail_rows(run: RunData) -> list[dict]:
    from miascale.scaling import tail_rows

    rows = [{**r, "classes": numeric_classes(r) or 1} for r in run.plain_rows]
    return [r for r in tail_rows(rows) if r["variant"] in TAIL_SHOWN[r["attack"]]]


def _old_run(run: RunData) -> bool:
    """The run stored the mean above a quantile (before per-example quantiles)."""
    return any(k.startswith("tail_naive_") for r in run.plain_rows for k in r)


def tail_applies(run: RunData) -> bool:
    return bool(_tail_rows(run)) or _old_run(run)


def _floor_table(trows: list[dict]) -> dict[str, Any] | None:
    """Median over seeds of value ± SE and the noise floor, per S, for the separation."""
    by: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for r in trows:
        if r["attack"] == "separation":
            by[(int(r["shots"]), r["variant"])].append(r)
    if not by:
        return None
    names = [n for n in TAIL_SHOWN["separation"] if any(k[1] == n for k in by)]
    rows = []
    for shots in sorted({k[0] for k in by}):
        cells = []
        for n in names:
            rs = by.get((shots, n), [])
            if not rs:
                cells.append(None)
                continue
            v = float(np.median([r["advantage"] for r in rs]))
            se = float(np.median([r["se"] or 0.0 for r in rs]))
            fl = float(np.median([r["floor"] or 0.0 for r in rs]))
            cells.append(f"{v:.2f} ± {se:.2f} ({fl:.2f})")
        rows.append((shots, cells))
    return {"header": ["S", *(f"{n}: value ± SE (floor)" for n in names)], "rows": rows}


def _tail_fit(run: RunData, trows: list[dict]) -> tuple[ScalingFit | None, str]:
    """The tails' fit from ``fit.json`` when it has one, else fitted here."""
    fit_path = run.run_dir / FIT_NAME
    try:
        data = json.loads(fit_path.read_text(encoding="utf-8")) if fit_path.is_file() else {}
        if "tail" in data:
            return ScalingFit.from_dict(data["tail"]), f"read from {FIT_NAME}"
        return fit_power_law(trows), "fitted by the report"
    except (OSError, ValueError, MiascaleError) as e:
        return None, f"no fit: {e}"


def tail_context(run: RunData) -> dict[str, Any]:
    trows = _tail_rows(run)
    if not trows:
        return {"old_run": True}
    fit, source = _tail_fit(run, trows)
    sub = RunData(run.run_dir, run.meta, run.spec, trows, [], fit, source)
    return {"old_run": False, "source": source, "floor_table": _floor_table(trows),
            **advantage.context(sub)}  # fmt: skip


def _ranked_cell(run: RunData) -> dict | None:
    """The done cell at the largest S (lowest seed) with artifacts; non-DP cells first."""
    done = [c for c in run.cells if c.get("status") == "done" and c.get("artifacts")]
    plain = [c for c in done if (c.get("config") or {}).get("epsilon") is None]
    done = plain or done  # ordinary training first; DP cells only in an all-DP run
    if not done:
        return None
    return max(done, key=lambda c: (c["config"]["shots"], -c["config"]["seed"]))


def most_vulnerable_context(run: RunData) -> dict[str, Any]:
    from miascale.data import load_dataset
    from miascale.tails import cross_ranked

    cell = _ranked_cell(run)
    if cell is None:
        return {"error": "No cell artifacts (signals.npz) to read."}
    cfg = cell["config"]
    folder = _resolve_artifacts(run.run_dir, cell["artifacts"])
    try:
        sig = Signals.load(folder)  # type: ignore[arg-type]
        stats, mask, pool_idx = sig.stats, sig.in_mask, sig.pool_indices
        if pool_idx is None:
            raise KeyError("pool_indices")
        ds = load_dataset(cfg["dataset"], cfg.get("min_per_class"))
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile, MiascaleError) as e:
        return {"error": f"Cannot show the most vulnerable examples: {e}"}
    try:
        ranked = cross_ranked(stats, mask, THUMBNAILS, seed=int(cfg["seed"]))
    except MiascaleError as e:
        return {"error": f"Cannot rank the most vulnerable examples: {e}"}
    top = [int(i) for i in ranked.indices]
    values = [f"{v:.2f} ± {se:.2f}" for v, se in zip(ranked.separation, ranked.se, strict=True)]
    labels = [ds.class_names[ds.y_train[pool_idx[i]]] for i in top]
    what = (
        f"{cfg['dataset']} / {cfg['backbone']}, S = {cfg['shots']}, seed {cfg['seed']}: the "
        f"{len(top)} pool examples ranked by their separation (μ_in − μ_out)/σ on one half of "
        "the models and shown with the separation measured on the other half (± its standard "
        "error), so the value is free of the winner's curse."
    )
    out: dict[str, Any] = {"error": None, "what": what, "modality": ds.modality, "figure": None}
    if ds.modality == "image":
        images = [np.asarray(ds.x_train[pool_idx[i]]) for i in top]
        caps = [f"{lab}\nd {v}" for lab, v in zip(labels, values, strict=True)]
        short = f"most vulnerable at S = {cfg['shots']} (cross-fitted separation)"
        png = plots.thumbnail_grid(short, images, caps)
        out["figure"] = figure(png, "most vulnerable images")
    elif ds.modality == "text":
        texts = [ds.x_train[pool_idx[i]] for i in top]
        out["rows"] = list(zip(values, labels, texts, strict=True))
    return out


TAIL = Section("tail", "Most vulnerable examples vs shots", tail_context, tail_applies)
MOST_VULNERABLE = Section(
    "most-vulnerable", "The most vulnerable examples", most_vulnerable_context
)
