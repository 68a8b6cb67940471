"""Sweep grids: a :class:`SweepSpec` (grid axes + audit settings) expands into :class:`Cell` s.

A cell is one (dataset, backbone, classes, shots, seed, ε) point plus the sweep-wide settings; its
:attr:`Cell.cell_id` is stable across runs and machines (the store resumes by it) and
:meth:`Cell.audit_config` is its :class:`~miascale.audit.AuditConfig`. Contract:
docs/design/sweep-config.md.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from miascale.errors import MiascaleError
from miascale.experiments.settings import (
    FLOAT_SETTINGS,
    NO_DP,
    SETTING_NAMES,
    AuditSettings,
    build_audit_config,
    check_settings,
    coerce,
    is_int,
    is_num,
)

MAX_DEFAULT_SHOTS = 256
MEMBERSHIP_DESIGNS = ("balanced", "bernoulli")
FINETUNE_MODES = ("head", "film")


def default_shots(max_feasible: int) -> tuple[int, ...]:
    """Powers of two 1, 2, 4, … up to ``max_feasible`` (the largest S the data allows), at most
    256."""
    if isinstance(max_feasible, bool) or not isinstance(max_feasible, int) or max_feasible < 1:
        raise MiascaleError(
            f"No shots value is feasible (the largest feasible S is {max_feasible!r}): every class "
            f"needs at least 2 examples in its training split (2·S per class are drawn). Use a "
            f"dataset or class subset with more examples per class, or raise --min-per-class "
            f"(e.g. to 4) to drop the classes with too few examples."
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


def _check_list(name: str, values: tuple) -> None:
    if not values:
        raise MiascaleError(f"The sweep's {name} list is empty; give at least one value.")
    dup = _dupes(values)
    if dup:
        raise MiascaleError(
            f"The sweep's {name} list repeats {', '.join(map(repr, dup))}; list each value once."
        )


@dataclass(frozen=True)
class SweepSpec(AuditSettings):
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
    # privacy axis: None = ordinary (non-DP) training; a number = DP-SGD heads at that ε
    epsilons: tuple[float | None, ...] = (None,)
    dp_delta: float | None = None  # None = the default δ below 1/n (miascale.privacy.default_delta)
    dp_clip: float | None = None  # None = DPConfig defaults for clip, sampling rate and steps
    dp_sampling_rate: float | None = None
    dp_steps: int | None = None
    finetune: str = "head"  # head | film
    hpo: int = 0  # Optuna trials per cell (0 = off)
    standardize: str = "pool"  # head recipe: pool | subset | none (HeadConfig.standardize)

    def __post_init__(self) -> None:
        def norm(name: str, fn=lambda v: v) -> None:
            value = getattr(self, name)
            if value is None:
                return
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                value = (value,)  # a scalar stands for a one-element list
            object.__setattr__(self, name, tuple(fn(v) for v in value))

        def to_float(v: Any) -> Any:
            return float(v) if is_num(v) else v

        for name in ("datasets", "backbones", "shots", "classes", "seeds", "variants"):
            norm(name)
        norm("fpr", to_float)
        norm(
            "epsilons", lambda v: None if v is None or v == NO_DP or v == math.inf else to_float(v)
        )
        for name in ("l2", "dp_delta", "dp_clip", "dp_sampling_rate", *FLOAT_SETTINGS):
            if is_num(getattr(self, name)):
                object.__setattr__(self, name, float(getattr(self, name)))
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
        bad = [c for c in self.classes if c is not None and (not is_int(c) or c < 2)]
        if bad:
            raise MiascaleError(
                f"Every classes value must be an integer ≥ 2 (or 'all' for all classes), got "
                f"{bad!r}."
            )
        _check_list("seeds", self.seeds)
        bad = [s for s in self.seeds if not is_int(s) or s < 0]
        if bad:
            raise MiascaleError(f"Seeds must be non-negative integers, got {bad!r}.")
        if not is_int(self.shadow_models) or self.shadow_models < 4:
            raise MiascaleError(
                f"shadow_models must be an integer ≥ 4 (LiRA fits IN and OUT distributions from "
                f"the shadow models, and a target's complementary partner is never one of them; "
                f"64 or more is typical), got {self.shadow_models!r}."
            )
        _check_list("fpr", self.fpr)
        bad = [t for t in self.fpr if not is_num(t) or not (0.0 < t < 1.0)]
        if bad:
            raise MiascaleError(
                f"FPR levels must lie strictly between 0 and 1 (e.g. 0.1, 0.01, 0.001), got "
                f"{bad!r}."
            )
        for name in ("resolution", "min_per_class"):
            v = getattr(self, name)
            if v is not None and (not is_int(v) or v < 1):
                raise MiascaleError(
                    f"{name} must be a positive integer or left out (the default), got {v!r}."
                )
        if self.membership not in MEMBERSHIP_DESIGNS:
            raise MiascaleError(
                f"Unknown membership design {self.membership!r}; choose one of "
                f"{', '.join(MEMBERSHIP_DESIGNS)}."
            )
        if not is_num(self.l2) or not math.isfinite(self.l2) or self.l2 < 0:
            raise MiascaleError(
                f"l2 must be a finite number ≥ 0 (the weight-decay strength, default 1e-3), got "
                f"{self.l2!r}."
            )
        _check_list("epsilons", self.epsilons)
        bad = [e for e in self.epsilons if e is not None and (not is_num(e) or not e > 0)]
        if bad:
            raise MiascaleError(
                f"Every epsilons value must be a number > 0 or 'inf' (no DP), got {bad!r}."
            )
        for name in ("dp_delta", "dp_sampling_rate"):
            v = getattr(self, name)
            if v is not None and (not is_num(v) or not 0 < v < 1):
                raise MiascaleError(f"{name} must lie strictly between 0 and 1, got {v!r}.")
        if self.dp_clip is not None and (not is_num(self.dp_clip) or not self.dp_clip > 0):
            raise MiascaleError(f"dp_clip must be a number > 0, got {self.dp_clip!r}.")
        if self.dp_steps is not None and (not is_int(self.dp_steps) or self.dp_steps < 1):
            raise MiascaleError(f"dp_steps must be an integer ≥ 1, got {self.dp_steps!r}.")
        if self.finetune not in FINETUNE_MODES:
            raise MiascaleError(
                f"Unknown finetune mode {self.finetune!r}; choose one of "
                f"{', '.join(FINETUNE_MODES)}."
            )
        if not is_int(self.hpo) or self.hpo < 0:
            raise MiascaleError(f"hpo must be a number of trials ≥ 0, got {self.hpo!r}.")
        from miascale.training.heads import STANDARDIZE

        if self.standardize not in STANDARDIZE:
            raise MiascaleError(
                f"Unknown standardize {self.standardize!r} (the head recipe: whose statistics set "
                f"the feature scale); choose one of {', '.join(STANDARDIZE)}."
            )
        if self.finetune == "film" and any(e is not None for e in self.epsilons):
            raise MiascaleError("DP training (epsilons) is available for heads only, not FiLM.")
        dp = any(e is not None for e in self.epsilons)
        if dp and self.hpo:
            raise MiascaleError(
                "hpo cannot be combined with DP cells (epsilons): tuning on the private training "
                "data would spend privacy the accountant does not count."
            )
        given = [n for n in ("dp_delta", "dp_clip", "dp_sampling_rate", "dp_steps")
                 if getattr(self, n) is not None]  # fmt: skip
        if given and not dp:
            raise MiascaleError(
                f"{', '.join(given)} only apply to DP cells; add a numeric ε to epsilons (e.g. "
                f"--epsilon inf,1,8) or leave them out."
            )
        exact = any(e is None for e in self.epsilons) and self.finetune == "head"
        check_settings(self, dp, self.finetune == "film", exact)
        return self

    def to_dict(self) -> dict:
        """Plain JSON-ready values (tuples as lists, ``None`` kept).

        Settings added after the first release are left out while they hold their defaults, so
        that run directories written before them still resume.
        """
        return _plain_fields(self, _LATER_SPEC_FIELDS)

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
            kw[key] = coerce(key, value, source)
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


# Settings whose default changed: they are left out of to_dict (so of spec and cell ids) while
# they hold the OLD behaviour, which is what runs written before the change used. A run directory
# of the old recipe therefore resumes as that recipe; the new default gets new ids and never
# reuses old results.
_LEGACY_VALUES: dict[str, Any] = {"standardize": "subset"}


def _plain_fields(obj, later: frozenset) -> dict:
    """A spec's or cell's fields as JSON values (tuples as lists), leaving out the ``later``
    fields at their defaults and the fields at their legacy values (see below)."""
    d = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if f.name in later and v == f.default:
            continue
        if f.name in _LEGACY_VALUES and v == _LEGACY_VALUES[f.name]:
            continue
        d[f.name] = list(v) if isinstance(v, tuple) else v
    return d


_LATER_SPEC_FIELDS = frozenset(
    ("epsilons", "dp_delta", "dp_clip", "dp_sampling_rate", "dp_steps", "finetune", "hpo",
     *SETTING_NAMES)
)  # fmt: skip


def _check_shots(shots: tuple, where: str) -> None:
    _check_list("shots", shots)
    bad = [s for s in shots if not is_int(s) or s < 1]
    if bad:
        raise MiascaleError(
            f"Every shots value (examples per class) must be an integer ≥ 1; {where} has {bad!r}."
        )


@dataclass(frozen=True)
class Cell(AuditSettings):
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
    # added after the first release: left out of to_dict (and so of cell_id) at their defaults,
    # so that the cells of existing runs keep their ids
    epsilon: float | None = None
    dp_delta: float | None = None
    dp_clip: float | None = None
    dp_sampling_rate: float | None = None
    dp_steps: int | None = None
    finetune: str = "head"
    hpo: int = 0
    standardize: str = "pool"

    def to_dict(self) -> dict:
        """Plain JSON values (tuples as lists); the input of :attr:`cell_id`.

        Fields added after the first release are left out while they hold their defaults.
        """
        return _plain_fields(self, _LATER_FIELDS)

    @property
    def dp(self) -> bool:
        return self.epsilon is not None

    def audit_config(self):
        """The :class:`~miascale.audit.AuditConfig` this cell runs (the one place it is built)."""
        return build_audit_config(
            shots=self.shots, variants=self.variants, classes=self.classes, seed=self.seed,
            shadow_models=self.shadow_models, fpr=self.fpr, membership=self.membership,
            l2=self.l2, standardize=self.standardize, epsilon=self.epsilon,
            dp_delta=self.dp_delta, dp_clip=self.dp_clip, dp_sampling_rate=self.dp_sampling_rate,
            dp_steps=self.dp_steps, finetune=self.finetune, hpo=self.hpo,
            **self.audit_settings(),
        )  # fmt: skip

    @property
    def cell_id(self) -> str:
        """First 16 hex digits of the SHA-256 of the canonical JSON of :meth:`to_dict`."""
        canon = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]

    @property
    def label(self) -> str:
        """Short human-readable name, e.g. ``fashion-mnist/efficientnet-lite0 C=all S=16 seed=0``."""
        c = "all" if self.classes is None else self.classes
        extra = f" ε={self.epsilon:g}" if self.epsilon is not None else ""
        extra += " film" if self.finetune != "head" else ""
        return f"{self.dataset}/{self.backbone} C={c} S={self.shots} seed={self.seed}{extra}"


_LATER_FIELDS = frozenset(
    ("epsilon", "dp_delta", "dp_clip", "dp_sampling_rate", "dp_steps", "finetune", "hpo",
     *SETTING_NAMES)
)  # fmt: skip


ShotsFor = Callable[[str, str, int | None], tuple[int, ...]]


def expand(spec: SweepSpec, shots_for: ShotsFor | None = None) -> list[Cell]:
    """All cells of ``spec`` in a deterministic order.

    Order: datasets, backbones and classes as listed in the spec, then shots ascending, then
    epsilons and seeds as listed. When ``spec.shots`` is None, ``shots_for(dataset, backbone,
    classes)`` supplies the shots for each (dataset, backbone, classes) combination (typically
    ``default_shots`` of the largest feasible S).
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
                for s, eps, seed in itertools.product(sorted(shots), spec.epsilons, spec.seeds):
                    cells.append(_cell(spec, dataset, backbone, classes, int(s), eps, seed))
    return cells


def _cell(spec: SweepSpec, dataset: str, backbone: str, classes, shots: int, eps, seed) -> Cell:
    """One cell of ``spec``; the DP settings only on DP cells."""
    dp = {n: getattr(spec, n) if eps is not None else None
          for n in ("dp_delta", "dp_clip", "dp_sampling_rate", "dp_steps")}  # fmt: skip
    settings = {**spec.audit_settings(), "dp_lr": spec.dp_lr if eps is not None else None}
    return Cell(
        dataset=dataset, backbone=backbone, classes=classes, shots=shots, seed=seed,
        shadow_models=spec.shadow_models, fpr=spec.fpr, resolution=spec.resolution,
        min_per_class=spec.min_per_class, membership=spec.membership, l2=spec.l2,
        variants=spec.variants, epsilon=eps, finetune=spec.finetune, hpo=spec.hpo,
        standardize=spec.standardize, **dp, **settings,
    )  # fmt: skip
