"""Commands that train and attack: ``demo``, ``audit``, ``sweep`` and ``study``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from miascale.cli import render
from miascale.cli.build import (
    audit_config,
    check_device,
    check_out_dir,
    csv,
    given_flags,
    parse_fpr,
    resolve_aliases,
    sweep_spec,
)
from miascale.cli.options import options
from miascale.console import err, out
from miascale.errors import MiascaleError
from miascale.experiments.settings import SETTING_NAMES
from miascale.experiments.workflows import fit_run, run_sweep_command

#: the options that set a sweep's grid and cells (with --config the file sets all of them)
SWEEP_GRID = (
    "dataset", "backbone", "shots", "classes", "seed", "attack", "lira_variant", "epsilon",
    "dp_delta", "dp_clip", "dp_sampling_rate", "dp_steps", "finetune", "hpo", "shadow_models",
    "fpr", "resolution", "min_per_class", "membership", "l2", "standardize", *SETTING_NAMES,
)  # fmt: skip
SWEEP_ONLY = ("config", "device", "sweep_out", "backend", "workers", "address", "max_retries",
              "recompute_changed", "json")  # fmt: skip
AUDIT = (*SWEEP_GRID, "paper", "per_example", "device", "out", "json")
STUDY = ("study_config", "only", "seed", "shadow_models", "fpr", "attack", "device", "study_out",
         "backend", "workers", "address", "fit_only", "json")  # fmt: skip
DEMO_SHOTS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


@options("demo_out", "demo_paper", "demo_shots", "json")
def demo(**o) -> None:
    """The embedded default job: Fashion-MNIST × EfficientNet-Lite0, LiRA over S, fit, plan, report.

    Sweeps S ∈ {1, 2, 4, …, 256} with M = 64 shadow models and 3 seeds (resumable in --out), fits
    the power law per FPR level (admitted cells only, weighted by their bootstrap errors), plans
    the S needed for ε = 1 at each level as an interval (or says why the data cannot answer) and
    writes report.html.
    """
    from miascale.experiments.grid import SweepSpec
    from miascale.report import build_report

    out_dir, paper, probe, n_classes = o["out_dir"], o["paper"], *_demo_probe()
    spec = SweepSpec(
        datasets=("fashion-mnist",), backbones=("efficientnet-lite0",),
        shots=csv(o["shots"], int, "--shots") or DEMO_SHOTS, seeds=tuple(range(6 if paper else 3)),
        shadow_models=256 if paper else 64, variants=("lira-online",), fpr=(0.1, 0.01, 0.001),
    )  # fmt: skip
    _set_aside_older_demo(out_dir, spec)
    summary, store = run_sweep_command(spec, out_dir)
    store.close()
    fitted, tail = fit_run(out_dir)
    plan_lines, plan_docs = _demo_plans(fitted, n_classes)
    path = build_report(out_dir)
    if o["json_"]:
        return render.emit_json({"sweep": summary.to_dict(), "fit": fitted.to_dict(),
                                 "plan_epsilon_1": plan_docs, "probe": probe.to_dict(),
                                 "report": str(path)})  # fmt: skip
    tail_text = [] if tail is None else render.tail_lines(tail)
    render.print_lines(render.level_lines(fitted) + tail_text + plan_lines, soft_wrap=True)
    out.print(f"sweep: {summary.ran} cells run, {summary.skipped} reused, {summary.seconds:.0f} s")
    out.print(f"report: {path}")


def _demo_probe():
    """The demo's features and a 20-shot linear probe of them: (probe, number of classes)."""
    from miascale.cli.misc import load_features
    from miascale.probe import linear_probe

    fs = load_features("fashion-mnist", "efficientnet-lite0", None, None, None, "cpu")
    probe = linear_probe(fs.x_train, fs.y_train, fs.x_test, fs.y_test, 20)
    err.print(
        f"features: fashion-mnist × efficientnet-lite0 {fs.backbone.resolution}px, "
        f"train {fs.x_train.shape}, test {fs.x_test.shape}, {len(fs.class_names)} classes; "
        f"20-shot linear probe {probe.accuracy_mean:.3f}",
        soft_wrap=True,
    )
    return probe, len(fs.class_names)


