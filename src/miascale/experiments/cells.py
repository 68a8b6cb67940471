"""Running one sweep cell for real: cached features → K heads → every attack variant → rows.

Each cell trains its K = M + 1 heads once and runs all requested variants on the same models.
Its artifacts (``cells/<cell_id>/signals.npz``, written atomically) hold the statistics, the
membership mask and one ``scores__<variant>`` array per variant, for ROC plots and later analyses.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from miascale.attacks import Variant
from miascale.audit import (
    run_attacks,
    signals_of,
    train_and_signal,
    train_and_signal_film,
)
from miascale.audit.signals import FILE_NAME
from miascale.backbones import resolve
from miascale.backbones.cache import FeatureSet, cache_key, features_for
from miascale.data import load_dataset
from miascale.data.base import Dataset
from miascale.errors import MiascaleError
from miascale.experiments.grid import Cell, default_shots
from miascale.tails import tails


def check_variants(variants: tuple[str, ...]) -> None:
    """Every name must be a registered attack variant (an error before any work)."""
    from miascale.attacks import variant_names

    unknown = [v for v in variants if v not in variant_names()]
    if unknown:
        raise MiascaleError(
            f"Unknown attack variant(s) {unknown}; known variants: {', '.join(variant_names())}."
        )


class FeatureMemo:
    """Features per (dataset, backbone, resolution, min_per_class), loaded once per sweep."""

    def __init__(self, device: str = "cpu", quiet: bool = False):
        self.device = device
        self.quiet = quiet
        self._memo: dict[tuple, FeatureSet] = {}
        # datasets loaded for their fingerprint, until their features are made (then dropped)
        self._loaded: dict[tuple, Dataset] = {}
        self._content: dict[tuple, str] = {}  # (dataset, min_per_class) → content fingerprint
        self._fingerprints: dict[tuple, str] = {}

    def _load(self, dataset: str, min_per_class) -> Dataset:
        key = (dataset, min_per_class)
        ds = self._loaded.pop(key, None) or load_dataset(dataset, min_per_class=min_per_class)
        self._content[key] = ds.fingerprint
        return ds

    def fingerprint(self, cell: Cell) -> str:
        """The fingerprint of the data a cell is computed on: the dataset's content fingerprint
        and the backbone spec (name, resolution, preprocessing, version), as in the feature
        cache key. It changes when the data under a dataset's name changes."""
        key = (cell.dataset, cell.min_per_class, cell.backbone, cell.resolution)
        if key not in self._fingerprints:
            data = (cell.dataset, cell.min_per_class)
            if data not in self._content:
                self._loaded[data] = self._load(*data)  # kept for the features it will need
            spec = resolve(cell.backbone, cell.resolution)
            self._fingerprints[key] = cache_key(self._content[data], spec)
        return self._fingerprints[key]

    def get(
        self, dataset: str, backbone: str, resolution, min_per_class, finetune: str = "head"
    ) -> FeatureSet | Dataset:
        """The cached features of (dataset, backbone), or for FiLM cells the raw dataset."""
        key = (dataset, backbone, resolution, min_per_class, finetune)
        if key not in self._memo:
            ds = self._load(dataset, min_per_class)
            if finetune == "film":
                self._memo[key] = ds
            else:
                spec = resolve(backbone, resolution)
                self._memo[key] = features_for(ds, spec, device=self.device, quiet=self.quiet)
        return self._memo[key]

    def forget(
        self, dataset: str, backbone: str, resolution, min_per_class, finetune: str = "head"
    ) -> None:
        """Drop a feature set from the memo (the Ray backend does when its cells are done)."""
        self._memo.pop((dataset, backbone, resolution, min_per_class, finetune), None)
        self._loaded.pop((dataset, min_per_class), None)

    def shots_for(
        self, resolution, min_per_class, finetune: str = "head"
    ) -> Callable[[str, str, int | None], tuple]:
        """Default S list per (dataset, backbone, classes): 1, 2, 4, … up to the feasible max."""

        def shots(dataset: str, backbone: str, classes: int | None) -> tuple[int, ...]:
            fs = self.get(dataset, backbone, resolution, min_per_class, finetune)
            counts = np.bincount(fs.y_train)
            counts = counts[counts > 0]
            # with class subsampling the chosen classes vary by seed: use the smallest class
            return default_shots(int(counts.min()) // 2)

        return shots


def compute_cell(
    cell: Cell, fs: FeatureSet | Dataset, run_dir: Path, device: str = "cpu"
) -> tuple[list[dict], str]:
    """Run one cell on its features: train, attack, write ``cells/<id>/signals.npz``; return rows.

    FiLM cells (``cell.finetune == "film"``) get the raw :class:`Dataset` instead of features.

    A module-level function of picklable arguments, so an execution backend can ship it to a worker.
    """
    config = cell.audit_config()
    if cell.finetune == "film":
        t = train_and_signal_film(fs, cell.backbone, cell.resolution, config, device)
    else:
        t = train_and_signal(
            fs.x_train, fs.y_train, fs.x_test, fs.y_test, config, fs.class_names, device
        )
    rows: list[dict] = []
    dp_fields = {} if t.dp is None else {
        "epsilon": cell.epsilon, "accountant_epsilon": t.dp["epsilon"], "delta": t.dp["delta"],
        "noise_multiplier": t.dp["noise_multiplier"], "relation": t.dp["relation"],
        "epsilon_game": t.dp["epsilon_game"], "delta_game": t.dp["delta_game"],
    }  # fmt: skip
    hpo_fields = (
        {}
        if t.hpo is None
        else {"hpo_params": dict(t.hpo["best_params"]), "hpo_value": t.hpo["best_value"]}
    )
    # the most vulnerable examples (independent of the attack variant): quantiles, max and the
    # cross-fitted max of the separation and of the per-example advantage, with SEs and floors
    pe = tails(t.stats, t.plan.in_mask, cell.fpr, seed=cell.seed) if config.n_models >= 8 else None
    tail_by_level = {float(lvl): {} if pe is None else pe.row_fields(lvl) for lvl in cell.fpr}
    outcomes = run_attacks(t, config)
    for out in outcomes:
        attack, sub = Variant.from_name(out.variant).columns
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
                    **tail_by_level[float(m.fpr_level)],
                    **{f"attack_{k}": v for k, v in out.details.items()},
                    **hpo_fields,
                    **({"finetune": cell.finetune} if cell.finetune != "head" else {}),
                    **dp_fields,
                    **(
                        {}
                        if out.empirical_epsilon is None
                        else {
                            "empirical_epsilon": out.empirical_epsilon["epsilon_lb"],
                            "empirical_epsilon_delta": out.empirical_epsilon["delta"],
                        }
                    ),
                }
            )  # fmt: skip
    rel = Path("cells") / cell.cell_id
    signals_of(t, outcomes).save(run_dir / rel / FILE_NAME)
    return rows, str(rel)


def make_run_cell(
    run_dir: Path,
    memo: FeatureMemo,
    device: str = "cpu",
    compute: Callable[..., tuple[list[dict], str | None]] | None = None,
) -> Callable[[Cell], tuple[list[dict], str | None]]:
    """The local backend's cell runner: features from ``memo``, then ``compute`` (default
    :func:`compute_cell`; tests inject a fake with the same signature)."""
    compute = compute or compute_cell

    def run_cell(cell: Cell) -> tuple[list[dict], str | None]:
        fs = memo.get(
            cell.dataset, cell.backbone, cell.resolution, cell.min_per_class, cell.finetune
        )
        return compute(cell, fs, run_dir, device)

    return run_cell
