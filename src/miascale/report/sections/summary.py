"""The appendix: run details, failed cells, the sweep's configuration and package versions."""

from __future__ import annotations

import json
from typing import Any

from miascale.report.common import DASH, ckey, fmt_c, fmt_list
from miascale.report.rundata import RunData, package_versions
from miascale.report.sections.base import Section


def _items(run: RunData, n_done: int, n_failed: int) -> list[tuple[str, str]]:
    rows, spec = run.rows, run.spec
    variants = spec.get("variants") or [f"{a}-{v}" for a, v in run.attack_variants]
    return [
        ("Datasets", fmt_list(sorted({r["dataset"] for r in rows}))),
        ("Backbones", fmt_list(sorted({r["backbone"] for r in rows}))),
        ("Shots S (examples per class)", fmt_list(sorted({r["shots"] for r in rows}))),
        ("Classes C", fmt_list(fmt_c(c) for c in sorted({r["classes"] for r in rows}, key=ckey))),
        ("Seeds", fmt_list(sorted({r["seed"] for r in rows}))),
        ("Shadow models", str(spec.get("shadow_models", DASH))),
        ("Attack variants", fmt_list(variants)),
        ("FPR levels", fmt_list(f"{f:g}" for f in sorted({r["fpr_level"] for r in rows}))),
        ("Cells", f"{n_done} done, {n_failed} failed"),
        ("Result rows", str(len(rows))),
        ("Sweep started", str(run.meta.get("created_at", DASH))),
        ("Scaling fit", run.fit_source),
    ]


def _failure(c: dict) -> str:
    cfg = c.get("config") or {}
    label = (
        f"{cfg.get('dataset')}/{cfg.get('backbone')} C={fmt_c(cfg.get('classes'))} "
        f"S={cfg.get('shots')} seed={cfg.get('seed')}"
    )
    return f"{label}: {c.get('error') or c.get('status')}"


def context(run: RunData) -> dict[str, Any]:
    failed = [c for c in run.cells if c.get("status") != "done"]
    return {
        "items": _items(run, len(run.cells) - len(failed), len(failed)),
        "failed": [_failure(c) for c in failed],
        "config": json.dumps(run.spec, indent=2, sort_keys=True),
        "versions": list(package_versions().items()),
    }


SECTION = Section("summary", "Appendix: run details", context, nav="Appendix")
