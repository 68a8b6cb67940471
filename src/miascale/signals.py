"""Per-example membership signals computed from logits."""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

from miascale.errors import MiascaleError

__all__ = ["cross_entropy_loss", "lira_statistic"]


def _prepare(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if z.ndim < 2:
        raise MiascaleError(
            f"logits must have shape (..., N, C), got shape {z.shape}. Stack per-example logit "
            "vectors along the second-to-last axis."
        )
    n, c = z.shape[-2], z.shape[-1]
    if y.ndim != 1 or y.shape[0] != n:
        raise MiascaleError(
            f"labels must have shape ({n},) to match logits of shape {z.shape}, got {y.shape}."
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise MiascaleError(f"labels must be integer class indices, got dtype {y.dtype}.")
    if c < 2:
        raise MiascaleError(f"logits need at least 2 classes (last axis), got {c}.")
    if y.size and (y.min() < 0 or y.max() >= c):
        raise MiascaleError(
            f"labels must lie in 0..{c - 1} (the logits' class axis), got values in "
            f"{int(y.min())}..{int(y.max())}. Use the pool's remapped labels."
        )
    if not np.all(np.isfinite(z)):
        raise MiascaleError(
            "logits contain NaN or infinite values; the model's outputs are broken (check for "
            "divergent training or a bad checkpoint)."
        )
    return z, y.astype(np.intp)


def _true_logit(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    idx = np.broadcast_to(y[:, None], (*z.shape[:-1], 1))
    return np.take_along_axis(z, idx, axis=-1)[..., 0]


def lira_statistic(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """LiRA's logit-scaled confidence φ = log p_y − log Σ_{k≠y} p_k.

    Computed as ``z_y − logsumexp_{k≠y} z_k`` so it is finite for any finite logits.

    Args:
        logits: ``(..., N, C)`` logits.
        labels: ``(N,)`` integer labels in ``0..C-1``.

    Returns:
        ``(..., N)`` float64.
    """
    z, y = _prepare(logits, labels)
    zy = _true_logit(z, y)
    mask = np.arange(z.shape[-1]) == y[:, None]  # (N, C), broadcasts over leading axes
    others = np.where(mask, -np.inf, z)
    # logsumexp over the other classes, shifted by their (finite: C >= 2) maximum; written out
    # because scipy's general logsumexp is several times slower on (K, N, C) arrays
    top = others.max(axis=-1, keepdims=True)
    np.subtract(others, top, out=others)
    np.exp(others, out=others)
    return zy - (top[..., 0] + np.log(others.sum(axis=-1)))


def cross_entropy_loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example cross-entropy ``−log p_y = logsumexp(z) − z_y``; ``(..., N)`` float64."""
    z, y = _prepare(logits, labels)
    return logsumexp(z, axis=-1) - _true_logit(z, y)
