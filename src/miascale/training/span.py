"""Train heads in the span of the pool when it has fewer examples than dimensions (exact).

With pool (or no) standardisation every head sees the same standardised, centred pool ``X~``
(N, D). The l2 term makes each head's optimum ``V*`` a combination of the rows of ``X~``
(``V* = -X~^T R*/l2`` with the residuals ``R*`` at the optimum, whose columns sum to 0 because
the bias is free), so ``V* = W V'`` with ``W`` (D, r) an orthonormal basis of that row space and
``||V*|| = ||V'||``. Solving for ``V'`` on the coordinates ``Z = X~ W`` (N, r) is therefore the
same problem, exactly, in ``r <= N - 1`` dimensions instead of D: at S = 1 and C = 10 that is
19 instead of 1,280 per class. Each iteration's cost, GEMMs and the L-BFGS memory alike,
shrinks by ``D / r``.

The reduced problem stops at ``tol / sqrt(r)``, which guarantees the contract's max-abs
gradient ``< tol`` in standardised space (``|(W g')_i| <= ||g'||_2 <= sqrt(r) max|g'|``).
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
        w = np.einsum("dr,krc->kdc", self.basis, weights) / self.sd[None, :, None]
        return w, bias - np.einsum("d,kdc->kc", self.mu, w)

    def grad_norm(self, grad: torch.Tensor, n_classes: int) -> np.ndarray:
        """Max-abs gradient in standardised space of reduced gradients (K, r*C + C)."""
        k, rc = grad.shape[0], self.rank * n_classes
        g = grad.cpu().numpy()
        g_v = np.einsum("dr,krc->kdc", self.basis, g[:, :rc].reshape(k, self.rank, n_classes))
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
