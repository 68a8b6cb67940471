"""Average-case closed forms: the pooled Neyman–Pearson test over a population of targets (d),
its large-S asymptote, and the equal-variance approximation of the pool mode.

Definitions in docs/theory.md §2d and §3 ("Pool vs fresh"); conventions in
docs/design/theory.md.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from miascale.theory._numerics import (
    _bisect_decreasing,
    _sf,
    _shots_array,
    _z,
    check_fpr_levels_nd,
)


def _pooled_region(
    u: np.ndarray, s: np.ndarray, eta: np.ndarray, equal_var: bool, gain: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rejection interval ``[L, U]`` of ``LLR_u(z) ≥ η`` per u, with δ and ρ.

    ``equal_var``: IN ``N(gain·δ, 1)`` (the pool approximation, one-sided); else the fresh model.
    ``u ≥ 0``. Empty intervals come back as ``L = U = +inf``.
    """
    sq = np.sqrt(s)
    delta = gain * u / sq
    if equal_var:
        with np.errstate(divide="ignore", invalid="ignore"):
            lower = np.where(
                delta > 0, eta / delta + 0.5 * delta, np.where(eta <= 0, -np.inf, np.inf)
            )
        return lower, np.full_like(lower, np.inf), delta, np.ones_like(lower)
    rho = np.sqrt(1.0 - 1.0 / s)
    c = u * sq
    d = u**2 + (s - 1.0) * np.log1p(-1.0 / s) + 2.0 * (s - 1.0) * eta  # c² − w²
    w2 = c**2 - d
    ok = w2 > 0
    w = np.sqrt(np.where(ok, w2, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        lower = np.where(ok, d / (c + w), np.inf)
    upper = np.where(ok, c + w, np.inf)
    return lower, upper, delta, rho


def _eta_bracket(
    ug: np.ndarray, s_f: np.ndarray, equal_var: bool, gain: float
) -> tuple[np.ndarray, np.ndarray]:
    """Bracket for the shared threshold η: the whole line rejected at ``lo``, nothing at ``hi``.

    ``lo``: the LLR at z = ±40 (the whole line inside the region); ``hi``: above the largest
    maximum of any target's LLR. ``ug``: ``(1, n)`` separations, ``s_f``: ``(k, 1)`` shots.
    """
    if equal_var:
        dmax = gain * ug.max() / np.sqrt(s_f)
        hi = 50.0 * dmax + 0.5 * dmax**2 + 1.0  # L ≥ η/δ ≥ 50 for every u
        lo = -50.0 * dmax - 0.5 * dmax**2 - 1.0
        return lo, hi
    s_safe = np.maximum(s_f, 1.0 + 1e-12)
    c = ug * np.sqrt(s_safe)
    b = 0.5 * ug**2 - 0.5 * np.log1p(-1.0 / s_safe)
    hi = b.max(axis=1, keepdims=True) + 1.0
    llr40 = -((40.0 + c) ** 2) / (2.0 * (s_safe - 1.0)) + b
    lo = llr40.min(axis=1, keepdims=True) - 1.0
    return lo, hi


def _pooled(
    u: Any, shots: Any, fpr: Any, *, equal_var: bool, gain: float
) -> tuple[np.ndarray, np.ndarray]:
    """TPR and attained FPR of the pooled LLR test; one shared η per (S, t), ``FPR ≤ t``."""
    s = _shots_array(shots)
    t = check_fpr_levels_nd(fpr)
    uu = np.abs(np.asarray(u, dtype=np.float64)).ravel()
    s_b, t_b = np.broadcast_arrays(s, t)
    shape = s_b.shape
    s_f = s_b.ravel()[:, None]
    t_f = t_b.ravel()[:, None]
    ug = uu[None, :]
    lo, hi = _eta_bracket(ug, s_f, equal_var, gain)
    s_use = np.maximum(s_f, 1.0 + 1e-12) if not equal_var else s_f

    def rates(eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lower, upper, delta, rho = _pooled_region(ug, s_use, eta, equal_var, gain)
        fpr_u = _sf(lower) - _sf(upper)
        with np.errstate(invalid="ignore"):
            tpr_u = _sf((lower - delta) / rho) - _sf((upper - delta) / rho)
        tpr_u = np.where(np.isinf(lower) & (lower > 0), 0.0, tpr_u)
        return fpr_u.mean(axis=1, keepdims=True), tpr_u.mean(axis=1, keepdims=True)

    lo, hi = _bisect_decreasing(lambda eta: rates(eta)[0], t_f, lo, hi)
    f_at, tpr = rates(hi)  # hi keeps FPR ≤ t
    tpr = tpr[:, 0]
    if not equal_var:
        tpr = np.where(s_f[:, 0] <= 1.0, 1.0, tpr)
    return tpr.reshape(shape), f_at[:, 0].reshape(shape)


def tpr_pooled(u: Any, shots: Any, fpr: Any) -> np.ndarray:
    """(d) Average case: TPR of the pooled Neyman–Pearson test over a population of targets.

    Every target is scored by its own exact log-likelihood ratio and one threshold η is shared
    by all targets (what LiRA does when TPR@FPR pools (target, example) pairs); η solves
    ``mean_u FPR_u(η) = t``. ``u``: separations of the population (e.g.
    :func:`~miascale.theory.model.population_separation`), any shape; ``shots``/``fpr``
    broadcast together.
    """
    return _pooled(u, shots, fpr, equal_var=False, gain=1.0)[0]


def tpr_pool_approx(u: Any, shots: Any, fpr: Any, *, pooled: bool = True) -> np.ndarray:
    """Large-S approximation for ``--population pool``: equal IN/OUT variances, δ × √2.

    IN is ``N(√2·δ, 1)`` in OUT-standardised units, so the NP test is one-sided (docs/theory.md
    §3). ``pooled``: population test over ``u`` (as :func:`tpr_pooled`); else per example
    (``u`` broadcasts with shots and fpr).
    """
    if pooled:
        return _pooled(u, shots, fpr, equal_var=True, gain=math.sqrt(2.0))[0]
    s = _shots_array(shots)
    return _sf(_z(check_fpr_levels_nd(fpr)) - math.sqrt(2.0) * np.asarray(u) / np.sqrt(s))


def advantage_pooled_asymptotic(u: Any, shots: Any, fpr: Any) -> np.ndarray:
    """Large-S advantage of the pooled test: ``E[|u|·φ(τ/|u|)]/√S`` with ``E[Φ̄(τ/|u|)] = t``.

    Reduces to :func:`~miascale.theory.closed_forms.advantage_asymptotic` when every target has
    the same ``u``.
    """
    s = _shots_array(shots)
    t = check_fpr_levels_nd(fpr)
    uu = np.abs(np.asarray(u, dtype=np.float64)).ravel()[None, :]
    t_b = np.broadcast_to(t, np.broadcast_shapes(s.shape, t.shape))
    tf = t_b.ravel()[:, None]
    zt = _z(tf)
    lo = np.minimum(zt * uu.min(), zt * uu.max()) - 50.0 * uu.max()  # E Φ̄(τ/u) ≈ 1 ≥ t
    hi = np.maximum(zt * uu.min(), zt * uu.max()) + 50.0 * uu.max()  # ≈ 0 ≤ t
    lo, hi = _bisect_decreasing(lambda tau: _sf(tau / uu).mean(axis=1, keepdims=True), tf, lo, hi)
    tau = 0.5 * (lo + hi)
    k = (uu * np.exp(-0.5 * (tau / uu) ** 2) / math.sqrt(2 * math.pi)).mean(axis=1)
    return k.reshape(t_b.shape) / np.sqrt(np.broadcast_to(s, t_b.shape))
