"""The frozen backbone FiLM trains on (:class:`FilmBackbone`), how to build it, its inputs.

The backbone itself says how FiLM runs it (:class:`~miascale.backbones.base.FilmAdapter`); see
``docs/design/film.md`` and ``docs/design/backbones.md``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from miascale.backbones.base import FilmAdapter
from miascale.errors import MiascaleError
from miascale.training.film.grouped import Norms, collect_norms, grouped_forward
from miascale.training.film.inputs import torch_device

FeatureFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]


class _Features(nn.Module):
    """``forward(x) = features(inner, x)``: (B, 3, H, W) -> (B, D)."""

    def __init__(self, inner: nn.Module, features: FeatureFn):
        super().__init__()
        self.inner = inner
        self._features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(self.inner, x)


@dataclass(eq=False)
class FilmBackbone:
    """A frozen backbone ready for FiLM (build it with :func:`film_backbone`).

    Attributes:
        name: backbone name (``efficientnet-lite0``, ``hf:<id>``, or ``custom``).
        module: the frozen network; ``module(x)`` maps (B, 3, R, R) to features (B, D) with
            the PRETRAINED normalisation parameters.
        film_names: names (in ``module``) of the trained normalisation affine parameters.
        dim: feature dimension D.
        resolution: input size R (square) used by :meth:`preprocess`.
        mean, std: per-channel input normalisation.
        device: where the module lives.
        channels_last: feed 4-D inputs in channels-last layout (faster for CNNs on CPU).
    """

    name: str
    module: nn.Module
    film_names: tuple[str, ...]
    dim: int
    resolution: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: torch.device
    channels_last: bool = False
    _norms: Norms = field(default_factory=dict, repr=False)

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.module.parameters())).dtype

    def pretrained(self) -> dict[str, torch.Tensor]:
        """The pretrained FiLM parameters, name -> tensor (detached, on ``device``)."""
        params = dict(self.module.named_parameters())
        return {n: params[n].detach() for n in self.film_names}

    def preprocess(self, images: Sequence[np.ndarray] | np.ndarray) -> torch.Tensor:
        """uint8 images (any size, gray or RGB) -> float32 CPU tensor (B, 3, R, R)."""
        from miascale.backbones.base import images_to_tensor

        return images_to_tensor(images, self.resolution, self.mean, self.std)

    @contextlib.contextmanager
    def grouped(self, params: dict[str, torch.Tensor]) -> Iterator[None]:
        """Inside: normalisation layers apply ``params[name]`` (Kc, ...) to a (Kc*B, ...) batch."""
        try:
            for mod, wname, bname in self._norms.values():
                w = params[wname] if wname is not None else None
                b = params[bname] if bname is not None else None
                mod.forward = grouped_forward(mod, w, b)  # type: ignore[method-assign]
            yield
        finally:
            for mod, _, _ in self._norms.values():
                mod.__dict__.pop("forward", None)

    def features(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Features (Kc, B, D) of a grouped batch x (Kc*B, 3, R, R) under per-model params."""
        kc = next(iter(params.values())).shape[0]
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.grouped(params):
            f = self.module(x)
        return f.view(kc, x.shape[0] // kc, -1)


def _call_module(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module(x)


def _image_spec(backbone: object, resolution: int | None):
    """The spec of a backbone name or spec at ``resolution``; it must be an image backbone."""
    from miascale.backbones import BackboneSpec, resolve

    spec = backbone if isinstance(backbone, BackboneSpec) else None
    if spec is None:
        if not isinstance(backbone, str):
            raise MiascaleError(
                f"backbone must be a name, a BackboneSpec or an nn.Module, got "
                f"{type(backbone).__name__}."
            )
        spec = resolve(backbone, resolution)
    elif resolution is not None:
        spec = resolve(spec.name, resolution)
    if spec.modality != "image" or spec.resolution is None:
        raise MiascaleError(
            f"FiLM fine-tunes image backbones (efficientnet-lite0, hf: vision models); "
            f"{spec.name!r} is a {spec.modality} backbone."
        )
    return spec


def _probe_dim(module: nn.Module, resolution: int, device: torch.device) -> int:
    """The feature dimension of ``module``, from one zero image."""
    dtype = next(module.parameters()).dtype
    with torch.no_grad():
        probe = torch.zeros(1, 3, resolution, resolution, dtype=dtype, device=device)
        return int(module(probe).shape[-1])


def _frozen(adapter: FilmAdapter, device: torch.device) -> nn.Module:
    wrapper = _Features(adapter.module, adapter.features).eval().to(device)
    for p in wrapper.parameters():
        p.requires_grad_(False)
    return wrapper


def film_backbone(
    backbone: str | object | nn.Module,
    resolution: int | None = None,
    device: str | torch.device = "cpu",
    *,
    features: FeatureFn | None = None,
    film_names: Sequence[str] | None = None,
    dim: int | None = None,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    channels_last: bool | None = None,
) -> FilmBackbone:
    """Load (or wrap) a backbone for FiLM: frozen, eval mode, on ``device``.

    Args:
        backbone: ``"efficientnet-lite0"``, ``"hf:<vision model>"``, a
            :class:`~miascale.backbones.BackboneSpec` of those, or a ready ``nn.Module`` (which
            is put in eval mode, frozen and moved to ``device`` IN PLACE).
        resolution: input size in pixels; default: the backbone's default (64 px for
            EfficientNet-Lite0, the model's ``image_size`` for hf). Required for a module.
        device: torch device (``"cuda"`` works unchanged where available).
        features: for a module only: ``features(module, x) -> (B, D)``; default ``module(x)``.
        film_names: for a module only: which normalisation parameters to train; default all
            BatchNorm/LayerNorm/GroupNorm weights and biases.
        dim: for a module only: the feature dimension (default: probed with one input).
        mean, std: for a module only: input normalisation used by :meth:`FilmBackbone.preprocess`.
        channels_last: feed 4-D inputs channels-last (default: the backbone's adapter says; True
            for EfficientNet only).
    """
    from miascale.backbones import check_resolution, film_adapter

    dev = torch_device(device)
    if isinstance(backbone, nn.Module):
        if resolution is None:
            raise MiascaleError("film_backbone needs a resolution for a ready nn.Module.")
        name, res = "custom", check_resolution(resolution)
        feat = features if features is not None else _call_module
        adapter = FilmAdapter(backbone, feat, tuple(mean), tuple(std))
    else:
        spec = _image_spec(backbone, resolution)
        name, res, film_names, dim = spec.name, spec.resolution, None, None
        adapter = film_adapter(spec)
    module = _frozen(adapter, dev)
    names, norms = collect_norms(module, film_names, adapter.norm_types)
    return FilmBackbone(
        name=name,
        module=module,
        film_names=names,
        dim=int(dim if dim is not None else _probe_dim(module, res, dev)),
        resolution=res,
        mean=tuple(float(v) for v in adapter.mean),  # type: ignore[arg-type]
        std=tuple(float(v) for v in adapter.std),  # type: ignore[arg-type]
        device=dev,
        channels_last=adapter.channels_last if channels_last is None else bool(channels_last),
        _norms=norms,
    )


def images_for(dataset: object, indices: np.ndarray, backbone: FilmBackbone) -> torch.Tensor:
    """Preprocessed training images ``dataset.x_train[indices]``: float32 CPU (N, 3, R, R).

    ``dataset`` is a :class:`miascale.data.Dataset` of modality ``image``; ``indices`` e.g.
    ``pool.indices``. Converted in chunks of 512 to bound the temporary float copies.
    """
    from miascale.data.base import take

    if getattr(dataset, "modality", None) != "image":
        raise MiascaleError(
            f"FiLM needs an image dataset; {getattr(dataset, 'name', dataset)!r} is "
            f"{getattr(dataset, 'modality', 'not a Dataset')}."
        )
    idx = np.asarray(indices, dtype=np.int64)
    x = dataset.x_train  # type: ignore[attr-defined]
    parts = [backbone.preprocess(take(x, idx[s : s + 512])) for s in range(0, len(idx), 512)]
    if not parts:
        r = backbone.resolution
        return torch.empty(0, 3, r, r)
    return torch.cat(parts).contiguous()