def _demo_plans(fitted, n_classes: int) -> tuple[list[str], dict]:
    """The plan for ε = 1 at every level with a law: (lines, documents per level)."""
    from miascale.planning import plan_sentence
    from miascale.scaling import plan as _plan

    lines, docs = [], {}
    for lv in fitted.levels:
        key = f"{lv.fpr_level:g}"
        docs[key] = None
        if not lv.ok:
            lines.append(f"ε = 1 at FPR {key}: no plan, the law was not fitted ({lv.reason}).")
            continue
        try:
            p = _plan(lv, lv.fpr_level, n_classes, epsilon=1.0)
            lines.append(plan_sentence(p))
            docs[key] = p.to_dict()
        except MiascaleError as exc:
            lines.append(f"ε = 1 at FPR {key}: no plan: {exc}")
    return lines, docs


def _set_aside_older_demo(out_dir: Path, spec) -> None:
    """A demo run directory written by an older recipe (another sweep spec) is renamed to
    ``<out>.previous-N`` so that the demo starts afresh instead of failing or mixing results."""
    import sqlite3

    from miascale.experiments.store import DB_NAME, _canonical, _plain

    db = Path(out_dir) / DB_NAME
    if not db.is_file():
        return
    try:
        con = sqlite3.connect(db)
        try:
            (stored,) = con.execute("SELECT value FROM meta WHERE key = 'spec'").fetchone()
        finally:
            con.close()
    except (sqlite3.Error, TypeError):
        return  # not ours to judge: the sweep reports it
    if json.loads(stored) == json.loads(_canonical(_plain(spec.to_dict()))):
        return
    n = 1
    while Path(f"{out_dir}.previous-{n}").exists():
        n += 1
    target = Path(f"{out_dir}.previous-{n}")
    Path(out_dir).rename(target)
    err.print(
        f"{out_dir} holds an older demo (another recipe or settings); moved it to {target} and "
        "starting afresh.",
        highlight=False, markup=False,
    )  # fmt: skip


@options(*AUDIT)
def audit(**o) -> None:
    """Audit one setting: K = M + 1 heads trained at once, LiRA, TPR at fixed FPR with 95% CIs."""
    config = audit_config(o)  # seed, FPR levels, device, modes: checked before computing
    out_dir = o["out_dir"]
    check_out_dir(out_dir)  # created and write-tested before any data is loaded
    result, name, provenance = _audit_result(o, config)
    doc = {**result.summary(), "provenance": provenance}
    pe_doc = None
    if o["per_example"]:
        from miascale.vulnerability import per_example_report

        pe_doc = doc["per_example"] = per_example_report(result, out_dir)
    if out_dir is not None:
        from miascale.audit import write_audit

        doc = write_audit(result, Path(out_dir), provenance, extra=doc)
    if o["json_"]:
        return render.emit_json(doc)
    title = f"{provenance['dataset']} × {name}, S={config.shots}, K={config.n_models}"
    out.print(render.audit_table(result, title))
    for line in render.audit_lines(result, config.n_models):
        out.print(line)
    if pe_doc is not None:
        out.print(render.per_example_table(pe_doc))
    if out_dir is not None:
        extra = " and per_example.npz" if o["per_example"] else ""
        out.print(f"wrote {Path(out_dir) / 'audit.json'}, signals.npz{extra}", markup=False)


def _audit_result(o: dict, config):
    """Load the data, run the audit: (result, backbone name, provenance)."""
    from miascale.audit import audit_features, audit_film

    dataset, backbone, resolution = o["dataset"], o["backbone"], o["resolution"]
    if config.finetune == "film":
        from miascale.data import load_dataset

        ds = load_dataset(dataset, min_per_class=o["min_per_class"])
        _announce(f"{ds.name} × {backbone} (FiLM)", config, config.classes or ds.n_classes)
        result = audit_film(ds, backbone, resolution, config, device=o["device"])
        provenance = {"dataset": ds.name, "dataset_fingerprint": ds.fingerprint,
                      "backbone": backbone, "resolution": result.film["resolution"]}  # fmt: skip
        return result, f"{backbone} FiLM", provenance
    from miascale.cli.misc import load_features

    fs = load_features(dataset, backbone, resolution, o["min_per_class"], None, o["device"])
    _announce(f"{fs.dataset} × {fs.backbone.name}", config, config.classes or len(fs.class_names))
    result = audit_features(fs.x_train, fs.y_train, fs.x_test, fs.y_test, config,
                            fs.class_names, device=o["device"])  # fmt: skip
    provenance = {"dataset": fs.dataset, "dataset_fingerprint": fs.dataset_fingerprint,
                  "backbone": fs.backbone.config(), "feature_cache_key": fs.key}  # fmt: skip
    return result, fs.backbone.name, provenance


