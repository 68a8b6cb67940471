"""Sweep result rows, validated and grouped into levels and cells for the fit.

A *level* is ``(attack, variant, fpr_level)``; a *cell* is ``(dataset, backbone, classes,
shots)`` within a level, holding one value per seed (``docs/design/scaling.md``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from miascale.errors import MiascaleError
from miascale.plan_results import _check_fpr

REQUIRED_KEYS = (
    "dataset",
    "backbone",
    "classes",
    "shots",
    "seed",
    "attack",
    "variant",
    "fpr_level",
    "tpr",
    "ci_low",
    "ci_high",
    "advantage",
    "resolvable",
)


@dataclass
class _Cell:
    dataset: str
    backbone: str
    classes: int
    shots: int
    tpr: list[float] = field(default_factory=list)
    adv: list[float] = field(default_factory=list)
    ci_low: list[float] = field(default_factory=list)
    ci_high: list[float] = field(default_factory=list)
    se: list[float | None] = field(default_factory=list)
    cp: list[tuple[float, float] | None] = field(default_factory=list)
    floor: list[float | None] = field(default_factory=list)
    ceiling: list[float | None] = field(default_factory=list)
    n_neg: list[int | None] = field(default_factory=list)
    seeds: list[Any] = field(default_factory=list)
    unresolvable: bool = False


def _row_error(i: int, msg: str) -> MiascaleError:
    return MiascaleError(
        f"Sweep result row {i} is invalid: {msg} Each row must be a dictionary with the keys "
        f"{', '.join(REQUIRED_KEYS)} as written by the sweep; fix or regenerate that row."
    )


def _num(row: Mapping[str, Any], key: str, i: int) -> float:
    v = row[key]
    if isinstance(v, bool) or not isinstance(v, int | float | np.number):
        raise _row_error(i, f"{key!r} must be a number, got {v!r}.")
    v = float(v)
    if not math.isfinite(v):
        raise _row_error(i, f"{key!r} must be finite, got {v!r}.")
    return v


def _optional(
    row: Mapping[str, Any], key: str, i: int, signed: bool = False, allow_inf: bool = False
) -> float | None:
    """An optional number (``se``, ``n_neg``, ``floor``, ``ceiling``): None when absent or null."""
    if row.get(key) is None:
        return None
    if allow_inf and row[key] == math.inf:
        return math.inf
    v = _num(row, key, i)
    if v < 0 and not signed:
        raise _row_error(i, f"{key!r} must be >= 0, got {v!r}.")
    return v


def _posint(row: Mapping[str, Any], key: str, i: int) -> int:
    v = row[key]
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or int(v) < 1:
        raise _row_error(i, f"{key!r} must be a positive integer, got {v!r}.")
    return int(v)


def _check_row(row: Any, i: int) -> float:
    """Check that row ``i`` is a dictionary with every required key; its FPR level."""
    if not isinstance(row, Mapping):
        raise _row_error(i, f"it is a {type(row).__name__}, not a dictionary.")
    missing = [k for k in REQUIRED_KEYS if k not in row]
    if missing:
        raise _row_error(i, f"missing key(s) {', '.join(missing)}.")
    fpr = row["fpr_level"]
    try:
        return _check_fpr(fpr)
    except MiascaleError:
        raise _row_error(
            i, f"'fpr_level' must lie strictly between 0 and 1, got {fpr!r}."
        ) from None


def _measured(row: Mapping[str, Any], i: int) -> tuple[float, float, float, float, bool]:
    """Row ``i``'s required measurements: ``tpr, advantage, ci_low, ci_high, resolvable``."""
    tpr, adv = _num(row, "tpr", i), _num(row, "advantage", i)
    lo, hi = _num(row, "ci_low", i), _num(row, "ci_high", i)
    res = row["resolvable"]
    if not isinstance(res, bool | np.bool_):
        raise _row_error(i, f"'resolvable' must be true or false, got {res!r}.")
    return tpr, adv, lo, hi, bool(res)


def _add_seed(cell: _Cell, row: Mapping[str, Any], i: int, measured: tuple) -> None:
    """Append row ``i`` (one seed, its ``measured`` values and optional fields) to ``cell``."""
    tpr, adv, lo, hi, res = measured
    cell.seeds.append(row["seed"])
    cell.tpr.append(tpr)
    cell.adv.append(adv)
    cell.ci_low.append(lo)
    cell.ci_high.append(hi)
    cell.se.append(_optional(row, "se", i))
    cp_lo, cp_hi = _optional(row, "cp_low", i), _optional(row, "cp_high", i)
    cell.cp.append(None if cp_lo is None or cp_hi is None else (cp_lo, cp_hi))
    cell.floor.append(_optional(row, "floor", i, signed=True))
    cell.ceiling.append(_optional(row, "ceiling", i, signed=True, allow_inf=True))
    q = _optional(row, "n_neg", i)
    cell.n_neg.append(None if q is None else int(q))
    cell.unresolvable |= not res


def _collect(rows: Iterable[Mapping[str, Any]]) -> dict[tuple, dict[tuple, _Cell]]:
    """Group rows into levels -> cells, validating every row."""
    if isinstance(rows, Mapping) or isinstance(rows, str | bytes):
        raise MiascaleError(
            "fit_power_law expects a sequence of result rows (dictionaries), got a single "
            f"{type(rows).__name__}. Pass a list of the sweep's rows."
        )
    levels: dict[tuple, dict[tuple, _Cell]] = {}
    for i, row in enumerate(rows):
        fpr = _check_row(row, i)
        classes, shots = _posint(row, "classes", i), _posint(row, "shots", i)
        measured = _measured(row, i)
        level = (str(row["attack"]), str(row["variant"]), fpr)
        key = (str(row["dataset"]), str(row["backbone"]), classes, shots)
        cell = levels.setdefault(level, {}).setdefault(key, _Cell(*key))
        if row["seed"] in cell.seeds:
            raise _row_error(
                i,
                f"seed {row['seed']!r} appears twice for dataset={key[0]!r}, "
                f"backbone={key[1]!r}, classes={classes}, shots={shots}, attack={level[0]!r}, "
                f"variant={level[1]!r}, fpr_level={fpr} (duplicated sweep results?); keep one "
                f"row per seed.",
            )
        _add_seed(cell, row, i, measured)
    if not levels:
        raise MiascaleError(
            "fit_power_law got no result rows. Run the sweep first (at least two shot values "
            "per attack, variant and FPR level) and pass its rows."
        )
    return levels
