"""What the sweep report reads from a run directory: :class:`RunData` and its loaders."""

from __future__ import annotations

import json
import platform
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from miascale.audit.signals import FILE_NAME, Signals
from miascale.errors import MiascaleError
from miascale.report.common import group_key
from miascale.scaling import ScalingFit, fit_power_law

FIT_NAME = "fit.json"


@dataclass
class RunData:
    """Everything the report shows, read from a run directory."""

    run_dir: Path
    meta: dict[str, Any]
    spec: dict[str, Any]
    rows: list[dict]
    cells: list[dict]
    fit: ScalingFit | None
    fit_source: str  # where the fit came from, or why there is none

    @property
    def levels(self) -> list[tuple[str, str, float]]:
        """``(attack, variant, fpr_level)`` of the rows, sorted."""
        return sorted({(r["attack"], r["variant"], float(r["fpr_level"])) for r in self.rows})

    @property
    def attack_variants(self) -> list[tuple[str, str]]:
        return sorted({(r["attack"], r["variant"]) for r in self.rows})

    @property
    def plain_rows(self) -> list[dict]:
        """Rows of ordinarily (non-DP) trained cells."""
        return [r for r in self.rows if r.get("epsilon") is None]

    @property
    def dp_rows(self) -> list[dict]:
        return [r for r in self.rows if r.get("epsilon") is not None]

    @property
    def plain_attack_variants(self) -> list[tuple[str, str]]:
        return sorted({(r["attack"], r["variant"]) for r in self.plain_rows})

    @property
    def groups(self) -> list[tuple[str, str, int | None]]:
        """``(dataset, backbone, classes)`` of the rows, sorted (``classes=None``: all, last)."""
        return sorted(
            {(r["dataset"], r["backbone"], r["classes"]) for r in self.rows}, key=group_key
        )


def _read_fit_json(path: Path) -> ScalingFit:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MiascaleError(
            f"Cannot read the scaling fit {path}: {e}. Delete the file to let the report refit the "
            f"sweep results, or write it again with miascale."
        ) from None
    try:
        return ScalingFit.from_dict(data)
    except MiascaleError as e:
        raise MiascaleError(
            f"{path}: {e} (or delete the file to let the report refit the results)"
        ) from None


def _compute_fit(rows: list[dict]) -> tuple[ScalingFit | None, str]:
    from miascale.experiments.workflows import with_classes

    try:
        return fit_power_law(
            with_classes(rows)
        ), f"fitted by the report from {len(rows)} result rows"
    except MiascaleError as e:
        return None, f"the power law could not be fitted: {e}"


def load_run(run_dir: str | Path) -> RunData:
    """Read a sweep run directory; raises :class:`MiascaleError` when it holds no results."""
    from miascale.experiments.store import ResultStore

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MiascaleError(
            f"The run directory {run_dir} does not exist. Give the --out directory of a "
            f"`miascale sweep` run."
        )
    with ResultStore.load(run_dir) as store:
        meta = store.meta()
        rows = store.rows()
        cells = store.cells()
    if not rows:
        raise MiascaleError(
            f"The sweep in {run_dir} has no finished cells yet ({len(cells)} recorded, none with "
            f"results), so there is nothing to report. Run (or resume) `miascale sweep` with this "
            f"--out first."
        )
    from miascale.experiments.workflows import relabel_dp

    relabel_dp(rows)  # DP cells: their own series and laws, labelled with their ε
    fit_path = run_dir / FIT_NAME
    if fit_path.is_file():
        fit, source = _read_fit_json(fit_path), f"read from {FIT_NAME}"
    else:
        fit, source = _compute_fit(rows)
    spec = meta.get("spec") if isinstance(meta.get("spec"), dict) else {}
    return RunData(run_dir, meta, spec, rows, cells, fit, source)


def _resolve_artifacts(run_dir: Path, artifacts: str | None) -> Path | None:
    if not artifacts:
        return None
    p = Path(artifacts)
    return p if p.is_absolute() else run_dir / p


def _load_signals(folder: Path) -> Signals:
    """A cell's ``signals.npz``; ``ValueError`` (shown as a note) when missing or unreadable."""
    path = folder / FILE_NAME
    if not path.is_file():
        raise ValueError(f"{path} is missing")
    try:
        return Signals.load(path)
    except (MiascaleError, KeyError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is unreadable ({e})") from None


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def package_versions() -> dict[str, str]:
    """Versions of miascale and the libraries behind the numbers (without importing torch)."""
    import matplotlib

    import miascale

    return {
        "miascale": miascale.__version__,
        "numpy": np.__version__,
        "torch": _version("torch"),
        "matplotlib": matplotlib.__version__,
        "statsmodels": _version("statsmodels"),
        "python": platform.python_version(),
    }
