"""The scaling law of membership-inference vulnerability: fit, predict and plan.

The law, fitted separately for every ``(attack, variant, fpr_level)``::

    log10(TPR - FPR) = beta_S * log10(S) + beta_C * log10(C) + beta_0

where ``S`` is the number of shots (examples per class) and ``C`` the number of classes.

Fitting (:func:`fit_power_law`)
-------------------------------
1. Sweep result rows are grouped into *cells* by
   ``(dataset, backbone, classes, shots, attack, variant, fpr_level)``. A cell's TPR and advantage
   are the **medians over seeds** (``numpy.median``: the mean of the two middle values for an even
   number of seeds); it also keeps the smallest ``ci_low``, the largest ``ci_high``, the number of
   seeds, whether any seed was unresolvable and whether it is saturated (largest ``ci_high >= 1``).
2. Cells are excluded, each with every applicable reason recorded (never silently):

   * ``"not resolvable"`` - some seed's FPR level allowed no false positive
     (``exclude_unresolvable``);
   * ``"TPR <= FPR"`` - median advantage ``<= 0``, whose logarithm is undefined
     (``exclude_nonpositive``);
   * ``"saturated"`` - the TPR's confidence interval reaches 1 (every member may be detected,
     so the power law cannot hold there) (``exclude_saturated``).

   A non-positive advantage can never enter the logarithm. ``exclude_nonpositive=False`` therefore
   means *strict*: instead of excluding such cells, :func:`fit_power_law` raises
   :class:`~miascale.errors.MiascaleError` naming them (only cells not already excluded for
   another reason are checked).
3. Per ``(attack, variant, fpr_level)`` ordinary least squares (``statsmodels.api.OLS``) of
   ``y = log10(median advantage)`` on ``[const, log10 S]``, plus ``log10 C`` only when ``C`` takes
   at least two distinct values among the fitted points. Standard errors are the classical
   (non-robust) ones and the intervals are Student-t intervals at ``confidence``.
   With fewer points than parameters + 1 the level's entry has ``status="insufficient points"``;
   when the design matrix is rank deficient (e.g. a single ``S`` value, or ``C`` and ``S``
   perfectly collinear) ``status="degenerate design"``. Neither raises.
4. Leave-one-dataset-out: when the fitted points span at least two datasets, the law (same
   terms as the full fit) is refitted without each dataset in turn and the RMSE of its predicted
   ``log10`` advantage on that dataset's points is reported (``None``, with a reason, when the
   remaining points cannot support the refit).

Prediction and planning
-----------------------
:func:`predict`, :func:`plan` and their result types live in :mod:`miascale.planning` (with the
fit's uncertainty, both branches of the ``(epsilon, delta)`` region and a trustworthiness
verdict); they are re-exported here so ``from miascale.scaling import plan`` keeps working.

All functions are pure and do no I/O; every result is a frozen dataclass with ``to_dict()``
returning JSON-ready plain Python types (non-finite numbers become ``None``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from miascale.errors import MiascaleError
from miascale.fit_rules import (
    CEILING_MARGIN,
    MIN_FALSE_POSITIVES,
    REASON_CEILING,
    REASON_CHANCE,
    REASON_FEW_FP,
    REASON_NONPOSITIVE,
    admission_reasons,
    summarize_cell,
    wls_fit,
)
from miascale.plan_results import _f, _pair
from miascale.planning import Coefficients, Plan, Prediction, plan, predict  # noqa: F401

SCHEMA_VERSION = 2
STATUS_OK = "ok"
STATUS_INSUFFICIENT = "insufficient points"
STATUS_DEGENERATE = "degenerate design"
# the admission rules and their reasons live in miascale.fit_rules
REASON_UNRESOLVABLE = REASON_FEW_FP
REASON_SATURATED = REASON_CEILING

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


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------


def _tuple_pair(p: Any) -> tuple[float | None, float | None] | None:
    return None if p is None else (_f(p[0]), _f(p[1]))


def _get(d: Mapping[str, Any], key: str, what: str) -> Any:
    try:
        return d[key]
    except (KeyError, TypeError) as exc:
        raise MiascaleError(
            f"Cannot read {what}: the key {key!r} is missing. The dictionary must come from "
            f"ScalingFit.to_dict() (fit.json written by miascale); regenerate the file if it was "
            f"edited by hand or written by another version."
        ) from exc


# ----------------------------------------------------------------------------------------------
# Result types
# ----------------------------------------------------------------------------------------------


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
            cov=getattr(self, "cov", None),
            dof=getattr(self, "dof", None),
            n_points=getattr(self, "n_points", None),
            r_squared=getattr(self, "r_squared", None),
            shots_range=getattr(self, "shots_range", None),
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
            "beta_s": _f(self.beta_s),
            "beta_c": _f(self.beta_c),
            "beta_0": _f(self.beta_0),
            "se_s": _f(self.se_s),
            "se_c": _f(self.se_c),
            "se_0": _f(self.se_0),
            "ci_s": _pair(self.ci_s),
            "ci_c": _pair(self.ci_c),
            "ci_0": _pair(self.ci_0),
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
            beta_s=_f(_get(d, "beta_s", w)),
            beta_c=_f(_get(d, "beta_c", w)),
            beta_0=_f(_get(d, "beta_0", w)),
            se_s=_f(_get(d, "se_s", w)),
            se_c=_f(_get(d, "se_c", w)),
            se_0=_f(_get(d, "se_0", w)),
            ci_s=_tuple_pair(_get(d, "ci_s", w)),
            ci_c=_tuple_pair(_get(d, "ci_c", w)),
            ci_0=_tuple_pair(_get(d, "ci_0", w)),
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
            "settings": {
                "confidence": float(self.confidence),
                "exclude_unresolvable": bool(self.exclude_unresolvable),
                "exclude_nonpositive": bool(self.exclude_nonpositive),
                "exclude_saturated": bool(self.exclude_saturated),
                "min_false_positives": int(self.min_false_positives),
                "ceiling_margin": float(self.ceiling_margin),
            },
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
                confidence=float(_get(s, "confidence", w)),
                exclude_unresolvable=bool(_get(s, "exclude_unresolvable", w)),
                exclude_nonpositive=bool(_get(s, "exclude_nonpositive", w)),
                exclude_saturated=bool(_get(s, "exclude_saturated", w)),
                min_false_positives=int(_get(s, "min_false_positives", w)),
                ceiling_margin=float(_get(s, "ceiling_margin", w)),
            )
        except (TypeError, ValueError) as exc:
            raise MiascaleError(
                f"A scaling fit contains a value of the wrong type ({exc}). The dictionary must "
                f"come from ScalingFit.to_dict(); regenerate fit.json if it was edited by hand."
            ) from exc


# ----------------------------------------------------------------------------------------------
# Fitting
# ----------------------------------------------------------------------------------------------


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


def _check_fpr(fpr: Any) -> float:
    if isinstance(fpr, bool) or not isinstance(fpr, int | float | np.number):
        raise MiascaleError(f"An FPR level must be a number strictly between 0 and 1, got {fpr!r}.")
    fpr = float(fpr)
    if not (0.0 < fpr < 1.0):
        raise MiascaleError(f"An FPR level must be a number strictly between 0 and 1, got {fpr!r}.")
    return fpr


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


def _collect(rows: Iterable[Mapping[str, Any]]) -> dict[tuple, dict[tuple, _Cell]]:
    """Group rows into levels -> cells, validating every row."""
    if isinstance(rows, Mapping) or isinstance(rows, str | bytes):
        raise MiascaleError(
            "fit_power_law expects a sequence of result rows (dictionaries), got a single "
            f"{type(rows).__name__}. Pass a list of the sweep's rows."
        )
    levels: dict[tuple, dict[tuple, _Cell]] = {}
    n = 0
    for i, row in enumerate(rows):
        n += 1
        if not isinstance(row, Mapping):
            raise _row_error(i, f"it is a {type(row).__name__}, not a dictionary.")
        missing = [k for k in REQUIRED_KEYS if k not in row]
        if missing:
            raise _row_error(i, f"missing key(s) {', '.join(missing)}.")
        fpr = row["fpr_level"]
        try:
            fpr = _check_fpr(fpr)
        except MiascaleError:
            raise _row_error(
                i, f"'fpr_level' must lie strictly between 0 and 1, got {fpr!r}."
            ) from None
        classes, shots = _posint(row, "classes", i), _posint(row, "shots", i)
        tpr, adv = _num(row, "tpr", i), _num(row, "advantage", i)
        lo, hi = _num(row, "ci_low", i), _num(row, "ci_high", i)
        res = row["resolvable"]
        if not isinstance(res, bool | np.bool_):
            raise _row_error(i, f"'resolvable' must be true or false, got {res!r}.")
        level = (str(row["attack"]), str(row["variant"]), fpr)
        key = (str(row["dataset"]), str(row["backbone"]), classes, shots)
        cell = levels.setdefault(level, {}).get(key)
        if cell is None:
            cell = levels[level][key] = _Cell(*key)
        seed = row["seed"]
        if seed in cell.seeds:
            raise _row_error(
                i,
                f"seed {seed!r} appears twice for dataset={key[0]!r}, backbone={key[1]!r}, "
                f"classes={classes}, shots={shots}, attack={level[0]!r}, variant={level[1]!r}, "
                f"fpr_level={fpr} (duplicated sweep results?); keep one row per seed.",
            )
        cell.seeds.append(seed)
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
        cell.unresolvable |= not bool(res)
    if n == 0:
        raise MiascaleError(
            "fit_power_law got no result rows. Run the sweep first (at least two shot values "
            "per attack, variant and FPR level) and pass its rows."
        )
    return levels


def _design(classes: np.ndarray, shots: np.ndarray, use_c: bool) -> np.ndarray:
    cols = [np.ones(len(shots)), np.log10(shots)]
    if use_c:
        cols.append(np.log10(classes))
    return np.column_stack(cols)


def _lodo(points: list[FitPoint], use_c: bool) -> tuple[LodoResult, ...] | None:
    datasets = sorted({p.dataset for p in points})
    if len(datasets) < 2:
        return None
    k = 3 if use_c else 2
    y = np.array([p.y for p in points])
    w = 1.0 / np.square([p.y_se for p in points])
    c = np.array([p.classes for p in points], dtype=np.float64)
    s = np.array([p.shots for p in points], dtype=np.float64)
    x = _design(c, s, use_c)
    ds = np.array([p.dataset for p in points])
    out = []
    for d in datasets:
        held = ds == d
        train = ~held
        n_train = int(train.sum())
        rmse, reason = None, None
        if n_train < k + 1:
            reason = f"only {n_train} point(s) without {d!r}; the refit needs at least {k + 1}"
        elif np.linalg.matrix_rank(x[train]) < k:
            reason = (
                f"without {d!r} the remaining points do not vary enough in "
                f"{'shots and classes' if use_c else 'shots'} to refit the law"
            )
        else:  # the same weighted fit as the full law
            sw = np.sqrt(w[train])
            beta, *_ = np.linalg.lstsq(x[train] * sw[:, None], y[train] * sw, rcond=None)
            resid = y[held] - x[held] @ beta
            rmse = float(np.sqrt(np.mean(resid**2)))
        out.append(LodoResult(dataset=d, n_points=int(held.sum()), rmse=rmse, reason=reason))
    return tuple(out)


def _fit_level(
    level: tuple[str, str, float],
    cells: dict[tuple, _Cell],
    settings: ScalingFit,
) -> LevelFit:
    attack, variant, fpr = level
    confidence = settings.confidence
    points: list[FitPoint] = []
    excluded: list[ExcludedPoint] = []
    nonpositive_kept: list[tuple] = []
    for key in sorted(cells):
        cell = cells[key]
        summary = summarize_cell(
            fpr, cell.tpr, cell.ci_low, cell.ci_high, cell.se, cell.n_neg, confidence, cell.cp,
            cell.floor, cell.ceiling,
        )  # fmt: skip
        reasons = admission_reasons(
            summary,
            min_false_positives=settings.min_false_positives,
            ceiling_margin=settings.ceiling_margin,
            check_budget=settings.exclude_unresolvable,
            check_chance=settings.exclude_nonpositive,
            check_ceiling=settings.exclude_saturated,
            resolvable=not cell.unresolvable,
        )
        if not settings.exclude_nonpositive:  # strict: a non-positive admitted cell raises below
            reasons = tuple(r for r in reasons if r != REASON_NONPOSITIVE)
        common = dict(
            dataset=cell.dataset,
            backbone=cell.backbone,
            classes=cell.classes,
            shots=cell.shots,
            tpr=summary.tpr,
            advantage=summary.advantage,
            se=summary.se,
            ci_low=summary.ci_low,
            ci_high=summary.ci_high,
            n_seeds=summary.n_seeds,
            fp_budget=summary.fp_budget,
            se_source=summary.se_source,
        )
        if reasons:
            excluded.append(ExcludedPoint(**common, reasons=reasons))
        elif summary.advantage <= 0.0:
            nonpositive_kept.append(key)
        elif not (summary.se > 0):
            # no measured uncertainty (e.g. a perfect attack in every resample): no weight
            excluded.append(ExcludedPoint(**common, reasons=(REASON_CHANCE,)))
        else:
            points.append(FitPoint(**common, y=summary.y, y_se=summary.y_se))
    if nonpositive_kept:
        shown = "; ".join(
            f"dataset={d!r} backbone={b!r} classes={c} shots={s}" for d, b, c, s in nonpositive_kept
        )
        raise MiascaleError(
            f"exclude_nonpositive=False, but {len(nonpositive_kept)} cell(s) of attack={attack!r}, "
            f"variant={variant!r}, fpr_level={fpr} have mean TPR <= FPR (advantage <= 0), whose "
            f"log10 is undefined, so the power law cannot be fitted through them: {shown}. Use "
            f"exclude_nonpositive=True to leave them out (they are then listed as excluded with "
            f"reason {REASON_NONPOSITIVE!r}), or measure those cells with more data."
        )

    base = dict(
        attack=attack,
        variant=variant,
        fpr_level=fpr,
        confidence=confidence,
        n_points=len(points),
        points=tuple(points),
        excluded=tuple(excluded),
    )
    c = np.array([p.classes for p in points], dtype=np.float64)
    s = np.array([p.shots for p in points], dtype=np.float64)
    y = np.array([p.y for p in points], dtype=np.float64)
    use_c = len(set(c.tolist())) >= 2
    k = 3 if use_c else 2
    if len(points) < k + 1:
        terms = "const, log10 S, log10 C" if use_c else "const, log10 S"
        return LevelFit(
            **base,
            status=STATUS_INSUFFICIENT,
            reason=(
                f"{len(points)} admitted cell(s) ({len(excluded)} excluded); the law with terms "
                f"[{terms}] needs at least {k + 1}"
            ),
        )
    x = _design(c, s, use_c)
    if np.linalg.matrix_rank(x) < k:
        return LevelFit(
            **base,
            status=STATUS_DEGENERATE,
            reason=(
                "the usable points do not vary independently in shots"
                + (" and classes" if use_c else "")
                + f" (distinct shots: {sorted(set(s.astype(int).tolist()))}); "
                "sweep at least two shot values"
            ),
        )
    res = wls_fit(x, y, np.array([p.y_se for p in points]), confidence)

    def _ci(j: int) -> tuple[float | None, float | None]:
        return (_f(res.ci[j, 0]), _f(res.ci[j, 1]))

    return LevelFit(
        **base,
        status=STATUS_OK,
        reason=None,
        beta_0=float(res.params[0]),
        beta_s=float(res.params[1]),
        beta_c=float(res.params[2]) if use_c else None,
        se_0=_f(res.se[0]),
        se_s=_f(res.se[1]),
        se_c=_f(res.se[2]) if use_c else None,
        ci_0=_ci(0),
        ci_s=_ci(1),
        ci_c=_ci(2) if use_c else None,
        r_squared=_f(res.r_squared),
        lodo=_lodo(points, use_c),
        cov=tuple(tuple(float(v) for v in row) for row in res.cov),
        dof=res.dof,
        scale=_f(res.scale),
    )


def fit_power_law(
    rows: Iterable[Mapping[str, Any]],
    *,
    exclude_unresolvable: bool = True,
    exclude_nonpositive: bool = True,
    exclude_saturated: bool = True,
    confidence: float = 0.95,
    min_false_positives: int = MIN_FALSE_POSITIVES,
    ceiling_margin: float = CEILING_MARGIN,
) -> ScalingFit:
    """Fit ``log10(TPR - FPR) = beta_S log10 S [+ beta_C log10 C] + beta_0`` per level.

    Cells are admitted by the rules of :mod:`miascale.fit_rules` (each switchable:
    ``exclude_unresolvable`` → the false-positive budget ``min_false_positives``,
    ``exclude_nonpositive`` → distinguishable from chance, ``exclude_saturated`` → clear of the
    ceiling by ``ceiling_margin``) and fitted by weighted least squares. Raises
    :class:`MiascaleError` for malformed rows, bad settings, or (only with
    ``exclude_nonpositive=False``) admitted cells with mean advantage ``<= 0``.
    """
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, int | float)
        or not (0.0 < float(confidence) < 1.0)
    ):
        raise MiascaleError(
            f"confidence must be a number strictly between 0 and 1 (e.g. 0.95), got {confidence!r}."
        )
    if (
        isinstance(min_false_positives, bool)
        or not isinstance(min_false_positives, int)
        or (min_false_positives < 1)
    ):
        raise MiascaleError(
            f"min_false_positives must be an integer >= 1 (the false positives an FPR level must "
            f"allow before its threshold means anything; default {MIN_FALSE_POSITIVES}), got "
            f"{min_false_positives!r}."
        )
    if not isinstance(ceiling_margin, int | float) or not (0.0 <= ceiling_margin < 1.0):
        raise MiascaleError(
            f"ceiling_margin must be a number in [0, 1) (default {CEILING_MARGIN}), got "
            f"{ceiling_margin!r}."
        )
    settings = ScalingFit(
        levels=(),
        confidence=float(confidence),
        exclude_unresolvable=bool(exclude_unresolvable),
        exclude_nonpositive=bool(exclude_nonpositive),
        exclude_saturated=bool(exclude_saturated),
        min_false_positives=int(min_false_positives),
        ceiling_margin=float(ceiling_margin),
    )
    levels = _collect(rows)
    fits = tuple(_fit_level(level, levels[level], settings) for level in sorted(levels))
    return replace(settings, levels=fits)


_TAIL_KEY = re.compile(r"^pe_(adv|sep)_(q[0-9.e-]+|max|cross_max)$")
#: the separation has no FPR level; its rows are keyed at this placeholder level
SEPARATION_LEVEL = 0.5


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
        t = float(r["fpr_level"])
        for name, value in r.items():
            m = _TAIL_KEY.match(name)
            if m is None or value is None:
                continue
            kind, est = m.groups()
            if kind == "sep":
                if (*ident, est) in sep_seen:
                    continue
                sep_seen.add((*ident, est))
            se = r.get(f"pe_{kind}_se_{est}")
            floor = r.get(f"pe_{kind}_floor_{est}")
            level = t if kind == "adv" else SEPARATION_LEVEL
            v = float(value)
            half = 1.96 * (float(se) if se is not None else 0.0)
            out.append(
                {
                    "dataset": r["dataset"], "backbone": r["backbone"], "classes": r["classes"],
                    "shots": r["shots"], "seed": r["seed"], "fpr_level": level,
                    "attack": "tail" if kind == "adv" else "separation", "variant": est,
                    "tpr": level + v, "advantage": v, "ci_low": level + v - half,
                    "ci_high": level + v + half, "se": se, "floor": floor,
                    "ceiling": None if kind == "adv" else math.inf,
                    "resolvable": bool(r.get("pe_resolvable", True)) if kind == "adv" else True,
                    "n_neg": None, "test_accuracy": r.get("test_accuracy"),
                }
            )  # fmt: skip
    return out
