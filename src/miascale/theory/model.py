"""The simplified model itself: class means, fixed targets and the separation ``u``.

The model and its notation are in docs/theory.md §1 and docs/design/theory.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from miascale.errors import MiascaleError
from miascale.theory._numerics import _shots_array

POPULATIONS = ("fresh", "pool")
HEADS = ("linear", "softmax")
#: The fixed examples shown next to the average case: ``x = m + r·σ·√d·e`` with ``e ⟂ m`` a unit
#: vector, i.e. at ``r`` times the typical distance of a class member from its mean.
FIXED_EXAMPLES = (("near-mean", 0.5), ("typical", 1.0), ("outlier", 2.0))


def class_means(classes: int, dim: int) -> np.ndarray:
    """``(C, d)`` orthonormal class means (the first C standard basis vectors)."""
    if classes < 1 or dim < 1 or classes > dim:
        raise MiascaleError(
            f"The model needs 1 <= classes <= dim for orthonormal class means, got classes="
            f"{classes}, dim={dim}."
        )
    return np.eye(classes, dim)


def separation(x: np.ndarray, m: np.ndarray, sigma: float) -> np.ndarray:
    """``u = ⟨x, x − m⟩ / √(xᵀΣx)`` with ``Σ = σ²I``; ``x`` and ``m`` broadcast over rows."""
    x = np.asarray(x, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    return np.sum(x * (x - m), axis=-1) / (sigma * np.linalg.norm(x, axis=-1))


@dataclass(frozen=True)
class ScoreLaws:
    """Means and standard deviations of the score ``s = ⟨x, m̂⟩`` under OUT and IN."""

    mu_out: np.ndarray
    sd_out: np.ndarray
    mu_in: np.ndarray
    sd_in: np.ndarray


def score_laws(x: np.ndarray, m: np.ndarray, sigma: float, shots: Any) -> ScoreLaws:
    """The closed-form OUT/IN Gaussians of a fixed target (fresh fellow examples).

    OUT ``N(⟨x, m⟩, xᵀΣx/S)``; IN ``N(‖x‖²/S + (S−1)/S·⟨x, m⟩, (S−1)·xᵀΣx/S²)``.
    """
    s = _shots_array(shots)
    x = np.asarray(x, dtype=np.float64)
    a = float(np.dot(x, m))
    r2 = float(np.dot(x, x))
    v = sigma**2 * r2
    return ScoreLaws(
        mu_out=np.full_like(s, a),
        sd_out=np.sqrt(v / s),
        mu_in=r2 / s + (s - 1.0) / s * a,
        sd_in=np.sqrt((s - 1.0) * v) / s,
    )


@dataclass(frozen=True)
class FixedExample:
    """A fixed target ``x = m + r·σ·√d·e`` (``e ⟂ m``): name, radius r, vector, separation u."""

    name: str
    radius: float
    x: np.ndarray
    u: float

    def to_dict(self) -> dict:
        return {"name": self.name, "radius": self.radius, "u": self.u}


def fixed_example(name: str, radius: float, dim: int, sigma: float, classes: int) -> FixedExample:
    """The fixed example of class 0 at ``radius`` typical distances from its mean."""
    means = class_means(classes, dim)
    if dim < 2:
        raise MiascaleError("fixed examples need dim >= 2 (a direction orthogonal to the mean).")
    e = np.zeros(dim)
    e[-1] = 1.0  # orthogonal to every class mean when C < d; else only to m_0
    if classes == dim:
        e = np.zeros(dim)
        e[1] = 1.0
    x = means[0] + radius * sigma * math.sqrt(dim) * e
    return FixedExample(name, float(radius), x, float(separation(x, means[0], sigma)))


def population_separation(dim: int, sigma: float, n: int, seed: int) -> np.ndarray:
    """``n`` draws of ``u`` for ``x ~ N(m, σ²I_d)`` (the same for every class, by symmetry).

    Uses ``⟨m, g⟩ = g₁ ~ N(0, 1)`` and ``‖g‖² − g₁² ~ χ²_{d−1}``, so no d-dimensional vectors.
    """
    rng = np.random.default_rng(seed)
    g1 = rng.standard_normal(n)
    q = rng.chisquare(dim - 1, n) if dim > 1 else np.zeros(n)
    g2 = g1**2 + q
    num = sigma * g1 + sigma**2 * g2
    norm2 = 1.0 + 2.0 * sigma * g1 + sigma**2 * g2
    return num / (sigma * np.sqrt(norm2))
