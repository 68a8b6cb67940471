"""The one training pipeline: pool → membership plan → K models (any trainer) → signals.

:func:`train_and_signal_with` draws the pool and the plan from the audit's seed, lets a
:class:`~miascale.audit.trainers.Trainer` fit the K models, and computes the LiRA statistic of
every pool example, each model's test accuracy and, when an attack needs them, the statistics of
population points. :func:`train_and_signal` and :func:`train_and_signal_film` build the trainer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from miascale.audit.config import AuditConfig
from miascale.audit.results import TrainedSignals
from miascale.audit.trainers import DPHeads, ExactHeads, FilmModels, Progress, Trainer
from miascale.data.base import Dataset
from miascale.errors import MiascaleError
from miascale.membership import make_plan
from miascale.pool import Pool, draw_pool
from miascale.signals import lira_statistic


def _seeds(seed: int) -> tuple[int, int]:
    """Independent seeds for the pool draw and the membership plan, derived from one seed."""
    pool_ss, plan_ss = np.random.SeedSequence(seed).spawn(2)
    return int(pool_ss.generate_state(1)[0]), int(plan_ss.generate_state(1)[0])


def population_indices(y_train: np.ndarray, pool: Pool, size: int, seed: int) -> np.ndarray:
    """RMIA's population points: up to ``size`` train-split rows outside the pool, of the pool's
    classes, drawn uniformly (seeded) and returned sorted. Fewer than 100 is an error."""
    candidates = np.flatnonzero(np.isin(y_train, pool.classes))
    candidates = np.setdiff1d(candidates, pool.indices, assume_unique=False)
    if len(candidates) < 100:
        raise MiascaleError(
            f"RMIA needs at least 100 population points (train-split examples of the audited "
            f"classes outside the pool), but only {len(candidates)} are left at S={pool.shots}. "
            f"Use a smaller --shots, a larger dataset, or another attack."
        )
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x504F50]))
    if len(candidates) > size:
        candidates = np.sort(rng.choice(candidates, size=size, replace=False))
    return candidates


def _test_rows(trainer: Trainer, pool: Pool, pool_seed: int) -> np.ndarray:
    """Test-split rows of the pool's classes (a seeded subset when the trainer limits them)."""
    rows = np.flatnonzero(pool.relabel(trainer.y_test) >= 0)
    limit = trainer.eval_limit
    if limit is not None and len(rows) > limit:
        rng = np.random.default_rng(np.random.SeedSequence([pool_seed, 0x46494C4D]))
        rows = np.sort(rng.choice(rows, limit, replace=False))
    return rows


def train_and_signal_with(
    trainer: Trainer,
    config: AuditConfig,
    progress: Progress = None,
) -> TrainedSignals:
    """Pool, membership plan, K models at once, LiRA statistics of the pool, test accuracy."""
    y_train, y_test = trainer.y_train, trainer.y_test
    n_all = int(max(y_train.max(), y_test.max(initial=0))) + 1
    if trainer.class_names is not None:
        n_all = max(n_all, len(trainer.class_names))
    if config.classes is not None and config.classes > n_all:
        raise MiascaleError(
            f"--classes {config.classes} is larger than the {n_all} classes of the dataset."
        )
    timings: dict[str, float] = {}
    tick = time.perf_counter()
    pool_seed, plan_seed = _seeds(config.seed)
    pool = draw_pool(y_train, config.shots, config.classes, seed=pool_seed,
                     class_names=trainer.class_names)  # fmt: skip
    plan = make_plan(config.membership, pool.labels, config.n_models, plan_seed)
    trainer.prepare(pool)
    timings["pool"] = time.perf_counter() - tick

    tick = time.perf_counter()
    docs = trainer.fit(pool, plan, plan_seed, progress)
    timings.update(docs["timings"])
    timings["train"] = time.perf_counter() - tick - sum(docs["timings"].values())

    tick = time.perf_counter()
    stats = lira_statistic(trainer.logits("train", pool.indices), pool.labels)
    test_rows = _test_rows(trainer, pool, pool_seed)
    test_acc = np.zeros(config.n_models)
    if len(test_rows):
        pred = trainer.predictions("test", test_rows)
        test_acc = (pred == pool.relabel(y_test)[test_rows][None, :]).mean(axis=1)
    pop_idx = pop_stats = None
    if config.needs_population:
        size = config.population
        if trainer.eval_limit is not None:
            size = min(size, trainer.eval_limit)
        pop_idx = population_indices(y_train, pool, size, pool_seed)
        pop_stats = lira_statistic(trainer.logits("train", pop_idx),
                                   pool.relabel(y_train[pop_idx]))  # fmt: skip
    timings["signals"] = time.perf_counter() - tick
    film = docs.get("film")
    if film is not None:
        film = {**film, "test_images": len(test_rows)}
    names = tuple(
        (trainer.class_names[c] if trainer.class_names is not None else str(c))
        for c in pool.classes.tolist()
    )
    return TrainedSignals(pool, plan, names, stats, test_acc, docs["converged"], timings,
                          pop_idx, pop_stats, docs.get("hpo"), docs.get("head"), docs.get("dp"),
                          film)  # fmt: skip


def train_and_signal(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    config: AuditConfig,
    class_names: Sequence[str] | None = None,
    device: str = "cpu",
    progress: Progress = None,
) -> TrainedSignals:
    """Head-only audit on features (N_train, D) / (N_test, D): exact heads, or DP-SGD heads
    when ``config.dp`` is set."""
    kind = ExactHeads if config.dp is None else DPHeads
    trainer = kind(x_train, y_train, x_test, y_test, config, class_names, device)
    return train_and_signal_with(trainer, config, progress)


def train_and_signal_film(
    dataset: Dataset,
    backbone: str,
    resolution: int | None,
    config: AuditConfig,
    device: str = "cpu",
    progress: Progress = None,
) -> TrainedSignals:
    """FiLM audit (``config.finetune == "film"``): K models fine-tune the backbone's
    normalisation scale/shift and a head on raw pool images (one shared frozen backbone)."""
    if config.finetune != "film":
        raise MiascaleError("train_and_signal_film needs an AuditConfig with finetune='film'.")
    trainer = FilmModels(dataset, backbone, resolution, config, device)
    return train_and_signal_with(trainer, config, progress)
