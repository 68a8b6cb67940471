"""Adam and SGD over stacked per-model parameters (Kc, ...), each model with its own steps.

The updates follow ``torch.optim.Adam`` / ``torch.optim.SGD`` exactly; a model whose ``live``
flag is False on a step keeps its parameters and optimiser state.
"""

from __future__ import annotations

import torch

from miascale.training.film.config import FilmConfig

ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


def adam_update(
    p: torch.Tensor,
    g: torch.Tensor,
    on: torch.Tensor,
    m1: torch.Tensor,
    m2: torch.Tensor,
    steps: torch.Tensor,
    lr: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(update to subtract, new first moment, new second moment) for live models ``on``."""
    (b1, b2), shape = ADAM_BETAS, on.shape
    m1 = torch.where(on, m1 * b1 + g * (1 - b1), m1)
    m2 = torch.where(on, m2 * b2 + g * g * (1 - b2), m2)
    t = steps.clamp(min=1.0)
    bc1 = (1 - b1**t).to(p.dtype).view(shape)
    bc2 = (1 - b2**t).sqrt().to(p.dtype).view(shape)
    return (lr / bc1) * m1 / (m2.sqrt() / bc2 + ADAM_EPS), m1, m2


def sgd_update(
    g: torch.Tensor, on: torch.Tensor, buf: torch.Tensor, steps: torch.Tensor, lr: float, momentum
) -> tuple[torch.Tensor, torch.Tensor]:
    """(update to subtract, new momentum buffer) for live models ``on``."""
    first = (steps == 1).view(on.shape)
    new = torch.where(first, g, buf * momentum + g)
    new = torch.where(on, new, buf)
    return lr * (new if momentum else g), new


class StackedOptimizer:
    """Adam / SGD over stacked per-model parameters, each model with its own step count."""

    def __init__(self, params: list[torch.Tensor], decay: list[bool], config: FilmConfig):
        self.params, self.decay, self.config = params, decay, config
        kc = params[0].shape[0]
        self.steps = torch.zeros(kc, dtype=torch.float64, device=params[0].device)
        self.m1 = [torch.zeros_like(p) for p in params]
        self.m2 = [torch.zeros_like(p) for p in params] if config.optimizer == "adam" else []

    @torch.no_grad()
    def step(self, live: torch.Tensor) -> None:
        """One step for the models where ``live`` (Kc,) is True; clears the gradients."""
        cfg = self.config
        self.steps += live.to(torch.float64)
        lr = cfg.learning_rate
        for j, p in enumerate(self.params):
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            if self.decay[j] and cfg.weight_decay:
                g = g.add(p, alpha=cfg.weight_decay)
            on = live.view(-1, *([1] * (p.ndim - 1)))
            if cfg.optimizer == "adam":
                update, self.m1[j], self.m2[j] = adam_update(
                    p, g, on, self.m1[j], self.m2[j], self.steps, lr
                )
            else:
                update, self.m1[j] = sgd_update(g, on, self.m1[j], self.steps, lr, cfg.momentum)
            p.sub_(torch.where(on, update, torch.zeros_like(update)))
            p.grad = None
