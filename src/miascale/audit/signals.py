"""The ``signals.npz`` artifact: one typed :class:`Signals` that every writer and reader uses.

Audits (``--out``) and sweep cells (``cells/<id>/``) write it; the report, the per-example
analysis and users' scripts read it. Schema (version :data:`SCHEMA_VERSION`): docs/audit.md.
Writes are atomic; files of older versions load with the arrays they have.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from miascale.errors import MiascaleError
from miascale.paths import atomic_path

SCHEMA_VERSION = 2
FILE_NAME = "signals.npz"
_SCORES = "scores__"  # prefix of the per-variant score arrays


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write arrays to an ``.npz`` atomically, with ``schema_version``.

    Integer and boolean arrays are deflated; floating-point ones are stored as they are (their
    mantissas do not compress: deflating a cell's statistics took about 1 s of an S = 256 cell
    for 7% of the file; measured: benchmarks/README.md). ``np.load`` reads either.
    """
    arrays = {"schema_version": np.int64(SCHEMA_VERSION), **arrays}
    with atomic_path(Path(path), suffix=".npz") as tmp:
        with zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
            for name, value in arrays.items():
                value = np.asanyarray(value)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                floating = np.issubdtype(value.dtype, np.inexact)
                info.compress_type = zipfile.ZIP_STORED if floating else zipfile.ZIP_DEFLATED
                with zf.open(info, "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, value, allow_pickle=False)


def save_signals(path: Path, **arrays: np.ndarray) -> None:
    """Deprecated spelling of :func:`save_npz` (kept for scripts written against 0.1)."""
    import warnings

    warnings.warn(
        "miascale.audit.save_signals is deprecated; use Signals(...).save(path) or save_npz.",
        DeprecationWarning,
        stacklevel=2,
    )
    save_npz(path, **arrays)


@dataclass(frozen=True, eq=False)
class Signals:
    """What an audit leaves for later analyses: the statistics, membership and attack scores.

    ``scores`` maps each attack variant to its ``(K, N)`` scores (NaN = unscored), the primary
    variant first; its scores are also stored under ``scores``.
    """

    stats: np.ndarray  # float64 (K, N): LiRA statistic φ of pool example n under model k
    in_mask: np.ndarray  # bool (K, N)
    labels: np.ndarray | None = None  # int64 (N,): pool labels 0..C-1
    scores: Mapping[str, np.ndarray] = field(default_factory=dict)
    pool_indices: np.ndarray | None = None  # int64 (N,): rows of the training split
    classes: np.ndarray | None = None  # int64 (C,): original class id of each pool label
    test_accuracy: np.ndarray | None = None  # float64 (K,)
    population_stats: np.ndarray | None = None  # float64 (K, Z), RMIA only
    population_indices: np.ndarray | None = None  # int64 (Z,)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if np.shape(self.stats) != np.shape(self.in_mask) or np.ndim(self.stats) != 2:
            raise MiascaleError(
                f"Signals need stats and in_mask of one (K, N) shape, got "
                f"{np.shape(self.stats)} and {np.shape(self.in_mask)}."
            )

    @property
    def primary(self) -> str | None:
        """The primary attack variant (the first one run), or None without scores."""
        return next(iter(self.scores), None)

    @property
    def primary_scores(self) -> np.ndarray | None:
        return None if self.primary is None else self.scores[self.primary]

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays as stored (without ``schema_version``)."""
        out: dict[str, np.ndarray] = {"stats": self.stats, "in_mask": self.in_mask}
        optional = {
            "labels": self.labels,
            "scores": self.primary_scores,
            "pool_indices": self.pool_indices,
            "classes": self.classes,
            "test_accuracy": self.test_accuracy,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        out.update({f"{_SCORES}{v}": s for v, s in self.scores.items()})
        if self.population_stats is not None:
            out["population_stats"] = self.population_stats
            out["population_indices"] = self.population_indices
        return out

    def save(self, path: str | Path) -> Path:
        """Write the artifact atomically to the file ``path`` (conventionally
        ``<run>/signals.npz``, :data:`FILE_NAME`); returns the path."""
        path = Path(path)
        save_npz(path, **self.arrays())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Signals:
        """Read a ``signals.npz`` (the file or its folder); a clear error when unreadable."""
        path = Path(path)
        if path.is_dir():
            path = path / FILE_NAME
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: np.asarray(z[k]) for k in z.files}
        except FileNotFoundError:
            raise MiascaleError(f"No signals artifact at {path}.") from None
        except (OSError, ValueError) as e:
            raise MiascaleError(f"Cannot read the signals artifact {path}: {e}.") from None
        return cls.from_arrays(data, str(path))

    @classmethod
    def from_arrays(cls, data: Mapping[str, np.ndarray], source: str = "signals") -> Signals:
        version = int(data["schema_version"]) if "schema_version" in data else 1
        if version > SCHEMA_VERSION:
            raise MiascaleError(
                f"{source} has schema version {version}; this miascale reads up to "
                f"{SCHEMA_VERSION}. Upgrade miascale."
            )
        missing = [k for k in ("stats", "in_mask") if k not in data]
        if missing:
            raise MiascaleError(f"{source} has no {' or '.join(missing)}.")
        # the variants in the order written: the primary one first
        scores = {k[len(_SCORES) :]: v for k, v in data.items() if k.startswith(_SCORES)}
        if not scores and "scores" in data:  # version 1: one attack, stored as "scores"
            scores = {"scores": data["scores"]}
        get = data.get
        return cls(
            stats=data["stats"], in_mask=data["in_mask"].astype(bool), labels=get("labels"),
            scores=scores, pool_indices=get("pool_indices"),
            classes=get("classes"), test_accuracy=get("test_accuracy"),
            population_stats=get("population_stats"),
            population_indices=get("population_indices"), schema_version=version,
        )  # fmt: skip
