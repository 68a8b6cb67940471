"""Datasets: the real Debian data, the generic loaders, and clear errors for bad input."""

import gzip
import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from miascale.data import BUILTIN, available, fashion_mnist, fetch, load_dataset, wordnet
from miascale.data.base import stratified_split
from miascale.data.idx import read_idx
from miascale.errors import MiascaleError

FM = fashion_mnist.DEBIAN_DIR


def test_fashion_mnist_real_files():
    ds = load_dataset("fashion-mnist")
    assert ds.x_train.shape == (60000, 28, 28) and ds.x_test.shape == (10000, 28, 28)
    assert ds.x_train.dtype == np.uint8
    np.testing.assert_array_equal(ds.class_counts(), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(ds.y_test), np.full(10, 1000))
    assert ds.class_names[9] == "Ankle boot"
    # the idx content matches the published checksums (independent of our reader)
    for fname, want in fashion_mnist.FILES.items():
        assert hashlib.sha256(gzip.decompress((FM / fname).read_bytes())).hexdigest() == want
    # fingerprint is stable across loads and sensitive to content
    assert load_dataset("fashion-mnist").fingerprint == ds.fingerprint
    assert len(ds.fingerprint) == 64


def test_wordnet_real_files():
    ds = load_dataset("wordnet")
    assert ds.n_classes == 45 and ds.modality == "text"
    total = ds.n_train + ds.n_test
    assert total == 117659  # synsets in WordNet 3.0 (82115 n + 13767 v + 18156 a + 3621 r)
    counts = ds.class_counts() + np.bincount(ds.y_test, minlength=45)
    assert (counts >= 500).sum() == 34
    # a known gloss carries its lexicographer file label
    i = ds.x_train.index("a tangible and visible entity; an entity that can cast a shadow; "
                         '"it was full of rackets, balls and other objects"')  # fmt: skip
    assert ds.class_names[ds.y_train[i]] == "noun.Tops"
    big = load_dataset("wordnet", min_per_class=500)
    assert big.n_classes == 34 and "verb.weather" not in big.class_names


def test_digits_and_registry():
    ds = load_dataset("digits")
    assert ds.n_train + ds.n_test == 1797 and ds.x_train.max() == 255
    names = {r["name"] for r in available()}
    assert names == set(BUILTIN)


def test_stratified_split_is_per_class_and_deterministic():
    y = np.repeat(np.arange(3), [10, 20, 50])
    tr, te = stratified_split(y, 0.2, seed=0)
    assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == 80
    np.testing.assert_array_equal(np.bincount(y[te]), [2, 4, 10])
    _, te2 = stratified_split(y, 0.2, seed=0)
    np.testing.assert_array_equal(te, te2)


def test_unknown_dataset_lists_known():
    with pytest.raises(MiascaleError, match="fashion-mnist, wordnet, digits"):
        load_dataset("cifar")


def test_missing_fashion_mnist_says_how(monkeypatch, tmp_path):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "nowhere")
    with pytest.raises(MiascaleError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


def test_missing_wordnet_says_how(monkeypatch, tmp_path):
    monkeypatch.setattr(wordnet, "DEBIAN_DIR", tmp_path / "nowhere")
    with pytest.raises(MiascaleError, match="apt-get install wordnet-base"):
        load_dataset("wordnet")


def test_truncated_idx_names_file(tmp_path):
    raw = gzip.decompress((FM / "t10k-labels-idx1-ubyte.gz").read_bytes())
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(MiascaleError, match=re.escape(str(bad))):
        read_idx(bad)
    half = tmp_path / "half.gz"
    half.write_bytes((FM / "t10k-labels-idx1-ubyte.gz").read_bytes()[:2000])
    with pytest.raises(MiascaleError, match=r"half\.gz"):
        read_idx(half)


def test_fetch_downloads_and_verifies(tmp_path, monkeypatch):
    # the real download code, served from a local folder instead of the internet
    served = tmp_path / "served"
    served.mkdir()
    for f in fashion_mnist.FILES:
        shutil.copy(FM / f, served / f)
    dest = tmp_path / "dest"
    got = fashion_mnist.fetch(base_url=served.as_uri(), dest=dest)
    assert sorted(p.name for p in got.iterdir()) == sorted(fashion_mnist.FILES)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "nowhere")
    monkeypatch.setenv("MIASCALE_FASHION_MNIST_DIR", str(dest))
    assert load_dataset("fashion-mnist").n_train == 60000
    # a corrupted server file is rejected and nothing is written
    (served / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\0" * 100))
    dest2 = tmp_path / "dest2"
    with pytest.raises(MiascaleError, match="checksum"):
        fashion_mnist.fetch(base_url=served.as_uri(), dest=dest2)
    assert not (dest2 / "t10k-labels-idx1-ubyte.gz").exists()


def test_fetch_via_registry_reports_location():
    assert fetch("fashion-mnist") == str(fashion_mnist.locate())
    with pytest.raises(MiascaleError, match="nothing to fetch"):
        fetch("npz:/x.npz")


def _write_images(root: Path, spec: dict[str, int], size=(12, 10)):
    rng = np.random.default_rng(0)
    for cls, n in spec.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i}.png")


