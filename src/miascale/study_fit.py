"""The pooled law of a study: one law over shots and classes across datasets, whether one
intercept serves every dataset, and how well the law predicts cells it has not seen.

:func:`fit_study` fits, per ``(attack, variant, fpr_level)``, the pooled law over every dataset's
rows (:func:`miascale.scaling.fit_power_law`) beside each dataset's own fit, the nested F-test
:func:`intercept_test`, the slope test of :mod:`miascale.study_slopes`, and the leave-one-group-out
predictions :func:`holdout`. Everything here is pure (no I/O); results are frozen dataclasses
with ``to_dict``/``from_dict``.

Contract (the F statistic, the prediction intervals): docs/design/study.md (guide: docs/study.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from scipy import stats

from miascale.errors import MiascaleError
from miascale.fit_rules import wls_fit
from miascale.plan_results import _f
from miascale.scaling import FitPoint, LevelFit, ScalingFit, fit_power_law, tail_rows
from miascale.study_slopes import NestedTest, SlopeTest, nested_f, slope_test

SCHEMA_VERSION = 1
ALPHA = 0.05
SHARED = "shared intercept"
SEPARATE = "dataset intercepts"

#: The research's implied coefficients (Tobaben et al., NeurIPS 2025, Table 1), shown beside ours
#: *for comparison, not as a target*: (quantity, tail estimator or None, FPR level, beta_S).
RESEARCH_BETA_S = (
    ("average advantage (LiRA)", None, 0.001, -0.64),
    ("most vulnerable example", "max", 0.1, -0.27),
)


def group_label(dataset: str, backbone: str) -> str:
    """A study's dataset: one ``dataset/backbone`` pair."""
    return f"{dataset}/{backbone}"


