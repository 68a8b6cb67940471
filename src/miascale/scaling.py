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
:func:`predict` evaluates a fitted law at ``(S, C)``; :func:`plan` inverts it to find the smallest
integer ``S >= 1`` whose predicted advantage is at most a target, given directly or as the
advantage an ``(epsilon, delta)``-DP mechanism allows at the level's FPR:
``TPR <= e^epsilon * FPR + delta``, i.e. ``advantage <= (e^epsilon - 1) * FPR + delta``.

All functions are pure and do no I/O; every result is a frozen dataclass with ``to_dict()``
returning JSON-ready plain Python types (non-finite numbers become ``None``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from miascale.errors import MiascaleError

SCHEMA_VERSION = 1
STATUS_OK = "ok"
STATUS_INSUFFICIENT = "insufficient points"
STATUS_DEGENERATE = "degenerate design"
REASON_UNRESOLVABLE = "not resolvable"
REASON_NONPOSITIVE = "TPR <= FPR"
REASON_SATURATED = "saturated"

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

# Relative slack (times the magnitudes of the terms of the log10 law) that absorbs floating-point
# error when plan() compares a predicted advantage with its target, so that an exact-integer
# solution such as S* = 4 gives S = 4 and not 5. A few ulps: far below the change in predicted
# advantage between neighbouring integers S for any S up to 10^15.
_PLAN_REL_TOL = 16 * np.finfo(np.float64).eps


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------


def _f(x: float | None) -> float | None:
    """Plain float, or None for None / NaN / inf (strict JSON has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _pair(p: tuple[float, float] | None) -> list[float | None] | None:
    return None if p is None else [_f(p[0]), _f(p[1])]


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


@dataclass(frozen=True)
class FitPoint:
    """One cell that entered the fit (medians over its seeds)."""

    dataset: str
    backbone: str
    classes: int
    shots: int
    y: float  # log10(median advantage)
    tpr: float  # median TPR over seeds
    advantage: float  # median advantage over seeds
    ci_low: float  # smallest ci_low over seeds
    ci_high: float  # largest ci_high over seeds
    n_seeds: int

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "backbone": self.backbone,
            "classes": int(self.classes),
            "shots": int(self.shots),
            "y": float(self.y),
            "tpr": float(self.tpr),
            "advantage": float(self.advantage),
            "ci_low": float(self.ci_low),
            "ci_high": float(self.ci_high),
            "n_seeds": int(self.n_seeds),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FitPoint:
        w = "a fitted point"
        return cls(
            dataset=str(_get(d, "dataset", w)),
            backbone=str(_get(d, "backbone", w)),
            classes=int(_get(d, "classes", w)),
            shots=int(_get(d, "shots", w)),
            y=float(_get(d, "y", w)),
            tpr=float(_get(d, "tpr", w)),
            advantage=float(_get(d, "advantage", w)),
            ci_low=float(_get(d, "ci_low", w)),
            ci_high=float(_get(d, "ci_high", w)),
            n_seeds=int(_get(d, "n_seeds", w)),
        )


@dataclass(frozen=True)
class ExcludedPoint:
    """One cell left out of the fit, with every reason that applied (in a fixed order)."""

    dataset: str
    backbone: str
    classes: int
    shots: int
    tpr: float
    advantage: float
    ci_low: float
    ci_high: float
    n_seeds: int
    reasons: tuple[str, ...]

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "backbone": self.backbone,
            "classes": int(self.classes),
            "shots": int(self.shots),
            "tpr": float(self.tpr),
            "advantage": float(self.advantage),
            "ci_low": float(self.ci_low),
            "ci_high": float(self.ci_high),
            "n_seeds": int(self.n_seeds),
            "reasons": list(self.reasons),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExcludedPoint:
        w = "an excluded point"
        return cls(
            dataset=str(_get(d, "dataset", w)),
            backbone=str(_get(d, "backbone", w)),
            classes=int(_get(d, "classes", w)),
            shots=int(_get(d, "shots", w)),
            tpr=float(_get(d, "tpr", w)),
            advantage=float(_get(d, "advantage", w)),
            ci_low=float(_get(d, "ci_low", w)),
            ci_high=float(_get(d, "ci_high", w)),
            n_seeds=int(_get(d, "n_seeds", w)),
            reasons=tuple(str(r) for r in _get(d, "reasons", w)),
        )


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
class Coefficients:
    """Explicit law coefficients: ``log10 adv = beta_s log10 S + beta_c log10 C + beta_0``."""

    beta_s: float
    beta_0: float
    beta_c: float | None = None  # None: the law has no classes term
    fpr_level: float = field(kw_only=True)

    def __post_init__(self) -> None:
        vals = [self.beta_s, self.beta_0] + ([] if self.beta_c is None else [self.beta_c])
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in vals):
            raise MiascaleError(
                f"Scaling-law coefficients must be finite numbers, got beta_s={self.beta_s!r}, "
                f"beta_0={self.beta_0!r}, beta_c={self.beta_c!r}. Take them from a successful fit "
                f"(status 'ok') or pass explicit finite values."
            )
        _check_fpr(self.fpr_level)

    def to_dict(self) -> dict:
        return {
            "beta_s": float(self.beta_s),
            "beta_0": float(self.beta_0),
            "beta_c": _f(self.beta_c),
            "fpr_level": float(self.fpr_level),
        }


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
        return Coefficients(self.beta_s, self.beta_0, self.beta_c, fpr_level=self.fpr_level)

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
        )


@dataclass(frozen=True)
class ScalingFit:
    """All level fits of one sweep, sorted by ``(attack, variant, fpr_level)``."""

    levels: tuple[LevelFit, ...]
    confidence: float = 0.95
    exclude_unresolvable: bool = True
    exclude_nonpositive: bool = True
    exclude_saturated: bool = True

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
            )
        except (TypeError, ValueError) as exc:
            raise MiascaleError(
                f"A scaling fit contains a value of the wrong type ({exc}). The dictionary must "
                f"come from ScalingFit.to_dict(); regenerate fit.json if it was edited by hand."
            ) from exc


@dataclass(frozen=True)
class Prediction:
    """The law evaluated at ``(shots, classes)``; ``tpr`` is clipped to 1 (``clipped`` says so)."""

    shots: float
    classes: int | None
    fpr_level: float
    log10_advantage: float
    advantage: float  # unclipped 10 ** log10_advantage
    tpr: float  # min(1, fpr_level + advantage)
    clipped: bool

    def to_dict(self) -> dict:
        return {
            "shots": float(self.shots),
            "classes": None if self.classes is None else int(self.classes),
            "fpr_level": float(self.fpr_level),
            "log10_advantage": float(self.log10_advantage),
            "advantage": float(self.advantage),
            "tpr": float(self.tpr),
            "clipped": bool(self.clipped),
        }


@dataclass(frozen=True)
class Plan:
    """The smallest integer ``shots`` whose predicted advantage is at most ``target_advantage``."""

    shots: int
    shots_real: float  # S* solving predicted advantage == target exactly
    target_advantage: float
    epsilon: float | None
    delta: float
    fpr_level: float
    classes: int | None
    coefficients: Coefficients
    predicted: Prediction  # at ``shots``

    def to_dict(self) -> dict:
        return {
            "shots": int(self.shots),
            "shots_real": _f(self.shots_real),
            "target_advantage": float(self.target_advantage),
            "epsilon": _f(self.epsilon),
            "delta": float(self.delta),
            "fpr_level": float(self.fpr_level),
            "classes": None if self.classes is None else int(self.classes),
            "coefficients": self.coefficients.to_dict(),
            "predicted": self.predicted.to_dict(),
        }


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
        else:
            beta, *_ = np.linalg.lstsq(x[train], y[train], rcond=None)
            resid = y[held] - x[held] @ beta
            rmse = float(np.sqrt(np.mean(resid**2)))
        out.append(LodoResult(dataset=d, n_points=int(held.sum()), rmse=rmse, reason=reason))
    return tuple(out)


def _fit_level(
    level: tuple[str, str, float],
    cells: dict[tuple, _Cell],
    *,
    exclude_unresolvable: bool,
    exclude_nonpositive: bool,
    exclude_saturated: bool,
    confidence: float,
) -> LevelFit:
    import statsmodels.api as sm

    attack, variant, fpr = level
    points: list[FitPoint] = []
    excluded: list[ExcludedPoint] = []
    nonpositive_kept: list[tuple] = []
    for key in sorted(cells):
        cell = cells[key]
        tpr = float(np.median(cell.tpr))
        adv = float(np.median(cell.adv))
        lo, hi = float(min(cell.ci_low)), float(max(cell.ci_high))
        reasons = []
        if exclude_unresolvable and cell.unresolvable:
            reasons.append(REASON_UNRESOLVABLE)
        if exclude_nonpositive and adv <= 0.0:
            reasons.append(REASON_NONPOSITIVE)
        if exclude_saturated and hi >= 1.0:
            reasons.append(REASON_SATURATED)
        common = dict(
            dataset=cell.dataset,
            backbone=cell.backbone,
            classes=cell.classes,
            shots=cell.shots,
            tpr=tpr,
            advantage=adv,
            ci_low=lo,
            ci_high=hi,
            n_seeds=len(cell.seeds),
        )
        if reasons:
            excluded.append(ExcludedPoint(**common, reasons=tuple(reasons)))
        elif adv <= 0.0:
            nonpositive_kept.append(key)
        else:
            points.append(FitPoint(**common, y=math.log10(adv)))
    if nonpositive_kept:
        shown = "; ".join(
            f"dataset={d!r} backbone={b!r} classes={c} shots={s}" for d, b, c, s in nonpositive_kept
        )
        raise MiascaleError(
            f"exclude_nonpositive=False, but {len(nonpositive_kept)} cell(s) of attack={attack!r}, "
            f"variant={variant!r}, fpr_level={fpr} have median TPR <= FPR (advantage <= 0), whose "
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
                f"{len(points)} usable point(s) ({len(excluded)} excluded); the law with terms "
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
    res = sm.OLS(y, x).fit()
    params = np.asarray(res.params, dtype=np.float64)
    bse = np.asarray(res.bse, dtype=np.float64)
    ci = np.asarray(res.conf_int(alpha=1.0 - confidence), dtype=np.float64)

    def _ci(j: int) -> tuple[float | None, float | None]:
        return (_f(ci[j, 0]), _f(ci[j, 1]))

    return LevelFit(
        **base,
        status=STATUS_OK,
        reason=None,
        beta_0=float(params[0]),
        beta_s=float(params[1]),
        beta_c=float(params[2]) if use_c else None,
        se_0=_f(bse[0]),
        se_s=_f(bse[1]),
        se_c=_f(bse[2]) if use_c else None,
        ci_0=_ci(0),
        ci_s=_ci(1),
        ci_c=_ci(2) if use_c else None,
        r_squared=_f(res.rsquared),
        lodo=_lodo(points, use_c),
    )


def fit_power_law(
    rows: Iterable[Mapping[str, Any]],
    *,
    exclude_unresolvable: bool = True,
    exclude_nonpositive: bool = True,
    exclude_saturated: bool = True,
    confidence: float = 0.95,
) -> ScalingFit:
    """Fit ``log10(TPR - FPR) = beta_S log10 S [+ beta_C log10 C] + beta_0`` per level.

    See the module docstring for the cells, exclusions, model and leave-one-dataset-out check.
    Raises :class:`MiascaleError` for malformed rows, a bad ``confidence``, or (only with
    ``exclude_nonpositive=False``) cells with median advantage ``<= 0``.
    """
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, int | float)
        or not (0.0 < float(confidence) < 1.0)
    ):
        raise MiascaleError(
            f"confidence must be a number strictly between 0 and 1 (e.g. 0.95), got {confidence!r}."
        )
    levels = _collect(rows)
    fits = tuple(
        _fit_level(
            level,
            levels[level],
            exclude_unresolvable=exclude_unresolvable,
            exclude_nonpositive=exclude_nonpositive,
            exclude_saturated=exclude_saturated,
            confidence=float(confidence),
        )
        for level in sorted(levels)
    )
    return ScalingFit(
        levels=fits,
        confidence=float(confidence),
        exclude_unresolvable=bool(exclude_unresolvable),
        exclude_nonpositive=bool(exclude_nonpositive),
        exclude_saturated=bool(exclude_saturated),
    )


# ----------------------------------------------------------------------------------------------
# Prediction and planning
# ----------------------------------------------------------------------------------------------


def _coefficients(coeffs: LevelFit | Coefficients) -> Coefficients:
    if isinstance(coeffs, LevelFit):
        return coeffs.coefficients()
    if isinstance(coeffs, Coefficients):
        return coeffs
    raise MiascaleError(
        f"Expected a LevelFit (from fit_power_law / ScalingFit.level) or Coefficients, got "
        f"{type(coeffs).__name__}."
    )


def _positive(x: Any, name: str) -> float:
    if (
        isinstance(x, bool)
        or not isinstance(x, int | float | np.number)
        or not (math.isfinite(float(x)) and float(x) > 0)
    ):
        raise MiascaleError(f"{name} must be a positive finite number, got {x!r}.")
    return float(x)


def _classes_term(c: Coefficients, classes: Any) -> tuple[float, int | None]:
    if classes is not None:
        cls = _positive(classes, "classes")
        if cls != int(cls):
            raise MiascaleError(f"classes must be a whole number, got {classes!r}.")
        classes = int(cls)
    if c.beta_c is None:
        return 0.0, classes
    if classes is None:
        raise MiascaleError(
            f"This scaling law has a classes term (beta_C = {c.beta_c:.4g}), fitted because the "
            f"sweep varied the number of classes, so a prediction needs the number of classes: "
            f"pass classes=C."
        )
    return c.beta_c * math.log10(classes), classes


def _log_adv(c: Coefficients, shots: float, c_term: float) -> float:
    return c.beta_s * math.log10(shots) + c_term + c.beta_0


def _prediction(c: Coefficients, shots: float, classes: int | None, c_term: float) -> Prediction:
    la = _log_adv(c, shots, c_term)
    adv = 10.0**la if la < 300 else math.inf
    raw_tpr = c.fpr_level + adv
    return Prediction(
        shots=float(shots),
        classes=classes,
        fpr_level=c.fpr_level,
        log10_advantage=la,
        advantage=adv,
        tpr=min(1.0, raw_tpr),
        clipped=raw_tpr > 1.0,
    )


def predict(
    coeffs: LevelFit | Coefficients, shots: float, classes: int | None = None
) -> Prediction:
    """Evaluate the law at ``shots`` (``> 0``; need not be an integer) and ``classes``.

    ``classes`` is required when the law has a classes term and otherwise only recorded.
    """
    c = _coefficients(coeffs)
    s = _positive(shots, "shots")
    c_term, cls = _classes_term(c, classes)
    return _prediction(c, s, cls, c_term)


def plan(
    coeffs: LevelFit | Coefficients,
    fpr_level: float | None,
    classes: int | None = None,
    *,
    target_advantage: float | None = None,
    epsilon: float | None = None,
    delta: float = 0.0,
) -> Plan:
    """The smallest integer ``S >= 1`` whose predicted advantage is at most the target.

    Give exactly one of ``target_advantage`` (in ``(0, 1)``) or ``epsilon`` (``>= 0``; then the
    target is ``(e^epsilon - 1) * fpr_level + delta``, the advantage an ``(epsilon, delta)``-DP
    mechanism allows, with ``delta`` in ``[0, 1)``). ``fpr_level`` must match the law's level
    (``None`` takes it from ``coeffs``). The law must decrease with ``S`` (``beta_S < 0``).
    The comparison with the target allows a few ulps of floating-point error, so an
    exact-integer ``S*`` is returned as itself. Targets needing more than ``10^15`` shots raise.
    """
    c = _coefficients(coeffs)
    if fpr_level is None:
        fpr = c.fpr_level
    else:
        fpr = _check_fpr(fpr_level)
        if not math.isclose(fpr, c.fpr_level, rel_tol=1e-9, abs_tol=0.0):
            raise MiascaleError(
                f"plan() was asked for fpr_level={fpr}, but the scaling law was fitted at "
                f"fpr_level={c.fpr_level}; the law differs between levels. Use the fit of level "
                f"{fpr} (ScalingFit.level(...)) or pass fpr_level={c.fpr_level}."
            )
    if (target_advantage is None) == (epsilon is None):
        raise MiascaleError(
            "plan() needs exactly one of target_advantage (the largest acceptable TPR - FPR) or "
            "epsilon (a differential-privacy budget, with optional delta)."
        )
    if isinstance(delta, bool) or not isinstance(delta, int | float) or not (0.0 <= delta < 1.0):
        raise MiascaleError(f"delta must be a number in [0, 1), got {delta!r}.")
    delta = float(delta)
    if epsilon is not None:
        if (
            isinstance(epsilon, bool)
            or not isinstance(epsilon, int | float)
            or not math.isfinite(epsilon)
            or epsilon < 0
        ):
            raise MiascaleError(f"epsilon must be a finite number >= 0, got {epsilon!r}.")
        target = math.expm1(float(epsilon)) * fpr + delta
        if not (0.0 < target < 1.0):
            raise MiascaleError(
                f"epsilon={epsilon} and delta={delta} at FPR {fpr} allow an advantage of "
                f"(e^epsilon - 1) * FPR + delta = {target:.6g}, which is "
                + (
                    "0: no power law ever reaches zero advantage. Use epsilon > 0 or delta > 0."
                    if target <= 0.0
                    else ">= 1: the privacy bound is vacuous at this FPR, any S satisfies it. "
                    "Use a smaller epsilon or delta."
                )
            )
    else:
        if (
            isinstance(target_advantage, bool)
            or not isinstance(target_advantage, int | float)
            or not (0.0 < target_advantage < 1.0)
        ):
            raise MiascaleError(
                f"target_advantage (largest acceptable TPR - FPR) must lie strictly between 0 "
                f"and 1, got {target_advantage!r}."
            )
        target = float(target_advantage)
    if not c.beta_s < 0.0:
        raise MiascaleError(
            f"The fitted scaling law has slope beta_S = {c.beta_s:.4g} >= 0: the predicted "
            f"advantage does not decrease as shots grow, so no number of shots achieves the "
            f"target advantage {target:.4g}. Check the fit (its points and exclusions); more "
            f"shots will not make this attack weaker according to these results."
        )
    c_term, cls = _classes_term(c, classes)
    log_t = math.log10(target)
    log_s_star = (log_t - c.beta_0 - c_term) / c.beta_s
    if log_s_star > 15:
        raise MiascaleError(
            f"The scaling law would need about 10^{log_s_star:.1f} shots to reach advantage "
            f"{target:.4g}, far beyond any dataset; the target is unreachable in practice. "
            f"Relax the target (or epsilon) or check the fit."
        )
    s_real = 10.0**log_s_star

    def ok(s: int) -> bool:
        terms = (c.beta_s * math.log10(s), c_term, c.beta_0, log_t)
        tol = _PLAN_REL_TOL * sum(abs(t) for t in terms)  # a few ulps of the terms' magnitude
        return _log_adv(c, s, c_term) <= log_t + tol

    s = max(1, math.ceil(s_real))
    while s > 1 and ok(s - 1):  # float error pushed S* just above an integer
        s -= 1
    while not ok(s):  # float error pushed S* just below an integer
        s += 1
    return Plan(
        shots=s,
        shots_real=s_real,
        target_advantage=target,
        epsilon=None if epsilon is None else float(epsilon),
        delta=delta,
        fpr_level=fpr,
        classes=cls,
        coefficients=c,
        predicted=_prediction(c, float(s), cls, c_term),
    )


_TAIL_KEY = re.compile(r"^tail_(naive|cross)_(q[0-9.e-]+|max)$")


def tail_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict]:
    """Rows for fitting the per-example tail: one per (cell, FPR level, estimator, quantile).

    Sweep rows carry the tail of the per-example advantage as ``tail_{naive|cross}_{qX|max}``
    fields (see :func:`miascale.vulnerability.tail_fields`; the tail does not depend on the attack
    variant, so only the first variant's row of each cell and level is used). Each becomes a row
    with ``attack = "tail-naive"`` or ``"tail-cross"``, ``variant = "q0.99"`` (etc.) or ``"max"``,
    ``advantage`` the tail value and ``tpr = fpr + advantage``; the confidence interval is the
    point itself (a per-example value has no Clopper–Pearson interval), so only a tail that
    reaches TPR 1 counts as saturated, and every tail value counts as resolvable (the per-example
    TPR of the Gaussian test is defined at any FPR). Fit them with :func:`fit_power_law`.
    """
    out: list[dict] = []
    seen: set[tuple] = set()
    for r in rows:
        key = (r.get("cell_id"), r["dataset"], r["backbone"], r["classes"], r["shots"], r["seed"],
               float(r["fpr_level"]))  # fmt: skip
        if key in seen:
            continue
        seen.add(key)
        for name, value in r.items():
            m = _TAIL_KEY.match(name)
            if m is None or value is None:
                continue
            tpr = min(1.0, float(r["fpr_level"]) + float(value))
            out.append(
                {
                    "dataset": r["dataset"], "backbone": r["backbone"], "classes": r["classes"],
                    "shots": r["shots"], "seed": r["seed"], "fpr_level": float(r["fpr_level"]),
                    "attack": f"tail-{m.group(1)}", "variant": m.group(2),
                    "tpr": tpr, "advantage": float(value), "ci_low": tpr, "ci_high": tpr,
                    "resolvable": True,  # a Gaussian per-example TPR needs no negatives budget
                    "n_neg": r.get("n_neg"), "test_accuracy": r.get("test_accuracy"),
                }
            )  # fmt: skip
    return out
