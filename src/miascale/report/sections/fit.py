"""The power-law fit table: coefficients with intervals per attack variant and FPR level, the
points the admission rules left out and the leave-one-dataset-out errors."""

from __future__ import annotations

from typing import Any

from miascale.report.common import DASH, fmt_coef, fmt_num
from miascale.report.rundata import RunData
from miascale.report.sections.base import Section
from miascale.scaling import LevelFit


def _excluded(lf: LevelFit) -> list[str]:
    return [
        f"{p.dataset}/{p.backbone} C={p.classes} S={p.shots}: {'; '.join(p.reasons)} "
        f"(mean advantage {fmt_num(p.advantage, 4)}, 95% CI of TPR [{fmt_num(p.ci_low, 4)}, "
        f"{fmt_num(p.ci_high, 4)}], {p.n_seeds} seed(s))"
        for p in lf.excluded or ()
    ]


def _lodo(lf: LevelFit) -> list[str]:
    return [
        f"{r.dataset} ({r.n_points} pts): "
        + (f"RMSE {fmt_num(r.rmse)}" if r.rmse is not None else (r.reason or DASH))
        for r in lf.lodo or ()
    ]


def _row(lf: LevelFit) -> dict[str, Any]:
    return {
        "cells": [lf.attack, lf.variant],
        "nums": [
            f"{lf.fpr_level:g}",
            fmt_coef(lf.beta_s, lf.ci_s),
            fmt_coef(lf.beta_c, lf.ci_c),
            fmt_coef(lf.beta_0, lf.ci_0),
            fmt_num(lf.r_squared),
            lf.n_points,
        ],
        "status": lf.status if lf.ok else f"{lf.status}: {lf.reason}",
        "excluded": _excluded(lf),
        "lodo": _lodo(lf),
    }


def context(run: RunData) -> dict[str, Any]:
    if run.fit is None:
        return {"source": run.fit_source, "rows": None, "conf": ""}
    conf = f"{run.fit.confidence * 100:g}%"
    return {
        "source": run.fit_source,
        "conf": conf,
        "header": [
            "Attack",
            "Variant",
            "FPR",
            f"β_S [{conf} CI]",
            f"β_C [{conf} CI]",
            f"β_0 [{conf} CI]",
            "R²",
            "Points",
            "Status",
            "Excluded points",
        ],
        "rows": [_row(lf) for lf in run.fit.levels],
    }


SECTION = Section("fit", "Power-law fit", context, nav="Fit")
