"""The backbone contract: a spec, an extractor, a FiLM adapter and the registration tying them.

Contracts in full: ``docs/design/backbones.md``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from miascale.errors import MiascaleError

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class BackboneSpec:
    """Everything that determines the features, without loading any weights.

    ``name`` is what the user typed (``efficientnet-lite0``, ``minilm``, ``identity``, ``hf:ID``);
    ``modality`` the input kind it accepts; ``resolution`` the square input size for image
    backbones (None for text); ``preprocessing`` a short description that enters the cache key.
    """

    name: str
    modality: str
    resolution: int | None
    preprocessing: str
    version: int = 1

    def config(self) -> dict:
        return asdict(self)


class Extractor(ABC):
    """A loaded backbone: maps a batch of inputs to float32 features (B, D)."""

    spec: BackboneSpec
    dim: int
    batch_size: int = 64

    @abstractmethod
    def embed(self, batch: Sequence) -> np.ndarray: ...


@dataclass(frozen=True)
class FilmAdapter:
    """How FiLM fine-tunes one loaded backbone (see ``docs/design/backbones.md``).

    ``module`` is the network (on the CPU, any mode; FiLM freezes it); ``features(module, x)``
    maps (B, 3, R, R) to (B, D); ``norm_types`` are the normalisation layer classes whose affine
    parameters FiLM trains (None: every BatchNorm, LayerNorm and GroupNorm); ``mean``/``std``
    the input normalisation; ``channels_last`` the default input layout.
    """

    module: nn.Module
    features: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels_last: bool = False
    norm_types: tuple[type, ...] | None = None


@dataclass(frozen=True)
class Registration:
    """One backbone's entry in the registry (``miascale.backbones.REGISTRY``).

    ``name`` is the exact backbone name, or for a family a prefix ending in ``:`` (``hf:``) that
    the user completes with a model id. ``help`` describes it in error messages. ``spec(name,
    resolution)`` builds the spec (``resolution`` is None or already validated); ``load(spec,
    device)`` loads the extractor; ``film(spec)`` loads the network for FiLM. ``load``/``film``
    are None where the backbone has no extractor or cannot be fine-tuned; ``takes_resolution``
    is False for backbones that reject ``--resolution``.
    """

    name: str
    help: str
    spec: Callable[[str, int | None], BackboneSpec]
    load: Callable[[BackboneSpec, str], Extractor] | None = None
    film: Callable[[BackboneSpec], FilmAdapter] | None = None
    takes_resolution: bool = True

    @property
    def family(self) -> bool:
        return self.name.endswith(":")

    @property
    def label(self) -> str:
        """How the backbone is listed: its name, or ``prefix<model-id>`` for a family."""
        return f"{self.name}<model-id>" if self.family else self.name

    def matches(self, name: str) -> bool:
        return name.startswith(self.name) if self.family else name == self.name


def check_resolution(resolution: object) -> int:
    if (
        isinstance(resolution, bool)
        or not isinstance(resolution, int | np.integer)
        or resolution < 1
    ):
        raise MiascaleError(
            f"--resolution must be a positive integer (pixels), got {resolution!r}."
        )
    if resolution < 16:
        raise MiascaleError(
            f"--resolution {resolution} is too small for a convolutional backbone; use at least 16."
        )
    return int(resolution)


def images_to_tensor(batch: Sequence[np.ndarray] | np.ndarray, resolution: int, mean, std):
    """uint8 images (H, W) or (H, W, 3), any size → normalised float tensor (B, 3, R, R).

    Grayscale is replicated to 3 channels; resizing is bilinear with antialiasing.
    """
    import torch
    import torch.nn.functional as F

    def one(img: np.ndarray) -> torch.Tensor:
        a = np.asarray(img)
        if a.ndim == 2:
            a = a[..., None]
        if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
            raise MiascaleError(f"Expected an image (H, W) or (H, W, 3), got shape {a.shape}.")
        t = (
            torch.from_numpy(np.array(a[..., :3], order="C", copy=True)).permute(2, 0, 1).float()
            / 255.0
        )
        return t.expand(3, -1, -1) if t.shape[0] == 1 else t

    if isinstance(batch, np.ndarray) and batch.dtype == np.uint8:
        a = batch[..., None] if batch.ndim == 3 else batch[..., :3]
        a = np.array(a, order="C", copy=not a.flags.writeable)
        x = torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True)
    else:
        x = torch.stack(
            [
                F.interpolate(
                    one(im)[None], size=(resolution, resolution), mode="bilinear", antialias=True
                )[0]
                for im in batch
            ]
        )
    m = torch.tensor(mean, dtype=x.dtype)[None, :, None, None]
    s = torch.tensor(std, dtype=x.dtype)[None, :, None, None]
    return ((x - m) / s).contiguous(memory_format=torch.channels_last)
