"""Formatting and row helpers shared by the report's sections (pure functions)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

DASH = "–"


def fmt_num(x: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or a dash for a missing / non-finite value."""
    if x is None or not isinstance(x, int | float) or not math.isfinite(x):
        return DASH
    return f"{x:.{digits}f}"


def fmt_coef(value: float | None, ci: tuple[float | None, float | None] | None) -> str:
    """A coefficient with its confidence interval as in the fit table: ``-0.512 [-0.601, -0.423]``."""
    if value is None:
        return DASH
    text = fmt_num(value)
    if ci is not None and ci[0] is not None and ci[1] is not None:
        text += f" [{fmt_num(ci[0])}, {fmt_num(ci[1])}]"
    return text


def fmt_c(c: int | None) -> str:
    """A number of classes; ``None`` means all of the dataset's classes."""
    return "all" if c is None else str(c)


def fmt_list(values: Iterable[Any]) -> str:
    return ", ".join(str(v) for v in values) or DASH


def median_range(values: Iterable[float | None], digits: int = 3) -> str:
    """``median [min, max]`` of the finite values (just the median for one value; a dash for none)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return DASH
    med = fmt_num(float(np.median(vals)), digits)
    if len(vals) == 1:
        return med
    return f"{med} [{fmt_num(min(vals), digits)}, {fmt_num(max(vals), digits)}]"


def ckey(c: int | None) -> tuple[bool, int]:
    """Sort key of a number of classes: numbers first, ``None`` (all classes) last."""
    return (c is None, 0 if c is None else int(c))


def group_key(g: tuple[str, str, int | None]) -> tuple:
    """Sort key of a ``(dataset, backbone, classes)`` group."""
    return (g[0], g[1], ckey(g[2]))


def group_title(g: tuple[str, str, int | None]) -> str:
    return f"{g[0]} / {g[1]}, C = {fmt_c(g[2])}"


def row_group(r: Mapping[str, Any]) -> tuple[str, str, int | None]:
    return (r["dataset"], r["backbone"], r["classes"])


def row_advantage(row: Mapping[str, Any]) -> float | None:
    """A row's advantage: ``advantage``, else TPR − FPR level, else None."""
    adv = row.get("advantage")
    if adv is None and row.get("tpr") is not None:
        adv = float(row["tpr"]) - float(row["fpr_level"])
    return None if adv is None else float(adv)


def variant_name(attack: str, variant: str) -> str:
    """Row columns → the attack variant's name (``loss``/``global`` → ``loss``)."""
    return attack if variant == "global" else f"{attack}-{variant}"


def eps_label(eps: float | None) -> str:
    return "no DP" if eps is None else f"ε = {eps:g}"
