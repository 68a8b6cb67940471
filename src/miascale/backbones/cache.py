"""Feature extraction in bounded-memory batches, cached on disk (atomic ``.npz`` files).

Cache key and when a cached file is served: ``docs/design/backbones.md`` (feature cache).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from miascale.backbones import IDENTITY_SPEC, load_extractor
from miascale.backbones.base import BackboneSpec, Extractor
from miascale.console import progress_bar
from miascale.data.base import Dataset, take
from miascale.errors import MiascaleError
from miascale.paths import atomic_path, cache_dir

CACHE_FORMAT = 1


@dataclass(frozen=True)
class FeatureSet:
    """Features of a dataset's train and test split under one backbone."""

    dataset: str
    backbone: BackboneSpec
    x_train: np.ndarray  # float32 (N_train, D)
    y_train: np.ndarray  # int64 (N_train,)
    x_test: np.ndarray  # float32 (N_test, D)
    y_test: np.ndarray  # int64 (N_test,)
    class_names: tuple[str, ...]
    dataset_fingerprint: str
    key: str
    path: Path | None
    from_cache: bool
    seconds: float

    @property
    def dim(self) -> int:
        return int(self.x_train.shape[1])

    def summary(self) -> dict:
        return {
            "dataset": self.dataset,
            "backbone": self.backbone.config(),
            "n_classes": len(self.class_names),
            "train_shape": list(self.x_train.shape),
            "test_shape": list(self.x_test.shape),
            "dataset_fingerprint": self.dataset_fingerprint,
            "cache_key": self.key,
            "cache_path": None if self.path is None else str(self.path),
            "from_cache": self.from_cache,
            "seconds": round(self.seconds, 3),
        }


