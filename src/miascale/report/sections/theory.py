"""The simplified model of fine-tuning (``miascale theory`` output, ``theory.json``): its fitted
slopes per FPR level and the figure (docs/theory.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from miascale.errors import MiascaleError
from miascale.report.common import DASH, fmt_num
from miascale.report.rundata import RunData
from miascale.report.sections.base import Section
from miascale.report.templating import figure

THEORY_NAME = "theory.json"
_SLOPES = ("slope_simulation_fresh", "slope_simulation_pool", "slope_exact", "slope_asymptotic")


def _read_theory(run_dir: Path) -> dict | None:
    path = run_dir / THEORY_NAME
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc["levels"], list) or not isinstance(doc["curves"], list):
            raise TypeError("'levels' and 'curves' must be lists")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise MiascaleError(
            f"Cannot read the theory results {path}: {e}. Write them again with "
            f"`miascale theory --out {run_dir}`."
        ) from None
    return doc


def applies(run: RunData) -> bool:
    return (run.run_dir / THEORY_NAME).is_file()


def _level_row(lv: dict) -> list[str]:
    onset = lv.get("asymptotic_onset_shots")
    return [f"{lv.get('fpr'):g}", *(fmt_num(lv.get(k)) for k in _SLOPES),
            DASH if onset is None else f"{onset:,.0f}", str(lv.get("regime", DASH))]  # fmt: skip


def theory_context(doc: dict) -> dict[str, Any]:
    from miascale.report.theory_plot import theory_png

    cfg = doc.get("config", {})
    try:
        fig, error = figure(theory_png(doc), "Theory: advantage vs shots"), None
    except (KeyError, TypeError, ValueError) as e:
        fig, error = None, f"The theory figure could not be drawn: {e}."
    return {
        "config": ", ".join(f"{k} = {v}" for k, v in cfg.items() if not isinstance(v, list | dict)),
        "header": [
            "FPR",
            "simulation (fresh)",
            "simulation (pool)",
            "exact",
            "asymptotic",
            "−½ from S",
            "regime",
        ],
        "rows": [_level_row(lv) for lv in doc["levels"]],
        "figure": fig,
        "error": error,
    }


def context(run: RunData) -> dict[str, Any]:
    doc = _read_theory(run.run_dir)
    if doc is None:  # removed since `applies` looked
        raise MiascaleError(f"{run.run_dir / THEORY_NAME} disappeared while the report was drawn.")
    return theory_context(doc)


SECTION = Section(
    "theory", "Theory: the simplified model of fine-tuning", context, applies, nav="Theory"
)
