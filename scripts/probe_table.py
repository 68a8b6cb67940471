"""Linear-probe test accuracy at 5, 20 and 200 shots per class for the two default settings.

Writes a markdown table (docs/linear-probe.md). Extracts (or reuses cached) features for
fashion-mnist × efficientnet-lite0 and wordnet × minilm. Run: `make docs`.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from miascale.backbones import resolve
from miascale.backbones.cache import features_for
from miascale.data import load_dataset
from miascale.probe import linear_probe

# (dataset, backbone, min examples per class): WordNet keeps its 34 classes with >= 500 glosses,
# so that every class has 200 training shots.
SETTINGS = (("fashion-mnist", "efficientnet-lite0", None), ("wordnet", "minilm", 500))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("docs/linear-probe.md"))
    ap.add_argument("--shots", type=int, nargs="+", default=[5, 20, 200])
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    lines = [
        "# Linear-probe accuracy of the default features",
        "",
        "Multinomial logistic regression (scikit-learn, L2, C = 1) on S standardised training "
        "examples per class, accuracy on the full test split; mean ± std over "
        f"{args.seeds} seeds. Produced by `python scripts/probe_table.py` (`make docs`) on "
        f"{platform.machine()} with {__import__('os').cpu_count()} cores.",
        "",
        "| dataset | backbone | resolution | classes | D | "
        + " | ".join(f"{s}-shot" for s in args.shots)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(args.shots),
    ]
    for dataset, backbone, min_per_class in SETTINGS:
        t0 = time.perf_counter()
        fs = features_for(load_dataset(dataset, min_per_class), resolve(backbone))
        cells = []
        for s in args.shots:
            r = linear_probe(
                fs.x_train, fs.y_train, fs.x_test, fs.y_test, s, tuple(range(args.seeds))
            )
            cells.append(f"{r.accuracy_mean:.3f} ± {r.accuracy_std:.3f}")
        res = f"{fs.backbone.resolution} px" if fs.backbone.resolution else "–"
        lines.append(
            f"| {fs.dataset} | {backbone} | {res} | {len(fs.class_names)} | {fs.dim} | "
            + " | ".join(cells)
            + " |"
        )
        print(lines[-1], f"({time.perf_counter() - t0:.0f} s)", flush=True)
    lines += [
        "",
        "`wordnet[min=500]` is `--dataset wordnet --min-per-class 500`: the 34 of 45 "
        "lexicographer-file classes with at least 500 glosses (train + test).",
    ]
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
