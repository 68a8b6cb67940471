"""Validation of what :func:`train_film` and :func:`film_logits` are given."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from miascale.errors import MiascaleError
from miascale.training.heads import check_in_mask

if TYPE_CHECKING:
    from miascale.training.film.backbone import FilmBackbone


def torch_device(device: object) -> torch.device:
    try:
        return torch.device(device)  # type: ignore[arg-type]
    except (RuntimeError, TypeError) as exc:
        raise MiascaleError(f"unknown torch device {device!r}: {exc}") from exc


def backbone_device(backbone: FilmBackbone, device: str | torch.device | None) -> torch.device:
    """The backbone's device; ``device`` (if given) must name the same one."""
    if device is None:
        return backbone.device
    dev = torch_device(device)
    same = dev.type == backbone.device.type and (
        dev.index is None or backbone.device.index is None or dev.index == backbone.device.index
    )
    if not same:
        raise MiascaleError(
            f"The backbone lives on {backbone.device} but device={dev}; build it with "
            f"film_backbone(..., device={str(dev)!r})."
        )
    return backbone.device


def check_inputs(
    backbone: object, images: object, labels: object, in_mask: object, n_classes: object
) -> tuple[torch.Tensor, np.ndarray, np.ndarray, int]:
    """(images as a tensor, labels as int64, the checked in_mask, n_classes) or an error."""
    from miascale.training.film.backbone import FilmBackbone

    if not isinstance(backbone, FilmBackbone):
        raise MiascaleError(
            f"backbone must be a FilmBackbone (see film_backbone), got {type(backbone).__name__}."
        )
    if not isinstance(n_classes, int | np.integer) or isinstance(n_classes, bool) or n_classes < 2:
        raise MiascaleError(f"n_classes must be an integer >= 2, got {n_classes!r}.")
    x = torch.as_tensor(images) if not isinstance(images, torch.Tensor) else images
    r = backbone.resolution
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[0] == 0 or not x.is_floating_point():
        raise MiascaleError(
            f"images must be a non-empty float tensor (N, 3, {r}, {r}) from "
            f"FilmBackbone.preprocess / images_for, got {tuple(x.shape)} {x.dtype}."
        )
    n = x.shape[0]
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != n or not np.issubdtype(y.dtype, np.integer):
        raise MiascaleError(f"labels must be integers of shape ({n},), got {y.shape} {y.dtype}.")
    if y.min() < 0 or y.max() >= n_classes:
        raise MiascaleError(
            f"labels must lie in [0, {n_classes}), got range [{y.min()}, {y.max()}]."
        )
    mask = check_in_mask(in_mask, n)
    return x, y.astype(np.int64), mask, int(n_classes)
