"""The trainers an audit runs: exact heads, DP-SGD heads and FiLM, behind one small protocol.

A trainer knows its data (features or raw images) and trains K models on the pool at once;
:func:`miascale.audit.train.train_and_signal_with` does everything else (pool, plan, statistics,
utility, population) the same way for all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Protocol

import numpy as np

from miascale.audit.config import AuditConfig
from miascale.backbones.cache import check_finite
from miascale.membership import MembershipPlan
from miascale.pool import Pool

Progress = Callable[[str, float], object] | None


class Trainer(Protocol):
    """Fits K models on a pool (:meth:`fit`) and gives their logits on any rows (:meth:`logits`)."""

    y_train: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...] | None
    eval_limit: int | None  # test / population rows evaluated at most (None = all)

    def prepare(self, pool: Pool) -> None:
        """Load what training on ``pool`` needs (timed as part of the pool step)."""

    def fit(self, pool: Pool, plan: MembershipPlan, seed: int, progress: Progress) -> dict:
        """Train the K models; return the documents of the run (hpo, head, dp, film, timings)."""

    def logits(self, split: str, rows: np.ndarray) -> np.ndarray:
        """``(K, len(rows), C)`` logits of ``rows`` of the ``"train"`` or ``"test"`` split."""

    def predictions(self, split: str, rows: np.ndarray) -> np.ndarray:
        """``(K, len(rows))`` predicted classes (the argmax of :meth:`logits`)."""


class _FeatureTrainer:
    """Common part of the trainers on cached features (N, D)."""

    eval_limit = None

    def __init__(self, x_train, y_train, x_test, y_test, config: AuditConfig,
                 class_names=None, device: str = "cpu") -> None:  # fmt: skip
        check_finite(x_train, "training features")
        check_finite(x_test, "test features")
        self.x = {"train": x_train, "test": x_test}
        self.y_train, self.y_test = np.asarray(y_train), np.asarray(y_test)
        self.class_names = None if class_names is None else tuple(class_names)
        self.config, self.device = config, device
        self.models = None

    def prepare(self, pool: Pool) -> None:
        self.pool, self.features = pool, np.asarray(self.x["train"][pool.indices])

    def _logits_of(self, models, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predictions(self, split: str, rows: np.ndarray) -> np.ndarray:
        return self._predictions_of(self.models, np.asarray(self.x[split][rows]))

    def _predictions_of(self, models, x: np.ndarray) -> np.ndarray:
        return self._logits_of(models, x).argmax(-1)

    def logits(self, split: str, rows: np.ndarray) -> np.ndarray:
        if split == "train" and np.array_equal(rows, self.pool.indices):
            return self._logits_of(self.models, self.features)
        return self._logits_of(self.models, np.asarray(self.x[split][rows]))


class ExactHeads(_FeatureTrainer):
    """K l2-regularised softmax heads at once (:mod:`miascale.training.heads`), optionally tuned."""

    def _logits_of(self, models, x):
        from miascale.training.heads import head_logits

        return head_logits(models, x)

    def _predictions_of(self, models, x):
        from miascale.training.heads import head_predictions

        return head_predictions(models, x)

    def fit(self, pool: Pool, plan: MembershipPlan, seed: int, progress: Progress) -> dict:
        from miascale.training.heads import train_heads

        config, head, docs = self.config, self.config.head, {"timings": {}}
        if config.hpo_trials > 0:
            from miascale.hpo import tune_head

            tick = time.perf_counter()
            head, hpo = tune_head(
                self.features, pool.labels, config.shots, config.head, config.hpo_trials,
                seed=seed, device=self.device, n_classes=pool.n_classes,
            )  # fmt: skip
            docs["hpo"], docs["timings"]["hpo"] = hpo.to_dict(), time.perf_counter() - tick
        report = None if progress is None else (lambda it, g: progress("train", it))
        self.models = train_heads(self.features, pool.labels, plan.in_mask, pool.n_classes, head,
                                  device=self.device, progress=report)  # fmt: skip
        return {**docs, "head": head, "converged": int(self.models.converged.sum())}


class DPHeads(_FeatureTrainer):
    """K DP-SGD heads (:mod:`miascale.training.dp`); noise and batches follow the audit's seed."""

    def _logits_of(self, models, x):
        from miascale.training.dp import dp_head_logits

        return dp_head_logits(models, x)

    def fit(self, pool: Pool, plan: MembershipPlan, seed: int, progress: Progress) -> dict:
        from miascale.privacy import game_relation
        from miascale.training.dp import train_dp_heads

        dp_config = replace(self.config.dp, seed=seed)
        report = None if progress is None else (lambda it, g: progress("train", it))
        self.models = train_dp_heads(self.features, pool.labels, plan.in_mask, pool.n_classes,
                                     dp_config, device=self.device, progress=report,
                                     relation=game_relation(self.config.membership))  # fmt: skip
        dp_doc = {**self.models.privacy_dict(), "seed": dp_config.seed}
        return {"dp": dp_doc, "converged": self.config.n_models, "timings": {}}


