"""What ``miascale theory`` takes and returns: its config, the figure's curves, the result.

``TheoryResult.to_dict()`` is the theory.json document (schema in docs/theory.md §5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from miascale.errors import MiascaleError
from miascale.metrics import check_fpr_levels
from miascale.theory._numerics import _clean
from miascale.theory.model import HEADS, POPULATIONS, FixedExample, class_means
from miascale.theory.simulation import SimulationPoint

SCHEMA = "miascale.theory/1"


@dataclass(frozen=True)
class TheoryConfig:
    """Settings of ``miascale theory`` (defaults are the CLI's)."""

    dim: int = 100
    sigma: float = 0.1
    classes: int = 10
    shots: tuple[int, ...] = tuple(2**i for i in range(11))
    shadow_models: int = 64
    fpr: tuple[float, ...] = (0.1, 0.01, 0.001)
    population: tuple[str, ...] = POPULATIONS
    n_targets: int = 2048
    n_fixed: int = 512
    head: str = "linear"
    logit_scale: float = 1.0
    seed: int = 0
    n_population: int = 4096

    def validate(self) -> TheoryConfig:
        """Return self, or raise :class:`MiascaleError` naming the offending CLI option."""
        if self.dim < 2:
            raise MiascaleError(f"--dim must be at least 2, got {self.dim}.")
        if not (self.sigma > 0 and math.isfinite(self.sigma)):
            raise MiascaleError(f"--sigma must be a positive number, got {self.sigma}.")
        class_means(self.classes, self.dim)
        if not self.shots or any(int(s) != s or s < 1 for s in self.shots):
            raise MiascaleError(f"--shots must be positive integers, got {list(self.shots)}.")
        if self.shadow_models < 4:
            raise MiascaleError(
                f"--shadow-models must be at least 4 (LiRA needs IN and OUT shadows, and a "
                f"target's complementary partner is never one of them), got {self.shadow_models}."
            )
        check_fpr_levels(self.fpr)
        if not self.fpr:
            raise MiascaleError("--fpr needs at least one level.")
        self._validate_choices()
        if self.n_targets < 2 or self.n_fixed < 2:
            raise MiascaleError("--targets must be at least 2.")
        return self

    def _validate_choices(self) -> None:
        bad = [p for p in self.population if p not in POPULATIONS]
        if bad or not self.population:
            raise MiascaleError(
                f"--population must be fresh, pool or both, got {', '.join(self.population)}."
            )
        if self.head not in HEADS:
            raise MiascaleError(f"--head must be linear or softmax, got {self.head!r}.")
        if self.head == "softmax" and self.classes < 2:
            raise MiascaleError("--head softmax needs --classes >= 2.")

    def to_dict(self) -> dict:
        return {
            "dim": self.dim,
            "sigma": self.sigma,
            "classes": self.classes,
            "shots": list(self.shots),
            "shadow_models": self.shadow_models,
            "n_models": self.shadow_models + 1,
            "fpr": list(self.fpr),
            "population": list(self.population),
            "n_targets": self.n_targets,
            "n_fixed": self.n_fixed,
            "head": self.head,
            "logit_scale": self.logit_scale,
            "seed": self.seed,
            "n_population": self.n_population,
        }


@dataclass(frozen=True)
class Curve:
    """One curve of the figure: advantage vs S at one FPR level."""

    example: str  # "average" or a fixed example's name
    kind: str  # exact | one-sided | asymptotic | pool-approx | simulation
    population: str | None  # fresh | pool for simulations, None for closed forms
    fpr: float
    shots: tuple[float, ...]
    tpr: tuple[float, ...]
    ci_low: tuple[float, ...] | None = None
    ci_high: tuple[float, ...] | None = None
    used_in_fit: tuple[bool, ...] | None = None

    def advantage(self) -> np.ndarray:
        return np.asarray(self.tpr) - self.fpr

    def to_dict(self) -> dict:
        def lst(v):
            return None if v is None else [_clean(a) for a in v]

        return {
            "example": self.example,
            "kind": self.kind,
            "population": self.population,
            "fpr": self.fpr,
            "shots": list(self.shots),
            "tpr": lst(self.tpr),
            "advantage": lst(self.advantage()),
            "ci_low": lst(self.ci_low),
            "ci_high": lst(self.ci_high),
            "used_in_fit": None if self.used_in_fit is None else list(self.used_in_fit),
        }


def find_curve(
    curves: tuple[Curve, ...] | list[Curve],
    example: str,
    kind: str,
    fpr: float,
    population: str | None = None,
) -> Curve:
    """The curve with these keys (FPR compared with ``math.isclose``); ``KeyError`` if none."""
    for c in curves:
        if (c.example, c.kind, c.population) == (example, kind, population) and math.isclose(
            c.fpr, fpr
        ):
            return c
    raise KeyError((example, kind, fpr, population))


@dataclass(frozen=True)
class TheoryResult:
    """Everything ``miascale theory`` reports; ``to_dict()`` is the theory.json document."""

    config: TheoryConfig
    examples: tuple[FixedExample, ...]
    population_u: dict
    curves: tuple[Curve, ...]
    simulations: tuple[SimulationPoint, ...]
    levels: tuple[dict, ...]
    seconds: float = field(default=0.0)

    def curve(self, example: str, kind: str, fpr: float, population: str | None = None) -> Curve:
        return find_curve(self.curves, example, kind, fpr, population)

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "config": self.config.to_dict(),
            "population_separation": self.population_u,
            "examples": [e.to_dict() for e in self.examples],
            "levels": list(self.levels),
            "curves": [c.to_dict() for c in self.curves],
            "simulations": [p.to_dict() for p in self.simulations],
            "seconds": round(self.seconds, 3),
        }
