"""WordNet 3.0 glosses labelled by lexicographer file (45 supersense classes).

Read from Debian's ``wordnet-base`` files ``data.{noun,verb,adj,adv}``. Each synset's gloss (its
definition and usage examples, the text after ``|``) is one example; its class is the lexicographer
file the synset belongs to (``noun.animal``, ``verb.motion``, ...). WordNet has no train/test split, so
a fixed stratified 80/20 split (seed 0) is used.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from miascale.data.base import Dataset, stratified_split, take, validate
from miascale.errors import MiascaleError

DEBIAN_DIR = Path("/usr/share/wordnet")
POS_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)  # fmt: skip
HOW_TO_GET = (
    "On Debian/Ubuntu run `apt-get install wordnet-base` (as root; `make demo` and `make test` do "
    "this for you), or set MIASCALE_WORDNET_DIR to the `dict` folder of the WordNet 3.0 release "
    "(the one holding data.noun, data.verb, data.adj and data.adv)."
)


def candidate_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("MIASCALE_WORDNET_DIR"):
        dirs.append(Path(os.environ["MIASCALE_WORDNET_DIR"]))
    return [*dirs, DEBIAN_DIR]


def locate() -> Path | None:
    for d in candidate_dirs():
        if all((d / f).is_file() for f in POS_FILES):
            return d
    return None


def parse_data_file(path: Path) -> tuple[list[str], list[int]]:
    """(glosses, lexicographer file numbers) of every synset in one ``data.*`` file."""
    texts: list[str] = []
    labels: list[int] = []
    try:
        lines = path.read_text(encoding="utf-8", errors="strict").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise MiascaleError(
            f"Cannot read {path}: {exc}. The file is corrupt; reinstall it."
        ) from None
    for lineno, line in enumerate(lines, 1):
        if not line or line.startswith("  "):  # licence header
            continue
        head, sep, gloss = line.partition(" | ")
        fields = head.split(" ", 2)
        if not sep or len(fields) < 3 or not fields[1].isdigit():
            raise MiascaleError(
                f"{path}, line {lineno}, is not a WordNet synset line; the file is corrupt or "
                "truncated. Reinstall it."
            )
        lex = int(fields[1])
        if lex >= len(LEXNAMES):
            raise MiascaleError(f"{path}, line {lineno}: unknown lexicographer file number {lex}.")
        texts.append(gloss.strip())
        labels.append(lex)
    if not texts:
        raise MiascaleError(f"{path} holds no synsets; the file is empty or truncated.")
    return texts, labels


def load() -> Dataset:
    d = locate()
    if d is None:
        looked = ", ".join(str(p) for p in candidate_dirs())
        raise MiascaleError(f"WordNet is not on this machine (looked in {looked}). {HOW_TO_GET}")
    texts: list[str] = []
    labels: list[int] = []
    for f in POS_FILES:
        t, y = parse_data_file(d / f)
        texts += t
        labels += y
    y_all = np.asarray(labels, dtype=np.int64)
    tr, te = stratified_split(y_all, test_fraction=0.2, seed=0)
    return validate(
        Dataset(
            name="wordnet",
            modality="text",
            x_train=take(texts, tr),
            y_train=y_all[tr],
            x_test=take(texts, te),
            y_test=y_all[te],
            class_names=LEXNAMES,
            source=str(d),
        )
    )
