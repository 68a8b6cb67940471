"""The study page (``STUDY/study.html``): the pooled law over shots and classes, its residuals, the
coefficients with intervals, the intercept test and the out-of-sample errors (``docs/study.md``).

Built from a :class:`~miascale.study_fit.StudyFit` alone (plus the runs' cell counts), with the
sweep report's plotting helpers, templates and CSS (``templates/study.html.j2``); self-contained.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from matplotlib import colormaps

from miascale.paths import atomic_write_bytes
from miascale.report.common import DASH, fmt_coef, fmt_num
from miascale.report.plots import _new_figure, _plain_log_x, figure_png
from miascale.report.templating import css, figure, render
from miascale.study_fit import StudyFit, StudyLevel, group_label

_MARKERS = ("o", "s", "^", "D", "v", "P")
_KIND = {"dataset": "dataset", "classes": "C"}


def _name(lv: StudyLevel) -> str:
    a, v, t = lv.key
    return f"{a}-{v} at FPR {t:g}"


def level_line(lv: StudyLevel) -> str:
    """One plain line: the pooled law, the intercept verdict and the out-of-sample errors."""
    p = lv.pooled
    if not p.ok:
        return f"{_name(lv)}: no pooled law ({p.status}: {p.reason})"
    text = f"{_name(lv)}: β_S = {fmt_coef(p.beta_s, p.ci_s)}"
    if p.uses_classes:
        text += f", β_C = {fmt_coef(p.beta_c, p.ci_c)}"
    text += f", β_0 = {fmt_coef(p.beta_0, p.ci_0)}, R² {fmt_num(p.r_squared)}, {p.n_points} cells"
    text += f" ({len(p.excluded)} excluded). {lv.intercepts.verdict()}"
    if lv.slopes is not None:
        text += f" {lv.slopes.verdict()}"
    for name, h in (("leave-one-dataset-out", lv.lodo), ("leave-one-C-out", lv.loco)):
        if h is not None and h.rmse is not None:
            text += (f" {name}: RMSE {h.rmse:.3f}, MAE {h.mae:.3f} (log10), coverage "
                     f"{h.coverage:.0%} of {h.n_points}.")  # fmt: skip
    return text


def _colors(classes: Sequence[int]) -> dict[int, str]:
    cmap = colormaps["viridis"]
    cs = sorted(set(classes))
    return {c: cmap(0.85 * i / max(1, len(cs) - 1)) for i, c in enumerate(cs)}


def _law(lv: StudyLevel, log_s: np.ndarray, c: int, dataset: str | None = None) -> np.ndarray:
    p, it = lv.pooled, lv.intercepts
    if dataset is None:
        b0, bs, bc = p.beta_0, p.beta_s, p.beta_c
    else:
        b0 = next(x[1] for x in it.intercepts if x[0] == dataset)
        bs, bc = it.beta_s, it.beta_c
    return b0 + bs * log_s + (0.0 if bc is None else bc * math.log10(c))


def advantage_png(lv: StudyLevel) -> bytes:
    """Advantage vs S, coloured by C, one marker per dataset, with the pooled law per C."""
    p = lv.pooled
    pts = [(x, True) for x in p.points] + [(x, False) for x in p.excluded if x.advantage > 0]
    colors = _colors([x.classes for x, _ in pts] or [1])
    datasets = sorted({group_label(x.dataset, x.backbone) for x, _ in pts})
    fig = _new_figure((7.0, 4.6))
    ax = fig.subplots()
    for x, admitted in pts:
        d, col = group_label(x.dataset, x.backbone), colors[x.classes]
        lo, hi = max(x.ci_low - p.fpr_level, x.advantage / 50), x.ci_high - p.fpr_level
        ax.errorbar([x.shots], [x.advantage], yerr=[[x.advantage - lo], [max(hi - x.advantage, 0)]],
                    fmt="none", ecolor=col, elinewidth=0.8, alpha=0.6)  # fmt: skip
        ax.plot([x.shots], [x.advantage], _MARKERS[datasets.index(d) % len(_MARKERS)], color=col,
                markerfacecolor=col if admitted else "none", markersize=5)  # fmt: skip
    if p.ok and p.points:
        lo_s, hi_s = p.shots_range
        s = np.logspace(math.log10(lo_s), math.log10(hi_s), 50)
        for c in sorted({x.classes for x in p.points}):
            ax.plot(s, 10 ** _law(lv, np.log10(s), c), "-", color=colors[c], lw=1.4,
                    label=f"pooled law, C = {c}")  # fmt: skip
            if lv.intercepts.separate:
                for d in datasets:
                    if any(x.classes == c and group_label(x.dataset, x.backbone) == d
                           for x in p.points):  # fmt: skip
                        ax.plot(s, 10 ** _law(lv, np.log10(s), c, d), "--", color=colors[c], lw=0.9)
    else:  # no law to draw: the colours still say which C
        for c in sorted({x.classes for x, _ in pts}):
            ax.plot([], [], "s", color=colors[c], label=f"C = {c}")
    for i, d in enumerate(datasets):
        ax.plot([], [], _MARKERS[i % len(_MARKERS)], color="0.3", label=d)
    _plain_log_x(ax)
    ax.set_yscale("log")
    ax.set_xlabel("shots S (examples per class)")
    ax.set_ylabel("advantage TPR − FPR")
    ax.set_title(f"{_name(lv)}: the pooled law", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="best", ncol=2)
    return figure_png(fig)


def residual_png(lv: StudyLevel) -> bytes:
    """Measured minus pooled-law log10 advantage of the fitted cells, with ±1.96 se bars."""
    p = lv.pooled
    colors = _colors([x.classes for x in p.points])
    datasets = sorted({group_label(x.dataset, x.backbone) for x in p.points})
    fig = _new_figure((6.0, 3.4))
    ax = fig.subplots()
    ax.axhline(0.0, color="0.5", lw=1)
    for x in p.points:
        r = x.y - _law(lv, np.array(math.log10(x.shots)), x.classes)
        i = datasets.index(group_label(x.dataset, x.backbone))
        jitter = 2 ** (0.15 * (i - (len(datasets) - 1) / 2))  # datasets side by side at each S
        ax.errorbar([x.shots * jitter], [r], yerr=[1.96 * x.y_se], fmt=_MARKERS[i % len(_MARKERS)],
                    color=colors[x.classes], markersize=4, elinewidth=0.8)  # fmt: skip
    for i, d in enumerate(datasets):
        ax.plot([], [], _MARKERS[i % len(_MARKERS)], color="0.3", label=d)
    if datasets:
        ax.legend(fontsize=7, loc="best")
    _plain_log_x(ax)
    ax.set_xlabel("shots S")
    ax.set_ylabel("residual (log10)")
    ax.set_title(f"{_name(lv)}: residuals of the pooled law", fontsize=10)
    ax.grid(True, alpha=0.3)
    return figure_png(fig)


def _coef_row(name: str, lf) -> list[str]:
    if not lf.ok:
        return [name, f"{lf.status}: {lf.reason}", DASH, DASH, DASH, str(lf.n_points),
                str(len(lf.excluded))]  # fmt: skip
    rng = lf.shots_range
    return [name, fmt_coef(lf.beta_s, lf.ci_s), fmt_coef(lf.beta_c, lf.ci_c),
            fmt_coef(lf.beta_0, lf.ci_0), fmt_num(lf.r_squared),
            f"{lf.n_points} (S {rng[0]}–{rng[1]})", str(len(lf.excluded))]  # fmt: skip


def _law_table(fit: StudyFit) -> dict:
    conf = f"{fit.confidence:.0%}"
    rows = []
    for lv in fit.levels:
        rows.append(_coef_row(f"pooled, {_name(lv)}", lv.pooled))
        rows += [_coef_row(f"  {d} alone", lf) for d, lf in lv.per_dataset]
    head = ["law", f"β_S [{conf}]", f"β_C [{conf}]", f"β_0 [{conf}]", "R²", "cells", "excluded"]
    return {"header": head, "rows": rows}


def _intercept_rows(fit: StudyFit) -> list[list[str]]:
    rows = []
    for lv in fit.levels:
        it = lv.intercepts
        ints = "; ".join(f"{d}: {fmt_coef(b, (lo, hi))}" for d, b, lo, hi in it.intercepts)
        rows.append([_name(lv), it.verdict(), ints or DASH, fmt_coef(it.beta_s, it.ci_s),
                     fmt_coef(it.beta_c, it.ci_c)])  # fmt: skip
    return rows


def _oos_rows(fit: StudyFit) -> list[list[str]]:
    rows = []
    for lv in fit.levels:
        for h in (lv.lodo, lv.loco, lv.loco_separate):
            if h is None:
                continue
            what = f"leave one {_KIND[h.kind]} out ({h.model})"
            for g in h.groups:
                rows.append([_name(lv), what, g.held, str(g.n_points), fmt_num(g.rmse),
                             fmt_num(g.mae), fmt_num(g.bias),
                             DASH if g.coverage is None else f"{g.coverage:.0%}", g.reason or ""])  # fmt: skip
            if h.n_points:
                rows.append([_name(lv), what, "all", str(h.n_points), fmt_num(h.rmse),
                             fmt_num(h.mae), "", f"{h.coverage:.0%}", ""])  # fmt: skip
    return rows


def _comparison_rows(fit: StudyFit) -> list[list[str]]:
    return [[c["quantity"], f"{c['fpr_level']:g}", f"{c['research_beta_s']:+.2f}", c["ours"] or DASH,
             fmt_coef(c["beta_s"], tuple(c["ci_s"]) if c["ci_s"] else None)
             if c["beta_s"] is not None else c["status"]] for c in fit.comparison()]  # fmt: skip


def _tail_rows(fit: StudyFit) -> list[list[str]]:
    return [[lv.pooled.attack, lv.pooled.variant, f"{lv.key[2]:g}",
             fmt_coef(lv.pooled.beta_s, lv.pooled.ci_s), fmt_coef(lv.pooled.beta_c, lv.pooled.ci_c),
             str(lv.pooled.n_points)] for lv in fit.tails if lv.pooled.ok]  # fmt: skip


def _figures(fit: StudyFit) -> list[dict]:
    figs = []
    for lv in fit.levels:
        figs.append(figure(advantage_png(lv), f"advantage vs S, {_name(lv)}",
                           "Colour: C; marker: dataset; filled: fitted cells, hollow: excluded; "
                           "solid: the pooled law per C over the fitted S range"
                           + ("; dashed: with each dataset's own intercept"
                              if lv.intercepts.separate else "")))  # fmt: skip
        if lv.pooled.ok:
            figs.append(figure(residual_png(lv), f"residuals, {_name(lv)}",
                               "Measured − pooled law (log10) of the fitted cells, ±1.96 se; "
                               "datasets side by side at each S"))  # fmt: skip
    return figs


def render_study(fit: StudyFit, runs: Sequence[dict] = ()) -> str:
    """The study page as a string (``templates/study.html.j2``)."""
    tails = _tail_rows(fit)
    return render(
        "study.html.j2",
        title="miascale study",
        css=css(),
        now=datetime.now(UTC).isoformat(timespec="seconds"),
        datasets=", ".join(fit.datasets),
        lines=[level_line(lv) for lv in fit.levels],
        figures=_figures(fit),
        law=_law_table(fit),
        alpha=f"{fit.alpha:g}",
        intercepts=_intercept_rows(fit),
        confidence=f"{fit.confidence:.0%}",
        oos=_oos_rows(fit),
        comparison=_comparison_rows(fit),
        tails=tails,
        tails_skipped=len(fit.tails) - len(tails),
        runs=[
            [
                r["label"],
                r["run_dir"],
                str(r["cells"]),
                str(r["failed"]),
                f"{r['seconds'] / 3600:.2f} h",
            ]
            for r in runs
        ],
    )


def build_study_report(out: str | Path, fit: StudyFit, runs: Sequence[dict] = ()) -> Path:
    """Write ``out/study.html`` (atomically) and return its path."""
    from miascale.study import REPORT_NAME

    path = Path(out) / REPORT_NAME
    atomic_write_bytes(path, render_study(fit, runs).encode("utf-8"))
    return path
