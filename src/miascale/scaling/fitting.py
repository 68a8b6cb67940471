"""Fitting the law per level: admit cells (:mod:`miascale.fit_rules`), weighted least squares,
leave-one-dataset-out. The contract is in ``docs/design/scaling.md``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from miascale.errors import MiascaleError
from miascale.fit_rules import (
    CEILING_MARGIN,
    MIN_FALSE_POSITIVES,
    REASON_CHANCE,
    REASON_NONPOSITIVE,
    WlsResult,
    admission_reasons,
    summarize_cell,
    wls_fit,
)
from miascale.plan_results import _f
from miascale.scaling.points import ExcludedPoint, FitPoint, LodoResult
from miascale.scaling.results import (
    STATUS_DEGENERATE,
    STATUS_INSUFFICIENT,
    STATUS_OK,
    LevelFit,
    ScalingFit,
)
from miascale.scaling.rows import _Cell, _collect


def _check_settings(confidence: Any, min_false_positives: Any, ceiling_margin: Any) -> None:
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


# ----------------------------------------------------------------------------------------------
# Admission: cells -> fitted and excluded points
# ----------------------------------------------------------------------------------------------


def _judge(cell: _Cell, fpr: float, settings: ScalingFit) -> tuple[dict, float, float, tuple]:
    """A cell's point fields, ``y``, ``y_se`` and the reasons that exclude it."""
    summary = summarize_cell(
        fpr, cell.tpr, cell.ci_low, cell.ci_high, cell.se, cell.n_neg, settings.confidence,
        cell.cp, cell.floor, cell.ceiling,
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
    if not settings.exclude_nonpositive:  # strict: a non-positive admitted cell raises later
        reasons = tuple(r for r in reasons if r != REASON_NONPOSITIVE)
    fields = dict(
        dataset=cell.dataset, backbone=cell.backbone, classes=cell.classes, shots=cell.shots,
        tpr=summary.tpr, advantage=summary.advantage, se=summary.se, ci_low=summary.ci_low,
        ci_high=summary.ci_high, n_seeds=summary.n_seeds, fp_budget=summary.fp_budget,
        se_source=summary.se_source,
    )  # fmt: skip
    return fields, summary.y, summary.y_se, reasons


def _admit(
    level: tuple[str, str, float], cells: dict[tuple, _Cell], settings: ScalingFit
) -> tuple[list[FitPoint], list[ExcludedPoint]]:
    """The level's fitted and excluded points, in cell order; raises in strict mode."""
    points: list[FitPoint] = []
    excluded: list[ExcludedPoint] = []
    nonpositive: list[tuple] = []
    for key in sorted(cells):
        fields, y, y_se, reasons = _judge(cells[key], level[2], settings)
        if reasons:
            excluded.append(ExcludedPoint(**fields, reasons=reasons))
        elif fields["advantage"] <= 0.0:
            nonpositive.append(key)
        elif not (fields["se"] > 0):
            # no measured uncertainty (e.g. a perfect attack in every resample): no weight
            excluded.append(ExcludedPoint(**fields, reasons=(REASON_CHANCE,)))
        else:
            points.append(FitPoint(**fields, y=y, y_se=y_se))
    if nonpositive:
        raise _nonpositive_error(level, nonpositive)
    return points, excluded


def _nonpositive_error(level: tuple[str, str, float], keys: list[tuple]) -> MiascaleError:
    attack, variant, fpr = level
    shown = "; ".join(f"dataset={d!r} backbone={b!r} classes={c} shots={s}" for d, b, c, s in keys)
    return MiascaleError(
        f"exclude_nonpositive=False, but {len(keys)} cell(s) of attack={attack!r}, "
        f"variant={variant!r}, fpr_level={fpr} have mean TPR <= FPR (advantage <= 0), whose "
        f"log10 is undefined, so the power law cannot be fitted through them: {shown}. Use "
        f"exclude_nonpositive=True to leave them out (they are then listed as excluded with "
        f"reason {REASON_NONPOSITIVE!r}), or measure those cells with more data."
    )


# ----------------------------------------------------------------------------------------------
# The weighted fit
# ----------------------------------------------------------------------------------------------


def _design(classes: np.ndarray, shots: np.ndarray, use_c: bool) -> np.ndarray:
    cols = [np.ones(len(shots)), np.log10(shots)]
    if use_c:
        cols.append(np.log10(classes))
    return np.column_stack(cols)


def _arrays(points: list[FitPoint]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``classes, shots, y, y_se`` of the points, as float arrays."""
    return tuple(  # type: ignore[return-value]
        np.array([getattr(p, name) for p in points], dtype=np.float64)
        for name in ("classes", "shots", "y", "y_se")
    )


def _lodo(points: list[FitPoint], use_c: bool) -> tuple[LodoResult, ...] | None:
    datasets = sorted({p.dataset for p in points})
    if len(datasets) < 2:
        return None
    k = 3 if use_c else 2
    c, s, y, y_se = _arrays(points)
    w = 1.0 / np.square(y_se)
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


def _coefficient_fields(res: WlsResult) -> dict[str, Any]:
    """``beta_*``, ``se_*`` and ``ci_*`` of a weighted fit (``None`` for a term not fitted)."""
    out: dict[str, Any] = {}
    for j, term in enumerate(("0", "s", "c")):
        fitted = j < len(res.params)
        out[f"beta_{term}"] = float(res.params[j]) if fitted else None
        out[f"se_{term}"] = _f(res.se[j]) if fitted else None
        out[f"ci_{term}"] = (_f(res.ci[j, 0]), _f(res.ci[j, 1])) if fitted else None
    return out


def _fit_level(
    level: tuple[str, str, float], cells: dict[tuple, _Cell], settings: ScalingFit
) -> LevelFit:
    points, excluded = _admit(level, cells, settings)
    base = dict(
        attack=level[0], variant=level[1], fpr_level=level[2], confidence=settings.confidence,
        n_points=len(points), points=tuple(points), excluded=tuple(excluded),
    )  # fmt: skip
    c, s, y, y_se = _arrays(points)
    use_c = len(set(c.tolist())) >= 2
    k = 3 if use_c else 2
    if len(points) < k + 1:
        terms = "const, log10 S, log10 C" if use_c else "const, log10 S"
        reason = (
            f"{len(points)} admitted cell(s) ({len(excluded)} excluded); the law with terms "
            f"[{terms}] needs at least {k + 1}"
        )
        return LevelFit(**base, status=STATUS_INSUFFICIENT, reason=reason)
    x = _design(c, s, use_c)
    if np.linalg.matrix_rank(x) < k:
        reason = (
            "the usable points do not vary independently in shots"
            + (" and classes" if use_c else "")
            + f" (distinct shots: {sorted(set(s.astype(int).tolist()))}); "
            "sweep at least two shot values"
        )
        return LevelFit(**base, status=STATUS_DEGENERATE, reason=reason)
    res = wls_fit(x, y, y_se, settings.confidence)
    return LevelFit(
        **base,
        status=STATUS_OK,
        reason=None,
        **_coefficient_fields(res),
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
    _check_settings(confidence, min_false_positives, ceiling_margin)
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
