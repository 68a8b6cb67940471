"""Tests for FiLM fine-tuning of K models at once (tiny float64 backbones, fixed batches)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from miascale.errors import MiascaleError
from miascale.training.film import (
    FilmConfig,
    FilmModels,
    film_backbone,
    film_logits,
    model_batches,
    train_film,
)

N, C, R = 24, 3, 16


class TinyCNN(nn.Module):
    """EfficientNet-like: conv-BN-ReLU6, depthwise conv-BN, 1x1 conv-BN, mean pool."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 12, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(12)
        self.act = nn.ReLU6()
        self.drop = nn.Dropout(0.5)  # must be off (eval mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn0(self.stem(x)))
        x = self.act(self.bn1(self.dw(x)))
        x = self.act(self.bn2(self.pw(x)))
        return self.drop(x.mean(dim=(2, 3)))


def _tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    m = TinyCNN()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):  # non-trivial "pretrained" statistics and affine
                c = mod.num_features
                mod.running_mean.copy_(0.3 * torch.randn(c, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(c, generator=g))
                mod.weight.copy_(1 + 0.2 * torch.randn(c, generator=g))
                mod.bias.copy_(0.2 * torch.randn(c, generator=g))
    return m.double()


def _tiny_vit() -> nn.Module:
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    cfg = ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32, image_size=R, patch_size=8)  # fmt: skip
    m = ViTModel(cfg, add_pooling_layer=False)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.LayerNorm):
                mod.weight.copy_(1 + 0.2 * torch.randn(mod.weight.shape, generator=g))
                mod.bias.copy_(0.2 * torch.randn(mod.bias.shape, generator=g))
    return m.double()


