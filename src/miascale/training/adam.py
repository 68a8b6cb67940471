"""Minibatch Adam for the K head objectives (``HeadConfig.optimizer="adam"``, paper-style).

Batched over heads: every head draws its own minibatches (a seeded permutation of its own
subset each epoch) and takes its own Adam steps on the same objective (minibatch mean CE + l2
term). It does not reach the exact optimum; ``converged`` reports whether the full-batch
gradient ended below ``tol``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from miascale.training.lbfgs import max_abs_rows
from miascale.training.objective import HeadObjective

if TYPE_CHECKING:
    from miascale.training.heads import HeadConfig


def adam(
    prob: HeadObjective,
    mask: np.ndarray,
    config: HeadConfig,
    progress: Callable[[int, float], object] | None,
) -> tuple[torch.Tensor, int, torch.Tensor]:
    k, d, c, n = prob.k, prob.d, prob.c, prob.n
    f64 = torch.float64
    dev = prob.device
    bsz = config.batch_size
    lr = config.learning_rate
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    mask_t = torch.as_tensor(mask, device="cpu")
    counts = mask_t.sum(dim=1)
    n_max = int(counts.max())
    theta = torch.zeros(k, d * c + c, dtype=f64, device=dev)
    m1 = torch.zeros_like(theta)
    m2 = torch.zeros_like(theta)
    t_head = torch.zeros(k, dtype=f64, device=dev)  # Adam step count per head
    xc = prob.xc
    steps = 0
    gn = max_abs_rows(prob.value_and_grad(theta)[1])
    for epoch in range(1, config.epochs + 1):
        if n_max == 0:
            break
        keys = torch.rand(k, n, generator=gen, dtype=f64)
        keys[~mask_t] = 2.0  # non-members sort last
        order = torch.argsort(keys, dim=1, stable=True)[:, :n_max]
        valid_all = torch.arange(n_max)[None, :] < counts[:, None]
        order, valid_all = order.to(dev), valid_all.to(dev)
        for start in range(0, n_max, bsz):
            idx = order[:, start : start + bsz]  # (K, B)
            valid = valid_all[:, start : start + bsz].to(f64)
            nb = valid.sum(dim=1)
            live = nb > 0
            w = valid / nb.clamp(min=1.0)[:, None]
            v, _ = prob.split(theta)
            u, off = prob.folded(theta)
            xb = xc[idx]  # (K, B, D)
            z = torch.bmm(xb, u.to(prob.dtype)).to(f64) + off[:, None, :]
            pr = torch.softmax(z, dim=2)
            r = (pr - prob.onehot[idx]) * w[:, :, None]  # (K, B, C)
            g_c = r.sum(dim=1)
            g_raw = torch.bmm(xb.transpose(1, 2), r.to(prob.dtype)).to(f64)
            g_v = (g_raw - prob.mu_c[:, :, None] * g_c[:, None, :]) / prob.sd[:, :, None]
            g_v = g_v + prob.l2 * v
            grad = torch.cat([g_v.transpose(1, 2).reshape(k, d * c), g_c], dim=1)  # class-major
            grad = grad * live[:, None]
            t_head = t_head + live.to(f64)
            m1 = torch.where(live[:, None], beta1 * m1 + (1 - beta1) * grad, m1)
            m2 = torch.where(live[:, None], beta2 * m2 + (1 - beta2) * grad * grad, m2)
            t = t_head.clamp(min=1.0)[:, None]
            mhat = m1 / (1 - beta1**t)
            vhat = m2 / (1 - beta2**t)
            theta = theta - (lr * live[:, None]) * mhat / (vhat.sqrt() + eps)
            steps += 1
        if progress is not None or epoch == config.epochs:
            gn = max_abs_rows(prob.value_and_grad(theta)[1])
            if progress is not None:
                progress(epoch, float(gn.max()))
    gn = max_abs_rows(prob.value_and_grad(theta)[1])
    return theta, steps, gn
