"""Train heads in the span of the pool when it has fewer examples than dimensions (exact).

With pool (or no) standardisation every head's optimum lies in the row space of the
standardised pool. :func:`pool_span` returns that space as a :class:`PoolSpan` (an orthonormal
basis ``W`` (D, r), ``r <= N - 1``, and the coordinates ``X~ W``), or None when it would save
little; heads trained on the coordinates are lifted back (:meth:`PoolSpan.lift`): the same
problem, exactly, at ``D / r`` times less cost per iteration, stopped at ``tol / sqrt(r)``.

Derivation and the tolerance bound: docs/design/training.md ("Training in the pool's span").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from miascale.training.objective import STD_FLOOR

MAX_FRACTION = 0.8
"""Use the span only when its rank is at most this fraction of D (else the saving is small)."""


@dataclass(frozen=True)
class PoolSpan:
    """``Z = ((x - mu) / sd) @ basis`` for the pool; ``basis`` (D, r) has orthonormal columns."""

    mu: np.ndarray
    sd: np.ndarray
    basis: np.ndarray
    coords: np.ndarray

    @property
    def rank(self) -> int:
        return int(self.basis.shape[1])

    def reduced_tol(self, tol: float) -> float:
        return tol / math.sqrt(self.rank)

    def lift(self, weights: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Heads on ``Z`` (K, r, C), (K, C) -> heads on the original features (K, D, C), (K, C)."""
        w = self._to_features(weights) / self.sd[None, :, None]
        return w, bias - np.einsum("d,kdc->kc", self.mu, w)

    def _to_features(self, a: np.ndarray) -> np.ndarray:
        """``basis @ a[k]`` for every head: (K, r, C) -> (K, D, C), as one (D, r) @ (r, K*C)
        GEMM (fast, and its rounding does not depend on the thread count)."""
        k, r, c = a.shape
        out = (self.basis @ a.transpose(1, 0, 2).reshape(r, k * c)).reshape(-1, k, c)
        return np.ascontiguousarray(out.transpose(1, 0, 2))

    def grad_norm(self, grad: torch.Tensor, n_classes: int) -> np.ndarray:
        """Max-abs gradient in standardised space of reduced gradients (K, C*r + C), weights
        class-major (:mod:`.objective`)."""
        k, rc = grad.shape[0], self.rank * n_classes
        g = grad.cpu().numpy()
        g_v = self._to_features(g[:, :rc].reshape(k, n_classes, self.rank).transpose(0, 2, 1))
        return np.maximum(np.abs(g_v).max(axis=(1, 2)), np.abs(g[:, rc:]).max(axis=1))


def pool_span(x: np.ndarray, standardize: str) -> PoolSpan | None:
    """The pool's span when the recipe shares one scale and the rank is small enough, else None."""
    if standardize == "subset":
        return None
    n, d = x.shape
    if n - 1 > MAX_FRACTION * d:
        return None
    from scipy.linalg import eigh

    mu = x.mean(axis=0)
    sd = np.maximum(x.std(axis=0), STD_FLOOR) if standardize == "pool" else np.ones(d)
    xs = (x - mu) / sd
    lam, u = eigh(xs @ xs.T, driver="evd", check_finite=False)
    top = float(lam.max(initial=0.0))
    keep = lam > 1e-12 * top
    if top <= 0 or not keep.any():
        return None
    root = np.sqrt(lam[keep])
    basis = xs.T @ (u[:, keep] / root)
    # one more Gram-Schmidt pass keeps the basis orthonormal to rounding for ill-conditioned pools
    basis, _ = np.linalg.qr(basis)
    return PoolSpan(mu=mu, sd=sd, basis=basis, coords=xs @ basis)
