"""Typed HPO search spaces (:class:`FloatRange`, :class:`IntRange`, :class:`Choice`), the spaces
of the heads and of FiLM, and :func:`apply_params` (see ``docs/design/hpo.md``)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from miascale.errors import MiascaleError


def _is_real(v: object) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def _is_int(v: object) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


@dataclass(frozen=True)
class FloatRange:
    """A real parameter in ``[low, high]``; ``log=True`` samples uniformly in log space."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not (_is_real(self.low) and _is_real(self.high)):
            raise MiascaleError(
                f"FloatRange bounds must be numbers, got {self.low!r}, {self.high!r}."
            )
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low <= self.high):
            raise MiascaleError(
                f"FloatRange needs finite bounds with low <= high, got [{self.low}, {self.high}]."
            )
        if self.log and self.low <= 0:
            raise MiascaleError(f"A log-scale FloatRange needs low > 0, got low={self.low}.")
        object.__setattr__(self, "low", float(self.low))
        object.__setattr__(self, "high", float(self.high))
        object.__setattr__(self, "log", bool(self.log))

    def to_dict(self) -> dict[str, Any]:
        return {"type": "float", "low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class IntRange:
    """An integer parameter in ``[low, high]`` (inclusive); ``log=True`` samples in log space."""

    low: int
    high: int
    log: bool = False

    def __post_init__(self) -> None:
        if not (_is_int(self.low) and _is_int(self.high)) or self.low > self.high:
            raise MiascaleError(
                f"IntRange needs integer bounds with low <= high, got [{self.low!r}, {self.high!r}]."
            )
        if self.log and self.low < 1:
            raise MiascaleError(f"A log-scale IntRange needs low >= 1, got low={self.low}.")
        object.__setattr__(self, "low", int(self.low))
        object.__setattr__(self, "high", int(self.high))
        object.__setattr__(self, "log", bool(self.log))

    def to_dict(self) -> dict[str, Any]:
        return {"type": "int", "low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class Choice:
    """One of a few distinct values (str, int, float, bool or None: JSON-representable)."""

    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        values = tuple(self.values) if isinstance(self.values, list | tuple) else None
        if not values:
            raise MiascaleError(f"Choice needs a non-empty tuple of values, got {self.values!r}.")
        for v in values:
            if v is not None and not isinstance(v, str | int | float | bool):
                raise MiascaleError(
                    f"Choice values must be str, int, float, bool or None, got {v!r}."
                )
        if len(set(values)) != len(values):
            raise MiascaleError(f"Choice values must be distinct, got {values!r}.")
        object.__setattr__(self, "values", values)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "choice", "values": list(self.values)}


Dim = FloatRange | IntRange | Choice
SearchSpace = Mapping[str, Dim]
"""Parameter name -> its range; names are the config fields the values are written to."""


def dim_from_dict(d: Mapping[str, Any]) -> Dim:
    """Inverse of ``Dim.to_dict()`` (for reading a recorded search space back)."""
    kind = d.get("type") if isinstance(d, Mapping) else None
    if kind == "float":
        return FloatRange(d["low"], d["high"], d.get("log", False))
    if kind == "int":
        return IntRange(d["low"], d["high"], d.get("log", False))
    if kind == "choice":
        return Choice(tuple(d["values"]))
    raise MiascaleError(f"Unknown search-space dimension {d!r}; expected type float|int|choice.")


def _check_space(space: object) -> dict[str, Dim]:
    if not isinstance(space, Mapping) or not space:
        raise MiascaleError(
            "The HPO search space must be a non-empty mapping of parameter names to "
            f"FloatRange/IntRange/Choice, got {space!r}."
        )
    out: dict[str, Dim] = {}
    for name, dim in space.items():
        if not isinstance(name, str) or not name:
            raise MiascaleError(f"Search-space parameter names must be strings, got {name!r}.")
        if not isinstance(dim, FloatRange | IntRange | Choice):
            raise MiascaleError(
                f"Search-space parameter {name!r} must be a FloatRange, IntRange or Choice, "
                f"got {type(dim).__name__}."
            )
        out[name] = dim
    return out


def _distribution(dim: Dim) -> Any:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if isinstance(dim, FloatRange):
        return FloatDistribution(dim.low, dim.high, log=dim.log)
    if isinstance(dim, IntRange):
        return IntDistribution(dim.low, dim.high, log=dim.log)
    return CategoricalDistribution(dim.values)


L2_RANGE = FloatRange(1e-6, 1e1, log=True)
"""L2 strength of the head objective (on standardised features), log scale."""


def head_space(optimizer: str = "lbfgs") -> dict[str, Dim]:
    """Search space for the heads of :mod:`miascale.training.heads`.

    * ``"lbfgs"`` heads are solved to the unique optimum, so only the objective matters:
      ``l2`` in [1e-6, 10] (log).
    * ``"adam"`` heads: ``learning_rate`` in [1e-4, 0.1] (log), ``epochs`` in [10, 200]
      (integer, log), ``batch_size`` in {16, 32, 64, 128} and ``l2`` in [1e-6, 10] (log).
    """
    if optimizer == "lbfgs":
        return {"l2": L2_RANGE}
    if optimizer == "adam":
        return {
            "learning_rate": FloatRange(1e-4, 1e-1, log=True),
            "epochs": IntRange(10, 200, log=True),
            "batch_size": Choice((16, 32, 64, 128)),
            "l2": L2_RANGE,
        }
    raise MiascaleError(f"No HPO search space for head optimizer {optimizer!r}; use lbfgs or adam.")


def film_space() -> dict[str, Dim]:
    """Search space for FiLM training: ``learning_rate`` in [1e-4, 0.1] (log), ``epochs`` in
    [3, 30] (integer, log) and ``batch_size`` in {16, 32, 64}."""
    return {
        "learning_rate": FloatRange(1e-4, 1e-1, log=True),
        "epochs": IntRange(3, 30, log=True),
        "batch_size": Choice((16, 32, 64)),
    }


def apply_params(config: Any, params: Mapping[str, Any]) -> Any:
    """``dataclasses.replace(config, **params)``, with a clear error for unknown field names.

    The config's own validation (e.g. ``HeadConfig.__post_init__``) still applies.
    """
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise MiascaleError(f"config must be a dataclass instance, got {type(config).__name__}.")
    names = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(params) - names)
    if unknown:
        raise MiascaleError(
            f"Tuned parameter(s) {unknown} are not fields of {type(config).__name__} "
            f"(fields: {sorted(names)}); fix the search space."
        )
    return dataclasses.replace(config, **params)
