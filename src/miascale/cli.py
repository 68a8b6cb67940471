"""The ``miascale`` command line: a thin typer app over the library (DESIGN §4).

Results go to stdout (``--json`` prints only JSON there); progress and messages go to stderr.
User errors print one paragraph and exit with status 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from miascale import __version__
from miascale.console import err, out
from miascale.errors import MiascaleError

app = typer.Typer(
    name="miascale",
    help="Measure, explain and predict membership-inference vulnerability of fine-tuned classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Known datasets: list them, fetch them.", no_args_is_help=True)
app.add_typer(data_app, name="data")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print a machine-readable result on stdout.")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Write artifacts to this folder.")]
DatasetOpt = Annotated[
    str,
    typer.Option(
        "--dataset",
        "-d",
        help="fashion-mnist, wordnet, digits, npz:PATH, images:DIR, texts:DIR|FILE.csv",
    ),
]
BackboneOpt = Annotated[
    str,
    typer.Option("--backbone", "-b", help="efficientnet-lite0, minilm, identity, hf:<model-id>"),
]
ResolutionOpt = Annotated[
    int | None, typer.Option("--resolution", help="Input size in pixels for image backbones.")
]
MinPerClassOpt = Annotated[
    int | None,
    typer.Option("--min-per-class", help="Keep only classes with at least this many examples."),
]


def _emit_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o: object):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _write_json(path: Path, obj: object) -> None:
    from miascale.paths import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        out.print(f"miascale {__version__}")
        raise typer.Exit()


@data_app.command("list")
def data_list(json_: JsonOpt = False) -> None:
    """Known datasets, where they come from, and whether they are present."""
    from miascale.data import available

    rows = available()
    if json_:
        _emit_json(rows)
        return
    t = Table(title="datasets")
    for col in ("name", "modality", "classes", "present", "location / how to get"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            r["name"], r["modality"], str(r["classes"]), "yes" if r["present"] else "no",
            r["location"] or r["how_to_get"],
        )  # fmt: skip
    out.print(t)
    out.print("Your own data: npz:PATH, images:DIR, texts:DIR, texts:FILE.csv")


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="Dataset name.")], json_: JsonOpt = False
) -> None:
    """Make a dataset available locally (download where possible, else explain how)."""
    from miascale.data import fetch, load_dataset

    where = fetch(name)
    summary = load_dataset(name).summary()
    summary["location"] = where
    if json_:
        _emit_json(summary)
    else:
        out.print(
            f"{name}: {summary['n_classes']} classes, {summary['n_train']} train / "
            f"{summary['n_test']} test examples, at {where}"
        )


def _features(
    dataset: str, backbone: str, resolution, min_per_class, batch_size, device, quiet=False
):
    from miascale.backbones import resolve
    from miascale.backbones.cache import features_for
    from miascale.data import load_dataset

    spec = resolve(backbone, resolution)  # validate flags before loading anything
    if batch_size is not None and batch_size < 1:
        raise MiascaleError(f"--batch-size must be a positive integer, got {batch_size}.")
    ds = load_dataset(dataset, min_per_class=min_per_class)
    return features_for(ds, spec, device=device, batch_size=batch_size, quiet=quiet)


@app.command()
def features(
    dataset: DatasetOpt = "fashion-mnist",
    backbone: BackboneOpt = "efficientnet-lite0",
    resolution: ResolutionOpt = None,
    min_per_class: MinPerClassOpt = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Inputs per batch.")
    ] = None,
    device: Annotated[
        str, typer.Option("--device", help="torch device, e.g. cpu or cuda.")
    ] = "cpu",
    out_dir: OutOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Extract features for a dataset and backbone, and cache them (a repeated call is served from cache)."""
    fs = _features(dataset, backbone, resolution, min_per_class, batch_size, device)
    summary = fs.summary()
    if out_dir is not None:
        _write_json(Path(out_dir) / "features.json", summary)
    if json_:
        _emit_json(summary)
    else:
        src = "cache" if fs.from_cache else "extracted"
        out.print(
            f"{fs.dataset} × {fs.backbone.name}: train {fs.x_train.shape}, test {fs.x_test.shape} "
            f"({src} in {fs.seconds:.1f} s) → {fs.path}"
        )


@app.command()
def demo(
    shots: Annotated[int, typer.Option("--shots", help="Examples per class for the probe.")] = 20,
    json_: JsonOpt = False,
) -> None:
    """The embedded default job: Fashion-MNIST × EfficientNet-Lite0 features and a few-shot probe.

    (The full demo — sweep over S, LiRA, power-law fit, HTML report — lands with the sweep.)
    """
    from miascale.probe import linear_probe

    fs = _features("fashion-mnist", "efficientnet-lite0", None, None, None, "cpu")
    probe = linear_probe(fs.x_train, fs.y_train, fs.x_test, fs.y_test, shots)
    result = {
        "features": fs.summary(),
        "class_names": list(fs.class_names),
        "probe": probe.to_dict(),
    }
    if json_:
        _emit_json(result)
        return
    t = Table(title="miascale demo: fashion-mnist × efficientnet-lite0")
    t.add_column("what")
    t.add_column("value")
    t.add_row("classes", f"{len(fs.class_names)}: " + ", ".join(fs.class_names))
    t.add_row("train features", str(fs.x_train.shape))
    t.add_row("test features", str(fs.x_test.shape))
    t.add_row("resolution", f"{fs.backbone.resolution} px")
    t.add_row("features from", f"{'cache' if fs.from_cache else 'extraction'} ({fs.seconds:.1f} s)")
    t.add_row(
        f"{shots}-shot linear probe",
        f"{probe.accuracy_mean:.3f} ± {probe.accuracy_std:.3f} test accuracy (seeds {list(probe.seeds)})",
    )
    out.print(t)


