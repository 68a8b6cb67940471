"""The dataset type every loader returns, its validation and its content fingerprint."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from miascale.errors import MiascaleError

Modality = Literal["image", "text", "features"]


@dataclass(frozen=True)
class Dataset:
    """A labelled dataset with a train/test split.

    ``x_train``/``x_test`` hold, by modality:

    - ``image``: a uint8 array (N, H, W) or (N, H, W, 3), or a list of such arrays when sizes differ;
    - ``text``: a list of strings;
    - ``features``: a float array (N, D).

    Labels are int64 in ``0 .. n_classes-1``; ``class_names[c]`` names class ``c``. ``fingerprint`` is a
    sha256 over the content (inputs, labels, class names, split), stable across machines and runs.
    """

    name: str
    modality: Modality
    x_train: object
    y_train: np.ndarray
    x_test: object
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str
    fingerprint: str = field(default="")

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def n_test(self) -> int:
        return len(self.y_test)

    def class_counts(self) -> np.ndarray:
        """Training examples per class, shape (n_classes,)."""
        return np.bincount(self.y_train, minlength=self.n_classes)

    def summary(self) -> dict:
        return {
            "name": self.name,
            "modality": self.modality,
            "n_classes": self.n_classes,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "class_names": list(self.class_names),
            "min_train_per_class": int(self.class_counts().min()),
            "fingerprint": self.fingerprint,
            "source": self.source,
        }


def _hash_inputs(h: hashlib._Hash, x: object, modality: str) -> None:
    if modality == "text":
        for s in x:  # type: ignore[union-attr]
            b = s.encode("utf-8")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
    elif isinstance(x, np.ndarray):
        h.update(str(x.dtype).encode())
        h.update(repr(x.shape).encode())
        h.update(np.ascontiguousarray(x).tobytes())
    else:  # list of arrays (images of varying size)
        for a in x:  # type: ignore[union-attr]
            a = np.asarray(a)
            h.update(repr(a.shape).encode())
            h.update(np.ascontiguousarray(a).tobytes())


def fingerprint(ds: Dataset) -> str:
    h = hashlib.sha256()
    h.update(f"miascale-dataset-v1|{ds.modality}|".encode())
    h.update("\x1f".join(ds.class_names).encode("utf-8"))
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        h.update(b"|split|")
        _hash_inputs(h, x, ds.modality)
        h.update(np.ascontiguousarray(y, dtype="<i8").tobytes())
    return h.hexdigest()


def as_labels(y: object, what: str) -> np.ndarray:
    """Validate and convert labels to int64; reject non-integer values with a clear message."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise MiascaleError(f"{what}: labels must be a 1-D array, got shape {arr.shape}.")
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "b":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            bad = arr[~(np.isfinite(arr) & (arr == np.round(arr)))][:3]
            raise MiascaleError(
                f"{what}: labels must be integers, found non-integer values such as {bad.tolist()}. "
                "Encode classes as integers 0..C-1 (or strings, which are mapped to integers)."
            )
        return arr.astype(np.int64)
    raise MiascaleError(
        f"{what}: labels have dtype {arr.dtype}; expected integers. Encode classes as integers 0..C-1."
    )


