"""Attacks side by side: TPR at each FPR level and AUC of every attack variant run on the same
(non-DP) models, and each variant's fitted slope."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from miascale.report.common import (
    DASH,
    fmt_coef,
    group_key,
    group_title,
    median_range,
    row_group,
    variant_name,
)
from miascale.report.rundata import RunData
from miascale.report.sections.base import Section


def applies(run: RunData) -> bool:
    return len(run.plain_attack_variants) > 1


def _group_rows(rows: list[dict], levels: list[float]) -> list[list[str]]:
    """Per (S, attack variant): median [min, max] over seeds of TPR at each level, then AUC."""
    by: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        by[(int(r["shots"]), r["attack"], r["variant"])].append(r)
    out = []
    for s_, attack, variant in sorted(by):
        rs = by[(s_, attack, variant)]
        cols = [median_range([r["tpr"] for r in rs if float(r["fpr_level"]) == t], 4)
                for t in levels]  # fmt: skip
        aucs = list({r["cell_id"]: r.get("auc") for r in rs}.values())
        out.append([str(s_), variant_name(attack, variant), *cols, median_range(aucs, 4)])
    return out


def _slopes(run: RunData) -> list[list[str]]:
    if run.fit is None:
        return []
    return [
        [variant_name(lf.attack, lf.variant), f"{lf.fpr_level:g}",
         fmt_coef(lf.beta_s, lf.ci_s) if lf.ok else DASH]
        for lf in run.fit.levels
        if " dp " not in lf.variant and not lf.attack.startswith("tail")
    ]  # fmt: skip


def context(run: RunData) -> dict[str, Any]:
    levels = sorted({float(r["fpr_level"]) for r in run.plain_rows}, reverse=True)
    by_group: dict[tuple, list[dict]] = defaultdict(list)
    for r in run.plain_rows:
        by_group[row_group(r)].append(r)
    return {
        "header": ["S", "attack", *(f"TPR @ FPR {t:g}" for t in levels), "AUC"],
        "num": [i for i in range(len(levels) + 3) if i != 1],
        "tables": [
            {"title": group_title(g), "rows": _group_rows(by_group[g], levels)}
            for g in sorted(by_group, key=group_key)
        ],
        "has_fit": run.fit is not None,
        "slopes": _slopes(run),
    }


SECTION = Section("attacks", "Attacks side by side", context, applies, nav="Attacks")
