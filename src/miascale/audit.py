"""One audit: pool → membership plan → K heads at once → LiRA → TPR@FPR (DESIGN §1, §3, §5).

:func:`audit_features` is pure (arrays in, a frozen :class:`AuditResult` out); :func:`write_audit`
is the I/O edge that writes ``audit.json`` and ``signals.npz`` atomically.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from miascale import __version__
from miascale.attacks import get_attack
from miascale.backbones.cache import check_finite
from miascale.data.base import Dataset
from miascale.errors import MiascaleError
from miascale.membership import MembershipPlan, make_plan
from miascale.metrics import TprAtFpr, auc, best_balanced_accuracy, tpr_at_fpr
from miascale.paths import atomic_path, atomic_write_bytes
from miascale.pool import Pool, draw_pool
from miascale.signals import lira_statistic
from miascale.training.dp import DPConfig, dp_head_logits, train_dp_heads
from miascale.training.film import FilmConfig
from miascale.training.heads import HeadConfig, head_logits, train_heads

SCHEMA_VERSION = 2
DEFAULT_FPR = (0.1, 0.01, 0.001)
LIRA_VARIANTS = ("online", "offline")  # also the modes of bare "lira" / "rmia" in --attack
FINETUNE_MODES = ("head", "film")
#: RMIA's population points (train-split examples outside the pool) per audit, at most
DEFAULT_POPULATION = 10_000


def expand_attacks(attack: str, mode: str = "online") -> tuple[str, ...]:
    """``--attack`` text → attack variants, e.g. ``"lira,loss"`` → ``("lira-online", "loss")``.

    Bare ``lira`` and ``rmia`` take ``mode`` (online / offline); ``all`` means every variant;
    full variant names (``rmia-offline``) are taken as they are. Duplicates are dropped.
    """
    from miascale.attacks import VARIANT_ARGS

    if mode not in LIRA_VARIANTS:
        raise MiascaleError(f"Unknown attack mode {mode!r}; choose one of online, offline.")
    out: list[str] = []
    tokens = [t.strip() for t in str(attack).split(",") if t.strip()]
    if not tokens:
        raise MiascaleError("--attack is empty; give lira, rmia, loss, all or a comma list.")
    for t in tokens:
        names = list(VARIANT_ARGS) if t == "all" else [t]
        for name in names:
            if name in ("lira", "rmia"):
                name = f"{name}-{mode}"
            if name not in VARIANT_ARGS:
                raise MiascaleError(
                    f"Unknown attack {t!r}. Known: lira, rmia, loss, all, or one of "
                    f"{', '.join(VARIANT_ARGS)}."
                )
            if name not in out:
                out.append(name)
    return tuple(out)


def dp_variant(variant: str, epsilon: float) -> str:
    """The variant label of DP rows in fits and reports, e.g. ``online dp ε=1``."""
    return f"{variant} dp ε={epsilon:g}"


def variant_columns(variant: str) -> tuple[str, str]:
    """(attack, variant) columns of a result row: ``lira-online`` → (lira, online); loss → global."""
    attack, _, sub = variant.partition("-")
    return attack, sub or "global"


@dataclass(frozen=True)
class AuditConfig:
    """Everything that determines an audit's numbers (recorded in ``audit.json``)."""

    shots: int
    classes: int | None = None  # None = all classes of the dataset
    shadow_models: int = 64  # M; K = M + 1 models, each the target once
    attack: str = "lira"
    lira_variant: str = "online"
    variance: str = "per-example"
    location: str = "mean"
    membership: str = "balanced"
    fpr: tuple[float, ...] = DEFAULT_FPR
    seed: int = 0
    head: HeadConfig = field(default_factory=HeadConfig)
    rmia_gamma: float = 1.0
    rmia_a: float | None = None  # None = tuned on shadow models, per target
    population: int = DEFAULT_POPULATION
    hpo_trials: int = 0  # Optuna trials tuning the head on one target-like training set (0 = off)
    dp: DPConfig | None = None  # DP-SGD heads (miascale.training.dp) instead of exact heads
    finetune: str = "head"  # head (cached features) | film (raw images, see train_and_signal_film)
    film: FilmConfig | None = None  # FiLM settings (None = FilmConfig defaults)
    film_eval: int = 1000  # FiLM: test and population images evaluated per audit, at most
    bootstrap: int = 200  # resamples of pool examples for TPR@FPR's CI (0 = Clopper-Pearson only)

    @property
    def n_models(self) -> int:
        return self.shadow_models + 1

    @property
    def variants(self) -> tuple[str, ...]:
        """The attack variants this audit runs; the first is the primary one."""
        return expand_attacks(self.attack, self.lira_variant)

    @property
    def needs_population(self) -> bool:
        return any(v.startswith("rmia") for v in self.variants)

    def validate(self) -> AuditConfig:
        from miascale.attacks.lira import LOCATIONS, VARIANCES

        if not isinstance(self.shots, int) or self.shots < 1:
            raise MiascaleError(f"--shots must be a positive integer, got {self.shots!r}.")
        if self.shadow_models < 4:
            raise MiascaleError(
                f"--shadow-models must be at least 4 (LiRA fits IN and OUT distributions from the "
                f"shadow models, and a target's complementary partner is never one of them; 64 "
                f"or more is typical), got {self.shadow_models}."
            )
        if self.classes is not None and self.classes < 2:
            raise MiascaleError(f"--classes must be at least 2, got {self.classes}.")
        self.variants  # noqa: B018 — validates --attack
        if self.lira_variant not in LIRA_VARIANTS:
            raise MiascaleError(
                f"Unknown LiRA variant {self.lira_variant!r}; choose one of {', '.join(LIRA_VARIANTS)}."
            )
        if self.variance not in VARIANCES:
            raise MiascaleError(
                f"Unknown --variance {self.variance!r}; choose one of {', '.join(VARIANCES)}."
            )
        if self.location not in LOCATIONS:
            raise MiascaleError(
                f"Unknown --location {self.location!r}; choose one of {', '.join(LOCATIONS)}."
            )
        bad = [t for t in self.fpr if not (0.0 < t < 1.0)]
        if not self.fpr or bad:
            raise MiascaleError(
                f"FPR levels must lie strictly between 0 and 1, got {list(self.fpr)}."
            )
        if not (isinstance(self.rmia_gamma, int | float) and math.isfinite(self.rmia_gamma)
                and self.rmia_gamma > 0):  # fmt: skip
            raise MiascaleError(
                f"RMIA's γ (--gamma) must be a number > 0, got {self.rmia_gamma!r}."
            )
        if self.rmia_a is not None and not (0.0 <= self.rmia_a <= 1.0):
            raise MiascaleError(
                f"RMIA's offline a (--rmia-a) must lie in [0, 1] (or be left out to tune it on "
                f"the shadow models), got {self.rmia_a!r}."
            )
        if self.dp is not None and not isinstance(self.dp, DPConfig):
            raise MiascaleError(f"AuditConfig.dp must be a DPConfig, got {self.dp!r}.")
        if self.dp is not None and self.hpo_trials:
            raise MiascaleError(
                "--hpo cannot be combined with DP training: tuning on the private training data "
                "would spend privacy that the accountant does not count. Tune on public data and "
                "pass the values (--dp-lr, --steps, --clip) instead."
            )
        if self.finetune not in FINETUNE_MODES:
            raise MiascaleError(
                f"Unknown --finetune {self.finetune!r}; choose one of {', '.join(FINETUNE_MODES)}."
            )
        if self.finetune == "film" and self.dp is not None:
            raise MiascaleError("DP training (--epsilon) is available for heads only, not FiLM.")
        if self.film is not None and not isinstance(self.film, FilmConfig):
            raise MiascaleError(f"AuditConfig.film must be a FilmConfig, got {self.film!r}.")
        if not isinstance(self.film_eval, int) or self.film_eval < 100:
            raise MiascaleError(f"film_eval must be an integer ≥ 100, got {self.film_eval!r}.")
        bad_bootstrap = isinstance(self.bootstrap, bool) or not isinstance(self.bootstrap, int)
        if bad_bootstrap or self.bootstrap < 0:
            raise MiascaleError(
                f"bootstrap must be a number of resamples ≥ 0 (0 = report only the "
                f"Clopper-Pearson interval of TPR@FPR), got {self.bootstrap!r}."
            )
        if not isinstance(self.hpo_trials, int) or self.hpo_trials < 0:
            raise MiascaleError(f"--hpo must be a number of trials ≥ 0, got {self.hpo_trials!r}.")
        if not isinstance(self.population, int) or self.population < 100:
            raise MiascaleError(
                f"--population must be an integer ≥ 100 (RMIA compares each example with that "
                f"many population points), got {self.population!r}."
            )
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["n_models"] = self.n_models
        d["fpr"] = list(self.fpr)
        d["variants"] = list(self.variants)
        return d