def test_image_folder(tmp_path):
    _write_images(tmp_path / "imgs", {"cat": 10, "dog": 5})
    ds = load_dataset(f"images:{tmp_path / 'imgs'}")
    assert ds.class_names == ("cat", "dog") and ds.modality == "image"
    assert ds.n_train + ds.n_test == 15 and ds.x_train.shape[1:] == (12, 10, 3)
    np.testing.assert_array_equal(np.bincount(ds.y_test), [2, 1])


def test_image_folder_errors(tmp_path):
    _write_images(tmp_path / "imgs", {"cat": 3})
    (tmp_path / "imgs" / "dog").mkdir()
    with pytest.raises(MiascaleError, match="dog is empty"):
        load_dataset(f"images:{tmp_path / 'imgs'}")
    (tmp_path / "imgs" / "dog" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(MiascaleError, match=r"x\.png"):
        load_dataset(f"images:{tmp_path / 'imgs'}")
    with pytest.raises(MiascaleError, match="does not exist"):
        load_dataset(f"images:{tmp_path / 'missing'}")


def test_text_folder_and_csv(tmp_path):
    for cls, texts in {
        "pos": ["good", "great", "fine", "nice", "ok"],
        "neg": ["bad", "awful"],
    }.items():
        (tmp_path / "t" / cls).mkdir(parents=True)
        for i, t in enumerate(texts):
            (tmp_path / "t" / cls / f"{i}.txt").write_text(t)
    ds = load_dataset(f"texts:{tmp_path / 't'}")
    assert ds.class_names == ("neg", "pos") and set(ds.x_train + ds.x_test) >= {"good", "awful"}
    csv = tmp_path / "d.csv"
    csv.write_text('text,label\n"a, b",x\nc,y\nd,x\ne,y\n')
    ds = load_dataset(f"texts:{csv}")
    assert ds.class_names == ("x", "y") and "a, b" in ds.x_train + ds.x_test
    csv.write_text("body,label\na,x\n")
    with pytest.raises(MiascaleError, match="text"):
        load_dataset(f"texts:{csv}")


def test_npz_features_and_bad_labels(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "f.npz"
    np.savez(p, features=rng.normal(size=(50, 4)), labels=np.repeat([3, 7], 25))
    ds = load_dataset(f"npz:{p}")
    assert ds.modality == "features" and ds.class_names == ("3", "7") and ds.n_test == 10
    np.savez(p, x=rng.normal(size=(50, 4)), y=rng.normal(size=50))
    with pytest.raises(MiascaleError, match="integers"):
        load_dataset(f"npz:{p}")
    np.savez(p, x=rng.normal(size=(50, 4)), y=np.zeros(50, dtype=int))
    with pytest.raises(MiascaleError, match="single class"):
        load_dataset(f"npz:{p}")
    x = rng.normal(size=(50, 4))
    x[3, 1] = np.nan
    np.savez(p, x=x, y=np.repeat([0, 1], 25))
    with pytest.raises(MiascaleError, match="NaN"):
        load_dataset(f"npz:{p}")
    p.write_bytes(b"PK\x03\x04truncated")
    with pytest.raises(MiascaleError, match=r"f\.npz"):
        load_dataset(f"npz:{p}")


def test_fingerprint_changes_with_content(tmp_path):
    p = tmp_path / "f.npz"
    x = np.arange(40, dtype=float).reshape(20, 2)
    np.savez(p, x=x, y=np.repeat([0, 1], 10))
    a = load_dataset(f"npz:{p}").fingerprint
    x[0, 0] = -1
    np.savez(p, x=x, y=np.repeat([0, 1], 10))
    assert load_dataset(f"npz:{p}").fingerprint != a
