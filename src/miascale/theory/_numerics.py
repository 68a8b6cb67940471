"""Numerical helpers shared by the theory modules: normal tails, argument checks, bisection."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

from miascale.errors import MiascaleError
from miascale.metrics import check_fpr_levels

_BISECT_ITERS = 110


def _sf(x: Any) -> np.ndarray:
    """Upper normal tail Φ̄(x), accurate in both tails."""
    return ndtr(-np.asarray(x, dtype=np.float64))


def _z(t: Any) -> np.ndarray:
    """Φ⁻¹(1 − t) computed as −Φ⁻¹(t) (accurate for small t)."""
    return -ndtri(np.asarray(t, dtype=np.float64))


def _shots_array(shots: Any) -> np.ndarray:
    s = np.asarray(shots, dtype=np.float64)
    if np.any(~np.isfinite(s)) or np.any(s < 1):
        raise MiascaleError(f"shots S must be numbers >= 1, got {np.ravel(s).tolist()[:8]}.")
    return s


def check_fpr_levels_nd(fpr: Any) -> np.ndarray:
    """FPR levels in (0, 1), keeping the caller's shape (for broadcasting)."""
    arr = np.asarray(fpr, dtype=np.float64)
    check_fpr_levels(arr.ravel())
    return arr


def _clean(x: Any) -> float | None:
    """``float(x)``, or None when it is not finite (JSON has no inf/NaN)."""
    x = float(x)
    return x if math.isfinite(x) else None


def _bisect_decreasing(
    f: Callable[[np.ndarray], np.ndarray], target: Any, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised bisection of a decreasing ``f`` for ``f = target``.

    Keeps ``f(lo) > target >= f(hi)`` elementwise for ``_BISECT_ITERS`` halvings and returns the
    final bracket ``(lo, hi)``.
    """
    for _ in range(_BISECT_ITERS):
        mid = 0.5 * (lo + hi)
        big = f(mid) > target
        lo = np.where(big, mid, lo)
        hi = np.where(big, hi, mid)
    return lo, hi
