"""Commands around the audits: ``data list|fetch``, ``features``, ``theory`` and ``report``."""

from __future__ import annotations

from pathlib import Path

from miascale.cli import render
from miascale.cli.build import check_device, check_out_dir, check_seed, csv, parse_fpr
from miascale.cli.options import options
from miascale.console import out
from miascale.errors import MiascaleError
from miascale.experiments.workflows import write_json


@options("json")
def data_list(**o) -> None:
    """Known datasets, where they come from, and whether they are present."""
    from miascale.data import available

    rows = available()
    if o["json_"]:
        return render.emit_json(rows)
    out.print(render.data_table(rows))
    out.print("Your own data: npz:PATH, images:DIR, texts:DIR, texts:FILE.csv")


@options("name", "json")
def data_fetch(**o) -> None:
    """Make a dataset available locally (download where possible, else explain how)."""
    from miascale.data import fetch, load_dataset

    name = o["name"]
    where = fetch(name)
    summary = load_dataset(name).summary()
    summary["location"] = where
    if o["json_"]:
        return render.emit_json(summary)
    out.print(
        f"{name}: {summary['n_classes']} classes, {summary['n_train']} train / "
        f"{summary['n_test']} test examples, at {where}"
    )


def load_features(
    dataset: str, backbone: str, resolution, min_per_class, batch_size, device, quiet=False
):
    """The (cached) features of a dataset and backbone; flags are validated before any loading."""
    from miascale.backbones import resolve
    from miascale.backbones.cache import features_for
    from miascale.data import load_dataset

    spec = resolve(backbone, resolution)  # validate flags before loading anything
    if batch_size is not None and batch_size < 1:
        raise MiascaleError(f"--batch-size must be a positive integer, got {batch_size}.")
    ds = load_dataset(dataset, min_per_class=min_per_class)
    return features_for(ds, spec, device=device, batch_size=batch_size, quiet=quiet)


@options("dataset", "backbone", "resolution", "min_per_class", "feature_batch", "device", "out",
         "json")  # fmt: skip
def features(**o) -> None:
    """Extract features for a dataset and backbone, and cache them (a repeated call is served from cache)."""
    check_device(o["device"])
    check_out_dir(o["out_dir"])
    fs = load_features(o["dataset"], o["backbone"], o["resolution"], o["min_per_class"],
                       o["batch_size"], o["device"])  # fmt: skip
    summary = fs.summary()
    if o["out_dir"] is not None:
        write_json(Path(o["out_dir"]) / "features.json", summary)
    if o["json_"]:
        return render.emit_json(summary)
    src = "cache" if fs.from_cache else "extracted"
    out.print(
        f"{fs.dataset} × {fs.backbone.name}: train {fs.x_train.shape}, test {fs.x_test.shape} "
        f"({src} in {fs.seconds:.1f} s) → {fs.path}",
        markup=False,
    )


@options("dim", "sigma", "theory_classes", "theory_shots", "shadow_models", "fpr",
         "theory_population", "targets", "head", "theory_seed", "out", "json")  # fmt: skip
def theory(**o) -> None:
    """The simplified model of fine-tuning: LiRA simulated vs exact and asymptotic closed forms.

    Class means m̂_c from S Gaussian examples per class; score ⟨x, m̂_y⟩. Reports per FPR level the
    fitted slope of log(TPR − FPR) on log S (simulation fresh/pool, exact) and the S from which the
    exact local slope is within 0.05 of −½. --out writes theory.json and theory.png.
    """
    from miascale.theory import TheoryConfig

    check_seed(o["seed"])
    out_dir = o["out_dir"]
    check_out_dir(out_dir)
    pops = ("fresh", "pool") if o["population"] == "both" else (o["population"],)
    config = TheoryConfig(
        dim=o["dim"], sigma=o["sigma"], classes=o["classes"],
        shots=csv(o["shots"], int, "--shots") or (), shadow_models=o["shadow_models"],
        fpr=parse_fpr(o["fpr"]), population=pops, n_targets=o["targets"], head=o["head"],
        seed=o["seed"],
    ).validate()  # fmt: skip
    result = _run_theory(config, quiet=o["json_"])
    doc = result.to_dict()
    if out_dir is not None:
        from miascale.paths import atomic_write_bytes
        from miascale.report.theory_plot import theory_png

        write_json(Path(out_dir) / "theory.json", doc)
        atomic_write_bytes(Path(out_dir) / "theory.png", theory_png(doc))
    if o["json_"]:
        return render.emit_json(doc)
    out.print(render.theory_table(doc))
    out.print(render.theory_line(doc, config.shots, result.seconds))
    if out_dir is not None:
        out.print(f"wrote {Path(out_dir) / 'theory.json'} and theory.png", markup=False)


def _run_theory(config, quiet: bool):
    """Run the theory with a progress bar on stderr (none when ``quiet``)."""
    from miascale.console import progress_bar
    from miascale.theory import run_theory

    n_steps = 2 + len(config.population) * len(set(config.shots))
    with progress_bar(disable=quiet) as bar:
        task = bar.add_task("theory", total=n_steps)

        def step(msg: str) -> None:
            bar.update(task, advance=1, description=msg)

        return run_theory(config, on_step=step)


@options("report_dir", "json")
def report(**o) -> None:
    """Write RUN_DIR/report.html (one self-contained file) for a sweep run and/or `miascale theory` output."""
    from miascale.report import build_report

    path = build_report(o["run_dir"])
    if o["json_"]:
        render.emit_json({"report": str(path)})
    else:
        out.print(f"wrote {path}", markup=False)
