"""Backbone registry: ``efficientnet-lite0``, ``minilm``, ``identity`` and ``hf:<model-id>``.

Each backbone module declares one :class:`~miascale.backbones.base.Registration` (spec, loader,
FiLM adapter); :data:`REGISTRY` lists them. Contracts: ``docs/design/backbones.md``.
"""

from __future__ import annotations

from miascale.backbones import efficientnet, hf, identity, text
from miascale.backbones.base import (
    BackboneSpec,
    Extractor,
    FilmAdapter,
    Registration,
    check_resolution,
)
from miascale.backbones.identity import IDENTITY_SPEC
from miascale.errors import MiascaleError

__all__ = [
    "IDENTITY_SPEC",
    "KNOWN",
    "REGISTRY",
    "BackboneSpec",
    "Extractor",
    "FilmAdapter",
    "Registration",
    "check_resolution",
    "film_adapter",
    "load_extractor",
    "registration",
    "resolve",
]

#: Every backbone, in the order error messages list them. Add a new backbone here.
REGISTRY: tuple[Registration, ...] = (
    efficientnet.BACKBONE,
    text.BACKBONE,
    identity.BACKBONE,
    hf.BACKBONE,
)

KNOWN = {r.label: r.help for r in REGISTRY}


def registration(name: str) -> Registration | None:
    """The registry entry a backbone name (or a spec's name) belongs to; None if none."""
    return next((r for r in REGISTRY if r.matches(name)), None)


def resolve(name: str, resolution: int | None = None) -> BackboneSpec:
    """The spec for a backbone name: validates the name and the resolution, loads no weights."""
    if resolution is not None:
        resolution = check_resolution(resolution)
    reg = registration(name)
    if reg is None or (reg.family and name == reg.name):
        raise MiascaleError(
            f"Unknown backbone {name!r}. Known backbones: "
            + "; ".join(f"{k} ({v})" for k, v in KNOWN.items())
            + "."
        )
    if resolution is not None and not reg.takes_resolution:
        raise MiascaleError(f"--resolution applies to image backbones; {name!r} takes none.")
    return reg.spec(name, resolution)


def load_extractor(spec: BackboneSpec, device: str = "cpu") -> Extractor:
    """Load the weights for a spec (the expensive step)."""
    reg = registration(spec.name)
    if reg is None or reg.load is None:
        raise MiascaleError(f"Backbone {spec.name!r} has no extractor to load.")
    return reg.load(spec, device)


def film_adapter(spec: BackboneSpec) -> FilmAdapter:
    """Load the network for FiLM fine-tuning of an image spec (see ``miascale.training.film``)."""
    reg = registration(spec.name)
    if reg is None or reg.film is None:
        raise MiascaleError(f"FiLM does not support backbone {spec.name!r}.")
    return reg.film(spec)
