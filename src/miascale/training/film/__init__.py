"""FiLM fine-tuning of K models at once on raw images, sharing one frozen backbone.

Only the backbone's normalisation affine parameters and a zero-initialised linear head train;
K models share one frozen copy of the network through grouped batches. What is trained, how the
models share the backbone, the per-model optimisation contract and the memory model:
``docs/design/film.md``; usage: ``docs/film.md``.

Modules: ``config`` (settings, results), ``backbone`` (the frozen network), ``grouped``
(per-model normalisation), ``train`` (the training loop), ``optim``, ``memory`` (chunk size),
``logits`` (evaluation), ``inputs`` (validation).
"""

from __future__ import annotations

from miascale.training.film.backbone import FilmBackbone, film_backbone, images_for
from miascale.training.film.config import FilmConfig, FilmModels
from miascale.training.film.logits import film_logits
from miascale.training.film.memory import activation_bytes_per_image
from miascale.training.film.train import model_batches, train_film

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
