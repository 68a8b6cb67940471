"""The cells of a level fit as stored in ``fit.json``: fitted, excluded, and held out by dataset."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from miascale.errors import MiascaleError
from miascale.plan_results import _f


def _get(d: Mapping[str, Any], key: str, what: str) -> Any:
    """``d[key]``, or an error saying that ``what`` is not a dictionary miascale wrote."""
    try:
        return d[key]
    except (KeyError, TypeError) as exc:
        raise MiascaleError(
            f"Cannot read {what}: the key {key!r} is missing. The dictionary must come from "
            f"ScalingFit.to_dict() (fit.json written by miascale); regenerate the file if it was "
            f"edited by hand or written by another version."
        ) from exc


# the fields a fitted and an excluded cell share, in their JSON order, with their types
_POINT_FIELDS = (
    ("dataset", str), ("backbone", str), ("classes", int), ("shots", int), ("tpr", float),
    ("advantage", float), ("se", float), ("ci_low", float), ("ci_high", float),
    ("n_seeds", int), ("fp_budget", int), ("se_source", str),
)  # fmt: skip


def _point_dict(p: Any) -> dict:
    d = {}
    for name, cast in _POINT_FIELDS:
        v = getattr(p, name)
        d[name] = None if v is None else (_f(v) if cast is float else cast(v))
    return d


def _point_kwargs(d: Mapping[str, Any], what: str) -> dict:
    out = {}
    for name, cast in _POINT_FIELDS:
        v = _get(d, name, what)
        out[name] = None if v is None else cast(v)
    return out


@dataclass(frozen=True)
class FitPoint:
    """One cell that entered the fit: the mean over its seeds (see :mod:`miascale.fit_rules`)."""

    dataset: str
    backbone: str
    classes: int
    shots: int
    y: float  # log10(advantage)
    y_se: float  # standard error of y (delta method); the fit weighs the point by 1/y_se^2
    tpr: float  # mean TPR over seeds
    advantage: float  # mean advantage over seeds
    se: float  # standard error of the advantage (bootstrap within seeds, spread across seeds)
    ci_low: float  # interval of the TPR: tpr ± z·se
    ci_high: float
    n_seeds: int
    fp_budget: int | None = None  # smallest number of false positives the level allowed
    se_source: str = "bootstrap"

    def to_dict(self) -> dict:
        return {**_point_dict(self), "y": float(self.y), "y_se": float(self.y_se)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FitPoint:
        w = "a fitted point"
        return cls(**_point_kwargs(d, w), y=float(_get(d, "y", w)), y_se=float(_get(d, "y_se", w)))


@dataclass(frozen=True)
class ExcludedPoint:
    """One cell left out of the fit, with every reason that applied (in a fixed order)."""

    dataset: str
    backbone: str
    classes: int
    shots: int
    tpr: float
    advantage: float
    se: float
    ci_low: float
    ci_high: float
    n_seeds: int
    reasons: tuple[str, ...]
    fp_budget: int | None = None
    se_source: str = "bootstrap"

    def to_dict(self) -> dict:
        return {**_point_dict(self), "reasons": list(self.reasons)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExcludedPoint:
        w = "an excluded point"
        return cls(**_point_kwargs(d, w), reasons=tuple(str(r) for r in _get(d, "reasons", w)))


@dataclass(frozen=True)
class LodoResult:
    """Leave-one-dataset-out: RMSE (log10 advantage) of predicting ``dataset`` from the others."""

    dataset: str
    n_points: int  # fitted points of this dataset (the ones predicted)
    rmse: float | None
    reason: str | None = None  # why rmse is None

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "n_points": int(self.n_points),
            "rmse": _f(self.rmse),
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LodoResult:
        w = "a leave-one-dataset-out entry"
        return cls(
            dataset=str(_get(d, "dataset", w)),
            n_points=int(_get(d, "n_points", w)),
            rmse=_f(_get(d, "rmse", w)),
            reason=_get(d, "reason", w),
        )