def _vit_features(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return m(pixel_values=x).last_hidden_state[:, 0]


BACKBONES = {
    "cnn": lambda: film_backbone(_tiny_cnn(), R),
    "vit": lambda: film_backbone(_tiny_vit(), R, features=_vit_features),
}


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(C), N // C)
    x = torch.as_tensor(rng.normal(size=(N, 3, R, R)) + 0.5 * y[:, None, None, None])
    mask = rng.random((5, N)) < 0.5  # Bernoulli design: models have different counts
    mask[3] = False  # an empty model
    mask[4] = True  # a model seeing everything
    return x, y, mask


CONFIG = FilmConfig(epochs=2, batch_size=5, learning_rate=1e-2, weight_decay=1e-2, seed=3,
                    models_per_chunk=2)  # fmt: skip


def _train_alone(module: nn.Module, features, names, x, y, mask, k, config, d) -> dict:
    """Oracle: one model, plain module with torch.optim, the same batches."""
    m = copy.deepcopy(module)
    params = dict(m.named_parameters())
    film = [params[n] for n in names]
    for p in film:
        p.requires_grad_(True)
    w = torch.zeros(d, C, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(C, dtype=torch.float64, requires_grad=True)
    groups = [{"params": film, "weight_decay": 0.0}, {"params": [w], "weight_decay": config.weight_decay},
              {"params": [b], "weight_decay": 0.0}]  # fmt: skip
    if config.optimizer == "adam":
        opt = torch.optim.Adam(groups, lr=config.learning_rate)
    else:
        opt = torch.optim.SGD(groups, lr=config.learning_rate, momentum=config.momentum)
    yt = torch.as_tensor(y)
    for epoch in model_batches(mask, k, config):
        for batch in epoch:
            idx = torch.as_tensor(batch)
            loss = nn.functional.cross_entropy(features(m, x[idx]) @ w + b, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    out = {n: params[n].detach().numpy() for n in names}
    out["W"], out["b"] = w.detach().numpy(), b.detach().numpy()
    return out


@pytest.mark.parametrize("kind", ["cnn", "vit"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_k_models_together_equal_each_alone(data, kind, optimizer) -> None:
    x, y, mask = data
    bb = BACKBONES[kind]()
    cfg = FilmConfig(**{**CONFIG.__dict__, "optimizer": optimizer})
    models = train_film(bb, x, y, mask, C, cfg)
    assert models.models_per_chunk == 2 and models.n_models == 5
    feat = bb.module._features
    for k in range(mask.shape[0]):
        ref = _train_alone(bb.module.inner, feat, [n[len("inner."):] for n in bb.film_names],
                           x, y, mask, k, cfg, bb.dim)  # fmt: skip
        for name in bb.film_names:
            np.testing.assert_allclose(
                models.film_params[name][k], ref[name[len("inner.") :]], atol=1e-5, rtol=0
            )
        np.testing.assert_allclose(models.head_weights[k], ref["W"], atol=1e-5, rtol=0)
        np.testing.assert_allclose(models.head_bias[k], ref["b"], atol=1e-5, rtol=0)
    # chunking does not change the result
    one_chunk = train_film(bb, x, y, mask, C, FilmConfig(**{**cfg.__dict__, "models_per_chunk": 5}))
    np.testing.assert_allclose(one_chunk.head_weights, models.head_weights, atol=1e-10)


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_only_norm_affine_and_head_change(data, kind) -> None:
    x, y, mask = data
    bb = BACKBONES[kind]()
    before = {n: t.clone() for n, t in bb.module.state_dict().items()}
    models = train_film(bb, x, y, mask, C, CONFIG)
    after = bb.module.state_dict()
    for n, t in before.items():  # the shared backbone (incl. running stats) is bitwise unchanged
        assert torch.equal(t, after[n]), n
    kinds = (nn.BatchNorm2d,) if kind == "cnn" else (nn.LayerNorm,)
    expect = [f"{p}.{a}" for p, m in bb.module.named_modules() if isinstance(m, kinds)
              for a in ("weight", "bias")]  # fmt: skip
    assert sorted(bb.film_names) == sorted(expect)
    assert set(models.film_params) == set(expect)
    pre = bb.pretrained()
    trained = [k for k in range(5) if mask[k].any()]
    for name in bb.film_names:
        p = models.film_params[name]
        assert p.shape == (5, *pre[name].shape)
        np.testing.assert_array_equal(p[3], pre[name].numpy())  # empty model: untouched
        assert all(not np.array_equal(p[k], pre[name].numpy()) for k in trained), name
    assert np.all(models.head_weights[3] == 0) and np.all(models.head_bias[3] == 0)
    assert np.isnan(models.final_loss[3]) and np.isfinite(models.final_loss[trained]).all()
    assert models.parameter_bytes() == 5 * 8 * (
        sum(p.numel() for p in pre.values()) + bb.dim * C + C
    )


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_logits_zero_head_and_agree_with_plain_forward(data, kind) -> None:
    x, y, mask = data
    bb = BACKBONES[kind]()
    untrained = train_film(bb, x, y, np.zeros((2, N), bool), C, CONFIG)
    z0 = film_logits(untrained, bb, x, batch_size=7)
    assert z0.shape == (2, N, C) and z0.dtype == np.float64 and np.all(z0 == 0)
    models = train_film(bb, x, y, mask, C, CONFIG)
    z = film_logits(models, bb, x, batch_size=7, models_per_chunk=3)
    assert z.shape == (5, N, C)
    feat = bb.module._features
    for k in range(5):
        m = copy.deepcopy(bb.module.inner)
        sd = m.state_dict()
        for name in bb.film_names:
            sd[name[len("inner.") :]] = torch.as_tensor(models.film_params[name][k])
        m.load_state_dict(sd)
        with torch.no_grad():
            ref = feat(m, x).numpy() @ models.head_weights[k] + models.head_bias[k]
        np.testing.assert_allclose(z[k], ref, atol=1e-10)


def test_deterministic_and_seeded(data) -> None:
    x, y, mask = data
    bb = BACKBONES["cnn"]()
    a = train_film(bb, x, y, mask, C, CONFIG)
    b = train_film(bb, x, y, mask, C, CONFIG)
    np.testing.assert_array_equal(a.head_weights, b.head_weights)
    c = train_film(bb, x, y, mask, C, FilmConfig(**{**CONFIG.__dict__, "seed": 4}))
    assert not np.array_equal(a.head_weights[0], c.head_weights[0])
    for k in range(mask.shape[0]):
        for epoch in model_batches(mask, k, CONFIG):
            seen = np.concatenate(epoch) if epoch else np.array([], dtype=np.int64)
            np.testing.assert_array_equal(np.sort(seen), np.flatnonzero(mask[k]))
            assert all(len(batch) <= CONFIG.batch_size for batch in epoch)


def test_auto_chunk_and_progress(data) -> None:
    x, y, mask = data
    bb = BACKBONES["cnn"]()
    calls = []
    tiny = FilmConfig(epochs=1, batch_size=5, memory_budget_mb=0.05)
    m = train_film(bb, x, y, mask, C, tiny, progress=lambda *a: calls.append(a))
    assert 1 <= m.models_per_chunk < 5
    assert calls and calls[-1][1] == 5
    big = train_film(bb, x, y, mask, C, FilmConfig(epochs=1, batch_size=5))
    assert big.models_per_chunk == 5
    np.testing.assert_allclose(m.head_weights, big.head_weights, atol=1e-10)


def test_bad_config_and_inputs(data) -> None:
    x, y, mask = data
    for kwargs in ({"epochs": 0}, {"batch_size": 2.5}, {"learning_rate": 0}, {"optimizer": "rmsprop"},
                   {"weight_decay": -1}, {"models_per_chunk": 0}, {"memory_budget_mb": float("nan")},
                   {"momentum": 1.0}, {"seed": "a"}, {"epochs": True}):  # fmt: skip
        with pytest.raises(MiascaleError, match="FilmConfig"):
            FilmConfig(**kwargs)
    bb = BACKBONES["cnn"]()
    with pytest.raises(MiascaleError, match="in_mask"):
        train_film(bb, x, y, mask[:, :-1], C, CONFIG)
    with pytest.raises(MiascaleError, match="labels"):
        train_film(bb, x, y + 5, mask, C, CONFIG)
    with pytest.raises(MiascaleError, match="images"):
        train_film(bb, x[:, :1], y, mask, C, CONFIG)
    with pytest.raises(MiascaleError, match="FilmConfig"):
        train_film(bb, x, y, mask, C, {"epochs": 1})
    with pytest.raises(MiascaleError, match="n_classes"):
        train_film(bb, x, y, mask, 1, CONFIG)
    with pytest.raises(MiascaleError, match="text"):
        film_backbone("minilm")
    with pytest.raises(MiascaleError, match="normalisation"):
        film_backbone(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()), R)
    with pytest.raises(MiascaleError, match="resolution"):
        film_backbone(_tiny_cnn())
    with pytest.raises(MiascaleError, match="models"):
        film_logits("nope", bb, x)  # type: ignore[arg-type]


def test_hf_vit_folder_and_images_for(tmp_path) -> None:
    from transformers import ViTConfig, ViTModel

    from miascale.data.base import Dataset, validate
    from miascale.training.film import images_for

    torch.manual_seed(0)
    cfg = ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32, image_size=32, patch_size=8)  # fmt: skip
    ViTModel(cfg).save_pretrained(tmp_path / "vit")
    bb = film_backbone(f"hf:{tmp_path / 'vit'}", 16)
    assert bb.dim == 16 and bb.resolution == 16 and bb.name.startswith("hf:")
    assert all("layernorm" in n for n in bb.film_names) and len(bb.film_names) == 6
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (12, 20, 20), dtype=np.uint8)
    labels = np.arange(12) % 2
    ds = validate(Dataset("toy", "image", imgs, labels, imgs[:2], labels[:2], ("a", "b"), "test"))
    x = images_for(ds, np.arange(12), bb)
    assert x.shape == (12, 3, 16, 16) and x.dtype == torch.float32
    mask = np.zeros((2, 12), bool)
    mask[0, ::2] = mask[1, 1::2] = True
    models = train_film(bb, x, labels, mask, 2, FilmConfig(epochs=1, batch_size=4))
    z = film_logits(models, bb, x)
    assert z.shape == (2, 12, 2) and np.isfinite(z).all()


def test_efficientnet_grouped_forward_matches_plain() -> None:
    bb = film_backbone("efficientnet-lite0", 32)
    assert bb.dim == 1280 and len(bb.film_names) == 2 * 49 and bb.channels_last
    x = torch.randn(2, 3, 32, 32)
    pre = {n: p[None].repeat(2, *([1] * p.ndim)) for n, p in bb.pretrained().items()}
    with torch.no_grad():
        plain = bb.module(x.contiguous(memory_format=torch.channels_last))
        grouped = bb.features(pre, x.repeat(2, 1, 1, 1))
    assert grouped.shape == (2, 2, 1280)
    torch.testing.assert_close(grouped[0], plain, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(grouped[1], plain, atol=1e-4, rtol=1e-4)
    untrained = FilmModels(
        film_params={n: p.numpy() for n, p in pre.items()},
        head_weights=np.zeros((2, 1280, 3), np.float32),
        head_bias=np.zeros((2, 3), np.float32),
        config=FilmConfig(),
        train_seconds=0.0,
        models_per_chunk=2,
        final_loss=np.full(2, np.nan),
    )
    assert np.all(film_logits(untrained, bb, x) == 0)