def _parse_fpr(text: str) -> tuple[float, ...]:
    try:
        levels = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise MiascaleError(
            f"--fpr takes comma-separated numbers in (0, 1), e.g. 0.1,0.01,0.001; got {text!r}."
        ) from None
    return levels


@app.command()
def audit(
    shots: Annotated[int, typer.Option("--shots", "-s", help="Training examples per class (S).")],
    dataset: DatasetOpt = "fashion-mnist",
    backbone: BackboneOpt = "efficientnet-lite0",
    resolution: ResolutionOpt = None,
    min_per_class: MinPerClassOpt = None,
    classes: Annotated[
        int | None, typer.Option("--classes", "-c", help="Use a seeded random subset of C classes.")
    ] = None,
    shadow_models: Annotated[
        int, typer.Option("--shadow-models", "-m", help="Shadow models M (K = M + 1 models).")
    ] = 64,
    attack: Annotated[str, typer.Option("--attack", help="Attack: lira.")] = "lira",
    lira_variant: Annotated[
        str, typer.Option("--lira-variant", help="online | offline")
    ] = "online",
    variance: Annotated[
        str, typer.Option("--variance", help="per-example | global")
    ] = "per-example",
    location: Annotated[str, typer.Option("--location", help="mean | median")] = "mean",
    membership: Annotated[
        str, typer.Option("--membership", help="balanced | bernoulli")
    ] = "balanced",
    fpr: Annotated[
        str, typer.Option("--fpr", help="FPR levels, comma-separated.")
    ] = "0.1,0.01,0.001",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the pool and membership draws.")] = 0,
    l2: Annotated[float, typer.Option("--l2", help="L2 strength of the heads.")] = 1e-3,
    optimizer: Annotated[str, typer.Option("--optimizer", help="lbfgs | adam")] = "lbfgs",
    device: Annotated[
        str, typer.Option("--device", help="torch device, e.g. cpu or cuda.")
    ] = "cpu",
    out_dir: OutOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Audit one setting: K = M + 1 heads trained at once, LiRA, TPR at fixed FPR with 95% CIs."""
    from miascale.audit import AuditConfig, audit_features, write_audit
    from miascale.membership import DESIGNS
    from miascale.training.heads import HeadConfig

    if membership not in DESIGNS:
        raise MiascaleError(
            f"Unknown --membership {membership!r}; choose one of {', '.join(DESIGNS)}."
        )
    config = AuditConfig(
        shots=shots, classes=classes, shadow_models=shadow_models, attack=attack,
        lira_variant=lira_variant, variance=variance, location=location, membership=membership,
        fpr=_parse_fpr(fpr), seed=seed, head=HeadConfig(l2=l2, optimizer=optimizer),
    ).validate()  # fmt: skip
    fs = _features(dataset, backbone, resolution, min_per_class, None, device)
    err.print(
        f"auditing {fs.dataset} × {fs.backbone.name}: S={shots}, "
        f"C={classes or len(fs.class_names)}, K={config.n_models} models"
    )
    result = audit_features(
        fs.x_train, fs.y_train, fs.x_test, fs.y_test, config, fs.class_names, device=device
    )
    provenance = {"dataset": fs.dataset, "dataset_fingerprint": fs.dataset_fingerprint,
                  "backbone": fs.backbone.config(), "feature_cache_key": fs.key}  # fmt: skip
    doc = {**result.summary(), "provenance": provenance}
    if out_dir is not None:
        doc = write_audit(result, Path(out_dir), provenance)
    if json_:
        _emit_json(doc)
        return
    t = Table(title=f"{fs.dataset} × {fs.backbone.name}, S={shots}, K={config.n_models}, "
                    f"LiRA {lira_variant}")  # fmt: skip
    for col in ("FPR", "TPR", "95% CI", "advantage", "negatives", "resolvable"):
        t.add_column(col, justify="right")
    for m in result.metrics:
        t.add_row(
            f"{m.fpr_level:g}", f"{m.tpr:.4f}", f"[{m.ci_low:.4f}, {m.ci_high:.4f}]",
            f"{m.advantage:+.4f}", str(m.n_neg), "yes" if m.resolvable else "no",
        )  # fmt: skip
    out.print(t)
    acc = result.test_accuracy
    out.print(
        f"AUC {result.auc:.4f} · best balanced accuracy {result.best_balanced_accuracy:.4f} · "
        f"test accuracy {acc.mean():.4f} ± {acc.std():.4f} · "
        f"{result.converged}/{config.n_models} heads converged · "
        f"{result.n_unscored} unscored pairs · {sum(result.seconds.values()):.1f} s"
    )
    if out_dir is not None:
        out.print(f"wrote {Path(out_dir) / 'audit.json'} and signals.npz")


def main() -> None:
    """Console-script entry point: user errors become one paragraph on stderr and exit status 2."""
    try:
        app(standalone_mode=True)
    except MiascaleError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
