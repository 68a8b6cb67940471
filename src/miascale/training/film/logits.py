"""Evaluation: every FiLM model's logits on every image (:func:`film_logits`)."""

from __future__ import annotations

import numpy as np
import torch

from miascale.errors import MiascaleError
from miascale.training.film.backbone import FilmBackbone
from miascale.training.film.config import FilmModels
from miascale.training.film.inputs import backbone_device, check_inputs


def _check_match(models: FilmModels, backbone: FilmBackbone) -> None:
    """``models`` must have been trained on a backbone like ``backbone``."""
    if set(models.film_params) != set(backbone.film_names):
        raise MiascaleError("models were trained on a backbone with other FiLM parameters.")
    if models.head_weights.shape[1] != backbone.dim:
        raise MiascaleError(
            f"models' heads expect {models.head_weights.shape[1]}-d features, the backbone "
            f"gives {backbone.dim}."
        )


def _chunk_params(models: FilmModels, sl: slice, dev: torch.device, dtype: torch.dtype):
    """FiLM parameters, head weights and biases of models ``sl`` as tensors."""
    film = {
        name: torch.as_tensor(v[sl], device=dev, dtype=dtype)
        for name, v in models.film_params.items()
    }
    w = torch.as_tensor(models.head_weights[sl], device=dev, dtype=dtype)
    b = torch.as_tensor(models.head_bias[sl], device=dev, dtype=dtype)
    return film, w, b


def film_logits(
    models: FilmModels,
    backbone: FilmBackbone,
    images: torch.Tensor,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    models_per_chunk: int | None = None,
) -> np.ndarray:
    """Logits of every model on every image: (K, N, C) float64.

    Computed chunk of models by batch of images: each step runs ``Kc * batch_size`` images
    through the shared backbone with per-model normalisation parameters (no gradients).
    ``models_per_chunk`` defaults to the chunk size used in training.
    """
    if not isinstance(models, FilmModels):
        raise MiascaleError(f"models must be FilmModels, got {type(models).__name__}.")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise MiascaleError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
    n_cls = models.n_classes
    dummy_labels = np.zeros(len(images), dtype=np.int64)
    dummy_mask = np.zeros((1, len(images)), dtype=bool)
    x, _, _, _ = check_inputs(backbone, images, dummy_labels, dummy_mask, max(n_cls, 2))
    _check_match(models, backbone)
    dev = backbone_device(backbone, device)
    dtype = backbone.dtype
    k_all, n = models.n_models, x.shape[0]
    chunk = models_per_chunk or models.models_per_chunk or k_all
    out = np.empty((k_all, n, n_cls), dtype=np.float64)
    with torch.no_grad():
        for start in range(0, k_all, chunk):
            sl = slice(start, min(k_all, start + chunk))
            film, w, b = _chunk_params(models, sl, dev, dtype)
            for s in range(0, n, batch_size):
                xb = x[s : s + batch_size].to(device=dev, dtype=dtype)
                rep = xb.repeat(sl.stop - sl.start, *([1] * (xb.ndim - 1)))
                z = torch.baddbmm(b[:, None, :], backbone.features(film, rep), w)
                out[sl, s : s + xb.shape[0]] = z.double().cpu().numpy()
    return out
