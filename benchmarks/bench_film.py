"""Benchmark: FiLM fine-tuning of K models at once (miascale.training.film).

Real data and backbone: fashion-mnist, a balanced pool with S shots per class (default S = 16,
C = 10 → 160 training images per model) and efficientnet-lite0 at each resolution (default 64
and 96 px). Reports:

(a) seconds per model per epoch: K models (default 4) trained together for 2 epochs; the
    second epoch's wall time / K (the first pays one-off warm-up);
(b) memory for K = 65 models: the models' own parameters (FiLM + heads, exact bytes) with Adam
    state, the saved-activation bytes per training image, the automatic models_per_chunk, and the
    peak RSS of one chunked training step (in a fresh subprocess, minus its RSS after loading);
(c) ``--compare-vmap``: one training step (K = 4, B = 32) with torch.func.functional_call + vmap
    against the grouped-batch implementation miascale uses;
(d) ``--accuracy``: test accuracy of one model trained with the default FilmConfig.

    PYTHONPATH=src python benchmarks/bench_film.py [--device cuda] [--compare-vmap] [--accuracy]
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from miascale.data import load_dataset
from miascale.membership import balanced_plan
from miascale.pool import draw_pool
from miascale.training.film import (
    FilmConfig,
    activation_bytes_per_image,
    film_backbone,
    film_logits,
    images_for,
    train_film,
)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    """Reset the peak RSS (VmHWM) of this process (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _pool(shots: int, n_classes: int, seed: int = 0):
    ds = load_dataset("fashion-mnist")
    pool = draw_pool(ds.y_train, shots, n_classes, seed)
    return ds, pool


def time_per_model_epoch(args, res: int) -> dict:
    ds, pool = _pool(args.shots, args.classes)
    bb = film_backbone("efficientnet-lite0", res, args.device)
    x = images_for(ds, pool.indices, bb)
    mask = balanced_plan(pool.labels, args.models, 0).in_mask
    stamps: list[float] = []
    cfg = FilmConfig(epochs=2, batch_size=args.batch_size, models_per_chunk=args.models)
    t0 = time.perf_counter()
    m = train_film(bb, x, pool.labels, mask, pool.n_classes, cfg,
                   progress=lambda *a: stamps.append(time.perf_counter()))  # fmt: skip
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    epoch2 = stamps[1] - stamps[0]
    return {
        "resolution": res,
        "models": args.models,
        "train_images_per_model": int(mask.sum(axis=1).mean()),
        "first_epoch_s": stamps[0] - t0,
        "s_per_model_per_epoch": epoch2 / args.models,
        "s_per_model_10_epochs_K65_estimate": epoch2 / args.models * 10 * 65,
        "final_loss": float(np.nanmean(m.final_loss)),
    }


def memory_step(res: int, device: str, batch_size: int, k_total: int) -> dict:
    """Run in a fresh process: one training step of one automatic chunk."""
    ds, pool = _pool(16, 10)
    bb = film_backbone("efficientnet-lite0", res, device)
    x = images_for(ds, pool.indices, bb)
    cfg = FilmConfig(epochs=1, batch_size=batch_size)
    per_image = activation_bytes_per_image(bb)
    chunk = int(
        max(1, min(k_total, cfg.memory_budget_mb * 2**20 // (1.5 * per_image * batch_size)))
    )
    mask = np.zeros((chunk, len(pool.labels)), bool)
    rng = np.random.default_rng(0)
    for k in range(chunk):  # one minibatch per model: one step
        mask[k, rng.permutation(len(pool.labels))[:batch_size]] = True
    labels = pool.labels
    del ds, pool
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    reset = _reset_peak()
    before = _status_mb("VmRSS")
    m = train_film(bb, x, labels, mask, 10, cfg)
    peak = _status_mb("VmHWM") if reset else _rss_mb()
    out = {
        "resolution": res,
        "activation_mb_per_image": per_image / 2**20,
        "models_per_chunk_auto": m.models_per_chunk,
        "rss_before_step_mb": before,
        "peak_rss_step_mb": peak,
        "step_rss_increase_mb": peak - before,
        "peak_is_step_only": reset,
        "step_s": m.train_seconds,
    }
    if device.startswith("cuda"):
        out["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    n_film = sum(p.numel() for p in bb.pretrained().values())
    per_model = (n_film + bb.dim * 10 + 10) * 4
    out["params_bytes_per_model"] = per_model
    out["params_mb_K"] = per_model * k_total / 2**20
    out["params_plus_adam_mb_K"] = 3 * per_model * k_total / 2**20
    return out


def compare_vmap(args, res: int = 64, k: int = 4) -> dict:
    from torch.func import functional_call, vmap

    bb = film_backbone("efficientnet-lite0", res, args.device)
    b = args.batch_size
    x = torch.randn(k, b, 3, res, res, device=args.device)
    pre = bb.pretrained()
    stacked = {n: p[None].repeat(k, *([1] * p.ndim)).requires_grad_(True) for n, p in pre.items()}

    def vmapped() -> None:
        f = vmap(lambda p, xb: functional_call(bb.module, p, (xb,)), in_dims=(0, 0))(stacked, x)
        f.sum().backward()

    def grouped() -> None:
        f = bb.features(stacked, x.reshape(k * b, 3, res, res))
        f.sum().backward()

    out = {}
    for name, fn in (("vmap", vmapped), ("grouped", grouped)):
        fn()  # warm-up
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        out[f"{name}_step_s"] = min(times)
    out["vmap_over_grouped"] = out["vmap_step_s"] / out["grouped_step_s"]
    return out


def accuracy(args, res: int = 64) -> dict:
    ds, pool = _pool(args.shots, args.classes)
    bb = film_backbone("efficientnet-lite0", res, args.device)
    x = images_for(ds, pool.indices, bb)
    mask = balanced_plan(pool.labels, 2, 0).in_mask[:1]
    m = train_film(bb, x, pool.labels, mask, pool.n_classes, FilmConfig())
    test = np.flatnonzero(np.isin(ds.y_test, pool.classes))[:500]
    xt = images_for_test(ds, test, bb)
    remap = {int(c): i for i, c in enumerate(pool.classes)}
    yt = np.array([remap[int(c)] for c in ds.y_test[test]])
    z = film_logits(m, bb, xt)
    return {"resolution": res, "train_s": m.train_seconds,
            "test_accuracy": float((z[0].argmax(1) == yt).mean()), "n_test": len(test)}  # fmt: skip


def images_for_test(ds, idx, bb) -> torch.Tensor:
    return bb.preprocess(ds.x_test[idx])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--resolutions", default="64,96")
    ap.add_argument("--shots", type=int, default=16)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--models", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--memory-models", type=int, default=65)
    ap.add_argument("--compare-vmap", action="store_true")
    ap.add_argument("--accuracy", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--_memory-step", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._memory_step is not None:
        res = args._memory_step
        print(json.dumps(memory_step(res, args.device, args.batch_size, args.memory_models)))
        return
    resolutions = [int(r) for r in args.resolutions.split(",")]
    print(f"device={args.device} threads={torch.get_num_threads()} torch={torch.__version__}")
    print(
        "\n| px | K | imgs/model | s per model per epoch | first epoch (s) | est. K=65 x 10 epochs |"
    )
    print("|---|---|---|---|---|---|")
    for res in resolutions:
        r = time_per_model_epoch(args, res)
        print(f"| {res} | {r['models']} | {r['train_images_per_model']} | "
              f"{r['s_per_model_per_epoch']:.2f} | {r['first_epoch_s']:.1f} | "
              f"{r['s_per_model_10_epochs_K65_estimate'] / 60:.1f} min |", flush=True)  # fmt: skip
    if not args.skip_memory:
        print(f"\nmemory, K = {args.memory_models} models, batch {args.batch_size}:")
        for res in resolutions:
            cmd = [sys.executable, __file__, "--_memory-step", str(res), "--device", args.device,
                   "--batch-size", str(args.batch_size), "--memory-models", str(args.memory_models)]  # fmt: skip
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            print(json.dumps(json.loads(out.strip().splitlines()[-1])), flush=True)
    if args.compare_vmap:
        print("\nvmap vs grouped, one step, K=4:", json.dumps(compare_vmap(args)), flush=True)
    if args.accuracy:
        print("\naccuracy, default FilmConfig:", json.dumps(accuracy(args)), flush=True)


if __name__ == "__main__":
    main()
