"""FiLM fine-tuning of K models at once on raw images, sharing one frozen backbone.

What is trained
---------------
FiLM ("feature-wise linear modulation", as in few-shot transfer learning) fine-tunes only the
affine parameters of the backbone's normalisation layers plus a new linear head:

* ``efficientnet-lite0``: the ``weight``/``bias`` of every BatchNorm (98 layers, 42,016 numbers).
  The running statistics stay frozen (BatchNorm always normalises with its running mean and
  variance, as in eval mode), dropout and drop-connect are off.
* ``hf:<vision model>`` (ViT): the ``weight``/``bias`` of every LayerNorm; the feature is the
  final [CLS] token.
* The head: ``logits = f(x) @ W + b`` with ``W`` (D, C) and ``b`` (C,) initialised to zero (so
  the first step moves only the head; the normalisation parameters follow from the second).

Everything else (convolution, attention and linear weights, running statistics) is frozen and
stored ONCE, whatever K.

How K models share one backbone (grouped batches)
-------------------------------------------------
Each step stacks the minibatches of ``Kc`` models (a chunk) into one batch of ``Kc * B`` images
that goes through the shared frozen layers once; every normalisation layer is temporarily
switched to a grouped form that views its input as (Kc, B, ...) and applies model k's own scale
and shift to rows of model k. Per-model losses are independent, so one backward pass of their
sum gives every model its own gradient. The per-model parameters are (Kc, ...) tensors.

``torch.func.functional_call`` + ``vmap`` computes the same thing, but on CPU it was 3-10x slower
per step for EfficientNet-Lite0 (the BatchNorm and depthwise-convolution batching rules; see
``benchmarks/bench_film.py --compare-vmap``), so grouped batches are used.

Optimisation (per model, as if trained alone)
---------------------------------------------
Model k trains on ``T_k = {i : in_mask[k, i]}``. Every epoch it visits ``T_k`` in its own random
order (``numpy.random.default_rng([seed, k])``, k the model's row in ``in_mask``; see
:func:`model_batches`) in minibatches of ``batch_size`` (the last one smaller). The loss of a
step is the mean cross-entropy over the model's minibatch; ``weight_decay`` adds coupled L2 on
the head weights (``torch.optim`` semantics). Adam and SGD (with momentum) are implemented
per model with their own step counts and follow ``torch.optim.Adam``/``torch.optim.SGD``
exactly. Models with fewer examples (Bernoulli plans) have fewer steps per epoch: their rows
are padded with weight 0 and their parameters and optimiser state are left untouched on
steps where they have no batch. The result therefore does not depend on K, on the other
models, or on ``models_per_chunk`` (up to floating-point rounding of the shared convolutions).

Memory
------
Parameters and optimiser state are tiny (EfficientNet-Lite0, C = 10: 54,826 numbers per model).
Activations saved for backward dominate: about ``Kc * B`` images' worth. ``models_per_chunk``
bounds ``Kc``; by default it is chosen from ``memory_budget_mb`` and the saved-activation bytes
of one image, measured on the backbone at the training resolution.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from miascale.errors import MiascaleError
from miascale.training.heads import check_in_mask

__all__ = [
    "FilmBackbone",
    "FilmConfig",
    "FilmModels",
    "activation_bytes_per_image",
    "film_backbone",
    "film_logits",
    "images_for",
    "model_batches",
    "train_film",
]

_OPTIMIZERS = ("adam", "sgd")
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FilmConfig:
    """Settings of FiLM training.

    Attributes:
        epochs: passes over each model's own training subset. Default 10.
        batch_size: minibatch size per model. Default 32 (5 steps per epoch at S = 16, C = 10).
        learning_rate: step size, shared by FiLM parameters and the head. Default 3e-3 (Adam).
        optimizer: ``"adam"`` (default; ``torch.optim.Adam`` with betas (0.9, 0.999), eps 1e-8)
            or ``"sgd"`` (``torch.optim.SGD`` with ``momentum``).
        momentum: SGD momentum (ignored by Adam). Default 0.9.
        weight_decay: coupled L2 strength on the head weights (not the head bias nor the FiLM
            parameters), added to their gradient as ``torch.optim`` does. Default 0.
        seed: seeds every model's minibatch order (model k uses ``default_rng([seed, k])``).
        models_per_chunk: how many models train together in one grouped batch. ``None``
            (default) chooses the largest number whose saved activations fit
            ``memory_budget_mb``.
        memory_budget_mb: activation memory budget of one training step, used only to choose
            ``models_per_chunk``. Default 2048 MiB.
    """

    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 3e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    seed: int = 0
    models_per_chunk: int | None = None
    memory_budget_mb: float = 2048.0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise MiascaleError(f"FilmConfig.{name} must be an integer >= 1, got {value!r}.")
        if self.models_per_chunk is not None and (
            not isinstance(self.models_per_chunk, int)
            or isinstance(self.models_per_chunk, bool)
            or self.models_per_chunk < 1
        ):
            raise MiascaleError(
                "FilmConfig.models_per_chunk must be None (automatic) or an integer >= 1, "
                f"got {self.models_per_chunk!r}."
            )
        if self.optimizer not in _OPTIMIZERS:
            raise MiascaleError(
                f"FilmConfig.optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}."
            )
        for name, low, strict in (
            ("learning_rate", 0.0, True),
            ("memory_budget_mb", 0.0, True),
            ("weight_decay", 0.0, False),
            ("momentum", 0.0, False),
        ):
            value = getattr(self, name)
            ok = (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
                and (value > low if strict else value >= low)
            )
            if not ok:
                op = ">" if strict else ">="
                raise MiascaleError(f"FilmConfig.{name} must be a number {op} 0, got {value!r}.")
        if self.momentum >= 1:
            raise MiascaleError(f"FilmConfig.momentum must be < 1, got {self.momentum!r}.")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise MiascaleError(f"FilmConfig.seed must be an integer, got {self.seed!r}.")


# --------------------------------------------------------------------------------------------
# The backbone with grouped normalisation layers
# --------------------------------------------------------------------------------------------


class _Features(nn.Module):
    """``forward(x) = features(inner, x)``: (B, 3, H, W) -> (B, D)."""

    def __init__(
        self, inner: nn.Module, features: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    ):
        super().__init__()
        self.inner = inner
        self._features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(self.inner, x)


def _grouped_forward(mod: nn.Module, weight: torch.Tensor | None, bias: torch.Tensor | None):
    """A forward for ``mod`` applying per-model affine parameters (Kc, ...) to a (Kc*B, ...) batch."""
    kc = (weight if weight is not None else bias).shape[0]  # type: ignore[union-attr]

    def per_model(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        return x.reshape(kc, 1, *shape)

    if isinstance(mod, _BATCH_NORMS):
        inv = torch.rsqrt(mod.running_var + mod.eps)  # type: ignore[operator]

        def forward(x: torch.Tensor) -> torch.Tensor:
            c = x.shape[1]
            shape = (c, *([1] * (x.ndim - 2)))
            scale = inv if weight is None else weight * inv  # (Kc, C) or (C,)
            scale = scale.expand(kc, c)
            shift = -mod.running_mean * scale  # type: ignore[operator]
            if bias is not None:
                shift = shift + bias
            xg = x.view(kc, x.shape[0] // kc, *x.shape[1:])
            y = torch.addcmul(per_model(shift, shape), xg, per_model(scale, shape))
            return y.reshape(x.shape)

    elif isinstance(mod, nn.LayerNorm):
        ns = tuple(mod.normalized_shape)

        def forward(x: torch.Tensor) -> torch.Tensor:
            y = F.layer_norm(x, ns, None, None, mod.eps)
            yg = y.view(kc, x.shape[0] // kc, *x.shape[1:])
            shape = (*([1] * (x.ndim - 1 - len(ns))), *ns)
            if weight is not None:
                yg = yg * per_model(weight, shape)
            if bias is not None:
                yg = yg + per_model(bias, shape)
            return yg.reshape(x.shape)

    elif isinstance(mod, nn.GroupNorm):

        def forward(x: torch.Tensor) -> torch.Tensor:
            y = F.group_norm(x, mod.num_groups, None, None, mod.eps)
            yg = y.view(kc, x.shape[0] // kc, *x.shape[1:])
            shape = (x.shape[1], *([1] * (x.ndim - 2)))
            if weight is not None:
                yg = yg * per_model(weight, shape)
            if bias is not None:
                yg = yg + per_model(bias, shape)
            return yg.reshape(x.shape)

    else:  # pragma: no cover - film_backbone only collects the kinds above
        raise MiascaleError(f"FiLM does not support normalisation layer {type(mod).__name__}.")
    return forward


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
    _norms: dict[str, tuple[nn.Module, str | None, str | None]] = field(
        default_factory=dict, repr=False
    )

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
                mod.forward = _grouped_forward(mod, w, b)  # type: ignore[method-assign]
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


def _collect_norms(
    module: nn.Module, film_names: Sequence[str] | None
) -> tuple[tuple[str, ...], dict[str, tuple[nn.Module, str | None, str | None]]]:
    norms: dict[str, tuple[nn.Module, str | None, str | None]] = {}
    names: list[str] = []
    for prefix, mod in module.named_modules():
        if not isinstance(mod, (*_BATCH_NORMS, nn.LayerNorm, nn.GroupNorm)):
            continue
        if isinstance(mod, _BATCH_NORMS) and (mod.running_mean is None or mod.running_var is None):
            raise MiascaleError(
                f"BatchNorm layer {prefix!r} keeps no running statistics; FiLM freezes them, "
                "so the backbone must have them (track_running_stats=True)."
            )
        w = f"{prefix}.weight" if getattr(mod, "weight", None) is not None else None
        b = f"{prefix}.bias" if getattr(mod, "bias", None) is not None else None
        if w is None and b is None:
            continue
        norms[prefix] = (mod, w, b)
        names += [n for n in (w, b) if n is not None]
    if film_names is not None:
        wanted = tuple(film_names)
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise MiascaleError(
                f"film_names must be affine parameters of normalisation layers; not such: "
                f"{unknown[:5]}."
            )
        keep = set(wanted)
        norms = {
            p: (m, w if w in keep else None, b if b in keep else None)
            for p, (m, w, b) in norms.items()
            if w in keep or b in keep
        }
        names = [n for n in names if n in keep]
    if not names:
        raise MiascaleError(
            "The backbone has no normalisation layers with affine parameters; FiLM has "
            "nothing to fine-tune."
        )
    return tuple(names), norms


def _effnet_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.extract_features(x).mean(dim=(2, 3))  # type: ignore[operator]


def _vit_features(interpolate: bool) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        kwargs = {"interpolate_pos_encoding": True} if interpolate else {}
        return model(pixel_values=x, **kwargs).last_hidden_state[:, 0]

    return features


def film_backbone(
    backbone: str | object | nn.Module,
    resolution: int | None = None,
    device: str | torch.device = "cpu",
    *,
    features: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
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
        channels_last: feed 4-D inputs channels-last (default: True for EfficientNet only).
    """
    from miascale.backbones import BackboneSpec, check_resolution, resolve

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise MiascaleError(f"unknown torch device {device!r}: {exc}") from exc
    if isinstance(backbone, nn.Module):
        if resolution is None:
            raise MiascaleError("film_backbone needs a resolution for a ready nn.Module.")
        res = check_resolution(resolution)
        module = backbone
        feat = features if features is not None else (lambda m, x: m(x))
        name, mean_t, std_t, cl = "custom", tuple(mean), tuple(std), bool(channels_last)
    else:
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
        res = spec.resolution
        if spec.name == "efficientnet-lite0":
            from miascale.backbones.efficientnet import (
                IMAGENET_MEAN,
                IMAGENET_STD,
                EfficientNetLite0,
            )

            module = EfficientNetLite0(res, "cpu").model
            feat, mean_t, std_t = _effnet_features, IMAGENET_MEAN, IMAGENET_STD
            cl = True if channels_last is None else bool(channels_last)
        elif spec.name.startswith("hf:"):
            from miascale.backbones.hf import HFVision
            from miascale.backbones.text import quiet_transformers

            quiet_transformers()
            ex = HFVision(spec.name[3:], spec, "cpu")
            module = ex.model
            feat, mean_t, std_t = _vit_features(ex.interpolate), ex.mean, ex.std
            cl = bool(channels_last)
        else:  # pragma: no cover - resolve() admits no other image backbone
            raise MiascaleError(f"FiLM does not support backbone {spec.name!r}.")
        name, film_names, dim = spec.name, None, None
    wrapper = _Features(module, feat).eval().to(dev)
    for p in wrapper.parameters():
        p.requires_grad_(False)
    names, norms = _collect_norms(wrapper, film_names)
    if dim is None:
        with torch.no_grad():
            probe = torch.zeros(1, 3, res, res, dtype=next(wrapper.parameters()).dtype, device=dev)
            dim = int(wrapper(probe).shape[-1])
    return FilmBackbone(
        name=name,
        module=wrapper,
        film_names=names,
        dim=int(dim),
        resolution=res,
        mean=tuple(float(v) for v in mean_t),  # type: ignore[arg-type]
        std=tuple(float(v) for v in std_t),  # type: ignore[arg-type]
        device=dev,
        channels_last=cl,
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


# --------------------------------------------------------------------------------------------
# Minibatch plan
# --------------------------------------------------------------------------------------------


def model_batches(in_mask: np.ndarray, k: int, config: FilmConfig) -> list[list[np.ndarray]]:
    """Model k's minibatches: for every epoch, a list of arrays of pool indices.

    Every epoch is a fresh permutation of ``flatnonzero(in_mask[k])`` drawn from
    ``numpy.random.default_rng([config.seed, k])`` (one generator per model, advanced epoch
    by epoch), cut into ``batch_size`` pieces (the last one smaller). :func:`train_film` uses
    exactly these batches.
    """
    members = np.flatnonzero(np.asarray(in_mask)[k])
    rng = np.random.default_rng([config.seed, k])
    bsz = config.batch_size
    out = []
    for _ in range(config.epochs):
        perm = members[rng.permutation(len(members))]
        out.append([perm[s : s + bsz] for s in range(0, len(perm), bsz)])
    return out


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FilmModels:
    """K FiLM-tuned models on one shared backbone.

    Attributes:
        film_params: name -> (K, ...) numpy array of model k's normalisation affine parameters.
        head_weights: (K, D, C) head weights (``logits = features @ W_k + b_k``).
        head_bias: (K, C).
        config: the :class:`FilmConfig` used.
        train_seconds: wall time of :func:`train_film`.
        models_per_chunk: the chunk size used.
        final_loss: (K,) float64 mean training loss over model k's last epoch (NaN when empty).
        backbone: the backbone name; resolution: the input size trained at.
    """

    film_params: dict[str, np.ndarray]
    head_weights: np.ndarray
    head_bias: np.ndarray
    config: FilmConfig
    train_seconds: float
    models_per_chunk: int
    final_loss: np.ndarray
    backbone: str = ""
    resolution: int = 0

    @property
    def n_models(self) -> int:
        return int(self.head_weights.shape[0])

    @property
    def n_classes(self) -> int:
        return int(self.head_weights.shape[2])

    def parameter_bytes(self) -> int:
        """Bytes of all K models' own parameters (FiLM + heads), excluding the shared backbone."""
        arrays = [*self.film_params.values(), self.head_weights, self.head_bias]
        return int(sum(a.nbytes for a in arrays))


def _check_inputs(
    backbone: object, images: object, labels: object, in_mask: object, n_classes: object
) -> tuple[torch.Tensor, np.ndarray, np.ndarray, int]:
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


def _device(backbone: FilmBackbone, device: str | torch.device | None) -> torch.device:
    if device is None:
        return backbone.device
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise MiascaleError(f"unknown torch device {device!r}: {exc}") from exc
    same = dev.type == backbone.device.type and (
        dev.index is None or backbone.device.index is None or dev.index == backbone.device.index
    )
    if not same:
        raise MiascaleError(
            f"The backbone lives on {backbone.device} but device={dev}; build it with "
            f"film_backbone(..., device={str(dev)!r})."
        )
    return backbone.device


def _saved_bytes(backbone: FilmBackbone, n_images: int) -> int:
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


def _auto_chunk(backbone: FilmBackbone, config: FilmConfig, n_models: int, n_max: int) -> int:
    if config.models_per_chunk is not None:
        return min(config.models_per_chunk, n_models)
    per_image = activation_bytes_per_image(backbone)
    rows = max(1, min(config.batch_size, n_max))
    budget = config.memory_budget_mb * 2**20
    # x1.5: transient buffers of the backward pass on top of the saved activations
    return int(max(1, min(n_models, budget // (1.5 * per_image * rows))))


class _Optimizer:
    """Adam / SGD over stacked per-model parameters, each model with its own step count."""

    def __init__(self, params: list[torch.Tensor], decay: list[bool], config: FilmConfig):
        self.params, self.decay, self.config = params, decay, config
        kc = params[0].shape[0]
        self.steps = torch.zeros(kc, dtype=torch.float64, device=params[0].device)
        self.m1 = [torch.zeros_like(p) for p in params]
        self.m2 = [torch.zeros_like(p) for p in params] if config.optimizer == "adam" else []

    @torch.no_grad()
    def step(self, live: torch.Tensor) -> None:
        cfg = self.config
        self.steps += live.to(torch.float64)
        lr = cfg.learning_rate
        for j, p in enumerate(self.params):
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            if self.decay[j] and cfg.weight_decay:
                g = g.add(p, alpha=cfg.weight_decay)
            shape = (-1, *([1] * (p.ndim - 1)))
            on = live.view(shape)
            if cfg.optimizer == "adam":
                b1, b2, eps = 0.9, 0.999, 1e-8
                m1 = torch.where(on, self.m1[j] * b1 + g * (1 - b1), self.m1[j])
                m2 = torch.where(on, self.m2[j] * b2 + g * g * (1 - b2), self.m2[j])
                self.m1[j], self.m2[j] = m1, m2
                t = self.steps.clamp(min=1.0)
                bc1 = (1 - b1**t).to(p.dtype).view(shape)
                bc2 = (1 - b2**t).sqrt().to(p.dtype).view(shape)
                update = (lr / bc1) * m1 / (m2.sqrt() / bc2 + eps)
            else:
                first = (self.steps == 1).view(shape)
                buf = torch.where(first, g, self.m1[j] * cfg.momentum + g)
                buf = torch.where(on, buf, self.m1[j])
                self.m1[j] = buf
                update = lr * (buf if cfg.momentum else g)
            p.sub_(torch.where(on, update, torch.zeros_like(update)))
            p.grad = None


def _train_chunk(
    backbone: FilmBackbone,
    x: torch.Tensor,
    y: torch.Tensor,
    batches: list[list[list[np.ndarray]]],
    n_classes: int,
    config: FilmConfig,
    on_epoch: Callable[[int, np.ndarray], object] | None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, np.ndarray]:
    dev, dtype = backbone.device, backbone.dtype
    kc = len(batches)
    film = {
        n: p[None].repeat(kc, *([1] * p.ndim)).requires_grad_(True)
        for n, p in backbone.pretrained().items()
    }
    w = torch.zeros(kc, backbone.dim, n_classes, dtype=dtype, device=dev, requires_grad=True)
    b = torch.zeros(kc, n_classes, dtype=dtype, device=dev, requires_grad=True)
    params = [*film.values(), w, b]
    opt = _Optimizer(params, [False] * len(film) + [True, False], config)
    last_loss = np.full(kc, np.nan)
    for epoch in range(config.epochs):
        ep = [batches[k][epoch] for k in range(kc)]
        n_steps = max(len(e) for e in ep)
        rows = max((len(e[0]) for e in ep if e), default=0)
        loss_sum, n_seen = np.zeros(kc), np.zeros(kc)
        for s in range(n_steps):
            idx = np.zeros((kc, rows), dtype=np.int64)
            valid = np.zeros((kc, rows), dtype=bool)
            for k in range(kc):
                if s < len(ep[k]):
                    bk = ep[k][s]
                    idx[k, : len(bk)] = bk
                    valid[k, : len(bk)] = True
            idx_t = torch.as_tensor(idx.reshape(-1), device=dev)
            valid_t = torch.as_tensor(valid, device=dev)
            nb = valid_t.sum(dim=1)
            live = nb > 0
            wts = valid_t.to(dtype) / nb.clamp(min=1).to(dtype)[:, None]
            feats = backbone.features(film, x.index_select(0, idx_t))  # (Kc, rows, D)
            logits = torch.baddbmm(b[:, None, :], feats, w)
            ce = F.cross_entropy(logits.reshape(-1, n_classes), y[idx_t], reduction="none").view(
                kc, rows
            )
            loss = (ce * wts).sum(dim=1)
            loss.sum().backward()
            opt.step(live)
            with torch.no_grad():
                ce_sum = (ce.detach() * valid_t).sum(dim=1).double().cpu().numpy()
            loss_sum += ce_sum
            n_seen += valid.sum(axis=1)
        last_loss = np.where(n_seen > 0, loss_sum / np.maximum(n_seen, 1), np.nan)
        if on_epoch is not None:
            on_epoch(epoch + 1, last_loss)
    return (
        {n: p.detach() for n, p in film.items()},
        w.detach(),
        b.detach(),
        last_loss,
    )


def train_film(
    backbone: FilmBackbone,
    images: torch.Tensor,
    labels: np.ndarray,
    in_mask: np.ndarray,
    n_classes: int,
    config: FilmConfig = FilmConfig(),
    device: str | torch.device | None = None,
    progress: Callable[[int, int, int, float], object] | None = None,
) -> FilmModels:
    """Train K FiLM models at once; model k trains on ``images[in_mask[k]]``.

    Args:
        backbone: from :func:`film_backbone` (never modified).
        images: (N, 3, R, R) float tensor, preprocessed (:func:`images_for`); any device.
        labels: (N,) integers in ``[0, n_classes)``.
        in_mask: (K, N) bool; model k trains on the examples where ``in_mask[k]``. Rows may
            have different counts (Bernoulli plans) or be empty (such a model stays at the
            pretrained parameters and a zero head).
        n_classes: number of classes C >= 2.
        config: see :class:`FilmConfig`.
        device: ``None`` (default) or the backbone's device.
        progress: optional ``progress(models_done, n_models, epoch, mean_loss)`` after every
            epoch of every chunk (``models_done`` counts models of finished chunks).

    Returns:
        :class:`FilmModels` with the K parameter sets on the CPU as numpy arrays.
    """
    if not isinstance(config, FilmConfig):
        raise MiascaleError(f"config must be a FilmConfig, got {type(config).__name__}.")
    x, y_np, mask, n_classes = _check_inputs(backbone, images, labels, in_mask, n_classes)
    dev = _device(backbone, device)
    t0 = time.perf_counter()
    k_all = mask.shape[0]
    x = x.to(device=dev, dtype=backbone.dtype)
    y = torch.as_tensor(y_np, device=dev)
    n_max = int(mask.sum(axis=1).max())
    chunk = _auto_chunk(backbone, config, k_all, n_max)
    film_out: dict[str, list[np.ndarray]] = {n: [] for n in backbone.film_names}
    ws, bs, losses = [], [], []
    for start in range(0, k_all, chunk):
        ks = range(start, min(k_all, start + chunk))
        batches = [model_batches(mask, k, config) for k in ks]
        report = None
        if progress is not None:

            def report(epoch: int, loss: np.ndarray, _done: int = start) -> None:
                finite = loss[np.isfinite(loss)]
                progress(_done, k_all, epoch, float(finite.mean()) if finite.size else math.nan)

        film, w, b, loss = _train_chunk(backbone, x, y, batches, n_classes, config, report)
        for n, p in film.items():
            film_out[n].append(p.cpu().numpy())
        ws.append(w.cpu().numpy())
        bs.append(b.cpu().numpy())
        losses.append(loss)
    return FilmModels(
        film_params={n: np.concatenate(v) for n, v in film_out.items()},
        head_weights=np.concatenate(ws),
        head_bias=np.concatenate(bs),
        config=config,
        train_seconds=time.perf_counter() - t0,
        models_per_chunk=int(chunk),
        final_loss=np.concatenate(losses).astype(np.float64),
        backbone=backbone.name,
        resolution=backbone.resolution,
    )


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
    x, _, _, _ = _check_inputs(backbone, images, dummy_labels, dummy_mask, max(n_cls, 2))
    if set(models.film_params) != set(backbone.film_names):
        raise MiascaleError("models were trained on a backbone with other FiLM parameters.")
    if models.head_weights.shape[1] != backbone.dim:
        raise MiascaleError(
            f"models' heads expect {models.head_weights.shape[1]}-d features, the backbone "
            f"gives {backbone.dim}."
        )
    dev = _device(backbone, device)
    dtype = backbone.dtype
    k_all, n = models.n_models, x.shape[0]
    chunk = models_per_chunk or models.models_per_chunk or k_all
    out = np.empty((k_all, n, n_cls), dtype=np.float64)
    with torch.no_grad():
        for start in range(0, k_all, chunk):
            sl = slice(start, min(k_all, start + chunk))
            kc = sl.stop - sl.start
            film = {
                name: torch.as_tensor(v[sl], device=dev, dtype=dtype)
                for name, v in models.film_params.items()
            }
            w = torch.as_tensor(models.head_weights[sl], device=dev, dtype=dtype)
            b = torch.as_tensor(models.head_bias[sl], device=dev, dtype=dtype)
            for s in range(0, n, batch_size):
                xb = x[s : s + batch_size].to(device=dev, dtype=dtype)
                rep = xb.repeat(kc, *([1] * (xb.ndim - 1)))
                feats = backbone.features(film, rep)
                z = torch.baddbmm(b[:, None, :], feats, w)
                out[sl, s : s + xb.shape[0]] = z.double().cpu().numpy()
    return out
