"""HPO of the heads of :mod:`miascale.training.heads`: :func:`tune_head`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from miascale.errors import MiascaleError
from miascale.hpo.result import HpoResult
from miascale.hpo.space import Dim, SearchSpace, _check_space, apply_params, head_space
from miascale.hpo.split import DEFAULT_VAL_FRACTION, hpo_split
from miascale.hpo.tuning import _check_seed, tune
from miascale.training.heads import HeadConfig, head_logits, train_heads


def _derived_seeds(seed: int) -> tuple[int, int]:
    """Independent seeds for the split and the sampler, derived from one seed."""
    split_ss, sampler_ss = np.random.SeedSequence(seed).spawn(2)
    return int(split_ss.generate_state(1)[0]), int(sampler_ss.generate_state(1)[0])


def _head_dims(base: HeadConfig, space: SearchSpace | None) -> dict[str, Dim]:
    """The checked search space; every name must be a HeadConfig field."""
    dims = _check_space(head_space(base.optimizer) if space is None else space)
    unknown = sorted(set(dims) - {f.name for f in dataclasses.fields(HeadConfig)})
    if unknown:
        raise MiascaleError(
            f"Search-space parameter(s) {unknown} are not HeadConfig fields; fix the space."
        )
    return dims


def _pool_arrays(
    features: np.ndarray, labels: np.ndarray, n_classes: int | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """``(x, y, C)`` of the pool, checked; ``C`` defaults to ``labels.max() + 1``."""
    x = np.asarray(features)
    y = np.asarray(labels)
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise MiascaleError(
            f"features (N, D) and labels (N,) must describe the same pool, got shapes {x.shape} "
            f"and {y.shape}."
        )
    if n_classes is None:
        if y.size == 0 or not np.issubdtype(y.dtype, np.integer):
            raise MiascaleError("labels must be a non-empty integer array (the pool's labels).")
        n_classes = int(y.max()) + 1
    return x, y, n_classes


def tune_head(
    features: np.ndarray,
    labels: np.ndarray,
    shots: int,
    base: HeadConfig,
    n_trials: int,
    seed: int,
    device: str = "cpu",
    *,
    n_classes: int | None = None,
    space: SearchSpace | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    progress: Callable[[int, int, float | None], object] | None = None,
) -> tuple[HeadConfig, HpoResult]:
    """Tune a head's hyperparameters on a 70/30 split of one target-like training set.

    Each trial trains one head (:func:`~miascale.training.heads.train_heads` with K = 1) with
    ``base`` updated by the trial's values on the training part of :func:`hpo_split` and
    returns its accuracy on the validation part. Everything not in the space (tol, max_iter,
    dtype, Adam's minibatch seed ``base.seed``, ...) comes from ``base``.

    Args:
        features: ``(N, D)`` pool features.
        labels: ``(N,)`` pool labels in ``[0, n_classes)`` (2·S per class).
        shots: S, training examples per class of one model.
        base: head settings; the tuned values replace its fields.
        n_trials: TPE trials (>= 1).
        seed: one seed; the split seed and the sampler seed are derived from it
            (``numpy.random.SeedSequence(seed).spawn(2)``) and recorded in ``result.info``.
        device: torch device for training.
        n_classes: C; default ``labels.max() + 1``.
        space: default :func:`head_space` ``(base.optimizer)``; names must be HeadConfig fields.
        val_fraction: see :func:`hpo_split`.
        progress: see :func:`tune`.

    Returns:
        ``(config, result)``: ``base`` with the best values, and the :class:`HpoResult`
        (metric ``"validation_accuracy"``).
    """
    if not isinstance(base, HeadConfig):
        raise MiascaleError(f"base must be a HeadConfig, got {type(base).__name__}.")
    seed = _check_seed(seed)
    dims = _head_dims(base, space)
    x, y, n_classes = _pool_arrays(features, labels, n_classes)
    split_seed, sampler_seed = _derived_seeds(seed)
    train_idx, val_idx = hpo_split(y, shots, split_seed, val_fraction)
    x_train, y_train = x[train_idx], y[train_idx]
    x_val, y_val = x[val_idx], y[val_idx]
    mask = np.ones((1, train_idx.size), dtype=bool)

    def objective(params: dict[str, Any]) -> float:
        config = apply_params(base, params)
        heads = train_heads(x_train, y_train, mask, n_classes, config, device=device)
        pred = head_logits(heads, x_val)[0].argmax(axis=-1)
        return float(np.mean(pred == y_val))

    result = tune(
        objective,
        dims,
        n_trials,
        sampler_seed,
        metric="validation_accuracy",
        info={
            "target": "head",
            "optimizer": base.optimizer,
            "seed": seed,
            "split_seed": split_seed,
            "sampler_seed": sampler_seed,
            "shots": int(shots),
            "val_fraction": float(val_fraction),
            "n_train": int(train_idx.size),
            "n_val": int(val_idx.size),
        },
        progress=progress,
    )
    return apply_params(base, result.best_params), result
