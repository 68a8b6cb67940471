"""Fashion-MNIST: Debian's ``dataset-fashion-mnist`` package, or the upstream files in the user cache."""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

from miascale.data.base import Dataset, validate
from miascale.data.idx import read_idx
from miascale.errors import MiascaleError
from miascale.paths import atomic_write_bytes, cache_dir

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
UPSTREAM_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# sha256 of the DECOMPRESSED idx content: the same bytes whether the .gz came from upstream or from
# Debian (which recompresses), so one checksum verifies both.
FILES = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
HOW_TO_GET = (
    "On Debian/Ubuntu run `apt-get install dataset-fashion-mnist` (as root; `make demo` and "
    "`make test` do this for you), or run `miascale data fetch fashion-mnist` to download the four "
    "upstream files into the user cache, or set MIASCALE_FASHION_MNIST_DIR to a folder holding them."
)


def user_dir() -> Path:
    return cache_dir() / "data" / "fashion-mnist"


def candidate_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("MIASCALE_FASHION_MNIST_DIR"):
        dirs.append(Path(os.environ["MIASCALE_FASHION_MNIST_DIR"]))
    return [*dirs, DEBIAN_DIR, user_dir()]


def locate() -> Path | None:
    """The first folder holding all four files, or None."""
    for d in candidate_dirs():
        if all((d / f).is_file() for f in FILES):
            return d
    return None


def load() -> Dataset:
    d = locate()
    if d is None:
        looked = ", ".join(str(p) for p in candidate_dirs())
        raise MiascaleError(
            f"Fashion-MNIST is not on this machine (looked in {looked}). {HOW_TO_GET}"
        )
    xtr = read_idx(d / "train-images-idx3-ubyte.gz")
    ytr = read_idx(d / "train-labels-idx1-ubyte.gz")
    xte = read_idx(d / "t10k-images-idx3-ubyte.gz")
    yte = read_idx(d / "t10k-labels-idx1-ubyte.gz")
    for name, x, y in (("train", xtr, ytr), ("t10k", xte, yte)):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise MiascaleError(
                f"Fashion-MNIST {name} files in {d} do not match: images {x.shape}, labels {y.shape}."
            )
        if y.max() >= len(CLASS_NAMES):
            raise MiascaleError(
                f"Fashion-MNIST {name} labels in {d} are out of range; files corrupt."
            )
    return validate(
        Dataset(
            name="fashion-mnist",
            modality="image",
            x_train=xtr,
            y_train=ytr.astype(np.int64),
            x_test=xte,
            y_test=yte.astype(np.int64),
            class_names=CLASS_NAMES,
            source=str(d),
        )
    )


def fetch(
    base_url: str | None = None,
    dest: Path | None = None,
    opener: Callable[[str], bytes] | None = None,
) -> Path:
    """Download the four upstream files into ``dest`` (default: user cache), verifying sha256.

    A file already present with the right checksum is kept. Files are written atomically, so an
    interrupted download never leaves a file that looks complete.
    """
    base_url = base_url or os.environ.get("MIASCALE_FASHION_MNIST_URL", UPSTREAM_URL)
    dest = Path(dest) if dest else user_dir()
    opener = opener or _http_get
    for fname, want in FILES.items():
        target = dest / fname
        if target.is_file() and _content_sha256(target.read_bytes(), fname) == want:
            continue
        url = base_url.rstrip("/") + "/" + fname
        try:
            blob = opener(url)
        except OSError as exc:
            raise MiascaleError(
                f"Could not download {url}: {exc}. Check your connection, or install Debian's "
                "dataset-fashion-mnist package, or copy the four files into "
                f"{dest} yourself."
            ) from None
        got = _content_sha256(blob, fname)
        if got != want:
            raise MiascaleError(
                f"Downloaded {fname} from {url} but its content checksum is {got}, expected {want}. "
                "The download is corrupt or the server sent something else; nothing was saved."
            )
        atomic_write_bytes(target, blob)
    return dest


def _content_sha256(blob: bytes, fname: str) -> str:
    try:
        raw = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
    except (OSError, EOFError) as exc:
        raise MiascaleError(
            f"{fname} is not a valid gzip file ({exc}); the file is corrupt."
        ) from None
    return hashlib.sha256(raw).hexdigest()


def _http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as resp:
        return resp.read()
