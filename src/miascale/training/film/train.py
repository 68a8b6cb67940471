"""Training K FiLM models at once: minibatch plans, the grouped training loop, :func:`train_film`.

Contract (each model trains as if alone; padding; chunking): ``docs/design/film.md``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from miascale.errors import MiascaleError
from miascale.training.film.backbone import FilmBackbone
from miascale.training.film.config import FilmConfig, FilmModels
from miascale.training.film.inputs import backbone_device, check_inputs
from miascale.training.film.memory import chunk_size
from miascale.training.film.optim import StackedOptimizer

DEFAULT_CONFIG = FilmConfig()

#: one model's minibatches: for every epoch, a list of arrays of pool indices
Plan = list[list[np.ndarray]]


def model_batches(in_mask: np.ndarray, k: int, config: FilmConfig) -> Plan:
    """Model k's minibatches: for every epoch, a list of arrays of pool indices.

    Every epoch is a fresh permutation of ``flatnonzero(in_mask[k])`` drawn from
    ``numpy.random.default_rng([config.seed, k])`` (one generator per model, advanced epoch
    by epoch), cut into ``batch_size`` pieces (the last one smaller). :func:`train_film` uses
    exactly these batches.
    """
    members = np.flatnonzero(np.asarray(in_mask)[k])
    rng = np.random.default_rng([config.seed, k])
    bsz = config.batch_size
    out = []
    for _ in range(config.epochs):
        perm = members[rng.permutation(len(members))]
        out.append([perm[s : s + bsz] for s in range(0, len(perm), bsz)])
    return out


def step_rows(epoch: list[list[np.ndarray]], s: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Step s of one epoch of Kc models: indices (Kc, rows), zero-padded, and their validity."""
    kc = len(epoch)
    idx = np.zeros((kc, rows), dtype=np.int64)
    valid = np.zeros((kc, rows), dtype=bool)
    for k in range(kc):
        if s < len(epoch[k]):
            bk = epoch[k][s]
            idx[k, : len(bk)] = bk
            valid[k, : len(bk)] = True
    return idx, valid


class _Chunk:
    """The trained parameters of Kc models: FiLM (Kc, ...), head W (Kc, D, C) and b (Kc, C)."""

    def __init__(self, backbone: FilmBackbone, kc: int, n_classes: int, config: FilmConfig):
        dev, dtype = backbone.device, backbone.dtype
        self.backbone, self.n_classes = backbone, n_classes
        self.film = {
            n: p[None].repeat(kc, *([1] * p.ndim)).requires_grad_(True)
            for n, p in backbone.pretrained().items()
        }
        self.w = torch.zeros(kc, backbone.dim, n_classes, dtype=dtype, device=dev,
                             requires_grad=True)  # fmt: skip
        self.b = torch.zeros(kc, n_classes, dtype=dtype, device=dev, requires_grad=True)
        params = [*self.film.values(), self.w, self.b]
        self.opt = StackedOptimizer(params, [False] * len(self.film) + [True, False], config)

    def step(self, x: torch.Tensor, y: torch.Tensor, idx: np.ndarray, valid: np.ndarray):
        """One optimiser step on rows ``idx`` (Kc, rows); the per-model sums of cross-entropy."""
        dev, dtype = self.backbone.device, self.backbone.dtype
        kc, rows = idx.shape
        idx_t = torch.as_tensor(idx.reshape(-1), device=dev)
        valid_t = torch.as_tensor(valid, device=dev)
        nb = valid_t.sum(dim=1)
        wts = valid_t.to(dtype) / nb.clamp(min=1).to(dtype)[:, None]
        feats = self.backbone.features(self.film, x.index_select(0, idx_t))  # (Kc, rows, D)
        logits = torch.baddbmm(self.b[:, None, :], feats, self.w)
        ce = F.cross_entropy(logits.reshape(-1, self.n_classes), y[idx_t], reduction="none").view(
            kc, rows
        )
        (ce * wts).sum(dim=1).sum().backward()
        self.opt.step(nb > 0)
        with torch.no_grad():
            return (ce.detach() * valid_t).sum(dim=1).double().cpu().numpy()


