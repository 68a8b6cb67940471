"""The answer first: per level of ordinarily trained cells, the fitted law, its regime and the plan
for ε = 1. The regimes are defined in docs/design/report.md (and docs/theory.md)."""

from __future__ import annotations

import math
from typing import Any

from miascale.report.common import DASH, ckey, fmt_c, fmt_list
from miascale.report.rundata import RunData
from miascale.report.sections.base import Section

ASYMPTOTIC_SLOPE = -0.5
MAX_SLOPE_WIDTH = 0.2
EPSILON = 1.0


def regime(lf) -> str:
    """One word for the regime of a level fit (docs/design/report.md)."""
    if not lf.ok:
        ceiling = sum("at the ceiling" in e.reasons for e in lf.excluded)
        return "saturated" if lf.n_points == 0 and ceiling * 2 > len(lf.excluded) else "unresolved"
    lo, hi = lf.ci_s
    if hi - lo > MAX_SLOPE_WIDTH:
        return "uncertain"
    return "asymptotic" if lo <= ASYMPTOTIC_SLOPE <= hi else "practical"


def _law(lf) -> str:
    if not lf.ok:
        return f"not fitted ({lf.status})"
    lo, hi = lf.shots_range
    return (
        f"β_S = {lf.beta_s:.3f} [{lf.ci_s[0]:.3f}, {lf.ci_s[1]:.3f}], R² {lf.r_squared:.3f}, "
        f"S = {lo}…{hi}"
    )


def _plan_text(lf, classes: int | None) -> str:
    from miascale.errors import MiascaleError
    from miascale.planning import format_shots, plan

    if not lf.ok:
        return "no plan: the law was not fitted"
    if lf.beta_s >= 0:
        return "no plan: the advantage does not fall with S"
    try:
        p = plan(lf, lf.fpr_level, classes, epsilon=EPSILON)
    except MiascaleError as e:
        return f"no plan: {e}"
    lo, hi = p.shots_ci
    if p.trustworthy:
        return f"S ≈ {format_shots(p.shots)} [{format_shots(lo)}, {format_shots(hi)}]"
    order = f"around 10^{round(math.log10(max(p.shots_real, 1.0)))}"
    return f"cannot answer: {' '.join(p.warnings)} Order of magnitude only: {order}."


def one_line(run: RunData) -> str:
    """The run in one sentence (the headline's first line)."""
    rows = run.rows
    shots = sorted({r["shots"] for r in rows})
    done = sum(c.get("status") == "done" for c in run.cells)
    classes = sorted({r["classes"] for r in rows}, key=ckey)
    return (
        f"{done} cells: {fmt_list(sorted({r['dataset'] for r in rows}))} × "
        f"{fmt_list(sorted({r['backbone'] for r in rows}))}, S = {shots[0]}…{shots[-1]}, "
        f"C = {fmt_list(fmt_c(c) for c in classes)}, "
        f"{len({r['seed'] for r in rows})} seed(s), M = {run.spec.get('shadow_models', DASH)} "
        f"shadow models. Scaling fit: {run.fit_source}."
    )


def headline_rows(fit, classes: int | None) -> list[tuple[str, ...]]:
    """One row per level of ordinarily trained cells: attack, FPR, law, regime, plan."""
    levels = [] if fit is None else [lf for lf in fit.levels if " dp " not in lf.variant]
    return [
        (f"{lf.attack}-{lf.variant}", f"{lf.fpr_level:g}", _law(lf), regime(lf),
         _plan_text(lf, classes))
        for lf in levels
    ]  # fmt: skip


def context(run: RunData) -> dict[str, Any]:
    from miascale.report.sections.advantage import advantage_figures
    from miascale.report.sections.plan import plan_classes

    figures, _ = advantage_figures(run, first_only=True)
    return {
        "what": one_line(run),
        "header": (
            "attack",
            "FPR",
            "law log10(TPR − FPR) vs log10 S",
            "regime",
            f"S per class for ε = {EPSILON:g} (95% interval)",
        ),
        "rows": headline_rows(run.fit, plan_classes(run.rows)[0]),
        "epsilon": f"{EPSILON:g}",
        "figure": figures[0] if figures else None,
    }


SECTION = Section("headline", "The answer", context, nav="Answer")
