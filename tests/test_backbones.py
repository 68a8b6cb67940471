"""Backbones load real weights offline, produce sensible features, and are cached correctly."""

import json

import numpy as np
import pytest

from miascale.backbones import load_extractor, resolve
from miascale.backbones.cache import features_for
from miascale.data import load_dataset
from miascale.data.base import Dataset, validate
from miascale.errors import MiascaleError

PALACE, MONASTERY = 698, 663  # ImageNet class indices


@pytest.fixture(scope="module")
def effnet224():
    return load_extractor(resolve("efficientnet-lite0", 224))


def test_efficientnet_imagenet_head_recognises_palace(effnet224):
    from sklearn.datasets import load_sample_image

    img = load_sample_image("china.jpg")  # a Chinese palace/temple
    logits = effnet224.imagenet_logits(img[None])
    top5 = np.argsort(logits[0])[::-1][:5]
    assert PALACE in top5 or MONASTERY in top5, top5
    feats = effnet224.embed(img[None])
    assert feats.shape == (1, 1280) and np.isfinite(feats).all()


def test_efficientnet_features_handle_gray_and_varied_sizes(effnet224):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 255, (2, 28, 28), dtype=np.uint8)
    as_rgb = np.repeat(gray[..., None], 3, axis=-1)
    np.testing.assert_allclose(effnet224.embed(gray), effnet224.embed(as_rgb), rtol=1e-5, atol=1e-5)
    mixed = [as_rgb[0], rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)]
    assert effnet224.embed(mixed).shape == (2, 1280)


def test_minilm_paraphrase_closer_than_unrelated():
    m = load_extractor(resolve("minilm"))
    e = m.embed(
        [
            "A man is playing a guitar on stage.",
            "Someone performs music with a guitar in front of an audience.",
            "The stock market fell sharply after the announcement.",
        ]
    )
    assert e.shape == (3, 384)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2


def test_hf_tiny_vit_and_text_offline(tmp_path):
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast, ViTConfig, ViTModel

    torch.manual_seed(0)
    vit_dir = tmp_path / "vit"
    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, image_size=32, patch_size=8)  # fmt: skip
    ViTModel(cfg).save_pretrained(vit_dir)
    spec = resolve(f"hf:{vit_dir}")
    assert spec.modality == "image" and spec.resolution == 32
    ex = load_extractor(spec)
    imgs = np.random.default_rng(0).integers(0, 255, (3, 28, 28), dtype=np.uint8)
    f = ex.embed(imgs)
    assert f.shape == (3, 32) and np.isfinite(f).all()
    # a different resolution interpolates position embeddings
    assert load_extractor(resolve(f"hf:{vit_dir}", 48)).embed(imgs).shape == (3, 32)

    txt_dir = tmp_path / "bert"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "dog", "sat", "ran"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab))
    BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(txt_dir)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=32)).save_pretrained(txt_dir)  # fmt: skip
    spec = resolve(f"hf:{txt_dir}")
    assert spec.modality == "text" and spec.preprocessing == "mean-pool"
    ex = load_extractor(spec)
    a = ex.embed(["the cat sat", "the dog ran the dog ran"])
    b = ex.embed(["the cat sat"])
    assert a.shape == (2, 16)
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)  # padding does not change the mean pool


def test_unknown_backbone_and_bad_resolution():
    with pytest.raises(MiascaleError, match="efficientnet-lite0"):
        resolve("resnet50")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(MiascaleError, match="positive integer"):
            resolve("efficientnet-lite0", bad)
    with pytest.raises(MiascaleError, match="image backbones"):
        resolve("minilm", 64)
    with pytest.raises(MiascaleError, match="Cannot load"):
        resolve("hf:/no/such/model/folder")


def test_feature_cache_roundtrip_and_key(tmp_path):
    ds = load_dataset("digits")
    small = validate(Dataset("digits-small", "image", ds.x_train[:40], ds.y_train[:40] % 2,
                             ds.x_test[:10], ds.y_test[:10] % 2, ("even", "odd"), "test"))  # fmt: skip
    spec = resolve("efficientnet-lite0", 32)
    a = features_for(small, spec, quiet=True)
    assert not a.from_cache and a.path.is_file() and a.x_train.shape == (40, 1280)
    b = features_for(small, spec, quiet=True)
    assert b.from_cache and b.key == a.key
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    # the cache file carries its provenance
    with np.load(a.path) as z:
        meta = json.loads(str(z["meta"]))
    assert meta["backbone"]["resolution"] == 32
    # another resolution or other content is another key
    assert features_for(small, resolve("efficientnet-lite0", 40), quiet=True).key != a.key
    # a corrupt cache entry is recomputed, not trusted
    a.path.write_bytes(b"garbage")
    c = features_for(small, spec, quiet=True)
    assert not c.from_cache
    np.testing.assert_allclose(c.x_train, a.x_train, rtol=1e-5, atol=1e-6)
    # no temporary files are left behind
    assert not [p.name for p in a.path.parent.iterdir() if p.name.startswith(".")]


def test_identity_and_modality_mismatch(tmp_path):
    p = tmp_path / "f.npz"
    x = np.random.default_rng(0).normal(size=(30, 5))
    np.savez(p, features=x, labels=np.repeat([0, 1, 2], 10))
    ds = load_dataset(f"npz:{p}")
    fs = features_for(ds, resolve("identity"))
    assert fs.x_train.dtype == np.float32 and fs.x_train.shape[1] == 5
    with pytest.raises(MiascaleError, match="takes image inputs"):
        features_for(ds, resolve("efficientnet-lite0"))
