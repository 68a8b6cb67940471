"""Attack advantage against shots: one log-log panel per (group, attack variant), every FPR level a
series with its seed range, the points left out of the fit and the fitted law."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from miascale.errors import MiascaleError
from miascale.experiments.workflows import numeric_classes
from miascale.report import plots
from miascale.report.common import fmt_c, fmt_num, group_key, row_advantage
from miascale.report.rundata import RunData
from miascale.report.sections.base import Section
from miascale.report.templating import figure
from miascale.scaling import LevelFit, ScalingFit, predict

# (dataset, backbone, classes, attack, variant) -> fpr -> shots -> rows
Panels = dict[tuple, dict[float, dict[int, list[dict]]]]


def _excluded_keys(lf: LevelFit | None) -> set[tuple[str, str, int, int]]:
    if lf is None:
        return set()
    return {(p.dataset, p.backbone, int(p.shots), int(p.classes)) for p in lf.excluded}


def _level_fit(fit: ScalingFit | None, level: tuple[str, str, float]) -> LevelFit | None:
    if fit is None:
        return None
    try:
        return fit.level(*level)
    except MiascaleError:
        return None


def _fit_line(lf: LevelFit | None, shots: np.ndarray, classes: int | None) -> tuple:
    if lf is None or not lf.ok or shots.size == 0:
        return np.empty(0), np.empty(0)
    lo, hi = lf.shots_range or (shots.min(), shots.max())  # only over the fitted (admitted) S
    xs = np.logspace(math.log10(lo), math.log10(hi), 60)
    try:
        ys = np.array([predict(lf, float(s), classes).advantage for s in xs])
    except MiascaleError:  # the law has a classes term but C is unknown
        return np.empty(0), np.empty(0)
    return xs, ys


def _panels(rows: list[dict]) -> Panels:
    panels: Panels = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in rows:
        key = (r["dataset"], r["backbone"], r["classes"], r["attack"], r["variant"])
        panels[key][float(r["fpr_level"])][int(r["shots"])].append(r)
    return panels


def _point(rs: list[dict], fpr: float) -> tuple[float, float, float]:
    """Mean advantage over seeds and the error bar's ends (widest seed interval, minus the FPR)."""
    advs = [a for a in (row_advantage(r) for r in rs) if a is not None]
    lows = [r["ci_low"] for r in rs if r.get("ci_low") is not None]
    highs = [r["ci_high"] for r in rs if r.get("ci_high") is not None]
    return (
        float(np.mean(advs)) if advs else math.nan,
        min(lows) - fpr if lows else math.nan,
        max(highs) - fpr if highs else math.nan,
    )


def _series(fit: ScalingFit | None, key: tuple, fpr: float, by_s: dict[int, list[dict]]):
    """One FPR level of a panel, and whether it has a fitted line."""
    dataset, backbone, classes, attack, variant = key
    lf = _level_fit(fit, (attack, variant, fpr))
    excluded = _excluded_keys(lf)
    points, exc, cnum = [], [], None
    for s in sorted(by_s):
        points.append(_point(by_s[s], fpr))
        cnum = numeric_classes(by_s[s][0])
        if cnum is not None:
            exc.append((dataset, backbone, s, cnum) in excluded)
        else:
            exc.append(any(k[:3] == (dataset, backbone, s) for k in excluded))
    shots = np.array(sorted(by_s), dtype=np.float64)
    fit_s, fit_y = _fit_line(lf, shots, cnum if cnum is not None else classes)
    label = "separation" if attack == "separation" else f"FPR {fpr:g}"
    if lf is not None and lf.ok:
        label += f" ($\\beta_S$ = {fmt_num(lf.beta_s)})"
    med, lo, hi = (np.array(v) for v in zip(*points, strict=True))
    series = plots.AdvantageSeries(label=label, shots=shots, median=med, lower=lo, upper=hi,
                                   excluded=np.array(exc, dtype=bool), fit_s=fit_s, fit_y=fit_y)  # fmt: skip
    return series, bool(len(fit_s))


def _panel_figure(fit: ScalingFit | None, key: tuple, by_fpr) -> tuple[dict, float]:
    from miascale.report.sections.privacy import _dp_bound_lines

    dataset, backbone, classes, attack, variant = key
    drawn = [_series(fit, key, fpr, by_fpr[fpr]) for fpr in sorted(by_fpr, reverse=True)]
    series = [s for s, _ in drawn]
    floor = plots.advantage_floor(series)
    title = f"{dataset} / {backbone}, C = {fmt_c(classes)}, {attack}-{variant}"
    ylabel = "separation (μ_in − μ_out)/σ" if attack == "separation" else (
        "per-example advantage" if attack == "tail" else "advantage TPR − FPR")  # fmt: skip
    png = plots.advantage_plot(title, series, floor, _dp_bound_lines(by_fpr), ylabel)
    any_fit = any(f for _, f in drawn)
    cap = None if any_fit else "No fitted line: the law could not be fitted for these levels."
    return figure(png, f"Advantage vs shots: {title}", cap), floor


def advantage_figures(run: RunData, first_only: bool = False) -> tuple[list[dict], list[float]]:
    """The panels' figures and their log-axis floors (only the first panel with ``first_only``)."""
    panels = _panels(run.rows)
    keys = sorted(panels, key=lambda k: (*group_key(k[:3]), k[3], k[4]))
    drawn = [_panel_figure(run.fit, k, panels[k]) for k in (keys[:1] if first_only else keys)]
    return [f for f, _ in drawn], [fl for _, fl in drawn]


def context(run: RunData) -> dict[str, Any]:
    figures, floors = advantage_figures(run)
    floor_txt = ", ".join(sorted({f"{f:.0e}" for f in floors}))
    return {"floor": floor_txt, "figures": figures}


SECTION = Section("advantage", "Attack advantage vs shots", context, nav="Advantage vs S")
