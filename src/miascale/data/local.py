"""Loaders for users' own data: ``npz:PATH``, ``images:DIR``, ``texts:DIR`` and ``texts:FILE.csv``.

Data without its own split gets a fixed stratified 80/20 split (seed 0).

- ``npz:PATH``: arrays ``x``, ``y`` (optionally ``x_test``, ``y_test``) or ``features``, ``labels``
  (optionally ``features_test``, ``labels_test``); optional ``class_names``. ``x`` may be uint8 images
  (N, H, W[, 3]), float features (N, D) or strings.
- ``images:DIR``: one subfolder per class holding image files; ``DIR/train`` and ``DIR/test`` (each
  with class subfolders) are used as the split when both exist.
- ``texts:DIR``: one subfolder per class holding ``.txt`` files (one example per file); the same
  ``train``/``test`` rule applies.
- ``texts:FILE.csv``: columns ``text,label`` with a header row.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np

from miascale.data.base import Dataset, encode_labels, stratified_split, take, validate
from miascale.errors import MiascaleError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def _missing(kind: str, path: Path) -> MiascaleError:
    return MiascaleError(
        f"{kind}: {path} does not exist. Give the path to your data, e.g. {kind}:/data/mine."
    )


def _split_and_build(name, modality, x, y, names, source, x_test=None, y_test=None) -> Dataset:
    if x_test is None:
        y_enc, _, class_names = encode_labels(np.asarray(y), np.asarray(y[:0]), names, name)
        tr, te = stratified_split(y_enc, 0.2, seed=0)
        x_tr, y_tr, x_te, y_te = take(x, tr), y_enc[tr], take(x, te), y_enc[te]
    else:
        y_tr, y_te, class_names = encode_labels(np.asarray(y), np.asarray(y_test), names, name)
        x_tr, x_te = x, x_test
    return validate(Dataset(name, modality, x_tr, y_tr, x_te, y_te, class_names, source))


def load_npz(path: str) -> Dataset:
    p = Path(path).expanduser()
    name = f"npz:{path}"
    if not p.is_file():
        raise _missing("npz", p)
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        if "pickle" in str(exc):  # numpy's words for "not an .npy/.npz file": no advice to follow
            raise MiascaleError(
                f"Cannot read {p}: it is not an .npz file (numpy.savez / savez_compressed "
                f"output) holding plain numeric or string arrays."
            ) from None
        raise MiascaleError(f"Cannot read {p}: {exc}. The file is truncated or corrupt.") from None
    for xk, yk in (("x", "y"), ("features", "labels")):
        if xk in arrays and yk in arrays:
            break
    else:
        raise MiascaleError(
            f"{p} holds arrays {sorted(arrays)}; expected `x` and `y` (or `features` and `labels`)."
        )
    x, y = arrays[xk], arrays[yk]
    x_test, y_test = arrays.get(f"{xk}_test"), arrays.get(f"{yk}_test")
    if (x_test is None) != (y_test is None):
        raise MiascaleError(f"{p}: give both {xk}_test and {yk}_test, or neither.")
    # inputs and labels pair up row by row: never drop extra rows or index past the end
    for a, b in ((xk, yk), (f"{xk}_test", f"{yk}_test")):
        if a not in arrays:
            continue
        xa, ya = arrays[a], arrays[b]
        if xa.ndim == 0 or ya.ndim != 1:
            raise MiascaleError(
                f"{p}: `{b}` must be a 1-D array of labels and `{a}` an array of examples; got "
                f"shapes {ya.shape} and {xa.shape}."
            )
        if len(xa) != len(ya):
            raise MiascaleError(
                f"{p}: `{a}` has {len(xa)} rows but `{b}` has {len(ya)} labels; every example "
                f"needs exactly one label. Fix the file so that both have the same length."
            )
    names = [str(s) for s in arrays["class_names"]] if "class_names" in arrays else None
    if x.dtype.kind in "US":
        modality = "text"
        x = [str(s) for s in x]
        x_test = None if x_test is None else [str(s) for s in x_test]
    elif x.ndim == 2 and x.dtype.kind == "f":
        modality = "features"
        x = x.astype(np.float32)
        x_test = None if x_test is None else x_test.astype(np.float32)
        # NaN/inf rows are named by their row in the file (before any split)
        for k, a in ((xk, x), (f"{xk}_test", x_test)):
            if a is not None and not np.isfinite(a).all():
                rows = np.unique(np.nonzero(~np.isfinite(a))[0])
                raise MiascaleError(
                    f"{p}: `{k}` holds NaN/inf values in {len(rows)} rows (first rows of the "
                    f"file, from 0: {rows[:5].tolist()}). Clean or drop them before auditing; "
                    "miascale never feeds NaN to a trainer."
                )
    elif x.ndim in (3, 4) and x.dtype == np.uint8:
        modality = "image"
    else:
        raise MiascaleError(
            f"{p}: `{xk}` has dtype {x.dtype} and shape {x.shape}; expected float features (N, D), "
            "uint8 images (N, H, W) or (N, H, W, 3), or strings."
        )
    if len(x) == 0:
        raise MiascaleError(f"{p}: `{xk}` is empty.")
    return _split_and_build(name, modality, x, y, names, str(p), x_test, y_test)


def _class_folders(root: Path, kind: str) -> list[Path]:
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(folders) < 2:
        raise MiascaleError(
            f"{kind}:{root} must hold one subfolder per class (at least two); found {len(folders)}."
        )
    return folders


def _read_folder_tree(root: Path, kind: str, suffixes: set[str] | None, reader):
    xs, ys = [], []
    for cls in _class_folders(root, kind):
        files = sorted(
            f
            for f in cls.iterdir()
            if f.is_file() and (suffixes is None or f.suffix.lower() in suffixes)
        )
        if not files:
            want = "image files" if kind == "images" else ".txt files"
            raise MiascaleError(f"Class folder {cls} is empty: it holds no {want}.")
        for f in files:
            xs.append(reader(f))
            ys.append(cls.name)
    return xs, np.asarray(ys)


def _read_image(f: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(f) as im:
            im = im.convert("L") if im.mode in ("1", "L", "I;16", "I") else im.convert("RGB")
            return np.asarray(im, dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as exc:
        raise MiascaleError(
            f"Cannot read image {f}: {exc}. The file is truncated or corrupt."
        ) from None


def _read_text(f: Path) -> str:
    try:
        return f.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise MiascaleError(f"Cannot read {f} as UTF-8 text: {exc}.") from None


def _images_as_array(xs: list[np.ndarray]) -> object:
    shapes = {a.shape for a in xs}
    if len(shapes) == 1:
        return np.stack(xs)
    return xs


def _load_tree(path: str, kind: str, modality: str, suffixes, reader, post) -> Dataset:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise _missing(kind, root)
    name = f"{kind}:{path}"
    if (root / "train").is_dir() and (root / "test").is_dir():
        xtr, ytr = _read_folder_tree(root / "train", kind, suffixes, reader)
        xte, yte = _read_folder_tree(root / "test", kind, suffixes, reader)
        return _split_and_build(name, modality, post(xtr), ytr, None, str(root), post(xte), yte)
    xs, ys = _read_folder_tree(root, kind, suffixes, reader)
    return _split_and_build(name, modality, post(xs), ys, None, str(root))


def load_images(path: str) -> Dataset:
    return _load_tree(path, "images", "image", IMAGE_SUFFIXES, _read_image, _images_as_array)


def load_texts(path: str) -> Dataset:
    p = Path(path).expanduser()
    if p.suffix.lower() == ".csv":
        return load_text_csv(p, f"texts:{path}")
    return _load_tree(path, "texts", "text", {".txt"}, _read_text, list)


def load_text_csv(p: Path, name: str) -> Dataset:
    if not p.is_file():
        raise _missing("texts", p)
    try:
        with open(p, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"text", "label"} <= set(reader.fieldnames):
                raise MiascaleError(
                    f"{p} must have a header row with columns `text` and `label`; "
                    f"found {reader.fieldnames}."
                )
            rows = [(r["text"], r["label"]) for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MiascaleError(f"Cannot read {p}: {exc}.") from None
    if not rows:
        raise MiascaleError(f"{p} has a header but no rows.")
    bad = [i + 2 for i, (t, lab) in enumerate(rows) if t is None or lab is None or lab == ""]
    if bad:
        raise MiascaleError(f"{p}: rows {bad[:5]} lack a text or a label.")
    texts = [t for t, _ in rows]
    labels = np.asarray([lab for _, lab in rows])
    if all(_is_int(s) for s in labels.tolist()):
        labels = labels.astype(np.int64)
    return _split_and_build(name, "text", texts, labels, None, str(p))


def _is_int(s: str) -> bool:
    try:
        int(s)
        return True
    except ValueError:
        return False
