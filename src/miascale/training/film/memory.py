"""How many models train together: saved-activation bytes per image against a budget."""

from __future__ import annotations

import torch

from miascale.training.film.backbone import FilmBackbone
from miascale.training.film.config import FilmConfig


def _saved_bytes(backbone: FilmBackbone, n_images: int) -> int:
    """Bytes autograd saves for backward on ``n_images`` images under one model's params."""
    r = backbone.resolution
    params = {n: p[None].clone().requires_grad_(True) for n, p in backbone.pretrained().items()}
    x = torch.zeros(n_images, 3, r, r, dtype=backbone.dtype, device=backbone.device)
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        try:
            key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
            seen[key] = key[1]
        except (RuntimeError, NotImplementedError):
            seen[(id(t), 0)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        backbone.features(params, x)
    return sum(seen.values())


def activation_bytes_per_image(backbone: FilmBackbone) -> int:
    """Bytes autograd saves for backward per training image.

    Measured as the difference between 3 and 1 images (one model), so that tensors saved
    whatever the batch size (the shared frozen weights, which convolutions keep for the input
    gradient) are not counted.
    """
    return max(1, (_saved_bytes(backbone, 3) - _saved_bytes(backbone, 1)) // 2)


def chunk_size(backbone: FilmBackbone, config: FilmConfig, n_models: int, n_max: int) -> int:
    """``config.models_per_chunk``, or the most models whose step fits the memory budget."""
    if config.models_per_chunk is not None:
        return min(config.models_per_chunk, n_models)
    per_image = activation_bytes_per_image(backbone)
    rows = max(1, min(config.batch_size, n_max))
    budget = config.memory_budget_mb * 2**20
    # x1.5: transient buffers of the backward pass on top of the saved activations
    return int(max(1, min(n_models, budget // (1.5 * per_image * rows))))
