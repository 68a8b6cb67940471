"""Running one sweep cell for real: cached features → K heads → every attack variant → rows.

Each cell trains its K = M + 1 heads once and runs all requested variants on the same models.
Its artifacts (``cells/<cell_id>/signals.npz``, written atomically) hold the statistics, the
membership mask and one ``scores__<variant>`` array per variant, for ROC plots and later analyses.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from miascale.audit import AuditConfig, run_attack, save_signals, train_and_signal
from miascale.backbones import resolve
from miascale.backbones.cache import FeatureSet, features_for
from miascale.data import load_dataset
from miascale.errors import MiascaleError
from miascale.experiments.grid import Cell, default_shots
from miascale.training.heads import HeadConfig
from miascale.vulnerability import cross_fitted_tail, tail_fields

# variant name → keyword arguments of run_attack
VARIANTS: dict[str, dict] = {
    "lira-online": {"attack": "lira", "lira_variant": "online"},
    "lira-offline": {"attack": "lira", "lira_variant": "offline"},
}


def check_variants(variants: tuple[str, ...]) -> None:
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise MiascaleError(
            f"Unknown attack variant(s) {unknown}; known variants: {', '.join(VARIANTS)}."
        )


class FeatureMemo:
    """Features per (dataset, backbone, resolution, min_per_class), loaded once per sweep."""

    def __init__(self, device: str = "cpu", quiet: bool = False):
        self.device = device
        self.quiet = quiet
        self._memo: dict[tuple, FeatureSet] = {}

    def get(self, dataset: str, backbone: str, resolution, min_per_class) -> FeatureSet:
        key = (dataset, backbone, resolution, min_per_class)
        if key not in self._memo:
            spec = resolve(backbone, resolution)
            ds = load_dataset(dataset, min_per_class=min_per_class)
            self._memo[key] = features_for(ds, spec, device=self.device, quiet=self.quiet)
        return self._memo[key]

    def shots_for(self, resolution, min_per_class) -> Callable[[str, str, int | None], tuple]:
        """Default S list per (dataset, backbone, classes): 1, 2, 4, … up to the feasible max."""

        def shots(dataset: str, backbone: str, classes: int | None) -> tuple[int, ...]:
            fs = self.get(dataset, backbone, resolution, min_per_class)
            counts = np.bincount(fs.y_train)
            counts = counts[counts > 0]
            # with class subsampling the chosen classes vary by seed: use the smallest class
            return default_shots(int(counts.min()) // 2)

        return shots


def compute_cell(
    cell: Cell, fs: FeatureSet, run_dir: Path, device: str = "cpu"
) -> tuple[list[dict], str]:
    """Run one cell on its features: train, attack, write ``cells/<id>/signals.npz``; return rows.

    A module-level function of picklable arguments, so an execution backend can ship it to a worker.
    """
    config = AuditConfig(
        shots=cell.shots, classes=cell.classes, shadow_models=cell.shadow_models,
        membership=cell.membership, fpr=tuple(cell.fpr), seed=cell.seed,
        head=HeadConfig(l2=cell.l2),
    )  # fmt: skip
    t = train_and_signal(
        fs.x_train, fs.y_train, fs.x_test, fs.y_test, config, fs.class_names, device
    )
    rows: list[dict] = []
    arrays: dict[str, np.ndarray] = {}
    # per-example tail (model-agnostic of the attack variant): naive and cross-fitted
    tails = {
        float(lvl): tail_fields(cross_fitted_tail(t.stats, t.plan.in_mask, lvl, seed=cell.seed))
        if config.n_models >= 8
        else {}
        for lvl in cell.fpr
    }
    for variant in cell.variants:
        out = run_attack(t.stats, t.plan.in_mask, cell.fpr, **VARIANTS[variant])
        arrays[f"scores__{variant}"] = out.scores
        attack, _, sub = variant.partition("-")
        for m in out.metrics:
            rows.append(
                {
                    **m.to_dict(),
                    "threshold": float(m.threshold) if np.isfinite(m.threshold) else None,
                    "dataset": cell.dataset, "backbone": cell.backbone,
                    "classes": cell.classes, "shots": cell.shots, "seed": cell.seed,
                    "attack": attack, "variant": sub, "auc": out.auc,
                    "best_balanced_accuracy": out.best_balanced_accuracy,
                    "test_accuracy": float(t.test_accuracy.mean()),
                    "n_classes": t.pool.n_classes, "unscored_pairs": out.n_unscored,
                    "converged": t.converged, "n_models": config.n_models,
                    **tails[float(m.fpr_level)],
                }
            )  # fmt: skip
    rel = Path("cells") / cell.cell_id
    save_signals(
        run_dir / rel / "signals.npz",
        stats=t.stats,
        in_mask=t.plan.in_mask,
        labels=t.pool.labels,
        scores=arrays[f"scores__{cell.variants[0]}"],
        pool_indices=t.pool.indices,
        classes=t.pool.classes,
        test_accuracy=t.test_accuracy,
        **arrays,
    )
    return rows, str(rel)


def make_run_cell(
    run_dir: Path, memo: FeatureMemo, device: str = "cpu"
) -> Callable[[Cell], tuple[list[dict], str | None]]:
    """The local backend's cell runner: features from ``memo``, then :func:`compute_cell`."""

    def run_cell(cell: Cell) -> tuple[list[dict], str | None]:
        fs = memo.get(cell.dataset, cell.backbone, cell.resolution, cell.min_per_class)
        return compute_cell(cell, fs, run_dir, device)

    return run_cell
