"""Pure conversions between Python values and the store's SQL rows (no database access)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from miascale.errors import MiascaleError
from miascale.experiments.store.schema import (
    BOOL_COLUMNS,
    REQUIRED_KEYS,
    RESULT_COLUMNS,
    ROW_COLUMNS,
)


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _plain(v: Any) -> Any:
    """JSON-ready copy: numpy scalars/arrays to Python, tuples to lists, non-finite floats to None."""
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if hasattr(v, "tolist") and not isinstance(v, str | bytes):  # numpy scalar or array
        return _plain(v.tolist())
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if v is None or isinstance(v, str | int | float | bool):
        return v
    raise TypeError(f"{type(v).__name__} is not JSON-serialisable")


def _column_value(name: str, sqltype: str, v: Any) -> Any:
    if v is None:
        return None
    if hasattr(v, "item") and not isinstance(v, str):  # numpy scalar
        v = v.item()
    if sqltype == "TEXT":
        if not isinstance(v, str):
            raise ValueError(f"{name!r} must be a string, got {v!r}")
        return v
    if sqltype == "REAL":
        if not isinstance(v, int | float):
            raise ValueError(f"{name!r} must be a number, got {v!r}")
        return float(v)  # NaN is stored as NULL
    # INTEGER
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int):
        raise ValueError(f"{name!r} must be an integer, got {v!r}")
    return int(v)


def _diff_keys(a: dict, b: dict) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k, object()) != b.get(k, object()))


def row_params(cid: str, ident: dict, row: Mapping, where: str) -> list[Any]:
    """SQL parameters of one result row (``RESULT_COLUMNS`` then ``extra``), checked.

    ``ident`` holds the cell's identity columns; ``where`` names the row in error messages.
    Raises ValueError for a missing required key, a row that contradicts its cell, a value of
    the wrong type or extra fields that are not JSON-serialisable.
    """
    missing = [k for k in REQUIRED_KEYS if row.get(k) is None]
    if missing:
        raise ValueError(f"{where} lacks required key(s) {', '.join(missing)}")
    for k, v in ident.items():
        if k in row and row[k] != v:
            raise ValueError(f"{where} has {k}={row[k]!r} but the cell has {k}={v!r}")
    if "cell_id" in row and row["cell_id"] != cid:
        raise ValueError(f"{where} has cell_id={row['cell_id']!r}")
    params: list[Any] = [cid, *ident.values()]
    try:
        params.extend(_column_value(n, t, row.get(n)) for n, t in ROW_COLUMNS)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    known = {"cell_id", *ident, *(n for n, _ in ROW_COLUMNS)}
    extra = {k: v for k, v in row.items() if k not in known}
    try:
        params.append(_canonical(_plain(extra)) if extra else None)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: extra fields are not JSON-serialisable: {e}") from None
    return params


def filter_clause(filters: Mapping[str, Any]) -> tuple[list[str], list[Any]] | None:
    """``(conditions, params)`` for :meth:`ResultStore.rows` filters; None when one matches nothing.

    A value may be a scalar (equality; ``None`` matches NULL) or a list/tuple/set (any of).
    """
    where: list[str] = []
    params: list[Any] = []
    for key, value in filters.items():
        if key not in RESULT_COLUMNS:
            raise MiascaleError(
                f"Cannot filter results by {key!r}; filter by one of: {', '.join(RESULT_COLUMNS)}."
            )
        if value is None:
            where.append(f"{key} IS NULL")
        elif isinstance(value, list | tuple | set | frozenset):
            values = list(value)
            if not values:
                return None
            where.append(f"{key} IN ({', '.join('?' * len(values))})")
            params.extend(_plain(values))
        else:
            where.append(f"{key} = ?")
            params.append(_plain(value))
    return where, params


def decode_row(r: tuple) -> dict:
    """A ``results`` row (``RESULT_COLUMNS`` then ``extra``) as a dict, extra fields merged in."""
    d = dict(zip(RESULT_COLUMNS, r[:-1], strict=True))
    for b in BOOL_COLUMNS:
        if d[b] is not None:
            d[b] = bool(d[b])
    if r[-1]:
        d.update(json.loads(r[-1]))
    return d
