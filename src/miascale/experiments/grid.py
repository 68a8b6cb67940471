"""Sweep grids: a :class:`SweepSpec` (what to run) expands into :class:`Cell` s (one audit setting each).

A *cell* is one (dataset, backbone, classes C, shots S, seed) combination plus the settings shared by
the whole sweep; running it trains one set of models and yields several result rows (one per
attack × variant × FPR level). Every cell has a stable :attr:`Cell.cell_id`, the first 16 hex digits
of the SHA-256 of a canonical JSON of all its fields, so the same cell gets the same id on every run
and every machine; the result store uses it to resume an interrupted sweep.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from miascale.errors import MiascaleError

MAX_DEFAULT_SHOTS = 256
MEMBERSHIP_DESIGNS = ("balanced", "bernoulli")

# TOML has no null: these strings stand for None in a spec file.
_ALL_CLASSES = "all"
_AUTO_SHOTS = "auto"


def default_shots(max_feasible: int) -> tuple[int, ...]:
    """Powers of two 1, 2, 4, … up to ``max_feasible`` (the largest S the data allows), at most 256."""
    if isinstance(max_feasible, bool) or not isinstance(max_feasible, int) or max_feasible < 1:
        raise MiascaleError(
            f"No shots value is feasible (the largest feasible S is {max_feasible!r}): every class "
            f"needs at least 2 examples (2·S per class are drawn). Use a dataset or class subset "
            f"with more examples per class, or lower --min-per-class."
        )
    top = min(max_feasible, MAX_DEFAULT_SHOTS)
    out = []
    s = 1
    while s <= top:
        out.append(s)
        s *= 2
    return tuple(out)


def _dupes(values: tuple) -> list:
    seen, dup = set(), []
    for v in values:
        if v in seen and v not in dup:
            dup.append(v)
        seen.add(v)
    return dup


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_list(name: str, values: tuple) -> None:
    if not values:
        raise MiascaleError(f"The sweep's {name} list is empty; give at least one value.")
    dup = _dupes(values)
    if dup:
        raise MiascaleError(
            f"The sweep's {name} list repeats {', '.join(map(repr, dup))}; list each value once."
        )


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep runs: the cross product of datasets × backbones × classes × shots × seeds.

    ``shots=None`` means the default 1, 2, 4, … up to the largest S the data allows (at most 256,
    see :func:`default_shots`); ``None`` in ``classes`` means all classes of the dataset. Lists are
    stored as tuples; ints given for float settings are stored as floats. Invalid values raise
    :class:`~miascale.errors.MiascaleError` on construction.
    """

    datasets: tuple[str, ...]
    backbones: tuple[str, ...]
    shots: tuple[int, ...] | None = None
    classes: tuple[int | None, ...] = (None,)
    seeds: tuple[int, ...] = (0, 1, 2)
    variants: tuple[str, ...] = ("lira-online",)
    shadow_models: int = 64
    fpr: tuple[float, ...] = (0.1, 0.01, 0.001)
    resolution: int | None = None
    min_per_class: int | None = None
    membership: str = "balanced"
    l2: float = 1e-3

    def __post_init__(self) -> None:
        def norm(name: str, fn=lambda v: v) -> None:
            value = getattr(self, name)
            if value is None:
                return
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                value = (value,)  # a scalar stands for a one-element list
            object.__setattr__(self, name, tuple(fn(v) for v in value))

        def to_float(v: Any) -> Any:
            return float(v) if _is_num(v) else v

        for name in ("datasets", "backbones", "shots", "classes", "seeds", "variants"):
            norm(name)
        norm("fpr", to_float)
        if _is_num(self.l2):
            object.__setattr__(self, "l2", float(self.l2))
        self.validate()

    def validate(self) -> SweepSpec:
        for name in ("datasets", "backbones", "variants"):
            values = getattr(self, name)
            _check_list(name, values)
            bad = [v for v in values if not isinstance(v, str) or not v.strip()]
            if bad:
                raise MiascaleError(
                    f"The sweep's {name} must be non-empty names (strings), got {bad!r}."
                )
        if self.shots is not None:
            _check_shots(self.shots, "the sweep's shots")
        _check_list("classes", self.classes)
        bad = [c for c in self.classes if c is not None and (not _is_int(c) or c < 2)]
        if bad:
            raise MiascaleError(
                f"Every classes value must be an integer ≥ 2 (or 'all' for all classes), got "
                f"{bad!r}."
            )
        _check_list("seeds", self.seeds)
        bad = [s for s in self.seeds if not _is_int(s) or s < 0]
        if bad:
            raise MiascaleError(f"Seeds must be non-negative integers, got {bad!r}.")
        if not _is_int(self.shadow_models) or self.shadow_models < 2:
            raise MiascaleError(
                f"shadow_models must be an integer ≥ 2 (LiRA fits IN and OUT distributions from "
                f"the shadow models; 64 or more is typical), got {self.shadow_models!r}."
            )
        _check_list("fpr", self.fpr)
        bad = [t for t in self.fpr if not _is_num(t) or not (0.0 < t < 1.0)]
        if bad:
            raise MiascaleError(
                f"FPR levels must lie strictly between 0 and 1 (e.g. 0.1, 0.01, 0.001), got "
                f"{bad!r}."
            )
        for name in ("resolution", "min_per_class"):
            v = getattr(self, name)
            if v is not None and (not _is_int(v) or v < 1):
                raise MiascaleError(
                    f"{name} must be a positive integer or left out (the default), got {v!r}."
                )
        if self.membership not in MEMBERSHIP_DESIGNS:
            raise MiascaleError(
                f"Unknown membership design {self.membership!r}; choose one of "
                f"{', '.join(MEMBERSHIP_DESIGNS)}."
            )
        if not _is_num(self.l2) or not math.isfinite(self.l2) or self.l2 < 0:
            raise MiascaleError(
                f"l2 must be a finite number ≥ 0 (the weight-decay strength, default 1e-3), got "
                f"{self.l2!r}."
            )
        return self

    def to_dict(self) -> dict:
        """Plain JSON-ready values (tuples as lists, ``None`` kept)."""
        d = {}
        for f in fields(self):
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d

    @classmethod
    def from_dict(cls, data: dict, source: str = "the sweep spec") -> SweepSpec:
        """Build a spec from plain values (as in a TOML file), with type checks naming ``source``.

        In addition to the field types, the strings ``"all"`` in ``classes`` and ``"auto"`` for
        ``shots`` stand for ``None`` (TOML has no null).
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MiascaleError(
                f"Unknown key(s) {', '.join(map(repr, unknown))} in {source}. Valid keys: "
                f"{', '.join(sorted(known))}."
            )
        missing = [k for k in ("datasets", "backbones") if k not in data]
        if missing:
            raise MiascaleError(
                f"{source} is missing {' and '.join(map(repr, missing))}; list at least one "
                f'dataset and one backbone, e.g. datasets = ["fashion-mnist"].'
            )
        kw: dict[str, Any] = {}
        for key, value in data.items():
            kw[key] = _coerce(key, value, source)
        return cls(**kw)

    @classmethod
    def from_toml(cls, path: str | Path) -> SweepSpec:
        """Read a spec from a TOML file whose top-level keys are the field names."""
        path = Path(path)
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise MiascaleError(f"Sweep spec file {path} does not exist; check the path.") from None
        except (OSError, UnicodeDecodeError) as e:
            raise MiascaleError(f"Cannot read sweep spec file {path}: {e}.") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            # the message names the line and column, e.g. "Invalid value (at line 3, column 9)"
            raise MiascaleError(
                f"Sweep spec file {path} is not valid TOML: {e}. Fix the file (see "
                f"docs/store.md for an example spec)."
            ) from None
        return cls.from_dict(data, source=f"sweep spec file {path}")


_LIST_TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "datasets": ("strings", lambda v: isinstance(v, str)),
    "backbones": ("strings", lambda v: isinstance(v, str)),
    "variants": ("strings", lambda v: isinstance(v, str)),
    "shots": ("positive integers", _is_int),
    "classes": ("integers or 'all'", lambda v: _is_int(v) or v in (_ALL_CLASSES, None)),
    "seeds": ("integers", _is_int),
    "fpr": ("numbers", _is_num),
}
_SCALAR_TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "shadow_models": ("an integer", _is_int),
    "resolution": ("an integer", _is_int),
    "min_per_class": ("an integer", _is_int),
    "membership": ("a string", lambda v: isinstance(v, str)),
    "l2": ("a number", _is_num),
}


def _coerce(key: str, value: Any, source: str) -> Any:
    if key in ("shots", "resolution", "min_per_class") and value is None:
        return None  # from JSON (to_dict); TOML has no null
    if key == "shots" and value == _AUTO_SHOTS:
        return None
    if key in _LIST_TYPES:
        what, ok = _LIST_TYPES[key]
        items = value if isinstance(value, list) else [value]
        bad = [v for v in items if not ok(v)]
        if bad:
            raise MiascaleError(f"{key!r} in {source} must be a list of {what}, got {value!r}.")
        if key == "classes":
            items = [None if v == _ALL_CLASSES else v for v in items]
        return tuple(items)
    what, ok = _SCALAR_TYPES[key]
    if not ok(value):
        raise MiascaleError(f"{key!r} in {source} must be {what}, got {value!r}.")
    return value


def _check_shots(shots: tuple, where: str) -> None:
    _check_list("shots", shots)
    bad = [s for s in shots if not _is_int(s) or s < 1]
    if bad:
        raise MiascaleError(
            f"Every shots value (examples per class) must be an integer ≥ 1; {where} has {bad!r}."
        )


@dataclass(frozen=True)
class Cell:
    """One audit setting of a sweep: a (dataset, backbone, classes, shots, seed) point plus the
    sweep-wide settings. Identified by :attr:`cell_id`."""

    dataset: str
    backbone: str
    classes: int | None
    shots: int
    seed: int
    shadow_models: int
    fpr: tuple[float, ...]
    resolution: int | None
    min_per_class: int | None
    membership: str
    l2: float
    variants: tuple[str, ...]

    def to_dict(self) -> dict:
        """All fields as plain JSON values (tuples as lists); the input of :attr:`cell_id`."""
        d = {}
        for f in fields(self):
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return d

    @property
    def cell_id(self) -> str:
        """First 16 hex digits of the SHA-256 of the canonical JSON of :meth:`to_dict`."""
        canon = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]

    @property
    def label(self) -> str:
        """Short human-readable name, e.g. ``fashion-mnist/efficientnet-lite0 C=all S=16 seed=0``."""
        c = "all" if self.classes is None else self.classes
        return f"{self.dataset}/{self.backbone} C={c} S={self.shots} seed={self.seed}"


ShotsFor = Callable[[str, str, int | None], tuple[int, ...]]


def expand(spec: SweepSpec, shots_for: ShotsFor | None = None) -> list[Cell]:
    """All cells of ``spec`` in a deterministic order.

    Order: datasets, backbones and classes as listed in the spec, then shots ascending, then seeds as
    listed. When ``spec.shots`` is None, ``shots_for(dataset, backbone, classes)`` supplies the shots
    for each (dataset, backbone, classes) combination (typically ``default_shots`` of the largest
    feasible S).
    """
    spec.validate()
    if spec.shots is None and shots_for is None:
        raise ValueError("spec.shots is None (the default shots) but no shots_for was given")
    cells = []
    for dataset in spec.datasets:
        for backbone in spec.backbones:
            for classes in spec.classes:
                if spec.shots is not None:
                    shots = spec.shots
                else:
                    assert shots_for is not None
                    shots = tuple(shots_for(dataset, backbone, classes))
                    c = "all" if classes is None else classes
                    _check_shots(shots, f"the default shots for {dataset}/{backbone} C={c}")
                for s in sorted(shots):
                    for seed in spec.seeds:
                        cells.append(
                            Cell(
                                dataset=dataset,
                                backbone=backbone,
                                classes=classes,
                                shots=int(s),
                                seed=seed,
                                shadow_models=spec.shadow_models,
                                fpr=spec.fpr,
                                resolution=spec.resolution,
                                min_per_class=spec.min_per_class,
                                membership=spec.membership,
                                l2=spec.l2,
                                variants=spec.variants,
                            )
                        )
    return cells
