"""Test accuracy of the target models against shots (ordinarily trained cells)."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from miascale.report import plots
from miascale.report.common import group_key, group_title, row_group
from miascale.report.rundata import RunData
from miascale.report.sections.base import Section
from miascale.report.templating import figure


def _per_group(rows: list[dict]) -> dict[tuple, dict[int, list[float]]]:
    """group -> S -> the cells' test accuracies (one per cell)."""
    per_cell: dict[str, tuple] = {}
    for r in rows:
        acc = r.get("test_accuracy")
        if acc is None or not math.isfinite(acc) or r["cell_id"] in per_cell:
            continue
        per_cell[r["cell_id"]] = (row_group(r), r["shots"], acc)
    groups: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for g, s, acc in per_cell.values():
        groups[g][int(s)].append(float(acc))
    return groups


def context(run: RunData) -> dict[str, Any]:
    groups = _per_group(run.plain_rows)  # DP cells: see the privacy section
    if not groups:
        empty = (
            "Test accuracy of DP cells is in the Differential privacy section."
            if run.dp_rows and not run.plain_rows
            else "No test accuracy was recorded for this run."
        )
        return {"empty": empty, "figure": None}
    series = []
    for g in sorted(groups, key=group_key):
        shots = sorted(groups[g])
        vals = [groups[g][s] for s in shots]
        series.append(
            plots.AccuracySeries(
                label=group_title(g),
                shots=np.array(shots, dtype=np.float64),
                median=np.array([np.median(v) for v in vals]),
                low=np.array([min(v) for v in vals]),
                high=np.array([max(v) for v in vals]),
            )
        )
    png = plots.accuracy_plot("Test accuracy of the target models", series)
    caption = ("Median over seeds of the mean test accuracy of the target models; bars: min to "
               "max over seeds. Log x axis.")  # fmt: skip
    return {"empty": None, "figure": figure(png, "Test accuracy vs shots", caption)}


SECTION = Section("accuracy", "Test accuracy vs shots", context, nav="Accuracy")
