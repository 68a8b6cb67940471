"""Closed forms for one fixed target: one-sided test (a), Neyman–Pearson test (b), asymptote (c).

Each is a function of ``(u, S, t)`` only and broadcasts over all three; the formulas and their
derivations are in docs/theory.md §2, the conventions in docs/design/theory.md.
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


def _rho(s: np.ndarray) -> np.ndarray:
    """``ρ = √((S − 1)/S)``, the IN/OUT ratio of standard deviations (0 at S = 1)."""
    return np.sqrt(np.maximum(1.0 - 1.0 / s, 0.0))


def tpr_one_sided(u: Any, shots: Any, fpr: Any) -> np.ndarray:
    """(a) Exact TPR of the one-sided threshold test "member when s ≥ τ", τ set on the OUT law.

    ``TPR = Φ̄((Φ⁻¹(1−t) − δ)/ρ)``; at S = 1 the IN law is a point mass (TPR 0 or 1).
    """
    s = _shots_array(shots)
    u, s, t = np.broadcast_arrays(np.asarray(u, dtype=np.float64), s, check_fpr_levels_nd(fpr))
    delta = u / np.sqrt(s)
    rho = _rho(s)
    zt = _z(t)
    with np.errstate(divide="ignore", invalid="ignore"):
        tpr = _sf((zt - delta) / rho)
    return np.where(rho > 0, tpr, (delta >= zt).astype(np.float64))


def _np_lower_endpoint(c: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Solve ``Φ̄(L) − Φ̄(2c − L) = t`` for ``L ≤ c`` (vectorised bisection; c ≥ 0).

    ``[L, 2c − L]`` is the Neyman–Pearson rejection interval, symmetric about its centre ``c``.
    The left side decreases strictly in L, from 1 at −∞ to 0 at c.
    """
    zt = _z(t)
    hi = np.minimum(zt, c)  # Φ̄(hi) − … ≤ Φ̄(zt) = t
    lo = zt - 40.0  # ≈ 1 ≥ t
    lo, hi = _bisect_decreasing(lambda mid: _sf(mid) - _sf(2.0 * c - mid) - t, 0.0, lo, hi)
    return 0.5 * (lo + hi)


def tpr_neyman_pearson(u: Any, shots: Any, fpr: Any) -> np.ndarray:
    """(b) Exact TPR of the most powerful (Neyman–Pearson) test of IN vs OUT at FPR t.

    The rejection region is an interval ``[L, 2c − L]`` centred at ``c = |u|·√S`` (docs/theory.md
    §2b); ``TPR = Φ̄((L − δ)/ρ) − Φ̄((2c − L − δ)/ρ)``. At S = 1 the IN law is a point mass:
    TPR = 1.
    """
    s = _shots_array(shots)
    u, s, t = np.broadcast_arrays(
        np.abs(np.asarray(u, dtype=np.float64)), s, check_fpr_levels_nd(fpr)
    )
    sq = np.sqrt(s)
    delta = u / sq
    c = u * sq
    rho = _rho(s)
    lower = _np_lower_endpoint(c, t)
    upper = 2.0 * c - lower
    with np.errstate(divide="ignore", invalid="ignore"):
        tpr = _sf((lower - delta) / rho) - _sf((upper - delta) / rho)
    return np.where(rho > 0, tpr, 1.0)


def advantage_asymptotic(u: Any, shots: Any, fpr: Any) -> np.ndarray:
    """(c) ``exp(−½·log S − ½·Φ⁻¹(t)² + log(|u|/√(2π)))`` = ``|u|·φ(Φ⁻¹(t))/√S``."""
    s = _shots_array(shots)
    t = check_fpr_levels_nd(fpr)
    zt = _z(t)
    return np.exp(
        -0.5 * np.log(s) - 0.5 * zt**2 + np.log(np.abs(np.asarray(u, dtype=np.float64)))
        - 0.5 * math.log(2 * math.pi)
    )  # fmt: skip