def _train_chunk(
    backbone: FilmBackbone,
    x: torch.Tensor,
    y: torch.Tensor,
    batches: list[Plan],
    n_classes: int,
    config: FilmConfig,
    on_epoch: Callable[[int, np.ndarray], object] | None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, np.ndarray]:
    kc = len(batches)
    chunk = _Chunk(backbone, kc, n_classes, config)
    last_loss = np.full(kc, np.nan)
    for epoch in range(config.epochs):
        ep = [batches[k][epoch] for k in range(kc)]
        rows = max((len(e[0]) for e in ep if e), default=0)
        loss_sum, n_seen = np.zeros(kc), np.zeros(kc)
        for s in range(max(len(e) for e in ep)):
            idx, valid = step_rows(ep, s, rows)
            loss_sum += chunk.step(x, y, idx, valid)
            n_seen += valid.sum(axis=1)
        last_loss = np.where(n_seen > 0, loss_sum / np.maximum(n_seen, 1), np.nan)
        if on_epoch is not None:
            on_epoch(epoch + 1, last_loss)
    film = {n: p.detach() for n, p in chunk.film.items()}
    return film, chunk.w.detach(), chunk.b.detach(), last_loss


def _reporter(progress, done: int, n_models: int) -> Callable[[int, np.ndarray], None]:
    """``on_epoch`` for a chunk: calls ``progress(done, n_models, epoch, mean finite loss)``."""

    def report(epoch: int, loss: np.ndarray) -> None:
        finite = loss[np.isfinite(loss)]
        progress(done, n_models, epoch, float(finite.mean()) if finite.size else math.nan)

    return report


def train_film(
    backbone: FilmBackbone,
    images: torch.Tensor,
    labels: np.ndarray,
    in_mask: np.ndarray,
    n_classes: int,
    config: FilmConfig = DEFAULT_CONFIG,
    device: str | torch.device | None = None,
    progress: Callable[[int, int, int, float], object] | None = None,
) -> FilmModels:
    """Train K FiLM models at once; model k trains on ``images[in_mask[k]]``.

    Args:
        backbone: from :func:`film_backbone` (never modified).
        images: (N, 3, R, R) float tensor, preprocessed (:func:`images_for`); any device.
        labels: (N,) integers in ``[0, n_classes)``.
        in_mask: (K, N) bool; model k trains on the examples where ``in_mask[k]``. Rows may
            have different counts (Bernoulli plans) or be empty (such a model stays at the
            pretrained parameters and a zero head).
        n_classes: number of classes C >= 2.
        config: see :class:`FilmConfig`.
        device: ``None`` (default) or the backbone's device.
        progress: optional ``progress(models_done, n_models, epoch, mean_loss)`` after every
            epoch of every chunk (``models_done`` counts models of finished chunks).

    Returns:
        :class:`FilmModels` with the K parameter sets on the CPU as numpy arrays.
    """
    if not isinstance(config, FilmConfig):
        raise MiascaleError(f"config must be a FilmConfig, got {type(config).__name__}.")
    x, y_np, mask, n_classes = check_inputs(backbone, images, labels, in_mask, n_classes)
    dev = backbone_device(backbone, device)
    t0 = time.perf_counter()
    k_all = mask.shape[0]
    x = x.to(device=dev, dtype=backbone.dtype)
    y = torch.as_tensor(y_np, device=dev)
    chunk = chunk_size(backbone, config, k_all, int(mask.sum(axis=1).max()))
    film_out: dict[str, list[np.ndarray]] = {n: [] for n in backbone.film_names}
    ws, bs, losses = [], [], []
    for start in range(0, k_all, chunk):
        batches = [model_batches(mask, k, config) for k in range(start, min(k_all, start + chunk))]
        report = None if progress is None else _reporter(progress, start, k_all)
        film, w, b, loss = _train_chunk(backbone, x, y, batches, n_classes, config, report)
        for n, p in film.items():
            film_out[n].append(p.cpu().numpy())
        ws.append(w.cpu().numpy())
        bs.append(b.cpu().numpy())
        losses.append(loss)
    return FilmModels(
        film_params={n: np.concatenate(v) for n, v in film_out.items()},
        head_weights=np.concatenate(ws),
        head_bias=np.concatenate(bs),
        config=config,
        train_seconds=time.perf_counter() - t0,
        models_per_chunk=int(chunk),
        final_loss=np.concatenate(losses).astype(np.float64),
        backbone=backbone.name,
        resolution=backbone.resolution,
    )
