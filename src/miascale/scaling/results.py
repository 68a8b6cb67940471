"""The fitted law: one :class:`LevelFit` per level, gathered in a :class:`ScalingFit`.

Both round-trip through ``to_dict()`` / ``from_dict()`` (``fit.json``, schema
:data:`SCHEMA_VERSION`); the contract is in ``docs/design/scaling.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from miascale.errors import MiascaleError
from miascale.fit_rules import CEILING_MARGIN, MIN_FALSE_POSITIVES
from miascale.plan_results import Coefficients, _f, _pair
from miascale.scaling.points import ExcludedPoint, FitPoint, LodoResult, _get

SCHEMA_VERSION = 2
STATUS_OK = "ok"
STATUS_INSUFFICIENT = "insufficient points"
STATUS_DEGENERATE = "degenerate design"

# the coefficient fields of a LevelFit, in their JSON order: numbers, then intervals
_COEF_NUMBERS = ("beta_s", "beta_c", "beta_0", "se_s", "se_c", "se_0")
_COEF_PAIRS = ("ci_s", "ci_c", "ci_0")
# the fit settings a ScalingFit records, with their types
_SETTINGS = (
    ("confidence", float), ("exclude_unresolvable", bool), ("exclude_nonpositive", bool),
    ("exclude_saturated", bool), ("min_false_positives", int), ("ceiling_margin", float),
)  # fmt: skip


def _tuple_pair(p: Any) -> tuple[float | None, float | None] | None:
    return None if p is None else (_f(p[0]), _f(p[1]))


@dataclass(frozen=True)
class LevelFit:
    """The law fitted for one ``(attack, variant, fpr_level)``.

    ``status`` is ``"ok"``, ``"insufficient points"`` or ``"degenerate design"``; only with
    ``"ok"`` are the coefficient fields set (otherwise they are ``None`` and ``reason`` says why).
    ``beta_c`` and its statistics are ``None`` whenever the classes term was not fitted.
    """

    attack: str
    variant: str
    fpr_level: float
    status: str
    reason: str | None
    confidence: float
    n_points: int
    beta_s: float | None = None
    beta_c: float | None = None
    beta_0: float | None = None
    se_s: float | None = None
    se_c: float | None = None
    se_0: float | None = None
    ci_s: tuple[float | None, float | None] | None = None
    ci_c: tuple[float | None, float | None] | None = None
    ci_0: tuple[float | None, float | None] | None = None
    r_squared: float | None = None
    points: tuple[FitPoint, ...] = ()
    excluded: tuple[ExcludedPoint, ...] = ()
    lodo: tuple[LodoResult, ...] | None = None
    # covariance of (beta_0, beta_s[, beta_c]), residual degrees of freedom, reduced chi-square
    cov: tuple[tuple[float, ...], ...] | None = None
    dof: int | None = None
    scale: float | None = None

    @property
    def shots_range(self) -> tuple[int, int] | None:
        """Smallest and largest S among the fitted points."""
        if not self.points:
            return None
        shots = [p.shots for p in self.points]
        return min(shots), max(shots)

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    @property
    def uses_classes(self) -> bool:
        return self.beta_c is not None

    def coefficients(self) -> Coefficients:
        """The fitted coefficients; raises when this level could not be fitted."""
        if not self.ok or self.beta_s is None or self.beta_0 is None:
            raise MiascaleError(
                f"The scaling law for attack={self.attack!r}, variant={self.variant!r}, "
                f"fpr_level={self.fpr_level} was not fitted ({self.status}: {self.reason}). "
                f"Add sweep results for more shots/classes at this level, or use another level."
            )
        return Coefficients(
            self.beta_s,
            self.beta_0,
            self.beta_c,
            fpr_level=self.fpr_level,
            cov=self.cov,
            dof=self.dof,
            n_points=self.n_points,
            r_squared=self.r_squared,
            shots_range=self.shots_range,
        )

    def to_dict(self) -> dict:
        return {
            "attack": self.attack,
            "variant": self.variant,
            "fpr_level": float(self.fpr_level),
            "status": self.status,
            "reason": self.reason,
            "confidence": float(self.confidence),
            "n_points": int(self.n_points),
            **{name: _f(getattr(self, name)) for name in _COEF_NUMBERS},
            **{name: _pair(getattr(self, name)) for name in _COEF_PAIRS},
            "r_squared": _f(self.r_squared),
            "points": [p.to_dict() for p in self.points],
            "excluded": [p.to_dict() for p in self.excluded],
            "lodo": None if self.lodo is None else [r.to_dict() for r in self.lodo],
            "cov": None if self.cov is None else [[float(v) for v in row] for row in self.cov],
            "dof": None if self.dof is None else int(self.dof),
            "scale": _f(self.scale),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LevelFit:
        w = "a level fit"
        lodo = _get(d, "lodo", w)
        return cls(
            attack=str(_get(d, "attack", w)),
            variant=str(_get(d, "variant", w)),
            fpr_level=float(_get(d, "fpr_level", w)),
            status=str(_get(d, "status", w)),
            reason=_get(d, "reason", w),
            confidence=float(_get(d, "confidence", w)),
            n_points=int(_get(d, "n_points", w)),
            **{name: _f(_get(d, name, w)) for name in _COEF_NUMBERS},
            **{name: _tuple_pair(_get(d, name, w)) for name in _COEF_PAIRS},
            r_squared=_f(_get(d, "r_squared", w)),
            points=tuple(FitPoint.from_dict(p) for p in _get(d, "points", w)),
            excluded=tuple(ExcludedPoint.from_dict(p) for p in _get(d, "excluded", w)),
            lodo=None if lodo is None else tuple(LodoResult.from_dict(r) for r in lodo),
            cov=None
            if d.get("cov") is None
            else tuple(tuple(float(v) for v in r) for r in d["cov"]),
            dof=None if d.get("dof") is None else int(d["dof"]),
            scale=_f(d.get("scale")),
        )


@dataclass(frozen=True)
class ScalingFit:
    """All level fits of one sweep, sorted by ``(attack, variant, fpr_level)``."""

    levels: tuple[LevelFit, ...]
    confidence: float = 0.95
    exclude_unresolvable: bool = True
    exclude_nonpositive: bool = True
    exclude_saturated: bool = True
    min_false_positives: int = MIN_FALSE_POSITIVES
    ceiling_margin: float = CEILING_MARGIN

    def _repr_html_(self) -> str:  # notebook display
        from miascale.notebook import fit_html

        return fit_html(self)

    def level(self, attack: str, variant: str, fpr_level: float) -> LevelFit:
        """The fit of one level (FPR matched to a relative tolerance of 1e-9)."""
        for lf in self.levels:
            if (
                lf.attack == attack
                and lf.variant == variant
                and math.isclose(lf.fpr_level, fpr_level, rel_tol=1e-9, abs_tol=0.0)
            ):
                return lf
        have = ", ".join(f"({lf.attack}, {lf.variant}, {lf.fpr_level:g})" for lf in self.levels)
        raise MiascaleError(
            f"No scaling fit for attack={attack!r}, variant={variant!r}, fpr_level={fpr_level}. "
            f"Available (attack, variant, fpr_level): {have or 'none'}. Pick one of these or "
            f"refit with sweep results at that level."
        )

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "settings": {name: cast(getattr(self, name)) for name, cast in _SETTINGS},
            "levels": [lf.to_dict() for lf in self.levels],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ScalingFit:
        """Rebuild a fit from :meth:`to_dict` output (e.g. ``json.load`` of ``fit.json``)."""
        if not isinstance(d, Mapping):
            raise MiascaleError(
                f"A scaling fit must be a JSON object (dictionary), got {type(d).__name__}. "
                f"Pass the contents of fit.json as written by miascale."
            )
        version = _get(d, "schema_version", "a scaling fit")
        if version != SCHEMA_VERSION:
            raise MiascaleError(
                f"This scaling fit has schema_version {version!r} but this miascale reads version "
                f"{SCHEMA_VERSION}. Refit the sweep with this version of miascale."
            )
        s = _get(d, "settings", "a scaling fit")
        w = "the settings of a scaling fit"
        try:
            return cls(
                levels=tuple(LevelFit.from_dict(lf) for lf in _get(d, "levels", "a scaling fit")),
                **{name: cast(_get(s, name, w)) for name, cast in _SETTINGS},
            )
        except (TypeError, ValueError) as exc:
            raise MiascaleError(
                f"A scaling fit contains a value of the wrong type ({exc}). The dictionary must "
                f"come from ScalingFit.to_dict(); regenerate fit.json if it was edited by hand."
            ) from exc
