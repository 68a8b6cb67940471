"""The shots a privacy target needs: per fitted level and ε, the S at which the law's advantage
falls to what an (ε, 0)-DP mechanism allows, or a numbered note saying why the data cannot answer."""

from __future__ import annotations

from typing import Any

from miascale.errors import MiascaleError
from miascale.experiments.workflows import numeric_classes
from miascale.planning import dp_max_advantage, format_shots, plan, plan_sentence
from miascale.report.common import fmt_c, fmt_num
from miascale.report.rundata import RunData
from miascale.report.sections.base import Section
from miascale.scaling import LevelFit

PLAN_EPSILONS = (0.25, 0.5, 1.0, 2.0)


def plan_classes(rows: list[dict]) -> tuple[int | None, str]:
    """The C the plans are made for, and that choice in words."""
    raw = {r["classes"] for r in rows}
    numeric = {c for c in (numeric_classes(r) for r in rows) if c is not None}
    if len(raw) == 1:
        c = next(iter(raw))
        if c is None:
            c = max(numeric) if numeric else None
        return c, f"C = {fmt_c(c)}, the run's number of classes"
    c = max(numeric) if numeric else None
    return c, f"C = {fmt_c(c)}, the largest number of classes of the run"


class _Notes(list):
    """The distinct reasons, numbered from 1 in order of first use."""

    def number(self, reason: str) -> int:
        if reason not in self:
            self.append(reason)
        return self.index(reason) + 1


def _cell(lf: LevelFit, eps: float, classes: int | None, notes: _Notes) -> dict[str, Any]:
    """One plan entry: ``shots`` with its interval ``ci``, or a ``note`` number; and the target."""
    if not lf.ok:
        return {"note": notes.number(f"fit {lf.status}: {lf.reason}")}
    if lf.beta_s is not None and lf.beta_s >= 0:
        return {"note": notes.number(
            f"The fitted slope β_S = {fmt_num(lf.beta_s)} is ≥ 0: the predicted advantage does not "
            f"fall as S grows, so no number of shots reaches the target."
        )}  # fmt: skip
    try:
        p = plan(lf, lf.fpr_level, classes, epsilon=eps)
    except MiascaleError as e:
        return {"note": notes.number(str(e))}
    target = f"{dp_max_advantage(lf.fpr_level, eps):.3g}"
    if not p.trustworthy:
        return {"note": notes.number(plan_sentence(p)), "target": target}
    lo, hi = p.shots_ci
    return {"shots": format_shots(p.shots), "ci": (format_shots(lo), format_shots(hi)),
            "target": target}  # fmt: skip


def context(run: RunData) -> dict[str, Any]:
    if run.fit is None:
        return {"source": run.fit_source, "rows": None}
    classes, c_text = plan_classes(run.rows)
    notes = _Notes()
    rows = [
        {"cells": [lf.attack, lf.variant], "fpr": f"{lf.fpr_level:g}",
         "plans": [_cell(lf, eps, classes, notes) for eps in PLAN_EPSILONS]}
        for lf in run.fit.levels
    ]  # fmt: skip
    return {
        "source": run.fit_source,
        "c_text": c_text,
        "header": ["Attack", "Variant", "FPR", *(f"ε = {eps:g}" for eps in PLAN_EPSILONS)],
        "rows": rows,
        "notes": list(notes),
    }


SECTION = Section("plan", "Shots needed for a privacy target", context, nav="Plan")