def _announce(what: str, config, classes: int) -> None:
    err.print(f"auditing {what}: S={config.shots}, C={classes}, K={config.n_models} models",
              markup=False, highlight=False)  # fmt: skip


@options(*SWEEP_ONLY[:1], *SWEEP_GRID, *SWEEP_ONLY[1:], sweep=True, context=True)
def sweep(ctx: typer.Context, **o) -> None:
    """Run a grid of audits into a resumable, crash-safe result store (RUN_DIR/results.sqlite).

    Failed cells are recorded as failed and listed at the end (exit status 1); the other cells
    complete. Rerunning the same command runs only the failed or missing cells. The grid comes
    from --config FILE or from the grid flags, never both.
    """
    from miascale.experiments.grid import SweepSpec

    config, out_dir = o["config"], o["out_dir"]
    if config is not None and given_flags(ctx, SWEEP_GRID):
        raise MiascaleError(
            f"--config {config} sets the whole grid, so {', '.join(given_flags(ctx, SWEEP_GRID))} "
            f"cannot be given with it: put those settings in the file, or leave out --config (a "
            f"config file and grid flags never both set the grid; see docs/sweep.md)."
        )
    o = resolve_aliases(ctx, o)
    check_device(o["device"])
    spec = SweepSpec.from_toml(config) if config is not None else sweep_spec(o)
    summary, store = run_sweep_command(
        spec, out_dir, o["device"], backend=o["backend"], address=o["address"],
        workers=o["workers"], max_retries=o["max_retries"], on_error="record", recompute_changed=o["recompute_changed"],
    )  # fmt: skip
    n_rows = len(store.rows())
    store.close()
    if o["json_"]:
        render.emit_json({**summary.to_dict(), "run_dir": str(out_dir), "rows": n_rows,
                          "backend": o["backend"]})  # fmt: skip
    else:
        out.print(render.sweep_line(summary, out_dir, n_rows), markup=False)
    if summary.failures:  # the other cells are recorded; exit 1 (2 is for user errors)
        err.print(
            f"[bold red]{summary.failed} cell(s) failed[/] (rerun the command to retry them):"
        )
        for cid, message, label in summary.failures:
            err.print(f"  {label} [{cid}]: {message}", highlight=False, markup=False)
        raise typer.Exit(1)


@options(*STUDY, sweep=True, context=True)
def study(ctx: typer.Context, **o) -> None:
    """One law over S and C on images and text: sweeps (resumable), pooled fit, study.html.

    Preset: Fashion-MNIST × EfficientNet-Lite0 (C 2, 5, 10; S 1…256) and WordNet × MiniLM (C 2,
    5, 10, 20, 34 of the classes with ≥ 500 texts; S 1…128). See docs/study.md.
    """
    from miascale.audit import expand_attacks
    from miascale.study import PRESET, StudySettings, read_config, run_study, select

    o = resolve_aliases(ctx, o)
    check_device(o["device"])
    chosen = select(read_config(o["config"]) if o["config"] else PRESET,
                    csv(o["only"], str, "--only"))  # fmt: skip
    settings = StudySettings(csv(o["seed"], int, "--seed"), o["shadow_models"],
                             parse_fpr(o["fpr"]), expand_attacks(o["attack"]))  # fmt: skip
    res = run_study(o["out_dir"], chosen, settings, device=o["device"], backend=o["backend"],
                    address=o["address"], workers=o["workers"], fit_only=o["fit_only"])  # fmt: skip
    if o["json_"]:
        render.emit_json(res.to_dict())
    else:
        render.print_lines(res.lines(), soft_wrap=True)
    if res.failed or res.fit is None:
        raise typer.Exit(1)
