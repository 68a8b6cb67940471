"""``hf:<model-id>``: Hugging Face models for users with internet (or a local model folder).

- Vision models (a config with ``image_size``, e.g. ``google/vit-base-patch16-224-in21k``): images
  are resized to ``resolution`` (default: the model's own ``image_size``), normalised with the
  model's image processor mean/std when it has one (else 0.5/0.5), and the feature is the final
  [CLS] token (``last_hidden_state[:, 0]``), as in the ViT fine-tuning literature.
- Sentence-transformers models (a repository with ``modules.json``): their own pipeline.
- Other text models: mean of the last hidden states over non-padding tokens.

Weights download from the Hugging Face hub on first use (into its own cache); a local folder works
offline. FiLM fine-tunes vision models only (the affine parameters of every normalisation layer).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from miascale.backbones.base import (
    BackboneSpec,
    Extractor,
    FilmAdapter,
    Registration,
    images_to_tensor,
)
from miascale.backbones.text import SentenceTransformerExtractor, quiet_transformers
from miascale.errors import MiascaleError


def _load_config(model_id: str):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_id)
    except (OSError, ValueError) as exc:
        raise MiascaleError(
            f"Cannot load Hugging Face model {model_id!r}: {str(exc).splitlines()[0]} "
            "Give a model id from the hub (needs internet on first use) or a local folder saved "
            "with save_pretrained()."
        ) from None


def _is_sentence_transformer(model_id: str) -> bool:
    p = Path(model_id).expanduser()
    if p.is_dir():
        return (p / "modules.json").is_file()
    try:
        from huggingface_hub import hf_hub_download

        hf_hub_download(model_id, "modules.json")
        return True
    except Exception:
        return False


def spec(model_id: str, resolution: int | None) -> BackboneSpec:
    cfg = _load_config(model_id)
    if getattr(cfg, "image_size", None) is not None and getattr(cfg, "num_channels", None):
        res = resolution or int(cfg.image_size)
        return BackboneSpec(f"hf:{model_id}", "image", res, "resize, processor mean/std, CLS token")
    kind = "sentence-transformers" if _is_sentence_transformer(model_id) else "mean-pool"
    return BackboneSpec(f"hf:{model_id}", "text", None, kind)


class HFVision(Extractor):
    batch_size = 32

    def __init__(self, model_id: str, spec: BackboneSpec, device: str = "cpu"):
        import torch
        from transformers import AutoModel

        self.spec = spec
        self.device = torch.device(device)
        self.model = AutoModel.from_pretrained(model_id).eval().to(self.device)
        self.dim = int(self.model.config.hidden_size)
        self.mean, self.std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        try:
            from transformers import AutoImageProcessor

            proc = AutoImageProcessor.from_pretrained(model_id)
            self.mean, self.std = tuple(proc.image_mean), tuple(proc.image_std)
        except (OSError, ValueError, AttributeError, TypeError):
            pass
        self.interpolate = spec.resolution != int(self.model.config.image_size)

    def features(self, model, x):
        """The final [CLS] token of ``model`` on pixels x: (B, 3, R, R) -> (B, D)."""
        kwargs = {"interpolate_pos_encoding": True} if self.interpolate else {}
        return model(pixel_values=x, **kwargs).last_hidden_state[:, 0]

    def embed(self, batch: Sequence) -> np.ndarray:
        import torch

        x = images_to_tensor(batch, self.spec.resolution, self.mean, self.std).contiguous()
        with torch.inference_mode():
            return self.features(self.model, x.to(self.device)).float().cpu().numpy()


class HFText(Extractor):
    batch_size = 64

    def __init__(self, model_id: str, spec: BackboneSpec, device: str = "cpu"):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.spec = spec
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_id)
        self.model = AutoModel.from_pretrained(model_id).eval().to(self.device)
        self.dim = int(self.model.config.hidden_size)

    def embed(self, batch: Sequence[str]) -> np.ndarray:
        import torch

        enc = self.tokenizer(list(batch), padding=True, truncation=True, return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().cpu().numpy()


def load(model_id: str, spec: BackboneSpec, device: str = "cpu") -> Extractor:
    quiet_transformers()
    if spec.modality == "image":
        return HFVision(model_id, spec, device)
    if spec.preprocessing == "sentence-transformers":
        from sentence_transformers import SentenceTransformer

        return SentenceTransformerExtractor(SentenceTransformer(model_id, device=device), spec)
    return HFText(model_id, spec, device)


def film_adapter(spec: BackboneSpec) -> FilmAdapter:
    """A vision model for FiLM: every normalisation layer's affine parameters, [CLS] features."""
    quiet_transformers()
    ex = HFVision(spec.name[3:], spec, "cpu")
    return FilmAdapter(module=ex.model, features=ex.features, mean=ex.mean, std=ex.std)


BACKBONE = Registration(
    name="hf:",
    help="Hugging Face vision or text model (downloads on first use) or a local folder",
    spec=lambda name, resolution: spec(name[3:], resolution),
    load=lambda s, device: load(s.name[3:], s, device),
    film=film_adapter,
)
