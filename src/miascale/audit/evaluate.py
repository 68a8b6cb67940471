"""Attacks on trained signals → metrics (attacks never compute metrics; this module does).

Each attack variant comes from the registry (:mod:`miascale.attacks.registry`); its scores are
evaluated once by :class:`miascale.metrics.Evaluation` (TPR@FPR with the bootstrap over pool
examples, AUC, balanced accuracy, empirical ε).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, replace

import numpy as np

from miascale.attacks import Variant, parse_variants
from miascale.audit.config import AuditConfig
from miascale.audit.results import AttackOutcome, AuditResult, TrainedSignals
from miascale.errors import MiascaleError
from miascale.metrics import Evaluation


def evaluate_scores(
    variant: str,
    scores: np.ndarray,
    in_mask: np.ndarray,
    fpr: Sequence[float],
    *,
    n_fallback_variance: int = 0,
    details: dict | None = None,
    epsilon_delta: float | None = None,
    bootstrap: int = 200,
    bootstrap_seed: int = 0,
) -> AttackOutcome:
    """Metrics of one variant's ``(K, N)`` scores (NaN = unscored, left out of the metrics)."""
    scored = np.isfinite(scores)
    example = np.broadcast_to(np.arange(scores.shape[-1]), scores.shape)[scored]
    ev = Evaluation(scores[scored], in_mask[scored], groups=example)
    eps = None if epsilon_delta is None else ev.empirical_epsilon(epsilon_delta).to_dict()
    return AttackOutcome(
        variant=variant,
        scores=scores,
        metrics=ev.tpr_at_fpr(fpr, n_boot=bootstrap, seed=bootstrap_seed),
        auc=ev.auc(),
        best_balanced_accuracy=ev.best_balanced_accuracy(),
        n_unscored=int((~scored).sum()),
        n_fallback_variance=n_fallback_variance,
        details=details or {},
        empirical_epsilon=eps,
    )


def run_attack(
    stats: np.ndarray,
    in_mask: np.ndarray,
    fpr: Sequence[float],
    *,
    variant: str = "lira-online",
    config: AuditConfig | None = None,
    population_stats: np.ndarray | None = None,
    epsilon_delta: float | None = None,
    **settings,
) -> AttackOutcome:
    """Score every (target, example) pair with one attack variant and compute the metrics.

    The attack's options come from ``config`` (an :class:`AuditConfig`; ``settings`` override
    its fields, e.g. ``variance="global"``, ``rmia_gamma=2``, ``bootstrap=0``). TPR@FPR's
    interval is a bootstrap over pool examples with all their target pairs (``config.bootstrap``
    resamples, seeded by ``config.seed``; 0 = Clopper-Pearson only). With ``epsilon_delta`` the
    outcome also holds the empirical lower bound on ε at that δ.
    """
    v = Variant.from_name(variant)
    seed = settings.pop("bootstrap_seed", None)
    fields = {"shots": 1, **settings} if config is None else settings
    config = AuditConfig(**fields) if config is None else _replace(config, fields)
    spec = v.spec
    if spec.needs_population and population_stats is None:
        raise MiascaleError(f"{spec.name} needs population statistics (train_and_signal "
                            f"computes them when such an attack is requested).")  # fmt: skip
    options = None if spec.options is None else spec.options.from_config(config)
    res = spec.fn(stats, in_mask, population_stats=population_stats, **v.call_kwargs,
                  **({} if options is None else asdict(options)))  # fmt: skip
    details = {} if spec.details is None else spec.details(res, options, v)
    return evaluate_scores(
        v.name, np.asarray(res.scores, dtype=float), in_mask, fpr,
        n_fallback_variance=int(getattr(res, "n_fallback_variance", 0)), details=details,
        epsilon_delta=epsilon_delta, bootstrap=config.bootstrap,
        bootstrap_seed=config.seed if seed is None else seed,
    )  # fmt: skip


def _replace(config: AuditConfig, fields: dict) -> AuditConfig:
    return replace(config, **fields) if fields else config


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
            variant=v.name,
            config=config,
            population_stats=t.population_stats,
            epsilon_delta=delta,
        )
        for v in parse_variants(config.variants)
    )


def attack_signals(t: TrainedSignals, config: AuditConfig) -> AuditResult:
    """Every attack of ``config`` on trained signals, assembled into an :class:`AuditResult`."""
    tick = time.perf_counter()
    outcomes = run_attacks(t, config)
    a = outcomes[0]
    return AuditResult(
        config=config, pool=t.pool, plan=t.plan, class_names=t.class_names, stats=t.stats,
        scores=a.scores, metrics=a.metrics, auc=a.auc,
        best_balanced_accuracy=a.best_balanced_accuracy, test_accuracy=t.test_accuracy,
        converged=t.converged, n_unscored=a.n_unscored,
        n_fallback_variance=a.n_fallback_variance,
        seconds={**t.seconds, "attack": time.perf_counter() - tick}, outcomes=outcomes,
        population_indices=t.population_indices, population_stats=t.population_stats,
        hpo=t.hpo, head=t.head, dp=t.dp, film=t.film,
    )  # fmt: skip
