"""One audit: pool → membership plan → K models at once → attacks → TPR@FPR (DESIGN §1, §3, §5).

- :mod:`.config` — :class:`AuditConfig` (validated on construction) and attack naming;
- :mod:`.trainers` / :mod:`.train` — the trainer protocol (exact, DP, FiLM) and the one pipeline;
- :mod:`.evaluate` — attacks from the registry → metrics (:class:`miascale.metrics.Evaluation`);
- :mod:`.results` — the typed results; :mod:`.signals` — the ``signals.npz`` artifact.

:func:`audit_features` and :func:`audit_film` are pure (arrays in, a frozen :class:`AuditResult`
out); :func:`write_audit` is the I/O edge that writes ``audit.json`` and ``signals.npz``.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from miascale import __version__
from miascale.attacks.registry import variant_columns
from miascale.audit.config import (
    DEFAULT_FPR,
    DEFAULT_POPULATION,
    FINETUNE_MODES,
    LIRA_VARIANTS,
    AuditConfig,
    dp_variant,
    expand_attacks,
)
from miascale.audit.evaluate import attack_signals, evaluate_scores, run_attack, run_attacks
from miascale.audit.results import AttackOutcome, AuditResult, TrainedSignals, signals_of
from miascale.audit.signals import FILE_NAME, SCHEMA_VERSION, Signals, save_npz, save_signals
from miascale.audit.train import (
    population_indices,
    train_and_signal,
    train_and_signal_film,
    train_and_signal_with,
)
from miascale.audit.trainers import DPHeads, ExactHeads, FilmModels, Trainer
from miascale.data.base import Dataset
from miascale.paths import atomic_write_bytes

__all__ = [
    "DEFAULT_FPR",
    "DEFAULT_POPULATION",
    "FINETUNE_MODES",
    "LIRA_VARIANTS",
    "SCHEMA_VERSION",
    "AttackOutcome",
    "AuditConfig",
    "AuditResult",
    "DPHeads",
    "ExactHeads",
    "FilmModels",
    "Signals",
    "TrainedSignals",
    "Trainer",
    "attack_signals",
    "audit_features",
    "audit_film",
    "dp_variant",
    "evaluate_scores",
    "expand_attacks",
    "population_indices",
    "run_attack",
    "run_attacks",
    "save_npz",
    "save_signals",
    "signals_of",
    "train_and_signal",
    "train_and_signal_film",
    "train_and_signal_with",
    "variant_columns",
    "write_audit",
]


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


def write_audit(
    result: AuditResult, out_dir: Path, provenance: dict, extra: dict | None = None
) -> dict:
    """Write ``signals.npz`` then ``audit.json`` (schema: docs/audit.md) atomically; return the
    JSON. ``extra`` entries (e.g. ``per_example``) are added to ``audit.json``."""
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
    result.signals().save(out_dir / FILE_NAME)
    # audit.json last: its presence means the run is complete
    atomic_write_bytes(out_dir / "audit.json", (json.dumps(doc, indent=2) + "\n").encode())
    return doc
