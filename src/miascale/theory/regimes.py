"""Where the −½ law holds: local slopes of the exact curves and the onset of the asymptote.

Definitions in docs/theory.md §2 ("Regimes").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from miascale.errors import MiascaleError
from miascale.theory._numerics import _shots_array, check_fpr_levels_nd
from miascale.theory.closed_forms import tpr_neyman_pearson, tpr_one_sided
from miascale.theory.pooled import tpr_pooled

_TESTS = {
    "neyman-pearson": tpr_neyman_pearson,
    "one-sided": tpr_one_sided,
    "pooled": tpr_pooled,
}


def _advantage(kind: str, u: Any, shots: Any, fpr: Any) -> np.ndarray:
    """``TPR − t`` of the exact test ``kind`` (a key of ``_TESTS``)."""
    t = check_fpr_levels_nd(fpr)
    if kind not in _TESTS:
        raise MiascaleError(f"unknown test {kind!r}: neyman-pearson, one-sided or pooled.")
    return _TESTS[kind](u, shots, t) - t


def local_slope(
    u: Any, shots: Any, fpr: Any, *, test: str = "neyman-pearson", octaves: float = 0.25
) -> np.ndarray:
    """``d log(TPR − t) / d log S`` of the exact curve by a central difference in log S.

    ``test``: "neyman-pearson" or "one-sided" (per example, ``u`` scalar or broadcasting) or
    "pooled" (``u`` a population). Non-positive advantages give NaN.
    """
    s = _shots_array(shots)
    h = 2.0**octaves
    lo, hi = s / h, s * h
    lo = np.maximum(lo, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        a_hi = _advantage(test, u, hi, fpr)
        a_lo = _advantage(test, u, lo, fpr)
        out = (np.log(a_hi) - np.log(a_lo)) / (np.log(hi) - np.log(lo))
    return np.where((a_hi > 0) & (a_lo > 0), out, np.nan)


def _first_stable(ok: np.ndarray, grid: np.ndarray) -> float:
    """The grid value from which ``ok`` holds to the end of the grid; ``inf`` if never."""
    bad = np.flatnonzero(~ok)
    if bad.size == 0:
        return float(grid[0])
    if bad[-1] < grid.size - 1:
        return float(grid[bad[-1] + 1])
    return np.inf


def asymptotic_onset(
    u: Any,
    fpr: Any,
    *,
    test: str = "neyman-pearson",
    tolerance: float = 0.05,
    max_log2_shots: int = 40,
    per_octave: int = 4,
) -> np.ndarray:
    """Smallest S (on a grid with ``per_octave`` points per octave) from which the local slope of
    the exact curve stays within ``tolerance`` of −½ for every larger S on the grid.

    One value per FPR level (``fpr`` 1-D); ``inf`` if not reached by ``2**max_log2_shots``.
    """
    t = np.atleast_1d(check_fpr_levels_nd(fpr))
    grid = 2.0 ** (np.arange(0, max_log2_shots * per_octave + 1) / per_octave)
    if test == "pooled":
        slopes = local_slope(u, grid[None, :], t[:, None], test=test)
    else:
        slopes = local_slope(np.asarray(u)[..., None, None], grid[None, :], t[:, None], test=test)
        slopes = slopes.reshape(-1, *slopes.shape[-2:]).max(axis=0)  # worst example if several
    ok = np.abs(slopes + 0.5) <= tolerance
    out = np.full(t.shape, np.inf)
    for i in range(t.size):
        out[i] = _first_stable(ok[i], grid)
    return out
