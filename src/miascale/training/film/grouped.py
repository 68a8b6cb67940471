"""Grouped normalisation: one frozen norm layer applying K models' own affine parameters.

A grouped batch (Kc*B, ...) holds B rows of each of Kc models; model k's scale and shift, rows
(Kc, ...) of the FiLM parameters, apply to its rows. See ``docs/design/film.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from miascale.errors import MiascaleError

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: the normalisation layers FiLM can modulate
SUPPORTED_NORMS = (*BATCH_NORMS, nn.LayerNorm, nn.GroupNorm)

#: prefix -> (layer, name of its trained weight or None, name of its trained bias or None)
Norms = dict[str, tuple[nn.Module, str | None, str | None]]
Forward = Callable[[torch.Tensor], torch.Tensor]


def _per_model(t: torch.Tensor, kc: int, shape: Sequence[int]) -> torch.Tensor:
    """(Kc, ...) parameters viewed to broadcast over a (Kc, B, *shape) batch."""
    return t.reshape(kc, 1, *shape)


def _affine(
    y: torch.Tensor, kc: int, weight: torch.Tensor | None, bias: torch.Tensor | None, shape
) -> torch.Tensor:
    """``y * weight_k + bias_k`` on the rows of each model k of a normalised grouped batch."""
    yg = y.view(kc, y.shape[0] // kc, *y.shape[1:])
    if weight is not None:
        yg = yg * _per_model(weight, kc, shape)
    if bias is not None:
        yg = yg + _per_model(bias, kc, shape)
    return yg.reshape(y.shape)


def _batch_norm(mod: nn.Module, kc: int, weight, bias) -> Forward:
    """Eval-mode BatchNorm (frozen running statistics) folded into one per-model scale/shift."""
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
        y = torch.addcmul(_per_model(shift, kc, shape), xg, _per_model(scale, kc, shape))
        return y.reshape(x.shape)

    return forward


def _layer_norm(mod: nn.LayerNorm, kc: int, weight, bias) -> Forward:
    ns = tuple(mod.normalized_shape)

    def forward(x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x, ns, None, None, mod.eps)
        return _affine(y, kc, weight, bias, (*([1] * (x.ndim - 1 - len(ns))), *ns))

    return forward


def _group_norm(mod: nn.GroupNorm, kc: int, weight, bias) -> Forward:
    def forward(x: torch.Tensor) -> torch.Tensor:
        y = F.group_norm(x, mod.num_groups, None, None, mod.eps)
        return _affine(y, kc, weight, bias, (x.shape[1], *([1] * (x.ndim - 2))))

    return forward


def grouped_forward(
    mod: nn.Module, weight: torch.Tensor | None, bias: torch.Tensor | None
) -> Forward:
    """A forward for ``mod`` applying per-model affine parameters (Kc, ...) to a (Kc*B, ...) batch."""
    kc = (weight if weight is not None else bias).shape[0]  # type: ignore[union-attr]
    if isinstance(mod, BATCH_NORMS):
        return _batch_norm(mod, kc, weight, bias)
    if isinstance(mod, nn.LayerNorm):
        return _layer_norm(mod, kc, weight, bias)
    if isinstance(mod, nn.GroupNorm):
        return _group_norm(mod, kc, weight, bias)
    raise MiascaleError(f"FiLM does not support normalisation layer {type(mod).__name__}.")


def _affine_norms(module: nn.Module, kinds: tuple[type, ...]) -> Norms:
    """Every layer of ``kinds`` in ``module`` that has a weight or a bias, by prefix."""
    norms: Norms = {}
    for prefix, mod in module.named_modules():
        if not isinstance(mod, kinds):
            continue
        if isinstance(mod, BATCH_NORMS) and (mod.running_mean is None or mod.running_var is None):
            raise MiascaleError(
                f"BatchNorm layer {prefix!r} keeps no running statistics; FiLM freezes them, "
                "so the backbone must have them (track_running_stats=True)."
            )
        w = f"{prefix}.weight" if getattr(mod, "weight", None) is not None else None
        b = f"{prefix}.bias" if getattr(mod, "bias", None) is not None else None
        if w is not None or b is not None:
            norms[prefix] = (mod, w, b)
    return norms


def _param_names(norms: Norms) -> list[str]:
    return [n for _, w, b in norms.values() for n in (w, b) if n is not None]


def _keep_only(norms: Norms, film_names: Sequence[str]) -> Norms:
    """``norms`` restricted to the parameters named in ``film_names`` (all must exist)."""
    wanted = set(film_names)
    unknown = sorted(wanted - set(_param_names(norms)))
    if unknown:
        raise MiascaleError(
            f"film_names must be affine parameters of normalisation layers; not such: "
            f"{unknown[:5]}."
        )
    return {
        p: (m, w if w in wanted else None, b if b in wanted else None)
        for p, (m, w, b) in norms.items()
        if w in wanted or b in wanted
    }


def collect_norms(
    module: nn.Module,
    film_names: Sequence[str] | None = None,
    norm_types: tuple[type, ...] | None = None,
) -> tuple[tuple[str, ...], Norms]:
    """The FiLM parameter names of ``module`` (in module order) and their layers.

    ``norm_types``: which layer classes to modulate (default :data:`SUPPORTED_NORMS`);
    ``film_names``: optionally, a subset of their affine parameters.
    """
    kinds = SUPPORTED_NORMS if norm_types is None else tuple(norm_types)
    bad = [t.__name__ for t in kinds if not issubclass(t, SUPPORTED_NORMS)]
    if bad:
        raise MiascaleError(f"FiLM does not support normalisation layer {bad[0]}.")
    norms = _affine_norms(module, kinds)
    if film_names is not None:
        norms = _keep_only(norms, film_names)
    names = tuple(_param_names(norms))
    if not names:
        raise MiascaleError(
            "The backbone has no normalisation layers with affine parameters; FiLM has "
            "nothing to fine-tune."
        )
    return names, norms