@dataclass(frozen=True)
class AuditResult:
    config: AuditConfig
    pool: Pool
    plan: MembershipPlan
    class_names: tuple[str, ...]  # of the pool's classes, in pool label order
    stats: np.ndarray  # (K, N) LiRA statistic of every pool example under every model
    scores: np.ndarray  # (K, N) attack score of example n when model k is the target
    metrics: tuple[TprAtFpr, ...]
    auc: float
    best_balanced_accuracy: float
    test_accuracy: np.ndarray  # (K,) each model's accuracy on the test split (pool classes)
    converged: int  # models whose optimiser converged
    n_unscored: int  # (target, example) pairs without a score, left out of the metrics
    n_fallback_variance: int
    seconds: dict[str, float]
    # every attack variant run on the same models; the fields above are those of outcomes[0]
    outcomes: tuple[AttackOutcome, ...] = ()
    population_indices: np.ndarray | None = None  # train-split rows used as RMIA's population
    population_stats: np.ndarray | None = None  # (K, Z)
    hpo: dict | None = None
    head: HeadConfig | None = None  # the head settings used by every model (after HPO)
    dp: dict | None = None  # DP training: the accountant's ε and δ, σ, q, T, clip
    film: dict | None = None  # FiLM training: the settings used (after HPO), chunking, seconds

    def _repr_html_(self) -> str:  # notebook display
        from miascale.notebook import audit_html

        return audit_html(self)

    def table(self) -> list[dict]:
        """One row per FPR level (the metrics table of ``audit.json``)."""
        return [
            {
                **m.to_dict(),
                "threshold": None if not np.isfinite(m.threshold) else float(m.threshold),
                "auc": self.auc,
                "test_accuracy": float(self.test_accuracy.mean()),
            }
            for m in self.metrics
        ]

    def summary(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "config": self.config.to_dict(),
            "pool": {
                "size": self.pool.size,
                "shots": self.pool.shots,
                "n_classes": self.pool.n_classes,
                "classes": self.pool.classes.tolist(),
                "class_names": list(self.class_names),
            },
            "membership": {"design": self.plan.design, "seed": self.plan.seed},
            "metrics": self.table(),
            "auc": self.auc,
            "best_balanced_accuracy": self.best_balanced_accuracy,
            "utility": {
                "test_accuracy_mean": float(self.test_accuracy.mean()),
                "test_accuracy_std": float(self.test_accuracy.std()),
            },
            "training": {"models": self.config.n_models, "converged": self.converged},
            "unscored_pairs": self.n_unscored,
            "fallback_variance_pairs": self.n_fallback_variance,
            "attacks": [o.to_dict() for o in self.outcomes],
            "population": None
            if self.population_indices is None
            else {"size": len(self.population_indices)},
            "hpo": self.hpo,
            "privacy": self.dp,
            "film": self.film,
            "head_used": None if self.head is None else asdict(self.head),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


def _seeds(seed: int) -> tuple[int, int]:
    """Independent seeds for the pool draw and the membership plan, derived from one seed."""
    pool_ss, plan_ss = np.random.SeedSequence(seed).spawn(2)
    return int(pool_ss.generate_state(1)[0]), int(plan_ss.generate_state(1)[0])


@dataclass(frozen=True)
class TrainedSignals:
    """The expensive half of an audit: K heads trained on the pool, their signals and utility."""

    pool: Pool
    plan: MembershipPlan
    class_names: tuple[str, ...]
    stats: np.ndarray  # (K, N)
    test_accuracy: np.ndarray  # (K,)
    converged: int
    seconds: dict[str, float]
    population_indices: np.ndarray | None = None  # train-split rows (RMIA's population points)
    population_stats: np.ndarray | None = None  # (K, Z) statistic of the population points
    hpo: dict | None = None  # the tuning run (HpoResult.to_dict()) when config.hpo_trials > 0
    head: HeadConfig | None = None  # the head settings actually used (tuned or config.head)
    dp: dict | None = None  # DP training: accountant's ε, δ, noise multiplier, q, T, clip
    film: dict | None = None  # FiLM training: the settings used, chunking, seconds


@dataclass(frozen=True)
class AttackOutcome:
    """One attack variant run on trained signals, with its metrics."""

    variant: str  # e.g. "lira-online"
    scores: np.ndarray  # (K, N), NaN = unscored
    metrics: tuple[TprAtFpr, ...]
    auc: float
    best_balanced_accuracy: float
    n_unscored: int
    n_fallback_variance: int
    details: dict = field(default_factory=dict)  # attack-specific settings, e.g. RMIA's a and γ
    # lower bound on ε from this attack's ROC (miascale.privacy.empirical_epsilon), or None
    empirical_epsilon: dict | None = None

    def table(self) -> list[dict]:
        return [
            {
                **m.to_dict(),
                "threshold": None if not np.isfinite(m.threshold) else float(m.threshold),
            }
            for m in self.metrics
        ]

    def to_dict(self) -> dict:
        return {
            "variant": self.variant,
            "metrics": self.table(),
            "auc": self.auc,
            "best_balanced_accuracy": self.best_balanced_accuracy,
            "unscored_pairs": self.n_unscored,
            "fallback_variance_pairs": self.n_fallback_variance,
            "empirical_epsilon": self.empirical_epsilon,
            **self.details,
        }


def train_and_signal(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    config: AuditConfig,
    class_names: Sequence[str] | None = None,
    device: str = "cpu",
    progress: Callable[[str, float], object] | None = None,
) -> TrainedSignals:
    """Pool, membership plan, K heads at once, LiRA statistics of the pool, test accuracy."""
    config.validate()
    n_all = int(max(y_train.max(), y_test.max(initial=0))) + 1
    if config.classes is not None and config.classes > n_all:
        raise MiascaleError(
            f"--classes {config.classes} is larger than the {n_all} classes of the dataset."
        )
    check_finite(x_train, "training features")
    check_finite(x_test, "test features")
    timings: dict[str, float] = {}
    tick = time.perf_counter()
    pool_seed, plan_seed = _seeds(config.seed)
    pool = draw_pool(y_train, config.shots, config.classes, seed=pool_seed, class_names=class_names)
    plan = make_plan(config.membership, pool.labels, config.n_models, plan_seed)
    features = np.asarray(x_train[pool.indices])
    timings["pool"] = time.perf_counter() - tick

    head_config, hpo_doc = config.head, None
    if config.hpo_trials > 0:
        from miascale.hpo import tune_head

        tick = time.perf_counter()
        head_config, hpo = tune_head(
            features, pool.labels, config.shots, config.head, config.hpo_trials, seed=plan_seed,
            device=device, n_classes=pool.n_classes,
        )  # fmt: skip
        hpo_doc = hpo.to_dict()
        timings["hpo"] = time.perf_counter() - tick

    tick = time.perf_counter()
    report = None if progress is None else (lambda it, g: progress("train", it))
    dp_doc = None
    if config.dp is not None:
        from miascale.privacy import game_relation

        # the DP noise and batches follow the audit's seed
        dp_config = replace(config.dp, seed=plan_seed)
        heads = train_dp_heads(features, pool.labels, plan.in_mask, pool.n_classes, dp_config,
                               device=device, progress=report,
                               relation=game_relation(config.membership))  # fmt: skip
        dp_doc = {**heads.privacy_dict(), "seed": dp_config.seed}  # derived from the audit seed
        converged, logits_of = config.n_models, dp_head_logits
    else:
        heads = train_heads(
            features, pool.labels, plan.in_mask, pool.n_classes, head_config, device=device,
            progress=report,
        )  # fmt: skip
        converged, logits_of = int(heads.converged.sum()), head_logits
    timings["train"] = time.perf_counter() - tick

    tick = time.perf_counter()
    stats = lira_statistic(logits_of(heads, features), pool.labels)
    # utility: each model on the test examples of the pool's classes
    y_test_pool = pool.relabel(y_test)
    keep = y_test_pool >= 0
    test_acc = np.zeros(config.n_models)
    if keep.any():
        test_logits = logits_of(heads, np.asarray(x_test[keep]))
        test_acc = (test_logits.argmax(-1) == y_test_pool[keep][None, :]).mean(axis=1)
    pop_idx = pop_stats = None
    if config.needs_population:
        pop_idx = population_indices(y_train, pool, config.population, pool_seed)
        pop_stats = lira_statistic(logits_of(heads, np.asarray(x_train[pop_idx])),
                                   pool.relabel(y_train[pop_idx]))  # fmt: skip
    timings["signals"] = time.perf_counter() - tick
    names = tuple(
        (class_names[c] if class_names is not None else str(c)) for c in pool.classes.tolist()
    )
    return TrainedSignals(
        pool, plan, names, stats, test_acc, converged, timings, pop_idx, pop_stats, hpo_doc,
        None if config.dp is not None else head_config, dp_doc,
    )  # fmt: skip


def train_and_signal_film(
    dataset: Dataset,
    backbone: str,
    resolution: int | None,
    config: AuditConfig,
    device: str = "cpu",
    progress: Callable[[str, float], object] | None = None,
) -> TrainedSignals:
    """The FiLM counterpart of :func:`train_and_signal`: K models fine-tune the backbone's
    normalisation scale/shift and a zero-initialised head on raw pool images (one shared frozen
    backbone). Same pool, plan and seeds as head-only audits; test accuracy and RMIA's population
    use at most ``config.film_eval`` images each (seeded draws)."""
    from miascale.training.film import film_backbone, film_logits, images_for, train_film

    config.validate()
    if config.finetune != "film":
        raise MiascaleError("train_and_signal_film needs an AuditConfig with finetune='film'.")
    y_train, y_test = np.asarray(dataset.y_train), np.asarray(dataset.y_test)
    if config.classes is not None and config.classes > dataset.n_classes:
        raise MiascaleError(
            f"--classes {config.classes} is larger than the {dataset.n_classes} classes of the "
            f"dataset."
        )
    timings: dict[str, float] = {}
    tick = time.perf_counter()
    pool_seed, plan_seed = _seeds(config.seed)
    pool = draw_pool(y_train, config.shots, config.classes, seed=pool_seed,
                     class_names=dataset.class_names)  # fmt: skip
    plan = make_plan(config.membership, pool.labels, config.n_models, plan_seed)
    bb = film_backbone(backbone, resolution=resolution, device=device)
    x_pool = images_for(dataset, pool.indices, bb)
    timings["pool"] = time.perf_counter() - tick
    film_config = replace(config.film or FilmConfig(), seed=plan_seed)

    hpo_doc = None
    if config.hpo_trials > 0:
        from miascale.hpo import apply_params, film_space, hpo_split, tune

        tick = time.perf_counter()
        split_ss, sampler_ss = np.random.SeedSequence(plan_seed).spawn(2)
        split_seed = int(split_ss.generate_state(1)[0])
        sampler_seed = int(sampler_ss.generate_state(1)[0])
        tr, va = hpo_split(pool.labels, config.shots, split_seed)

        def objective(params: dict) -> float:
            cfg = apply_params(film_config, params)
            m = train_film(bb, x_pool[tr], pool.labels[tr], np.ones((1, len(tr)), dtype=bool),
                           pool.n_classes, cfg)  # fmt: skip
            pred = film_logits(m, bb, x_pool[va])[0].argmax(-1)
            return float((pred == pool.labels[va]).mean())

        result = tune(objective, film_space(), config.hpo_trials, sampler_seed,
                      metric="validation_accuracy",
                      info={"target": "film", "seed": plan_seed, "split_seed": split_seed,
                            "sampler_seed": sampler_seed, "shots": config.shots,
                            "n_train": len(tr), "n_val": len(va)})  # fmt: skip
        film_config = apply_params(film_config, result.best_params)
        hpo_doc = result.to_dict()
        timings["hpo"] = time.perf_counter() - tick

    tick = time.perf_counter()
    report = None if progress is None else (lambda done, k, ep, loss: progress("train", done))
    models = train_film(bb, x_pool, pool.labels, plan.in_mask, pool.n_classes, film_config,
                        progress=report)  # fmt: skip
    timings["train"] = time.perf_counter() - tick

    tick = time.perf_counter()
    stats = lira_statistic(film_logits(models, bb, x_pool), pool.labels)
    y_test_pool = pool.relabel(y_test)
    rng = np.random.default_rng(np.random.SeedSequence([pool_seed, 0x46494C4D]))
    test_idx = np.flatnonzero(y_test_pool >= 0)
    if len(test_idx) > config.film_eval:
        test_idx = np.sort(rng.choice(test_idx, config.film_eval, replace=False))
    test_acc = np.zeros(config.n_models)
    if len(test_idx):
        from miascale.data.base import take

        x_test = bb.preprocess(take(dataset.x_test, test_idx))
        test_acc = (film_logits(models, bb, x_test).argmax(-1) == y_test_pool[test_idx]).mean(1)
    pop_idx = pop_stats = None
    if config.needs_population:
        pop_idx = population_indices(y_train, pool, min(config.population, config.film_eval),
                                     pool_seed)  # fmt: skip
        pop_stats = lira_statistic(film_logits(models, bb, images_for(dataset, pop_idx, bb)),
                                   pool.relabel(y_train[pop_idx]))  # fmt: skip
    timings["signals"] = time.perf_counter() - tick
    film_doc = {
        "config": asdict(film_config), "backbone": backbone, "resolution": bb.resolution,
        "models_per_chunk": models.models_per_chunk, "train_seconds": models.train_seconds,
        "trainable_parameters_per_model": sum(
            int(np.prod(a.shape[1:]))
            for a in (*models.film_params.values(), models.head_weights, models.head_bias)
        ),
        "test_images": len(test_idx), "final_loss_mean": float(np.mean(models.final_loss)),
    }  # fmt: skip
    names = tuple(dataset.class_names[c] for c in pool.classes.tolist())
    return TrainedSignals(pool, plan, names, stats, test_acc, config.n_models, timings, pop_idx,
                          pop_stats, hpo_doc, None, None, film_doc)  # fmt: skip


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


def run_attack(
    stats: np.ndarray,
    in_mask: np.ndarray,
    fpr: Sequence[float],
    *,
    variant: str = "lira-online",
    variance: str = "per-example",
    location: str = "mean",
    population_stats: np.ndarray | None = None,
    rmia_gamma: float = 1.0,
    rmia_a: float | None = None,
    epsilon_delta: float | None = None,
    bootstrap: int = 200,
    bootstrap_seed: int = 0,
) -> AttackOutcome:
    """Score every (target, example) pair with one attack variant and compute the metrics.

    TPR@FPR's interval is a bootstrap over pool examples with all their target pairs
    (``bootstrap`` resamples drawn with ``bootstrap_seed``; 0 = Clopper-Pearson only).
    With ``epsilon_delta`` the outcome also holds the empirical lower bound on ε at that δ.
    """
    from miascale.attacks import VARIANT_ARGS

    if variant not in VARIANT_ARGS:
        raise MiascaleError(
            f"Unknown attack variant {variant!r}; choose one of {', '.join(VARIANT_ARGS)}."
        )
    attack, kwargs = VARIANT_ARGS[variant]
    options: dict = {}
    details: dict = {}
    if attack == "lira":
        options = {"variance": variance, "location": location}
    elif attack == "rmia":
        if population_stats is None:
            raise MiascaleError("RMIA needs population statistics (train_and_signal computes "
                                "them when an rmia variant is requested).")  # fmt: skip
        options = {"gamma": rmia_gamma, "a": rmia_a}
    res = get_attack(attack)(stats, in_mask, population_stats=population_stats, **kwargs, **options)
    if attack == "rmia":
        details = {"gamma": rmia_gamma, "population": int(population_stats.shape[1])}
        a_used = getattr(res, "a", None)
        if a_used is not None and not kwargs.get("online", True):
            a_arr = np.atleast_1d(np.asarray(a_used, dtype=float))
            details["a_mean"] = float(a_arr.mean())
            details["a_tuned"] = rmia_a is None
    scored = np.isfinite(res.scores)
    s, lab = res.scores[scored], in_mask[scored]
    example = np.broadcast_to(np.arange(res.scores.shape[-1]), res.scores.shape)[scored]
    eps_doc = None
    if epsilon_delta is not None:
        from miascale.privacy import empirical_epsilon

        eps_doc = empirical_epsilon(s, lab, delta=epsilon_delta).to_dict()
    return AttackOutcome(
        variant=variant,
        scores=res.scores,
        metrics=tpr_at_fpr(s, lab, fpr, groups=example, n_boot=bootstrap, seed=bootstrap_seed),
        auc=auc(s, lab),
        best_balanced_accuracy=best_balanced_accuracy(s, lab),
        n_unscored=int((~scored).sum()),
        n_fallback_variance=int(getattr(res, "n_fallback_variance", 0)),
        details=details,
        empirical_epsilon=eps_doc,
    )


def run_attacks(t: TrainedSignals, config: AuditConfig) -> tuple[AttackOutcome, ...]:
    """Every variant of ``config`` on the same trained signals, each with its empirical ε at the
    run's δ (the δ of the game's ε for DP training, otherwise the default δ below 1/n)."""
    from miascale.privacy import default_delta

    delta = (t.dp.get("delta_game", t.dp["delta"]) if t.dp
             else default_delta(int(t.plan.in_mask.sum(1).max())))  # fmt: skip
    return tuple(
        run_attack(
            t.stats,
            t.plan.in_mask,
            config.fpr,
            variant=v,
            variance=config.variance,
            location=config.location,
            population_stats=t.population_stats,
            rmia_gamma=config.rmia_gamma,
            rmia_a=config.rmia_a,
            epsilon_delta=delta,
            bootstrap=config.bootstrap,
            bootstrap_seed=config.seed,
        )
        for v in config.variants
    )


def audit_features(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    config: AuditConfig,
    class_names: Sequence[str] | None = None,
    device: str = "cpu",
    progress: Callable[[str, float], object] | None = None,
) -> AuditResult:
    """Run one audit on features (N_train, D) / (N_test, D) with integer labels."""
    t = train_and_signal(x_train, y_train, x_test, y_test, config, class_names, device, progress)
    return attack_signals(t, config)


def audit_film(
    dataset: Dataset,
    backbone: str,
    resolution: int | None,
    config: AuditConfig,
    device: str = "cpu",
    progress: Callable[[str, float], object] | None = None,
) -> AuditResult:
    """Run one FiLM audit (``config.finetune == "film"``) on a dataset's raw images."""
    t = train_and_signal_film(dataset, backbone, resolution, config, device, progress)
    return attack_signals(t, config)


def attack_signals(t: TrainedSignals, config: AuditConfig) -> AuditResult:
    """Every attack of ``config`` on trained signals, assembled into an :class:`AuditResult`."""
    tick = time.perf_counter()
    outcomes = run_attacks(t, config)
    a = outcomes[0]
    seconds = {**t.seconds, "attack": time.perf_counter() - tick}
    return AuditResult(
        config=config,
        pool=t.pool,
        plan=t.plan,
        class_names=t.class_names,
        stats=t.stats,
        scores=a.scores,
        metrics=a.metrics,
        auc=a.auc,
        best_balanced_accuracy=a.best_balanced_accuracy,
        test_accuracy=t.test_accuracy,
        converged=t.converged,
        n_unscored=a.n_unscored,
        n_fallback_variance=a.n_fallback_variance,
        seconds=seconds,
        outcomes=outcomes,
        population_indices=t.population_indices,
        population_stats=t.population_stats,
        hpo=t.hpo,
        head=t.head,
        dp=t.dp,
        film=t.film,
    )


def save_signals(path: Path, **arrays: np.ndarray) -> None:
    """Write ``signals.npz`` (schema in docs/audit.md) atomically, compressed, with its version."""
    with atomic_path(Path(path), suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, schema_version=np.int64(SCHEMA_VERSION), **arrays)


def write_audit(
    result: AuditResult, out_dir: Path, provenance: dict, extra: dict | None = None
) -> dict:
    """Write ``audit.json`` and ``signals.npz`` (schema: docs/audit.md) atomically; return the JSON.

    ``extra`` entries (e.g. ``per_example``) are added to ``audit.json``.
    """
    import torch

    out_dir = Path(out_dir)
    doc = {
        **(extra or {}),
        **result.summary(),
        "provenance": provenance,
        "versions": {
            "miascale": __version__,
            "numpy": np.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    save_signals(
        out_dir / "signals.npz",
        stats=result.stats,
        in_mask=result.plan.in_mask,
        labels=result.pool.labels,
        scores=result.scores,
        pool_indices=result.pool.indices,
        classes=result.pool.classes,
        test_accuracy=result.test_accuracy,
        **{f"scores__{o.variant}": o.scores for o in result.outcomes},
        **(
            {}
            if result.population_stats is None
            else {
                "population_stats": result.population_stats,
                "population_indices": result.population_indices,
            }
        ),
    )
    # audit.json last: its presence means the run is complete
    atomic_write_bytes(out_dir / "audit.json", (json.dumps(doc, indent=2) + "\n").encode())
    return doc
