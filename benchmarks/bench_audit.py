"""Benchmark (c): wall time and peak memory of one audit on cached features.

Default: fashion-mnist × efficientnet-lite0 (default resolution), S = 128, C = 10, M = 256
(K = 257 models, N = 2,560 pool examples). Target: < 60 s and < 4 GB on 2 cores.
Features come from the cache (`miascale features` or `make demo` fills it); the timing covers the
audit itself (pool, K heads, LiRA, metrics), and peak memory is the process's maximum RSS.

    .venv/bin/python benchmarks/bench_audit.py [--shots 128] [--shadow-models 256]
"""

from __future__ import annotations

import argparse
import resource
import time

from miascale.audit import AuditConfig, audit_features
from miascale.backbones import resolve
from miascale.backbones.cache import features_for
from miascale.data import load_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--backbone", default="efficientnet-lite0")
    ap.add_argument("--shots", type=int, default=128)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--shadow-models", type=int, default=256)
    args = ap.parse_args()
    fs = features_for(load_dataset(args.dataset), resolve(args.backbone))
    config = AuditConfig(shots=args.shots, classes=args.classes, shadow_models=args.shadow_models)
    t0 = time.perf_counter()
    r = audit_features(fs.x_train, fs.y_train, fs.x_test, fs.y_test, config, fs.class_names)
    wall = time.perf_counter() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print("| setting | wall (s) | train (s) | attack (s) | peak RSS (GB) | TPR@0.001 | test acc |")
    print("|---|---|---|---|---|---|---|")
    m = r.metrics[-1]
    print(
        f"| {fs.dataset} × {fs.backbone.name} {fs.backbone.resolution}px, S={args.shots}, "
        f"C={args.classes}, K={config.n_models} | {wall:.1f} | {r.seconds['train']:.1f} | "
        f"{r.seconds['attack']:.1f} | {peak_gb:.2f} | {m.tpr:.4f} [{m.ci_low:.4f}, {m.ci_high:.4f}] | "
        f"{r.test_accuracy.mean():.4f} |"
    )
    print(f"targets: wall < 60 s: {'met' if wall < 60 else 'MISSED'}; "
          f"peak < 4 GB: {'met' if peak_gb < 4 else 'MISSED'}; {r.converged}/{config.n_models} converged")  # fmt: skip


if __name__ == "__main__":
    main()