class FilmModels:
    """K FiLM models on raw images (:mod:`miascale.training.film`) over one frozen backbone;
    test accuracy and RMIA's population use at most ``config.film_eval`` images each."""

    def __init__(self, dataset, backbone: str, resolution: int | None, config: AuditConfig,
                 device: str = "cpu") -> None:  # fmt: skip
        self.dataset, self.backbone, self.resolution = dataset, backbone, resolution
        self.y_train, self.y_test = np.asarray(dataset.y_train), np.asarray(dataset.y_test)
        self.class_names = tuple(dataset.class_names)
        self.config, self.device, self.eval_limit = config, device, config.film_eval

    def prepare(self, pool: Pool) -> None:
        from miascale.training.film import film_backbone, images_for

        self.bb = film_backbone(self.backbone, resolution=self.resolution, device=self.device)
        self.pool, self.x_pool = pool, images_for(self.dataset, pool.indices, self.bb)

    def fit(self, pool: Pool, plan: MembershipPlan, seed: int, progress: Progress) -> dict:
        from miascale.training.film import FilmConfig, train_film

        config, docs = self.config, {"timings": {}}
        film_config = replace(config.film or FilmConfig(), seed=seed)
        if config.hpo_trials > 0:
            tick = time.perf_counter()
            film_config, docs["hpo"] = self._tune(film_config, seed)
            docs["timings"]["hpo"] = time.perf_counter() - tick
        report = None if progress is None else (lambda done, k, ep, loss: progress("train", done))
        self.models = m = train_film(self.bb, self.x_pool, pool.labels, plan.in_mask,
                                     pool.n_classes, film_config, progress=report)  # fmt: skip
        params = (*m.film_params.values(), m.head_weights, m.head_bias)
        docs["film"] = {
            "config": asdict(film_config), "backbone": self.backbone,
            "resolution": self.bb.resolution, "models_per_chunk": m.models_per_chunk,
            "train_seconds": m.train_seconds,
            "trainable_parameters_per_model": sum(int(np.prod(a.shape[1:])) for a in params),
            "final_loss_mean": float(np.mean(m.final_loss)),
        }  # fmt: skip
        return {**docs, "converged": config.n_models}

    def _tune(self, film_config, seed: int):
        from miascale.hpo import apply_params, film_space, hpo_split, tune
        from miascale.training.film import film_logits, train_film

        pool, x_pool, bb = self.pool, self.x_pool, self.bb
        split_ss, sampler_ss = np.random.SeedSequence(seed).spawn(2)
        split_seed = int(split_ss.generate_state(1)[0])
        sampler_seed = int(sampler_ss.generate_state(1)[0])
        tr, va = hpo_split(pool.labels, self.config.shots, split_seed)

        def objective(params: dict) -> float:
            cfg = apply_params(film_config, params)
            m = train_film(bb, x_pool[tr], pool.labels[tr], np.ones((1, len(tr)), dtype=bool),
                           pool.n_classes, cfg)  # fmt: skip
            pred = film_logits(m, bb, x_pool[va])[0].argmax(-1)
            return float((pred == pool.labels[va]).mean())

        result = tune(objective, film_space(), self.config.hpo_trials, sampler_seed,
                      metric="validation_accuracy",
                      info={"target": "film", "seed": seed, "split_seed": split_seed,
                            "sampler_seed": sampler_seed, "shots": self.config.shots,
                            "n_train": len(tr), "n_val": len(va)})  # fmt: skip
        return apply_params(film_config, result.best_params), result.to_dict()

    def logits(self, split: str, rows: np.ndarray) -> np.ndarray:
        from miascale.data.base import take
        from miascale.training.film import film_logits, images_for

        if split == "train" and np.array_equal(rows, self.pool.indices):
            x = self.x_pool
        elif split == "train":
            x = images_for(self.dataset, rows, self.bb)
        else:
            x = self.bb.preprocess(take(self.dataset.x_test, rows))
        return film_logits(self.models, self.bb, x)

    def predictions(self, split: str, rows: np.ndarray) -> np.ndarray:
        return self.logits(split, rows).argmax(-1)
