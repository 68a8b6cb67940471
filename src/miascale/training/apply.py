"""Apply trained heads (:class:`miascale.training.heads.TrainedHeads`) to features.

:func:`head_logits` returns every head's float64 logits on every example, :func:`head_predictions`
their argmax without keeping them. Heads trained in the pool's span (:mod:`.span`, N < D) are
applied through it when that is cheaper: the features are projected once onto the span's r
coordinates, then each head costs r instead of D multiply-adds per class (the same logits to
float64 rounding; at S = 1 and C = 10, r = 19 instead of 1,280).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from miascale.errors import MiascaleError

if TYPE_CHECKING:
    from miascale.training.heads import TrainedHeads


def _logit_chunks(
    heads: object, features: np.ndarray, batch_size: int
) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, (rows, K, C) float64 logits) per chunk of ``batch_size`` rows, after validation."""
    from miascale.training.heads import TrainedHeads, _check_features

    if not isinstance(heads, TrainedHeads):
        raise MiascaleError(f"heads must be TrainedHeads, got {type(heads).__name__}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise MiascaleError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
    x = _check_features(features)
    k, d, c = heads.weights.shape
    if x.shape[1] != d:
        raise MiascaleError(f"features have {x.shape[1]} dims but the heads expect {d}.")
    weights, bias, project = heads.weights, heads.bias, None
    if heads.span is not None and _span_is_cheaper(heads.span[0].rank, d, k * c):
        span, (weights, bias) = heads.span
        # ((x - mu) / sd) @ basis as one GEMM plus a shift
        project = (
            torch.as_tensor(-(span.mu / span.sd) @ span.basis)[None, :],
            torch.as_tensor(span.basis / span.sd[:, None]),
        )
    w = torch.as_tensor(np.ascontiguousarray(weights.transpose(1, 0, 2)).reshape(-1, k * c))
    b = torch.as_tensor(bias.reshape(1, k * c))
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb = torch.as_tensor(x[start : start + batch_size])
            if project is not None:
                xb = torch.addmm(project[0], xb, project[1])
            yield start, torch.addmm(b, xb, w).view(-1, k, c)


def _span_is_cheaper(rank: int, d: int, kc: int) -> bool:
    """Projecting (d x rank) then applying (rank x kc) costs at most half of applying (d x kc)
    (at about 3/4, S = 32 with C = 10, it measured no faster: benchmarks/README.md)."""
    return d * rank + rank * kc <= 0.5 * d * kc


def head_logits(heads: TrainedHeads, features: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Logits of every head on every example: (K, M, C) float64, ``x @ W_k + b_k``.

    Computed in float64 as one (rows, D) @ (D, K*C) matmul per chunk of ``batch_size`` rows
    (through the pool's span when the heads were trained there and that is cheaper).
    """
    out = None
    for start, z in _logit_chunks(heads, features, batch_size):
        if out is None:
            out = torch.empty(heads.n_models, len(features), heads.n_classes, dtype=z.dtype)
        out[:, start : start + z.shape[0]].copy_(z.permute(1, 0, 2))
    return out.numpy()


def head_predictions(
    heads: TrainedHeads, features: np.ndarray, batch_size: int = 4096
) -> np.ndarray:
    """Predicted class of every head on every example: (K, M) int64, the argmax of
    :func:`head_logits` (same float64 logits, without keeping them)."""
    out = None
    for start, z in _logit_chunks(heads, features, batch_size):
        if out is None:
            out = torch.empty(heads.n_models, len(features), dtype=torch.int64)
        out[:, start : start + z.shape[0]] = z.argmax(dim=2).t()
    return out.numpy()
