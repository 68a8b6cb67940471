"""Differential privacy: DP-trained cells beside ordinary ones (ε × S table with the empirical ε
lower bound) and their ROC curves under the bound an (ε, δ)-DP model allows."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import numpy as np

from miascale.attacks.registry import variant_columns
from miascale.report import plots
from miascale.report.common import (
    eps_label,
    group_key,
    group_title,
    median_range,
    row_group,
    variant_name,
)
from miascale.report.rundata import RunData, _load_signals, _resolve_artifacts
from miascale.report.sections.base import Section
from miascale.report.sections.roc import _roc_for
from miascale.report.templating import figure

_RELATION_WORDS = {"replace_one": "replace-one", "add_remove": "add/remove"}


def _game_epsilon(r: Mapping[str, Any]) -> tuple[float, float, str]:
    """``(ε, δ, relation in words)`` that bound the attack of a DP row: the ε of the membership
    game played (``epsilon_game``, replace-one for the balanced design). Rows written before it
    was recorded fall back to the add/remove ε (accountant's, else the target), labelled so."""
    if r.get("epsilon_game") is not None:
        rel = r.get("relation")
        words = _RELATION_WORDS.get(rel, str(rel))
        return float(r["epsilon_game"]), float(r.get("delta_game") or 0.0), words
    eps = r.get("accountant_epsilon") or r["epsilon"]
    return float(eps), float(r.get("delta") or 0.0), "add/remove, old run"


def _dp_bound_lines(by_fpr: Mapping[float, Mapping[int, list[dict]]]) -> list:
    """For a DP panel: the advantage an (ε, δ)-DP model allows at each FPR level and S, for the
    ε, δ of the game played (:func:`_game_epsilon`; both may differ by S: q and the default δ
    depend on the training-set size)."""
    from miascale.privacy import dp_roc_bound

    lines = []
    for i, fpr in enumerate(sorted(by_fpr, reverse=True)):
        shots, values, deltas, games = [], [], set(), set()
        words = ""
        for s_ in sorted(by_fpr[fpr]):
            rs = by_fpr[fpr][s_]
            if not rs or rs[0].get("epsilon") is None:
                return []
            eps, delta, words = _game_epsilon(rs[0])
            deltas.add(delta)
            games.add(f"{eps:.3g}")
            shots.append(float(s_))
            values.append(float(dp_roc_bound(np.array([fpr]), eps, delta)[0]) - fpr)
        d = f"{next(iter(deltas)):.0e}" if len(deltas) == 1 else "by S"
        e = next(iter(games)) if len(games) == 1 else "by S"
        lines.append((f"({words} ε={e}, δ={d}) bound at FPR {fpr:g}", np.array(shots),
                      np.array(values), i))  # fmt: skip
    return lines


def _has_privacy(run: RunData) -> bool:
    return bool(run.dp_rows) or any(r.get("empirical_epsilon") is not None for r in run.rows)


def _primary(run: RunData) -> str:
    return (run.spec.get("variants") or ["lira-online"])[0]


def _primary_rows(run: RunData) -> list[dict]:
    primary = _primary(run)
    return [r for r in run.rows
            if variant_name(r["attack"], r.get("base_variant", r["variant"])) == primary]  # fmt: skip


def applies(run: RunData) -> bool:
    return _has_privacy(run) and bool(_primary_rows(run))


def _cell_lines(rs: list[dict]) -> list[str]:
    """One ε × S table entry: TPR, accuracy and empirical ε (with the bound it is held against)."""
    tpr = median_range([r["tpr"] for r in rs], 4)
    acc = median_range([r.get("test_accuracy") for r in rs], 3)
    last = f"ε_lb {median_range([r.get('empirical_epsilon') for r in rs], 2)}"
    acct = [r.get("accountant_epsilon") for r in rs if r.get("accountant_epsilon")]
    if acct:
        e_game, d_game, words = _game_epsilon(rs[0])
        last += f" (bound: {words} ε {e_game:.3g}, δ {d_game:.0e}"
        if rs[0].get("epsilon_game") is not None:
            last += f"; accountant add/remove ε {float(acct[0]):.3g}"
        last += ")"
    elif rs[0].get("empirical_epsilon_delta") is not None:
        last += f" (δ {float(rs[0]['empirical_epsilon_delta']):.0e})"
    return [f"TPR {tpr}", f"acc {acc}", last]


def _tables(rows: list[dict], level: float, epsilons: list) -> list[dict]:
    by: dict[tuple, dict[tuple, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if float(r["fpr_level"]) == level:
            by[row_group(r)][(int(r["shots"]), r.get("epsilon"))].append(r)
    tables = []
    for g in sorted(by, key=group_key):
        body = []
        for s_ in sorted({k[0] for k in by[g]}):
            cells = [_cell_lines(by[g][(s_, e)]) if by[g].get((s_, e)) else None for e in epsilons]
            body.append((s_, cells))
        tables.append({"title": group_title(g), "rows": body})
    return tables


_BOUND_CAPTION = (
    "Solid: the attack's ROC; dotted: the most any attack can achieve against an (ε, δ)-DP model, "
    "TPR ≤ min(e^ε·FPR + δ, 1 − e^−ε·(1 − δ − FPR)), with the accountant's ε, δ for the "
    "membership game played (replace-one for the balanced design; add/remove for bernoulli and "
    "runs that did not record it)."
)


def _done_artifacts(run: RunData) -> dict[tuple, dict[tuple, list]]:
    """group -> (S, ε) -> [(seed, artifacts folder)] of the done cells with artifacts."""
    cells_by: dict[tuple, dict[tuple, list]] = defaultdict(lambda: defaultdict(list))
    for c in run.cells:
        cfg = c.get("config") or {}
        folder = _resolve_artifacts(run.run_dir, c.get("artifacts"))
        if c.get("status") != "done" or folder is None:
            continue
        g = (cfg.get("dataset"), cfg.get("backbone"), cfg.get("classes"))
        cells_by[g][(int(cfg.get("shots")), cfg.get("epsilon"))].append(
            (cfg.get("seed", 0), folder)
        )
    return cells_by


def _bounded_series(cells: dict[tuple, list], s_top: int, epsilons: list, primary: str,
                    game_of) -> list:  # fmt: skip
    """Per ε at ``s_top``: the lowest seed's ROC and, for DP cells, the (ε, δ) bound."""
    from miascale.privacy import dp_roc_bound

    attack, sub = variant_columns(primary)
    fpr_grid = np.logspace(-5, 0, 200)
    series = []
    for ci, e in enumerate(epsilons):
        cands = sorted(cells.get((s_top, e), []), key=lambda t: t[0])
        if not cands:
            continue
        try:
            roc = _roc_for(_load_signals(cands[0][1]), attack, sub, single=True)
        except ValueError:
            continue
        series.append(plots.RocSeries(f"{eps_label(e)}, seed {cands[0][0]}", roc.fpr,
                                      roc.tpr, color=ci, style=0))  # fmt: skip
        if e is not None:
            e_game, d_game, words = game_of(e)
            bound = dp_roc_bound(fpr_grid, e_game, d_game)
            series.append(plots.RocSeries(f"({words} ε = {e_game:.3g}, δ) bound", fpr_grid,
                                          bound, color=ci, style=2))  # fmt: skip
    return series


def _roc_figures(run: RunData, primary: str, epsilons: list) -> list[dict]:
    """ROC curves of the largest S with DP cells, under each ε's bound region."""
    cells_by = _done_artifacts(run)
    games = {(*row_group(r), int(r["shots"]), r.get("epsilon")): _game_epsilon(r)
             for r in run.dp_rows}  # fmt: skip
    figs = []
    for g in sorted(cells_by, key=group_key):
        dp_shots = [k[0] for k in cells_by[g] if k[1] is not None]
        if not dp_shots:
            continue
        s_top = max(dp_shots)

        def game_of(e, g=g, s_top=s_top):
            return games.get((*g, s_top, e), (float(e), 0.0, "add/remove"))

        series = _bounded_series(cells_by[g], s_top, epsilons, primary, game_of)
        if series:
            title = f"{group_title(g)}, S = {s_top}, {primary}"
            png = plots.roc_plot(title, series)
            figs.append(figure(png, f"ROC under DP bounds: {title}", _BOUND_CAPTION))
    return figs


def context(run: RunData) -> dict[str, Any]:
    rows = _primary_rows(run)
    levels = sorted({float(r["fpr_level"]) for r in rows})
    level = 0.01 if 0.01 in levels else levels[len(levels) // 2]
    epsilons = sorted({r.get("epsilon") for r in rows}, key=lambda e: (e is not None, e or 0.0))
    return {
        "primary": _primary(run),
        "level": f"{level:g}",
        "header": ["S", *(eps_label(e) for e in epsilons)],
        "tables": _tables(rows, level, epsilons),
        "figures": _roc_figures(run, _primary(run), epsilons),
    }


SECTION = Section("privacy", "Differential privacy", context, applies, nav="Privacy")
