"""``identity``: the dataset already holds feature arrays (``npz:`` with float features)."""

from __future__ import annotations

from miascale.backbones.base import BackboneSpec, Registration

IDENTITY_SPEC = BackboneSpec("identity", "features", None, "none")

BACKBONE = Registration(
    name="identity",
    help="feature arrays given directly (npz with float features)",
    spec=lambda name, resolution: IDENTITY_SPEC,
    takes_resolution=False,
)
