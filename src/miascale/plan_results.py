"""Result types of predictions and plans (:class:`Coefficients`, :class:`Prediction`,
:class:`Plan`) and the small number helpers they share; the maths is in :mod:`miascale.planning`,
the contract in ``docs/design/scaling.md``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from miascale.errors import MiascaleError

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


def _is_number(x: Any) -> bool:
    return not isinstance(x, bool) and isinstance(x, int | float | np.integer | np.floating)


def _check_fpr(fpr: Any) -> float:
    if not _is_number(fpr) or not (0.0 < float(fpr) < 1.0):
        raise MiascaleError(f"An FPR level must be a number strictly between 0 and 1, got {fpr!r}.")
    return float(fpr)


def _pow10(x: float) -> float:
    return 10.0**x if x < 300 else math.inf


# ----------------------------------------------------------------------------------------------
# Result types
# ----------------------------------------------------------------------------------------------


def _check_cov(cov: Any, k: int) -> tuple[tuple[float, ...], ...] | None:
    if cov is None:
        return None
    order = "[beta_0, beta_s, beta_c]" if k == 3 else "[beta_0, beta_s]"
    try:
        a = np.array(cov, dtype=np.float64)
    except (TypeError, ValueError):
        a = None
    if a is None or a.shape != (k, k):
        shape = "unreadable" if a is None else f"shape {a.shape}"
        raise MiascaleError(
            f"cov must be the {k}×{k} covariance matrix of the coefficients in the order {order}, "
            f"got {shape}. Take it from the fit (LevelFit.cov) or pass cov=None."
        )
    if not np.all(np.isfinite(a)):
        raise MiascaleError(f"cov must contain finite numbers only, got {a.tolist()}.")
    scale = float(np.max(np.abs(a))) if a.size else 0.0
    if not np.allclose(a, a.T, rtol=1e-8, atol=1e-12 * scale):
        raise MiascaleError(f"cov must be symmetric, got {a.tolist()}.")
    eig = np.linalg.eigvalsh((a + a.T) / 2.0)
    if eig.min() < -1e-9 * max(scale, 0.0):
        raise MiascaleError(
            f"cov must be positive semi-definite (a covariance matrix), but it has the eigenvalue "
            f"{eig.min():.3g}: {a.tolist()}."
        )
    return tuple(tuple(float(v) for v in row) for row in a)


@dataclass(frozen=True)
class Coefficients:
    """Explicit law coefficients: ``log10 adv = beta_s log10 S + beta_c log10 C + beta_0``.

    The keyword-only fields describe the fit the coefficients came from; each may be ``None``
    (unknown, e.g. for hand-typed betas). ``cov`` is the covariance matrix of the coefficients in
    the order ``[beta_0, beta_s, (beta_c)]``, ``dof`` the residual degrees of freedom (Student-t
    quantiles; ``None``: normal quantiles), ``n_points`` the number of admitted cells fitted,
    ``r_squared`` the fit's coefficient of determination and ``shots_range`` the smallest and
    largest ``S`` among them.
    """

    beta_s: float
    beta_0: float
    beta_c: float | None = None  # None: the law has no classes term
    fpr_level: float = field(kw_only=True)
    cov: tuple[tuple[float, ...], ...] | None = field(default=None, kw_only=True)
    dof: int | None = field(default=None, kw_only=True)
    n_points: int | None = field(default=None, kw_only=True)
    r_squared: float | None = field(default=None, kw_only=True)
    shots_range: tuple[float, float] | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        vals = [self.beta_s, self.beta_0] + ([] if self.beta_c is None else [self.beta_c])
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in vals):
            raise MiascaleError(
                f"Scaling-law coefficients must be finite numbers, got beta_s={self.beta_s!r}, "
                f"beta_0={self.beta_0!r}, beta_c={self.beta_c!r}. Take them from a successful fit "
                f"(status 'ok') or pass explicit finite values."
            )
        _check_fpr(self.fpr_level)
        k = 2 if self.beta_c is None else 3
        object.__setattr__(self, "cov", _check_cov(self.cov, k))
        if self.dof is not None:
            if not _is_number(self.dof) or not (self.dof > 0 and float(self.dof).is_integer()):
                raise MiascaleError(
                    f"dof (residual degrees of freedom) must be a positive whole number or None, "
                    f"got {self.dof!r}."
                )
            object.__setattr__(self, "dof", int(self.dof))
        if self.n_points is not None:
            if not _is_number(self.n_points) or not (
                self.n_points >= 0 and float(self.n_points).is_integer()
            ):
                raise MiascaleError(
                    f"n_points must be a whole number >= 0 or None, got {self.n_points!r}."
                )
            object.__setattr__(self, "n_points", int(self.n_points))
        if self.r_squared is not None:
            if not _is_number(self.r_squared) or not math.isfinite(self.r_squared):
                raise MiascaleError(f"r_squared must be a finite number or None, got {self.r_squared!r}.")  # fmt: skip
            object.__setattr__(self, "r_squared", float(self.r_squared))
        if self.shots_range is not None:
            try:
                lo, hi = (float(v) for v in self.shots_range)
            except (TypeError, ValueError):
                lo = hi = math.nan
            if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
                raise MiascaleError(
                    f"shots_range must be (smallest S, largest S) of the fitted points, positive "
                    f"and in order, or None; got {self.shots_range!r}."
                )
            object.__setattr__(self, "shots_range", (lo, hi))

    def to_dict(self) -> dict:
        return {
            "beta_s": float(self.beta_s),
            "beta_0": float(self.beta_0),
            "beta_c": _f(self.beta_c),
            "fpr_level": float(self.fpr_level),
            "cov": None if self.cov is None else [list(row) for row in self.cov],
            "dof": self.dof,
            "n_points": self.n_points,
            "r_squared": _f(self.r_squared),
            "shots_range": _pair(self.shots_range),
        }


@dataclass(frozen=True)
class Prediction:
    """The law evaluated at ``(shots, classes)``; ``tpr`` is clipped to 1 (``clipped`` says so).

    The intervals (at ``confidence``) are ``None`` when the coefficients carry no covariance.
    ``trustworthy`` is False when ``warnings`` is non-empty (``docs/design/scaling.md``).
    """

    shots: float
    classes: int | None
    fpr_level: float
    log10_advantage: float
    advantage: float  # unclipped 10 ** log10_advantage
    tpr: float  # min(1, fpr_level + advantage)
    clipped: bool
    confidence: float = field(default=0.95, kw_only=True)
    log10_advantage_ci: tuple[float, float] | None = field(default=None, kw_only=True)
    advantage_ci: tuple[float, float] | None = field(default=None, kw_only=True)
    tpr_ci: tuple[float, float] | None = field(default=None, kw_only=True)  # within [fpr, 1]
    tpr_ci_clipped: bool = field(default=False, kw_only=True)  # upper end clipped to 1
    trustworthy: bool = field(default=False, kw_only=True)
    warnings: tuple[str, ...] = field(default=(), kw_only=True)

    def _repr_html_(self) -> str:  # notebook display
        from miascale.notebook import prediction_html

        return prediction_html(self)

    def to_dict(self) -> dict:
        return {
            "shots": float(self.shots),
            "classes": None if self.classes is None else int(self.classes),
            "fpr_level": float(self.fpr_level),
            "log10_advantage": float(self.log10_advantage),
            "advantage": float(self.advantage),
            "tpr": float(self.tpr),
            "clipped": bool(self.clipped),
            "confidence": float(self.confidence),
            "log10_advantage_ci": _pair(self.log10_advantage_ci),
            "advantage_ci": _pair(self.advantage_ci),
            "tpr_ci": _pair(self.tpr_ci),
            "tpr_ci_clipped": bool(self.tpr_ci_clipped),
            "trustworthy": bool(self.trustworthy),
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class Plan:
    """The smallest integer ``shots`` whose predicted advantage is at most ``target_advantage``.

    ``shots_ci`` is the ``confidence`` interval of the real ``S`` at which the law reaches the
    target (``(S_low, S_high)``, ``S_high`` possibly ``inf``; ``None`` without a covariance).
    ``trustworthy`` is False when ``warnings`` is non-empty (``docs/design/scaling.md``).
    ``relation`` is the membership game's neighbouring relation; ``bound_epsilon`` and
    ``bound_delta`` the guarantee the target was computed from (``epsilon``, ``delta`` for
    ``"add_remove"``; group privacy of the add/remove ``epsilon``, ``delta`` for
    ``"replace_one"``; ``None`` with a direct ``target_advantage``).
    """

    shots: int
    shots_real: float  # S* solving predicted advantage == target exactly
    target_advantage: float
    epsilon: float | None
    delta: float
    fpr_level: float
    classes: int | None
    coefficients: Coefficients
    predicted: Prediction  # at ``shots``
    confidence: float = field(default=0.95, kw_only=True)
    shots_ci: tuple[float, float] | None = field(default=None, kw_only=True)
    trustworthy: bool = field(default=False, kw_only=True)
    warnings: tuple[str, ...] = field(default=(), kw_only=True)
    relation: str = field(default="add_remove", kw_only=True)
    bound_epsilon: float | None = field(default=None, kw_only=True)
    bound_delta: float | None = field(default=None, kw_only=True)

    def _repr_html_(self) -> str:  # notebook display
        from miascale.notebook import plan_html

        return plan_html(self)

    def to_dict(self) -> dict:
        return {
            "shots": int(self.shots),
            "shots_real": _f(self.shots_real),
            "target_advantage": float(self.target_advantage),
            "epsilon": _f(self.epsilon),
            "delta": float(self.delta),
            "relation": self.relation,
            "bound_epsilon": _f(self.bound_epsilon),
            "bound_delta": _f(self.bound_delta),
            "fpr_level": float(self.fpr_level),
            "classes": None if self.classes is None else int(self.classes),
            "coefficients": self.coefficients.to_dict(),
            "predicted": self.predicted.to_dict(),
            "confidence": float(self.confidence),
            "shots_ci": _pair(self.shots_ci),
            "trustworthy": bool(self.trustworthy),
            "warnings": list(self.warnings),
        }
