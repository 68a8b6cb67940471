"""Head recipes side by side: TPR@FPR and the largest |LiRA statistic| per S and recipe.

Runs the demo's setting (Fashion-MNIST × EfficientNet-Lite0 features, M = 64, LiRA online) at the
given shots and seeds once per head recipe (``HeadConfig.standardize``) and prints a markdown
table; docs/audit.md "Head recipe" quotes its output.

    .venv/bin/python scripts/recipe_compare.py --shots 1,2,4,8,16 --seeds 0
"""

from __future__ import annotations

import argparse

import numpy as np

from miascale.audit import AuditConfig, attack_signals, train_and_signal
from miascale.backbones import resolve
from miascale.backbones.cache import features_for
from miascale.data import load_dataset
from miascale.training.heads import STANDARDIZE, HeadConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shots", default="1,2,4,8,16")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--recipes", default="subset,pool")
    ap.add_argument("--shadow-models", type=int, default=64)
    args = ap.parse_args()
    shots = [int(s) for s in args.shots.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    recipes = [r for r in args.recipes.split(",") if r in STANDARDIZE]
    fs = features_for(load_dataset("fashion-mnist"), resolve("efficientnet-lite0", None))
    fpr = (0.1, 0.01, 0.001)
    print("| S | seed | recipe | TPR@0.1 | TPR@0.01 | TPR@0.001 [95% CI] | max abs φ | test acc |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for s in shots:
        for seed in seeds:
            for recipe in recipes:
                config = AuditConfig(
                    shots=s, shadow_models=args.shadow_models, seed=seed, fpr=fpr,
                    head=HeadConfig(standardize=recipe),
                )  # fmt: skip
                t = train_and_signal(fs.x_train, fs.y_train, fs.x_test, fs.y_test, config)
                r = attack_signals(t, config)
                m = {round(x.fpr_level, 6): x for x in r.metrics}
                low = m[0.001]
                print(
                    f"| {s} | {seed} | {recipe} | {m[0.1].tpr:.3f} | {m[0.01].tpr:.3f} | "
                    f"{low.tpr:.3f} [{low.ci_low:.3f}, {low.ci_high:.3f}] | "
                    f"{np.abs(t.stats).max():.1f} | {t.test_accuracy.mean():.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
