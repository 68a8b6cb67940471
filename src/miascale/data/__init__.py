"""Dataset registry: names users type, where each dataset comes from, and how to load it.

Built-in names: ``fashion-mnist``, ``wordnet``, ``digits``. Users' own data: ``npz:PATH``,
``images:DIR``, ``texts:DIR``, ``texts:FILE.csv``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from miascale.data import digits, fashion_mnist, local, wordnet
from miascale.data.base import Dataset, keep_classes_with
from miascale.errors import MiascaleError

__all__ = ["BUILTIN", "Dataset", "DatasetInfo", "available", "fetch", "load_dataset"]


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    modality: str
    n_classes: int
    description: str
    loader: Callable[[], Dataset]
    locate: Callable[[], object]
    how_to_get: str


BUILTIN: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo(
        "fashion-mnist",
        "image",
        10,
        "Zalando article images, 28×28 grayscale, 60,000 train / 10,000 test",
        fashion_mnist.load,
        fashion_mnist.locate,
        fashion_mnist.HOW_TO_GET,
    ),
    "wordnet": DatasetInfo(
        "wordnet",
        "text",
        45,
        "WordNet 3.0 glosses labelled by lexicographer file (supersense); 80/20 split",
        wordnet.load,
        wordnet.locate,
        wordnet.HOW_TO_GET,
    ),
    "digits": DatasetInfo(
        "digits",
        "image",
        10,
        "scikit-learn's bundled 8×8 digits, 1,797 images (for quick tests)",
        digits.load,
        lambda: "sklearn.datasets",
        "Bundled with scikit-learn; nothing to fetch.",
    ),
}
PREFIXES: dict[str, Callable[[str], Dataset]] = {
    "npz": local.load_npz,
    "images": local.load_images,
    "texts": local.load_texts,
}


def _unknown(name: str) -> MiascaleError:
    return MiascaleError(
        f"Unknown dataset {name!r}. Known datasets: {', '.join(BUILTIN)}; for your own data use "
        "npz:PATH, images:DIR, texts:DIR or texts:FILE.csv (see `miascale data list`)."
    )


def load_dataset(name: str, min_per_class: int | None = None) -> Dataset:
    """Load a dataset by name; optionally keep only classes with at least ``min_per_class`` examples."""
    if name in BUILTIN:
        ds = BUILTIN[name].loader()
    else:
        prefix, sep, rest = name.partition(":")
        if not sep or prefix not in PREFIXES or not rest:
            raise _unknown(name)
        ds = PREFIXES[prefix](rest)
    if min_per_class is not None:
        ds = keep_classes_with(ds, min_per_class)
    return ds


def available() -> list[dict]:
    """One row per built-in dataset: name, modality, classes, whether present, where, how to get."""
    rows = []
    for info in BUILTIN.values():
        where = info.locate()
        rows.append(
            {
                "name": info.name,
                "modality": info.modality,
                "classes": info.n_classes,
                "description": info.description,
                "present": where is not None,
                "location": None if where is None else str(where),
                "how_to_get": info.how_to_get,
            }
        )
    return rows


def fetch(name: str) -> str:
    """Make a built-in dataset available locally; return where it is. Explains when it cannot."""
    if name not in BUILTIN:
        if name.partition(":")[0] in PREFIXES:
            raise MiascaleError(f"{name!r} is your own data; there is nothing to fetch.")
        raise _unknown(name)
    if name == "fashion-mnist":
        where = fashion_mnist.locate() or fashion_mnist.fetch()
    else:
        where = BUILTIN[name].locate()
        if where is None:
            raise MiascaleError(f"{name} is not on this machine. {BUILTIN[name].how_to_get}")
    # load once to verify the files parse
    BUILTIN[name].loader()
    return str(where)
