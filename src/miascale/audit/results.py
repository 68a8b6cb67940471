"""Typed results of an audit: trained signals, one attack's outcome, the whole audit.

:class:`TrainedSignals` is the expensive half (K models trained, their statistics and utility);
:class:`AttackOutcome` is one attack variant on them; :class:`AuditResult` assembles an audit and
renders the ``audit.json`` summary (docs/audit.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from miascale.audit.config import AuditConfig
from miascale.audit.signals import SCHEMA_VERSION, Signals
from miascale.membership import MembershipPlan
from miascale.metrics import TprAtFpr
from miascale.pool import Pool
from miascale.training.heads import HeadConfig


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


def signals_of(t: TrainedSignals | AuditResult, outcomes: tuple[AttackOutcome, ...]) -> Signals:
    """The artifact of trained signals and the attack outcomes on them (primary first)."""
    return Signals(
        stats=t.stats, in_mask=t.plan.in_mask, labels=t.pool.labels,
        scores={o.variant: o.scores for o in outcomes}, pool_indices=t.pool.indices,
        classes=t.pool.classes, test_accuracy=t.test_accuracy,
        population_stats=t.population_stats, population_indices=t.population_indices,
    )  # fmt: skip


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

    def signals(self) -> Signals:
        """The ``signals.npz`` artifact of this audit."""
        return signals_of(self, self.outcomes)