def cache_key(dataset_fingerprint: str, spec: BackboneSpec) -> str:
    blob = json.dumps(
        {"format": CACHE_FORMAT, "dataset": dataset_fingerprint, "backbone": spec.config()},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cache_path(dataset: Dataset, spec: BackboneSpec, key: str, root: Path | None = None) -> Path:
    safe = lambda s: re.sub(r"[^A-Za-z0-9._=-]+", "_", s)[:60]  # noqa: E731
    root = root or cache_dir() / "features"
    return root / f"{safe(dataset.name)}--{safe(spec.name)}--{key}.npz"


def check_finite(x: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise MiascaleError(
            f"{what}: {int(bad.sum())} NaN/inf values in {len(rows)} rows (first: {rows[:5].tolist()}). "
            "miascale never passes NaN to a trainer; clean the inputs."
        )


def extract(
    extractor: Extractor, inputs, batch_size: int | None = None, desc: str = "", quiet: bool = False
) -> np.ndarray:
    """Embed ``inputs`` batch by batch into a preallocated float32 array, with a progress bar."""
    n = len(inputs)
    bs = batch_size or extractor.batch_size
    out = np.empty((n, extractor.dim), dtype=np.float32)
    with progress_bar(disable=quiet) as bar:
        task = bar.add_task(desc or "extracting", total=n)
        for start in range(0, n, bs):
            idx = np.arange(start, min(start + bs, n))
            out[idx] = extractor.embed(take(inputs, idx))
            bar.advance(task, len(idx))
    check_finite(out, f"features from {extractor.spec.name}")
    return out


def features_sha256(x_train: np.ndarray, x_test: np.ndarray) -> str:
    """sha256 over both feature arrays (dtype, shape and bytes), stored in each cache file."""
    h = hashlib.sha256()
    for x in (x_train, x_test):
        h.update(f"{x.dtype.str}|{x.shape}|".encode())
        h.update(np.ascontiguousarray(x).data)
    return h.hexdigest()


def _cache_problem(z: dict, dataset: Dataset, key: str) -> str | None:
    """Why a cache file under ``key`` does not hold ``dataset``'s features (None: it does)."""
    try:
        if str(z["key"]) != key:
            return "its key differs"
        xtr, xte = z["x_train"], z["x_test"]
        if xtr.ndim != 2 or xte.ndim != 2 or xtr.shape[1] != xte.shape[1]:
            return f"its feature arrays have shapes {xtr.shape} and {xte.shape}"
        if len(xtr) != dataset.n_train or len(xte) != dataset.n_test:
            return (
                f"it holds {len(xtr)} + {len(xte)} rows for a dataset of {dataset.n_train} + "
                f"{dataset.n_test} examples"
            )
        if not (
            np.array_equal(z["y_train"], dataset.y_train)
            and np.array_equal(z["y_test"], dataset.y_test)
        ):
            return "its labels differ from the dataset's"
        if "x_sha256" in z and str(z["x_sha256"]) != features_sha256(xtr, xte):
            return "its features do not match their recorded checksum"
    except KeyError as e:
        return f"it lacks the array {e}"
    return None


def _load_cached(path: Path) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
        return None  # unreadable cache entries are recomputed and replaced


def features_for(
    dataset: Dataset,
    spec: BackboneSpec,
    *,
    device: str = "cpu",
    batch_size: int | None = None,
    use_cache: bool = True,
    root: Path | None = None,
    quiet: bool = False,
) -> FeatureSet:
    """Features of ``dataset`` under ``spec``; served from the cache when present."""
    if spec.modality != dataset.modality:
        raise MiascaleError(
            f"Backbone {spec.name!r} takes {spec.modality} inputs but dataset {dataset.name!r} holds "
            f"{dataset.modality}. Use efficientnet-lite0 or hf:<vision model> for images, minilm "
            "or hf:<text model> for text, identity for feature arrays."
        )
    t0 = time.perf_counter()
    common = dict(
        dataset=dataset.name,
        backbone=spec,
        y_train=dataset.y_train,
        y_test=dataset.y_test,
        class_names=dataset.class_names,
        dataset_fingerprint=dataset.fingerprint,
    )
    if spec == IDENTITY_SPEC:
        xtr = np.asarray(dataset.x_train, dtype=np.float32)
        xte = np.asarray(dataset.x_test, dtype=np.float32)
        return FeatureSet(
            **common, x_train=xtr, x_test=xte, key="identity", path=None, from_cache=False,
            seconds=time.perf_counter() - t0,
        )  # fmt: skip
    key = cache_key(dataset.fingerprint, spec)
    path = cache_path(dataset, spec, key, root)
    if use_cache and path.is_file():
        z = _load_cached(path)
        problem = None if z is None else _cache_problem(z, dataset, key)
        if z is not None and problem is None:
            return FeatureSet(
                **common, x_train=z["x_train"], x_test=z["x_test"], key=key, path=path,
                from_cache=True, seconds=time.perf_counter() - t0,
            )  # fmt: skip
        if z is not None and not quiet:
            from miascale.console import err

            err.print(
                f"feature cache {path} does not match {dataset.name} ({problem}); recomputing "
                f"and replacing it.",
                markup=False, highlight=False,
            )  # fmt: skip
    extractor = load_extractor(spec, device)
    xtr = extract(extractor, dataset.x_train, batch_size, f"{dataset.name} train", quiet)
    xte = extract(extractor, dataset.x_test, batch_size, f"{dataset.name} test", quiet)
    if use_cache:
        meta = json.dumps({"dataset": dataset.summary(), "backbone": spec.config()})
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh, x_train=xtr, y_train=dataset.y_train, x_test=xte, y_test=dataset.y_test,
                    key=np.array(key), meta=np.array(meta),
                    x_sha256=np.array(features_sha256(xtr, xte)),
                )  # fmt: skip
    return FeatureSet(
        **common, x_train=xtr, x_test=xte, key=key, path=path if use_cache else None,
        from_cache=False, seconds=time.perf_counter() - t0,
    )  # fmt: skip