def encode_labels(
    y_train: np.ndarray, y_test: np.ndarray, names: Sequence[str] | None, what: str
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Map arbitrary integer or string labels to 0..C-1 (sorted), returning class names."""
    y_train = np.asarray(y_train)
    y_test = np.asarray(y_test)
    if y_train.dtype.kind in "USO":
        classes = sorted(set(y_train.tolist()) | set(y_test.tolist()))
        index = {c: i for i, c in enumerate(classes)}
        ytr = np.array([index[c] for c in y_train.tolist()], dtype=np.int64)
        yte = np.array([index[c] for c in y_test.tolist()], dtype=np.int64)
        return ytr, yte, tuple(str(c) for c in classes)
    ytr = as_labels(y_train, what)
    yte = as_labels(y_test, what) if len(y_test) else y_test.astype(np.int64)
    if names is not None:
        if ytr.min() < 0 or max(ytr.max(), yte.max(initial=0)) >= len(names):
            raise MiascaleError(
                f"{what}: labels range {ytr.min()}..{ytr.max()} does not fit the {len(names)} class names."
            )
        return ytr, yte, tuple(str(n) for n in names)
    classes = np.unique(np.concatenate([ytr, yte]))
    remap = {int(c): i for i, c in enumerate(classes)}
    ytr = np.array([remap[int(c)] for c in ytr], dtype=np.int64)
    yte = np.array([remap[int(c)] for c in yte], dtype=np.int64)
    return ytr, yte, tuple(str(int(c)) for c in classes)


def validate(ds: Dataset) -> Dataset:
    """Check a dataset for problems a user must hear about; return it with its fingerprint set."""
    n_train = len(ds.y_train)
    if len(ds.x_train) != n_train or len(ds.x_test) != len(ds.y_test):  # type: ignore[arg-type]
        raise MiascaleError(
            f"Dataset {ds.name!r}: {len(ds.x_train)} training inputs but {n_train} labels "  # type: ignore[arg-type]
            f"(test: {len(ds.x_test)} inputs, {len(ds.y_test)} labels). Inputs and labels must pair up."  # type: ignore[arg-type]
        )
    if n_train == 0:
        raise MiascaleError(f"Dataset {ds.name!r} has no training examples.")
    present = np.unique(ds.y_train)
    if len(present) < 2:
        raise MiascaleError(
            f"Dataset {ds.name!r} has a single class ({ds.class_names[present[0]]!r}) in its training "
            "split; membership audits of a classifier need at least two classes."
        )
    absent = np.setdiff1d(np.unique(ds.y_test), present)
    if len(absent):
        from miascale.console import err

        n_bad = int(np.isin(ds.y_test, absent).sum())
        names = ", ".join(repr(ds.class_names[c]) for c in absent[:5])
        err.print(
            f"warning: dataset {ds.name!r}: {n_bad} of {len(ds.y_test)} test examples belong to "
            f"{len(absent)} class(es) absent from the training split ({names}"
            f"{', …' if len(absent) > 5 else ''}); no classifier trained on this data can predict "
            f"them, so they count as errors in the test accuracy.",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
    if ds.modality == "features":
        for split, x in (("train", ds.x_train), ("test", ds.x_test)):
            x = np.asarray(x)
            if x.ndim != 2:
                raise MiascaleError(
                    f"Dataset {ds.name!r}: features must be a 2-D array (examples × dims), "
                    f"got shape {x.shape} in the {split} split."
                )
            bad = ~np.isfinite(x)
            if bad.any():
                rows = np.unique(np.nonzero(bad)[0])
                raise MiascaleError(
                    f"Dataset {ds.name!r}: {int(bad.sum())} NaN/inf feature values in "
                    f"{len(rows)} {split} examples (first rows: {rows[:5].tolist()}). Clean or drop "
                    "them before auditing; miascale never feeds NaN to a trainer."
                )
    fp = fingerprint(ds)
    return Dataset(**{**ds.__dict__, "fingerprint": fp})


def take(x: object, idx: np.ndarray) -> object:
    """Index inputs of any modality (array or list) by integer positions."""
    if isinstance(x, np.ndarray):
        return x[idx]
    return [x[i] for i in idx]  # type: ignore[index]


def stratified_split(
    y: np.ndarray, test_fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic per-class split for data that ships without one: (train_idx, test_idx)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        n_test = round(test_fraction * len(idx)) if len(idx) > 1 else 0
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def keep_classes_with(ds: Dataset, min_per_class: int) -> Dataset:
    """Keep only classes with at least ``min_per_class`` examples (train + test); relabel 0..C'-1."""
    if min_per_class < 1:
        raise MiascaleError(f"--min-per-class must be a positive integer, got {min_per_class}.")
    counts = ds.class_counts() + np.bincount(ds.y_test, minlength=ds.n_classes)
    keep = np.flatnonzero(counts >= min_per_class)
    if len(keep) < 2:
        raise MiascaleError(
            f"Dataset {ds.name!r}: only {len(keep)} classes have at least {min_per_class} "
            f"examples (largest class: {int(counts.max())}). Lower --min-per-class."
        )
    remap = np.full(ds.n_classes, -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    tr = np.flatnonzero(remap[ds.y_train] >= 0)
    te = np.flatnonzero(remap[ds.y_test] >= 0)
    out = Dataset(
        name=f"{ds.name}[min={min_per_class}]",
        modality=ds.modality,
        x_train=take(ds.x_train, tr),
        y_train=remap[ds.y_train[tr]],
        x_test=take(ds.x_test, te),
        y_test=remap[ds.y_test[te]],
        class_names=tuple(ds.class_names[i] for i in keep),
        source=ds.source,
    )
    return validate(out)
