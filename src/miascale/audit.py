"""One audit: pool → membership plan → K heads at once → LiRA → TPR@FPR (DESIGN §1, §3, §5).

:func:`audit_features` is pure (arrays in, a frozen :class:`AuditResult` out); :func:`write_audit`
is the I/O edge that writes ``audit.json`` and ``signals.npz`` atomically.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from miascale import __version__
from miascale.attacks import get_attack
from miascale.backbones.cache import check_finite
from miascale.errors import MiascaleError
from miascale.membership import MembershipPlan, make_plan
from miascale.metrics import TprAtFpr, auc, best_balanced_accuracy, tpr_at_fpr
from miascale.paths import atomic_path, atomic_write_bytes
from miascale.pool import Pool, draw_pool
from miascale.signals import lira_statistic
from miascale.training.heads import HeadConfig, head_logits, train_heads

SCHEMA_VERSION = 1
DEFAULT_FPR = (0.1, 0.01, 0.001)
LIRA_VARIANTS = ("online", "offline")


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

    @property
    def n_models(self) -> int:
        return self.shadow_models + 1

    def validate(self) -> AuditConfig:
        from miascale.attacks.lira import LOCATIONS, VARIANCES

        if not isinstance(self.shots, int) or self.shots < 1:
            raise MiascaleError(f"--shots must be a positive integer, got {self.shots!r}.")
        if self.shadow_models < 2:
            raise MiascaleError(
                f"--shadow-models must be at least 2 (LiRA fits IN and OUT distributions from the "
                f"shadow models; 64 or more is typical), got {self.shadow_models}."
            )
        if self.classes is not None and self.classes < 2:
            raise MiascaleError(f"--classes must be at least 2, got {self.classes}.")
        get_attack(self.attack)
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
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["n_models"] = self.n_models
        d["fpr"] = list(self.fpr)
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

    tick = time.perf_counter()
    report = None if progress is None else (lambda it, g: progress("train", it))
    heads = train_heads(
        features, pool.labels, plan.in_mask, pool.n_classes, config.head, device=device,
        progress=report,
    )  # fmt: skip
    timings["train"] = time.perf_counter() - tick

    tick = time.perf_counter()
    stats = lira_statistic(head_logits(heads, features), pool.labels)
    # utility: each model on the test examples of the pool's classes
    remap = np.full(n_all, -1, dtype=np.int64)
    remap[pool.classes] = np.arange(pool.n_classes)
    keep = remap[y_test] >= 0
    test_acc = np.zeros(config.n_models)
    if keep.any():
        test_logits = head_logits(heads, np.asarray(x_test[keep]))
        test_acc = (test_logits.argmax(-1) == remap[y_test[keep]][None, :]).mean(axis=1)
    timings["signals"] = time.perf_counter() - tick
    names = tuple(
        (class_names[c] if class_names is not None else str(c)) for c in pool.classes.tolist()
    )
    return TrainedSignals(pool, plan, names, stats, test_acc, int(heads.converged.sum()), timings)


def run_attack(
    stats: np.ndarray,
    in_mask: np.ndarray,
    fpr: Sequence[float],
    *,
    attack: str = "lira",
    lira_variant: str = "online",
    variance: str = "per-example",
    location: str = "mean",
) -> AttackOutcome:
    """Score every (target, example) pair with one attack variant and compute the metrics."""
    if lira_variant not in LIRA_VARIANTS:
        raise MiascaleError(
            f"Unknown LiRA variant {lira_variant!r}; choose one of {', '.join(LIRA_VARIANTS)}."
        )
    res = get_attack(attack)(
        stats, in_mask, online=lira_variant == "online", variance=variance, location=location
    )
    scored = np.isfinite(res.scores)
    s, lab = res.scores[scored], in_mask[scored]
    return AttackOutcome(
        variant=f"{attack}-{lira_variant}",
        scores=res.scores,
        metrics=tpr_at_fpr(s, lab, fpr),
        auc=auc(s, lab),
        best_balanced_accuracy=best_balanced_accuracy(s, lab),
        n_unscored=int((~scored).sum()),
        n_fallback_variance=int(res.n_fallback_variance),
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
    tick = time.perf_counter()
    a = run_attack(
        t.stats, t.plan.in_mask, config.fpr, attack=config.attack,
        lira_variant=config.lira_variant, variance=config.variance, location=config.location,
    )  # fmt: skip
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
    )
    # audit.json last: its presence means the run is complete
    atomic_write_bytes(out_dir / "audit.json", (json.dumps(doc, indent=2) + "\n").encode())
    return doc
