"""Settings (:class:`FilmConfig`) and result (:class:`FilmModels`) of FiLM training."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from miascale.errors import MiascaleError

OPTIMIZERS = ("adam", "sgd")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_positive_int(name: str, value: object) -> None:
    if not _is_int(value) or value < 1:  # type: ignore[operator]
        raise MiascaleError(f"FilmConfig.{name} must be an integer >= 1, got {value!r}.")


def _check_number(name: str, value: object, strict: bool) -> None:
    """``value`` must be a finite real number > 0 (``strict``) or >= 0."""
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > 0.0 if strict else value >= 0.0)
    )
    if not ok:
        op = ">" if strict else ">="
        raise MiascaleError(f"FilmConfig.{name} must be a number {op} 0, got {value!r}.")


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
        _check_positive_int("epochs", self.epochs)
        _check_positive_int("batch_size", self.batch_size)
        if self.models_per_chunk is not None and (
            not _is_int(self.models_per_chunk) or self.models_per_chunk < 1
        ):
            raise MiascaleError(
                "FilmConfig.models_per_chunk must be None (automatic) or an integer >= 1, "
                f"got {self.models_per_chunk!r}."
            )
        if self.optimizer not in OPTIMIZERS:
            raise MiascaleError(
                f"FilmConfig.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}."
            )
        _check_number("learning_rate", self.learning_rate, strict=True)
        _check_number("memory_budget_mb", self.memory_budget_mb, strict=True)
        _check_number("weight_decay", self.weight_decay, strict=False)
        _check_number("momentum", self.momentum, strict=False)
        if self.momentum >= 1:
            raise MiascaleError(f"FilmConfig.momentum must be < 1, got {self.momentum!r}.")
        if not _is_int(self.seed):
            raise MiascaleError(f"FilmConfig.seed must be an integer, got {self.seed!r}.")


@dataclass(frozen=True)
class FilmModels:
    """K FiLM-tuned models on one shared backbone.

    Attributes:
        film_params: name -> (K, ...) numpy array of model k's normalisation affine parameters.
        head_weights: (K, D, C) head weights (``logits = features @ W_k + b_k``).
        head_bias: (K, C).
        config: the :class:`FilmConfig` used.
        train_seconds: wall time of :func:`~miascale.training.film.train_film`.
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
