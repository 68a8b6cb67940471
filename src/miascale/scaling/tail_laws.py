"""Rows for the laws of the most vulnerable examples (:func:`tail_rows`), fitted like any other
level by :func:`miascale.scaling.fit_power_law`."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

_TAIL_KEY = re.compile(r"^pe_(adv|sep)_(q[0-9.e-]+|max|cross_max)$")
#: the separation has no FPR level; its rows are keyed at this placeholder level
SEPARATION_LEVEL = 0.5


def _tail_row(r: Mapping[str, Any], kind: str, est: str, value: Any) -> dict:
    """One fit row for estimator ``est`` of ``kind`` (``"adv"`` or ``"sep"``) of sweep row ``r``."""
    se = r.get(f"pe_{kind}_se_{est}")
    floor = r.get(f"pe_{kind}_floor_{est}")
    level = float(r["fpr_level"]) if kind == "adv" else SEPARATION_LEVEL
    v = float(value)
    half = 1.96 * (float(se) if se is not None else 0.0)
    return {
        "dataset": r["dataset"], "backbone": r["backbone"], "classes": r["classes"],
        "shots": r["shots"], "seed": r["seed"], "fpr_level": level,
        "attack": "tail" if kind == "adv" else "separation", "variant": est,
        "tpr": level + v, "advantage": v, "ci_low": level + v - half,
        "ci_high": level + v + half, "se": se, "floor": floor,
        "ceiling": None if kind == "adv" else math.inf,
        "resolvable": bool(r.get("pe_resolvable", True)) if kind == "adv" else True,
        "n_neg": None, "test_accuracy": r.get("test_accuracy"),
    }  # fmt: skip


def tail_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict]:
    """Rows for fitting the most vulnerable examples: one per (cell, estimator, level).

    Sweep rows carry :meth:`miascale.tails.Tails.row_fields` (``pe_adv_<name>`` per FPR level,
    ``pe_sep_<name>`` for the separation, with ``_se`` and ``_floor`` companions; the tails do not
    depend on the attack variant, so only the first row of each cell and level is used). Each
    becomes a row with ``attack = "tail"`` (the per-example advantage at that level: ``ceiling``
    ``1 - t``, resolvable only when the level is resolvable for the median example's OUT count)
    or ``attack = "separation"`` (level-free, stored at :data:`SEPARATION_LEVEL`, no ceiling),
    ``variant`` the estimator (``q0.99``, ``max``, ``cross_max``), the value as ``advantage``, its
    bootstrap ``se`` and its noise ``floor``. Fit them with :func:`fit_power_law`: the admission
    rules keep noise-level and saturated values out.
    """
    out: list[dict] = []
    seen: set[tuple] = set()
    sep_seen: set[tuple] = set()
    for r in rows:
        ident = (r.get("cell_id"), r["dataset"], r["backbone"], r["classes"], r["shots"], r["seed"])
        key = (*ident, float(r["fpr_level"]))
        if key in seen:
            continue
        seen.add(key)
        for name, value in r.items():
            m = _TAIL_KEY.match(name)
            if m is None or value is None:
                continue
            kind, est = m.groups()
            if kind == "sep":
                if (*ident, est) in sep_seen:
                    continue
                sep_seen.add((*ident, est))
            out.append(_tail_row(r, kind, est, value))
    return out