def _plain(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        return _f(v)
    if isinstance(v, bool | np.bool_):
        return bool(v)
    if isinstance(v, int | np.integer):
        return int(v)
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    return v


def _tuples(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_tuples(x) for x in v)
    if isinstance(v, Mapping):
        return {k: _tuples(x) for k, x in v.items()}
    return v


class _Plain:
    """``to_dict``/``from_dict`` for flat dataclasses of numbers, strings and tuples."""

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        try:
            return cls(**{k: _tuples(v) for k, v in d.items() if k in names})
        except TypeError as exc:
            raise MiascaleError(
                f"Cannot read a {cls.__name__} from study_fit.json ({exc}); regenerate it with "
                f"`miascale study --fit-only`."
            ) from None


@dataclass(frozen=True)
class InterceptTest(_Plain, NestedTest):
    """Does one intercept serve every dataset? (docs/design/study.md)."""

    rss_shared: float | None = None
    rss_separate: float | None = None
    # the law with dataset intercepts: ((dataset, beta_0, low, high), ...), common slopes
    intercepts: tuple = ()
    beta_s: float | None = None
    ci_s: tuple | None = None
    beta_c: float | None = None
    ci_c: tuple | None = None
    cov: tuple | None = None  # order [beta_0 of each dataset (as listed), beta_s, (beta_c)]
    dof: int | None = None
    r_squared: float | None = None

    def verdict(self) -> str:
        """The answer in words, with its evidence."""
        if self.separate is None:
            return f"The intercept test was not made: {self.reason}."
        ev = self.evidence()
        if self.separate:
            return (
                f"Each dataset needs its own intercept ({ev} < {self.alpha:g}): at equal S and C "
                f"the datasets differ in vulnerability beyond their measured errors."
            )
        return (
            f"One intercept serves all datasets ({ev} >= {self.alpha:g}): the data cannot tell "
            f"their intercepts apart."
        )


@dataclass(frozen=True)
class Holdout(_Plain):
    """The cells of one left-out group predicted by the law refitted without them."""

    held: str
    n_points: int
    rmse: float | None = None
    mae: float | None = None
    bias: float | None = None  # mean of measured − predicted log10 advantage
    coverage: float | None = None
    reason: str | None = None


@dataclass(frozen=True)
class HoldoutSet(_Plain):
    """Leave-one-group-out over ``kind`` ("dataset" or "classes") with the law ``model``.

    ``points``: one ``(held, dataset, classes, shots, y, predicted, low, high)`` per predicted cell;
    the summary fields are over all of them."""

    kind: str
    model: str
    groups: tuple = ()
    points: tuple = ()
    n_points: int = 0
    rmse: float | None = None
    mae: float | None = None
    coverage: float | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HoldoutSet:
        base = super().from_dict(d)
        groups = tuple(Holdout.from_dict(g) for g in d.get("groups", ()))
        return cls(**{**{f.name: getattr(base, f.name) for f in fields(cls)}, "groups": groups})

    def to_dict(self) -> dict:
        return {**super().to_dict(), "groups": [g.to_dict() for g in self.groups]}

    def mse_of(self, dataset: str | None = None) -> float | None:
        """Mean squared error over the predicted cells (of one dataset)."""
        e = [p[4] - p[5] for p in self.points if dataset is None or p[1] == dataset]
        return float(np.mean(np.square(e))) if e else None


# ------------------------------------------------------------------------------ the maths


def _design(points: Sequence[FitPoint], use_c: bool, datasets: Sequence[str] | None = None):
    """``[1, log10 S, (log10 C)]``, or with ``datasets`` one indicator per dataset for the 1."""
    s = np.log10([p.shots for p in points])
    if datasets is None:
        cols = [np.ones(len(points))]
    else:
        lab = [group_label(p.dataset, p.backbone) for p in points]
        cols = [np.array([x == d for x in lab], dtype=np.float64) for d in datasets]
    cols.append(s)
    if use_c:
        cols.append(np.log10([p.classes for p in points]))
    return np.column_stack(cols)


def _wrss(x: np.ndarray, y: np.ndarray, se: np.ndarray, beta: np.ndarray) -> float:
    r = (y - x @ beta) / se
    return float(r @ r)


def _yse(points: Sequence[FitPoint]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([p.y for p in points]), np.array([p.y_se for p in points])


def intercept_test(
    points: Sequence[FitPoint], use_c: bool, confidence: float = 0.95, alpha: float = ALPHA
) -> InterceptTest:
    """The nested-model F-test of docs/design/study.md on a level's admitted cells."""
    labels = tuple(sorted({group_label(p.dataset, p.backbone) for p in points}))
    base = {"datasets": labels, "n_points": len(points), "alpha": float(alpha)}
    k = len(labels)
    if k < 2:
        return InterceptTest(**base, reason="the fitted cells come from one dataset only")
    y, se = _yse(points)
    x_r, x_f = _design(points, use_c), _design(points, use_c, labels)
    p_f = x_f.shape[1]
    if len(points) <= p_f:
        return InterceptTest(
            **base, reason=f"{len(points)} cells; the law with {k} intercepts needs more than {p_f}"
        )
    if np.linalg.matrix_rank(x_f) < p_f or np.linalg.matrix_rank(x_r) < x_r.shape[1]:
        return InterceptTest(**base, reason="the cells do not vary enough in shots and classes")
    test, _, sep, rss_r, rss_f = nested_f(x_r, x_f, y, se, alpha)
    c = sep.ci
    return InterceptTest(
        **base, **test, rss_shared=rss_r, rss_separate=rss_f,
        intercepts=tuple((d, float(sep.params[i]), float(c[i, 0]), float(c[i, 1]))
                         for i, d in enumerate(labels)),
        beta_s=float(sep.params[k]), ci_s=(float(c[k, 0]), float(c[k, 1])),
        beta_c=float(sep.params[k + 1]) if use_c else None,
        ci_c=(float(c[k + 1, 0]), float(c[k + 1, 1])) if use_c else None,
        cov=tuple(tuple(float(v) for v in row) for row in sep.cov), dof=sep.dof,
        r_squared=_f(sep.r_squared),
    )  # fmt: skip


def _refit_predict(train, test, use_c: bool, separate: bool, confidence: float):
    """Predictions (pred, low, high) for ``test`` from the law refitted on ``train``, or a reason."""
    labels = sorted({group_label(p.dataset, p.backbone) for p in train}) if separate else None
    if separate:
        missing = {group_label(p.dataset, p.backbone) for p in test} - set(labels)
        if missing:
            return f"no cells of {', '.join(sorted(missing))} left to fit its intercept"
    x = _design(train, use_c, labels)
    n, k = x.shape
    if n <= k:
        return f"only {n} cell(s) left; the refit needs more than {k}"
    if np.linalg.matrix_rank(x) < k:
        return "the cells left do not vary enough in shots and classes to refit the law"
    y, se = _yse(train)
    res = wls_fit(x, y, se, confidence)
    xt = _design(test, use_c, labels)
    pred = xt @ res.params
    _, se_t = _yse(test)
    var = np.einsum("ij,jk,ik->i", xt, res.cov, xt) + max(1.0, res.scale) * se_t**2
    q = float(stats.t.ppf(0.5 + confidence / 2.0, res.dof))
    half = q * np.sqrt(var)
    return pred, pred - half, pred + half


def holdout(
    points: Sequence[FitPoint],
    use_c: bool,
    kind: str,
    model: str = SHARED,
    confidence: float = 0.95,
) -> HoldoutSet | None:
    """Leave each group out in turn (``kind``: "dataset" or "classes"); ``None`` with < 2 groups."""
    key: Callable[[FitPoint], str] = (
        (lambda p: group_label(p.dataset, p.backbone)) if kind == "dataset"
        else (lambda p: f"C={p.classes}")
    )  # fmt: skip
    order = {key(p): (p.classes if kind == "classes" else 0, key(p)) for p in points}
    held_names = sorted(order, key=order.__getitem__)
    if len(held_names) < 2:
        return None
    groups, rows = [], []
    for g in held_names:
        test = [p for p in points if key(p) == g]
        out = _refit_predict([p for p in points if key(p) != g], test, use_c, model == SEPARATE,
                             confidence)  # fmt: skip
        if isinstance(out, str):
            groups.append(Holdout(held=g, n_points=len(test), reason=out))
            continue
        pred, lo, hi = out
        y, _ = _yse(test)
        e = y - pred
        inside = (y >= lo) & (y <= hi)
        groups.append(Holdout(
            held=g, n_points=len(test), rmse=float(np.sqrt(np.mean(e**2))),
            mae=float(np.mean(np.abs(e))), bias=float(np.mean(e)), coverage=float(inside.mean()),
        ))  # fmt: skip
        rows += [(g, group_label(p.dataset, p.backbone), p.classes, p.shots, float(y[i]),
                  float(pred[i]), float(lo[i]), float(hi[i])) for i, p in enumerate(test)]  # fmt: skip
    if not rows:
        return HoldoutSet(kind=kind, model=model, groups=tuple(groups))
    e = np.array([r[4] - r[5] for r in rows])
    inside = np.array([r[6] <= r[4] <= r[7] for r in rows])
    return HoldoutSet(
        kind=kind, model=model, groups=tuple(groups), points=tuple(rows), n_points=len(rows),
        rmse=float(np.sqrt(np.mean(e**2))), mae=float(np.mean(np.abs(e))),
        coverage=float(inside.mean()),
    )  # fmt: skip


# ------------------------------------------------------------------------------ the study fit


@dataclass(frozen=True)
class StudyLevel:
    """The study's answer at one ``(attack, variant, fpr_level)``."""

    pooled: LevelFit
    per_dataset: tuple[tuple[str, LevelFit], ...]
    intercepts: InterceptTest
    lodo: HoldoutSet | None = None
    loco: HoldoutSet | None = None  # shared intercept
    loco_separate: HoldoutSet | None = None  # dataset intercepts
    slopes: SlopeTest | None = None  # one beta_S per dataset? (miascale.study_slopes)

    @property
    def key(self) -> tuple[str, str, float]:
        return (self.pooled.attack, self.pooled.variant, self.pooled.fpr_level)

    def to_dict(self) -> dict:
        def h(x: HoldoutSet | None):
            return None if x is None else x.to_dict()

        return {
            "pooled": self.pooled.to_dict(),
            "per_dataset": [[d, lf.to_dict()] for d, lf in self.per_dataset],
            "intercepts": self.intercepts.to_dict(),
            "intercept_verdict": self.intercepts.verdict(),
            "lodo": h(self.lodo), "loco": h(self.loco), "loco_separate": h(self.loco_separate),
            "slopes": None if self.slopes is None else self.slopes.to_dict(),
            "slope_verdict": None if self.slopes is None else self.slopes.verdict(),
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StudyLevel:
        def h(x):
            return None if x is None else HoldoutSet.from_dict(x)

        try:
            return cls(
                pooled=LevelFit.from_dict(d["pooled"]),
                per_dataset=tuple((str(n), LevelFit.from_dict(x)) for n, x in d["per_dataset"]),
                intercepts=InterceptTest.from_dict(d["intercepts"]),
                lodo=h(d.get("lodo")), loco=h(d.get("loco")), loco_separate=h(d.get("loco_separate")),
                slopes=SlopeTest.from_dict(d["slopes"]) if d.get("slopes") else None,
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise MiascaleError(f"study_fit.json is not a study fit ({exc!r}).") from None


def _level(
    pooled: LevelFit, per: Mapping[str, ScalingFit], confidence: float, alpha: float
) -> StudyLevel:
    pts = list(pooled.points)
    per_dataset = []
    for name, sf in per.items():
        try:
            per_dataset.append((name, sf.level(pooled.attack, pooled.variant, pooled.fpr_level)))
        except MiascaleError:
            continue  # that dataset has no rows at this level
    if not pooled.ok:
        reason = f"the pooled law was not fitted ({pooled.status}: {pooled.reason})"
        labels = tuple(sorted(per))
        test = InterceptTest(datasets=labels, n_points=len(pts), reason=reason, alpha=alpha)
        return StudyLevel(pooled, tuple(per_dataset), test)
    use_c = pooled.uses_classes
    return StudyLevel(
        pooled, tuple(per_dataset), intercept_test(pts, use_c, confidence, alpha),
        lodo=holdout(pts, use_c, "dataset", SHARED, confidence),
        loco=holdout(pts, use_c, "classes", SHARED, confidence) if use_c else None,
        loco_separate=holdout(pts, use_c, "classes", SEPARATE, confidence) if use_c else None,
        slopes=slope_test([group_label(p.dataset, p.backbone) for p in pts], [p.shots for p in pts],
                          [p.classes for p in pts] if use_c else None, *_yse(pts), alpha=alpha),
    )  # fmt: skip


def _fit_all(rows: list[dict], confidence: float, alpha: float, rules: dict) -> tuple:
    if not rows:
        return ()
    pooled = fit_power_law(rows, confidence=confidence, **rules)
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(group_label(str(r["dataset"]), str(r["backbone"])), []).append(r)
    per = {d: fit_power_law(g, confidence=confidence, **rules) for d, g in sorted(groups.items())}
    return tuple(_level(lf, per, confidence, alpha) for lf in pooled.levels)


@dataclass(frozen=True)
class StudyFit:
    """Every level of a study (``levels``) and of its most vulnerable examples (``tails``)."""

    levels: tuple[StudyLevel, ...]
    tails: tuple[StudyLevel, ...] = ()
    datasets: tuple[str, ...] = ()
    confidence: float = 0.95
    alpha: float = ALPHA
    rules: Mapping[str, Any] | None = None

    def level(self, attack: str, variant: str, fpr_level: float, tail: bool = False) -> StudyLevel:
        for lv in self.tails if tail else self.levels:
            a, v, t = lv.key
            if a == attack and v == variant and math.isclose(t, fpr_level, rel_tol=1e-9):
                return lv
        have = ", ".join(f"{a}-{v} at FPR {t:g}" for a, v, t in (lv.key for lv in self.levels))
        raise MiascaleError(
            f"The study has no law for {attack}-{variant} at FPR {fpr_level:g}; it has: "
            f"{have or 'none'}."
        )

    def comparison(self) -> list[dict]:
        """Our pooled beta_S beside the research's (:data:`RESEARCH_BETA_S`), for comparison."""
        out = []
        for quantity, est, fpr, theirs in RESEARCH_BETA_S:
            pool = self.tails if est else self.levels
            mine = [lv for lv in pool if math.isclose(lv.key[2], fpr, rel_tol=1e-9)
                    and (est is None or lv.key[1] in (est, f"cross_{est}"))]  # fmt: skip
            for lv in mine or [None]:
                p = None if lv is None else lv.pooled
                out.append({
                    "quantity": quantity, "fpr_level": fpr, "research_beta_s": theirs,
                    "ours": None if p is None else f"{p.attack}-{p.variant}",
                    "beta_s": None if p is None or not p.ok else p.beta_s,
                    "ci_s": None if p is None or not p.ok else list(p.ci_s or ()),
                    "status": "not measured" if p is None else p.status,
                    "note": "for comparison, not a target",
                })  # fmt: skip
        return out

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION, "kind": "miascale-study-fit",
            "datasets": list(self.datasets), "confidence": self.confidence, "alpha": self.alpha,
            "rules": dict(self.rules or {}), "levels": [lv.to_dict() for lv in self.levels],
            "tails": [lv.to_dict() for lv in self.tails], "comparison": self.comparison(),
        }  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StudyFit:
        if not isinstance(d, Mapping) or d.get("kind") != "miascale-study-fit":
            raise MiascaleError(
                "This file is not a study fit (study_fit.json written by `miascale study`)."
            )
        return cls(
            levels=tuple(StudyLevel.from_dict(x) for x in d["levels"]),
            tails=tuple(StudyLevel.from_dict(x) for x in d.get("tails", ())),
            datasets=tuple(d.get("datasets", ())), confidence=float(d["confidence"]),
            alpha=float(d["alpha"]), rules=dict(d.get("rules") or {}),
        )  # fmt: skip


def fit_study(
    rows: Iterable[Mapping[str, Any]],
    *,
    confidence: float = 0.95,
    alpha: float = ALPHA,
    **rules: Any,
) -> StudyFit:
    """The pooled law, per-dataset fits, intercept test and out-of-sample errors of every level.

    ``rows`` are sweep rows as :func:`miascale.api.fit_rows` prepares them (``classes`` set);
    ``rules`` are :func:`~miascale.scaling.fit_power_law`'s admission keywords. The most
    vulnerable examples (:func:`~miascale.scaling.tail_rows`) get the same treatment in ``tails``.
    """
    if not 0.0 < alpha < 1.0:
        raise MiascaleError(f"alpha (the test's level) must lie in (0, 1), got {alpha!r}.")
    rows = [dict(r) for r in rows]
    if not rows:
        raise MiascaleError("The study has no result rows yet; run `miascale study` first.")
    labels = tuple(sorted({group_label(str(r["dataset"]), str(r["backbone"])) for r in rows}))
    tails = tail_rows([r for r in rows if r.get("epsilon") is None])
    return StudyFit(
        levels=_fit_all(rows, confidence, alpha, rules),
        tails=_fit_all(tails, confidence, alpha, rules),
        datasets=labels, confidence=confidence, alpha=alpha, rules=dict(rules),
    )  # fmt: skip
