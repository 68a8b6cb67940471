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

ShadowOpt = Annotated[
    int, typer.Option("--shadow-models", "-m", help="Shadow models M (K = M + 1 models).")
]
MembershipOpt = Annotated[str, typer.Option("--membership", help="balanced | bernoulli")]
FprOpt = Annotated[str, typer.Option("--fpr", help="FPR levels, comma-separated.")]
L2Opt = Annotated[float, typer.Option("--l2", help="L2 strength of the heads.")]
_STANDARDIZE_HELP = (
    "Head recipe, whose statistics set the feature scale: pool (default; the pool's, shared by "
    "all models), subset (each model's own training subset; outliers at small S), none (raw "
    "features). See docs/audit.md."
)
DeviceOpt = Annotated[str, typer.Option("--device", help="torch device, e.g. cpu or cuda.")]


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
    device: DeviceOpt = "cpu",
    out_dir: OutOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Extract features for a dataset and backbone, and cache them (a repeated call is served from cache)."""
    _check_device(device)
    _check_out_dir(out_dir)
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
            f"({src} in {fs.seconds:.1f} s) → {fs.path}",
            markup=False,
        )


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Run directory.")] = Path("runs/demo"),
    paper: Annotated[
        bool,
        typer.Option("--paper", help="The paper's budget: M = 256 shadow models, 6 seeds."),
    ] = False,
    shots: Annotated[
        str | None, typer.Option("--shots", help="Comma-separated S (default 1, 2, 4, …, 256).")
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """The embedded default job: Fashion-MNIST × EfficientNet-Lite0, LiRA over S, fit, plan, report.

    Sweeps S ∈ {1, 2, 4, …, 256} with M = 64 shadow models and 3 seeds (resumable in --out), fits
    the power law per FPR level (admitted cells only, weighted by their bootstrap errors), plans
    the S needed for ε = 1 at each level as an interval (or says why the data cannot answer) and
    writes report.html.
    """
    from miascale.experiments.grid import SweepSpec
    from miascale.planning import plan_sentence
    from miascale.probe import linear_probe
    from miascale.report import build_report
    from miascale.scaling import plan as _plan

    fs = _features("fashion-mnist", "efficientnet-lite0", None, None, None, "cpu")
    probe = linear_probe(fs.x_train, fs.y_train, fs.x_test, fs.y_test, 20)
    err.print(
        f"features: fashion-mnist × efficientnet-lite0 {fs.backbone.resolution}px, "
        f"train {fs.x_train.shape}, test {fs.x_test.shape}, {len(fs.class_names)} classes; "
        f"20-shot linear probe {probe.accuracy_mean:.3f}"
    )
    spec = SweepSpec(
        datasets=("fashion-mnist",), backbones=("efficientnet-lite0",),
        shots=_csv(shots, int, "--shots") or (1, 2, 4, 8, 16, 32, 64, 128, 256),
        seeds=tuple(range(6 if paper else 3)), shadow_models=256 if paper else 64,
        variants=("lira-online",), fpr=(0.1, 0.01, 0.001),
    )  # fmt: skip
    _set_aside_older_demo(out_dir, spec)
    summary, store = run_sweep_command(spec, out_dir)
    store.close()
    fitted, tail = fit_run(out_dir)
    plan_lines, plan_docs = [], {}
    for lv in fitted.levels:  # the plan for ε = 1 at every level with a law
        key = f"{lv.fpr_level:g}"
        if not lv.ok:
            plan_lines.append(f"ε = 1 at FPR {key}: no plan, the law was not fitted ({lv.reason}).")
            plan_docs[key] = None
            continue
        try:
            p = _plan(lv, lv.fpr_level, len(fs.class_names), epsilon=1.0)
            plan_lines.append(plan_sentence(p))
            plan_docs[key] = p.to_dict()
        except MiascaleError as exc:
            plan_lines.append(f"ε = 1 at FPR {key}: no plan: {exc}")
            plan_docs[key] = None
    path = build_report(out_dir)
    if json_:
        _emit_json({"sweep": summary.to_dict(), "fit": fitted.to_dict(),
                    "plan_epsilon_1": plan_docs, "probe": probe.to_dict(),
                    "report": str(path)})  # fmt: skip
        return
    tail_text = [] if tail is None else tail_lines(tail)
    for line in level_lines(fitted) + tail_text + plan_lines:
        out.print(line, highlight=False, markup=False, soft_wrap=True)
    out.print(f"sweep: {summary.ran} cells run, {summary.skipped} reused, {summary.seconds:.0f} s")
    out.print(f"report: {path}")


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


def _parse_fpr(text: str) -> tuple[float, ...]:
    try:
        levels = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise MiascaleError(
            f"--fpr takes comma-separated numbers in (0, 1), e.g. 0.1,0.01,0.001; got {text!r}."
        ) from None
    dup = sorted({t for t in levels if levels.count(t) > 1})
    if dup:
        raise MiascaleError(
            f"--fpr lists {', '.join(f'{t:g}' for t in dup)} more than once (got {text!r}); give "
            f"each FPR level once."
        )
    return levels


def _check_seed(seed: int, flag: str = "--seed") -> None:
    if seed < 0:
        raise MiascaleError(f"{flag} must be a non-negative integer, got {seed}.")


def _check_out_dir(path: Path | None) -> None:
    """--out must be a folder this process can write: checked (created) before any work."""
    import tempfile

    if path is None:
        return
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MiascaleError(
            f"--out {path} is a file, not a folder; give a folder for the outputs (it is created "
            f"if missing)."
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".miascale-write-check-"):
            pass
    except OSError as e:
        raise MiascaleError(
            f"Cannot write to --out {path}: {e.strerror or e}. Give a writable folder."
        ) from None


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
    shadow_models: ShadowOpt = 64,
    attack: Annotated[
        str,
        typer.Option(
            "--attack",
            help="lira, rmia, loss, all, a variant (lira-offline, rmia-offline, …) or a comma "
            "list; all run on the same trained models. The first is the primary attack.",
        ),
    ] = "lira",
    lira_variant: Annotated[
        str,
        typer.Option("--lira-variant", "--mode", help="online | offline (for bare lira / rmia)"),
    ] = "online",
    gamma: Annotated[float, typer.Option("--gamma", help="RMIA's γ.")] = 1.0,
    rmia_a: Annotated[
        float | None,
        typer.Option("--rmia-a", help="Offline RMIA's a in [0, 1] (default: tuned on shadows)."),
    ] = None,
    population: Annotated[
        int, typer.Option("--population", help="RMIA population points (train split, not pool).")
    ] = 10_000,
    hpo: Annotated[
        int | None,
        typer.Option(
            "--hpo",
            help="Optuna trials tuning the head on a 70/30 split of one target-like training set; "
            "the best values train all K models (default: off; 20 with --paper).",
        ),
    ] = None,
    paper: Annotated[
        bool,
        typer.Option("--paper", help="The research's budget: M = 256 shadow models and --hpo 20."),
    ] = False,
    epsilon: Annotated[
        float | None,
        typer.Option("--epsilon", help="Train DP-SGD heads with this ε (default: no DP)."),
    ] = None,
    delta: Annotated[
        float | None, typer.Option("--delta", help="DP δ (default: a power of ten ≤ 1/(10·n)).")
    ] = None,
    clip: Annotated[
        float | None, typer.Option("--clip", help="DP per-example gradient norm R (default 1).")
    ] = None,
    sampling_rate: Annotated[
        float | None,
        typer.Option("--sampling-rate", help="DP Poisson rate q (default: batches of ~128)."),
    ] = None,
    steps: Annotated[
        int | None, typer.Option("--steps", help="DP-SGD steps T (default 200).")
    ] = None,
    dp_lr: Annotated[
        float | None, typer.Option("--dp-lr", help="DP-SGD learning rate (default 1).")
    ] = None,
    finetune: Annotated[
        str,
        typer.Option(
            "--finetune",
            help="head (on cached features) | film (BatchNorm/LayerNorm scale-shift + head on raw "
            "images; image backbones only)",
        ),
    ] = "head",
    epochs: Annotated[int | None, typer.Option("--epochs", help="FiLM: epochs (10).")] = None,
    film_lr: Annotated[
        float | None, typer.Option("--film-lr", help="FiLM: Adam learning rate (3e-3).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="FiLM: batch size (32).")
    ] = None,
    variance: Annotated[
        str, typer.Option("--variance", help="per-example | global")
    ] = "per-example",
    location: Annotated[str, typer.Option("--location", help="mean | median")] = "mean",
    membership: MembershipOpt = "balanced",
    fpr: FprOpt = "0.1,0.01,0.001",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the pool and membership draws.")] = 0,
    l2: Annotated[
        float | None, typer.Option("--l2", help="L2 strength of the heads (default 1e-3).")
    ] = None,
    optimizer: Annotated[
        str | None, typer.Option("--optimizer", help="lbfgs (default) | adam")
    ] = None,
    standardize: Annotated[
        str | None, typer.Option("--standardize", help=_STANDARDIZE_HELP)
    ] = None,
    per_example_: Annotated[
        bool,
        typer.Option(
            "--per-example",
            help="Per-example vulnerability: table in per_example.npz, tail summary (naive and "
            "cross-fitted) in audit.json.",
        ),
    ] = False,
    device: DeviceOpt = "cpu",
    out_dir: OutOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Audit one setting: K = M + 1 heads trained at once, LiRA, TPR at fixed FPR with 95% CIs."""
    import numpy as np

    from miascale.audit import AuditConfig, audit_features, write_audit
    from miascale.membership import DESIGNS
    from miascale.metrics import fp_budget
    from miascale.training.heads import HeadConfig

    # checks before computing: seed, FPR levels, device here; the output folder after the options
    _check_seed(seed)
    _parse_fpr(fpr)
    _check_device(device)
    if membership not in DESIGNS:
        raise MiascaleError(
            f"Unknown --membership {membership!r}; choose one of {', '.join(DESIGNS)}."
        )
    # options of one training mode given without that mode: an error, never silently ignored
    # flag → (config field, value)
    dp_opts = {"--delta": ("delta", delta), "--clip": ("clip", clip),
               "--sampling-rate": ("sampling_rate", sampling_rate), "--steps": ("steps", steps),
               "--dp-lr": ("learning_rate", dp_lr)}  # fmt: skip
    film_opts = {"--epochs": ("epochs", epochs), "--film-lr": ("learning_rate", film_lr),
                 "--batch-size": ("batch_size", batch_size)}  # fmt: skip
    head_opts = {"--l2": ("l2", l2), "--optimizer": ("optimizer", optimizer),
                 "--standardize": ("standardize", standardize)}  # fmt: skip
    _only_with(dp_opts, epsilon is not None, "--epsilon (DP-SGD heads)")
    _only_with(film_opts, finetune == "film", "--finetune film")
    _only_with(head_opts, epsilon is None and finetune == "head", "exact heads (no --epsilon, "
               "--finetune head)")  # fmt: skip
    film = None
    if finetune == "film":
        from miascale.training.film import FilmConfig

        film = FilmConfig(**{k: v for k, v in film_opts.values() if v is not None})
    dp = None
    if epsilon is not None:
        from miascale.training.dp import DPConfig

        dp = DPConfig(epsilon=epsilon, **{k: v for k, v in dp_opts.values() if v is not None})
    if paper:
        shadow_models = 256 if shadow_models == 64 else shadow_models
        # the research tuned every non-DP setting; tuning DP heads would spend unaccounted privacy
        hpo = 20 if hpo is None and epsilon is None else hpo
    config = AuditConfig(
        shots=shots, classes=classes, shadow_models=shadow_models, attack=attack,
        lira_variant=lira_variant, variance=variance, location=location, membership=membership,
        fpr=_parse_fpr(fpr), seed=seed,
        head=HeadConfig(l2=1e-3 if l2 is None else l2, optimizer=optimizer or "lbfgs",
                        standardize=standardize or "pool"),
        rmia_gamma=gamma, rmia_a=rmia_a, population=population, hpo_trials=hpo or 0, dp=dp,
        finetune=finetune, film=film,
    ).validate()  # fmt: skip
    _check_out_dir(out_dir)  # created and write-tested before any data is loaded
    if finetune == "film":
        from miascale.audit import audit_film
        from miascale.data import load_dataset

        ds = load_dataset(dataset, min_per_class=min_per_class)
        err.print(f"auditing {ds.name} × {backbone} (FiLM): S={shots}, "
                  f"C={classes or ds.n_classes}, K={config.n_models} models",
                  markup=False, highlight=False)  # fmt: skip
        result = audit_film(ds, backbone, resolution, config, device=device)
        name = f"{backbone} FiLM"
        provenance = {"dataset": ds.name, "dataset_fingerprint": ds.fingerprint,
                      "backbone": backbone, "resolution": result.film["resolution"]}  # fmt: skip
    else:
        fs = _features(dataset, backbone, resolution, min_per_class, None, device)
        err.print(
            f"auditing {fs.dataset} × {fs.backbone.name}: S={shots}, "
            f"C={classes or len(fs.class_names)}, K={config.n_models} models",
            markup=False, highlight=False,
        )  # fmt: skip
        result = audit_features(
            fs.x_train, fs.y_train, fs.x_test, fs.y_test, config, fs.class_names, device=device
        )
        name = fs.backbone.name
        provenance = {"dataset": fs.dataset, "dataset_fingerprint": fs.dataset_fingerprint,
                      "backbone": fs.backbone.config(), "feature_cache_key": fs.key}  # fmt: skip
    doc = {**result.summary(), "provenance": provenance}
    pe_doc = None
    if per_example_:
        from miascale.vulnerability import per_example_report

        pe_doc = per_example_report(result, out_dir)
        doc["per_example"] = pe_doc
    if out_dir is not None:
        doc = write_audit(result, Path(out_dir), provenance, extra=doc)
    if json_:
        _emit_json(doc)
        return
    t = Table(title=f"{provenance['dataset']} × {name}, S={shots}, K={config.n_models}")
    boot = result.metrics[0].ci_method == "bootstrap"
    ci_col = f"95% CI ({'bootstrap' if boot else 'CP, indep.'})"
    for col in ("attack", "FPR", "TPR", ci_col, *(("CP (indep.)",) if boot else ()), "adv.",
                "FP allowed"):  # fmt: skip
        t.add_column(col, justify="right", overflow="fold")
    for o in result.outcomes:
        for m in o.metrics:
            cp = (f"[{m.cp_low:.3f}, {m.cp_high:.3f}]",) if boot else ()
            budget = int(fp_budget(np.asarray(m.fpr_level), m.n_neg))
            t.add_row(
                o.variant, f"{m.fpr_level:g}", f"{m.tpr:.3f}", f"[{m.ci_low:.3f}, {m.ci_high:.3f}]",
                *cp, f"{m.advantage:+.3f}", f"{budget}" + ("" if budget >= 10 else " (< 10)"),
            )  # fmt: skip
    out.print(t)
    acc = result.test_accuracy
    out.print(
        f"{result.outcomes[0].variant}: AUC {result.auc:.4f} · best balanced accuracy "
        f"{result.best_balanced_accuracy:.4f} · test accuracy {acc.mean():.4f} ± {acc.std():.4f} · "
        f"{result.converged}/{config.n_models} heads converged · "
        f"{result.n_unscored} unscored pairs · {sum(result.seconds.values()):.1f} s"
    )
    if result.dp is not None:
        d = result.dp
        out.print(
            f"DP-SGD heads: accountant ε = {d['epsilon']:.4g} (target {d['target_epsilon']:g}), "
            f"δ = {d['delta']:.0e}, σ = {d['noise_multiplier']:.4g}, q = {d['sampling_rate']:.4g}, "
            f"T = {d['steps']}, clip {d['clip']:g} ({d['accountant']})"
        )
    for o in result.outcomes:
        if o.empirical_epsilon is not None:
            e = o.empirical_epsilon
            out.print(
                f"{o.variant}: empirical ε ≥ {e['epsilon_lb']:.3f} (95% Clopper–Pearson, simultaneous over all "
                f"thresholds, δ = {e['delta']:.0e})"
            )
    if pe_doc is not None:
        pt = Table(title="per-example vulnerability: quantiles over the pool (value ± SE)")
        for col in ("quantity", "median", "q0.99", "max", "max cross-fitted", "noise floor q0.99"):
            pt.add_column(col, justify="right", overflow="fold")
        tl = pe_doc.get("tails")

        def f(v):
            return "–" if v is None else f"{v['value']:.3f} ± {v['se']:.3f}" if v.get("se") else "–"

        if tl is not None:
            sep = tl["separation"]
            pt.add_row("separation (μ_in − μ_out)/σ", f(sep["q0.5"]), f(sep["q0.99"]),
                       f(sep["max"]), f(sep["cross_max"]), f"{sep['q0.99']['floor']:.3f}")  # fmt: skip
            for lvl in tl["levels"]:
                a = lvl["advantage"]
                what = f"advantage at FPR {lvl['fpr_level']:g}"
                if not lvl["resolvable"]:
                    what += " (not resolvable: t·n_out < 1)"
                pt.add_row(what, f(a["q0.5"]), f(a["q0.99"]), f(a["max"]), f(a["cross_max"]),
                           f"{a['q0.99']['floor']:.4f}")  # fmt: skip
        out.print(pt)
    if out_dir is not None:
        extra = " and per_example.npz" if per_example_ else ""
        out.print(f"wrote {Path(out_dir) / 'audit.json'}, signals.npz{extra}", markup=False)


def _only_with(options: dict, active: bool, mode: str) -> None:
    """Options ``{flag: (field, value)}`` of one training mode: an error when given without it."""
    given = [flag for flag, (_, v) in options.items() if v is not None]
    if given and not active:
        raise MiascaleError(
            f"{', '.join(given)} only apply to {mode}; leave them out or add that mode."
        )


def _csv(text: str | None, cast, flag: str) -> tuple | None:
    if text is None:
        return None
    try:
        return tuple(cast(t.strip()) for t in text.split(",") if t.strip())
    except ValueError:
        raise MiascaleError(
            f"{flag} takes a comma-separated list; could not parse {text!r}."
        ) from None


def _classes_value(t: str) -> int | None:
    return None if t.lower() == "all" else int(t)


def _epsilon_value(t: str) -> float | None:
    return None if t.lower() in ("inf", "none") else float(t)


def _attack_variants(text: str) -> tuple[str, ...]:
    """``--attacks`` of a sweep: bare names and ``all`` expand to variants (online by default)."""
    from miascale.audit import expand_attacks

    return expand_attacks(text)


def run_sweep_command(
    spec,
    out_dir: Path,
    device: str = "cpu",
    quiet: bool = False,
    *,
    backend: str = "local",
    address: str | None = None,
    max_retries: int | None = None,
    on_error: str = "raise",
    compute=None,
    recompute_changed: bool = False,
):
    """Expand a SweepSpec and run it into ``out_dir`` (resumable); returns (summary, store).

    ``backend`` is ``local`` or ``ray`` (``address``: a running Ray cluster's; ``max_retries``:
    bounded retries of crashed / out-of-memory cells, default 2 on Ray, 0 locally); ``compute``
    replaces :func:`~miascale.experiments.cells.compute_cell` (tests).

    The run directory is locked for the whole run (released when the returned store is closed).
    Done cells whose data fingerprint changed are an error unless ``recompute_changed``; done
    cells whose ``signals.npz`` is missing are recomputed (:func:`check_done_cells`).
    """
    from miascale.experiments.backends import DEFAULT_MAX_RETRIES, make_backend
    from miascale.experiments.cells import FeatureMemo, check_variants
    from miascale.experiments.grid import expand
    from miascale.experiments.runner import check_done_cells, run_sweep
    from miascale.experiments.store import ResultStore

    check_variants(spec.variants)
    for b in spec.backbones:
        from miascale.backbones import resolve

        resolve(b, spec.resolution)  # unknown backbone / bad resolution: fail before any work
    memo = FeatureMemo(device, quiet)
    if max_retries is None:
        max_retries = DEFAULT_MAX_RETRIES if backend == "ray" else 0
    # no Ray installed, bad flags: fail before any work
    runner = make_backend(
        backend, Path(out_dir), memo, device, address=address, max_retries=max_retries,
        compute=compute,
    )  # fmt: skip
    if hasattr(runner, "connect"):
        runner.connect()  # a Ray cluster that cannot be reached: fail before any work
    # one writer per run directory: a second sweep into it stops here, before any work
    store = ResultStore.open(out_dir, spec.to_dict(), lock=True)
    try:
        cells = expand(spec, memo.shots_for(spec.resolution, spec.min_per_class, spec.finetune))
        rerun = check_done_cells(
            cells, store, memo.fingerprint, recompute_changed=recompute_changed, quiet=quiet
        )
        summary = run_sweep(
            cells, store, quiet=quiet, on_error=on_error, backend=runner, rerun=rerun,
            fingerprint=memo.fingerprint,
        )  # fmt: skip
    except BaseException:
        store.close()
        raise
    return summary, store


# the flags that set a sweep's grid (SweepSpec fields); with --config the file sets all of them
_GRID_FLAGS = {
    "datasets": "--datasets", "backbones": "--backbones", "shots": "--shots",
    "classes": "--classes", "seeds": "--seeds", "variants": "--attacks", "epsilons": "--epsilons",
    "dp_delta": "--dp-delta", "dp_clip": "--dp-clip", "dp_sampling_rate": "--dp-sampling-rate",
    "dp_steps": "--dp-steps", "finetune": "--finetune", "hpo": "--hpo",
    "shadow_models": "--shadow-models", "fpr": "--fpr", "resolution": "--resolution",
    "min_per_class": "--min-per-class", "membership": "--membership", "l2": "--l2",
    "standardize": "--standardize",
}  # fmt: skip


def _given_flags(ctx: typer.Context, params: dict[str, str]) -> list[str]:
    """The flags of ``params`` ({parameter: flag}) given on the command line (not defaults)."""
    # compared by name: typer may bring its own copy of click's ParameterSource enum
    return [
        flag
        for name, flag in params.items()
        if getattr(ctx.get_parameter_source(name), "name", "DEFAULT")
        in ("COMMANDLINE", "ENVIRONMENT", "PROMPT")
    ]


def _check_device(device: str) -> None:
    """An unusable --device is an error before any work (never one failure per cell)."""
    if device == "cpu":
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise MiascaleError(
            f"--device {device!r} is not a torch device; use cpu, cuda or cuda:N."
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise MiascaleError(
                f"--device {device} asks for CUDA, but torch sees no CUDA GPU on this machine "
                f"(torch.cuda.is_available() is False). Use --device cpu."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise MiascaleError(
                f"--device {device}: this machine has {torch.cuda.device_count()} CUDA "
                f"device(s), numbered from 0."
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise MiascaleError(f"--device {device}: MPS is not available here. Use --device cpu.")


@app.command()
def sweep(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", help="A TOML file with the grid (see docs/sweep.md).")
    ] = None,
    datasets: Annotated[
        str, typer.Option("--datasets", help="Comma-separated datasets.")
    ] = "fashion-mnist",
    backbones: Annotated[
        str, typer.Option("--backbones", help="Comma-separated backbones.")
    ] = "efficientnet-lite0",
    shots: Annotated[
        str | None,
        typer.Option(
            "--shots", help="Comma-separated S (default 1,2,4,… up to the data, max 256)."
        ),
    ] = None,
    classes: Annotated[
        str, typer.Option("--classes", help="Comma-separated C values, or 'all'.")
    ] = "all",
    seeds: Annotated[str, typer.Option("--seeds", help="Comma-separated seeds.")] = "0,1,2",
    variants: Annotated[
        str,
        typer.Option(
            "--attacks",
            help="lira, rmia, loss, all, variants (lira-offline, rmia-offline) or a comma list; "
            "all share the trained models.",
        ),
    ] = "lira-online",
    epsilons: Annotated[
        str,
        typer.Option(
            "--epsilons", help="Privacy axis: comma-separated ε for DP-SGD heads, 'inf' = no DP."
        ),
    ] = "inf",
    dp_delta: Annotated[
        float | None, typer.Option("--dp-delta", help="DP δ (default below 1/(10·n)).")
    ] = None,
    dp_clip: Annotated[float | None, typer.Option("--dp-clip", help="DP clip norm R.")] = None,
    dp_sampling_rate: Annotated[
        float | None, typer.Option("--dp-sampling-rate", help="DP Poisson rate q.")
    ] = None,
    dp_steps: Annotated[int | None, typer.Option("--dp-steps", help="DP-SGD steps T.")] = None,
    finetune: Annotated[str, typer.Option("--finetune", help="head | film")] = "head",
    hpo: Annotated[int, typer.Option("--hpo", help="Optuna trials per cell (0 = off).")] = 0,
    shadow_models: ShadowOpt = 64,
    fpr: FprOpt = "0.1,0.01,0.001",
    resolution: ResolutionOpt = None,
    min_per_class: MinPerClassOpt = None,
    membership: MembershipOpt = "balanced",
    l2: L2Opt = 1e-3,
    standardize: Annotated[str, typer.Option("--standardize", help=_STANDARDIZE_HELP)] = "pool",
    device: DeviceOpt = "cpu",
    out_dir: Annotated[Path, typer.Option("--out", help="Run directory (resumable).")] = Path(
        "runs/sweep"
    ),
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="local (this process) or ray (one Ray task per cell; docs/cluster.md).",
        ),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(
            "--address", help="Ray cluster address (default: start a local Ray on this machine)."
        ),
    ] = None,
    max_retries: Annotated[
        int | None,
        typer.Option(
            "--max-retries",
            help="Retries of a cell whose worker crashed or ran out of memory (default: 2 on "
            "ray, 0 local).",
        ),
    ] = None,
    recompute_changed: Annotated[
        bool,
        typer.Option(
            "--recompute-changed",
            help="Recompute done cells whose data changed since they ran (default: refuse).",
        ),
    ] = False,
    json_: JsonOpt = False,
) -> None:
    """Run a grid of audits into a resumable, crash-safe result store (RUN_DIR/results.sqlite).

    Failed cells are recorded as failed and listed at the end (exit status 1); the other cells
    complete. Rerunning the same command runs only the failed or missing cells. The grid comes
    from --config FILE or from the grid flags, never both.
    """
    from miascale.experiments.grid import SweepSpec

    if config is not None:
        both = _given_flags(ctx, _GRID_FLAGS)
        if both:
            raise MiascaleError(
                f"--config {config} sets the whole grid, so {', '.join(both)} cannot be given "
                f"with it: put those settings in the file, or leave out --config (a config file "
                f"and grid flags never both set the grid; see docs/sweep.md)."
            )
    _check_device(device)
    if config is not None:
        spec = SweepSpec.from_toml(config)
    else:
        spec = SweepSpec(
            datasets=_csv(datasets, str, "--datasets"), backbones=_csv(backbones, str, "--backbones"),
            shots=_csv(shots, int, "--shots"), classes=_csv(classes, _classes_value, "--classes"),
            seeds=_csv(seeds, int, "--seeds"), variants=_attack_variants(variants),
            shadow_models=shadow_models, fpr=_csv(fpr, float, "--fpr"), resolution=resolution,
            min_per_class=min_per_class, membership=membership, l2=l2,
            epsilons=_csv(epsilons, _epsilon_value, "--epsilons"), dp_delta=dp_delta,
            dp_clip=dp_clip, dp_sampling_rate=dp_sampling_rate, dp_steps=dp_steps,
            finetune=finetune, hpo=hpo, standardize=standardize,
        )  # fmt: skip
    summary, store = run_sweep_command(
        spec, out_dir, device, backend=backend, address=address, max_retries=max_retries,
        on_error="record", recompute_changed=recompute_changed,
    )  # fmt: skip
    n_rows = len(store.rows())
    store.close()
    result = {**summary.to_dict(), "run_dir": str(out_dir), "rows": n_rows, "backend": backend}
    if json_:
        _emit_json(result)
    else:
        out.print(
            f"sweep: {summary.total} cells ({summary.skipped} already done, {summary.ran} run, "
            f"{summary.failed} failed) in {summary.seconds:.1f} s → {out_dir}/results.sqlite "
            f"({n_rows} rows)",
            markup=False,
        )
    if summary.failures:  # the other cells are recorded; exit 1 (2 is for user errors)
        err.print(
            f"[bold red]{summary.failed} cell(s) failed[/] (rerun the command to retry them):"
        )
        for cid, message, label in summary.failures:
            err.print(f"  {label} [{cid}]: {message}", highlight=False, markup=False)
        raise typer.Exit(1)


_StudyConfig = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="A TOML file whose datasets table array replaces the preset (see docs/study.md).",
    ),
]
_Only = Annotated[str | None, typer.Option("--only", help="Run only these datasets (comma list).")]
_FitOnly = Annotated[bool, typer.Option("--fit-only", help="Run nothing; refit and report.")]
_Backend = Annotated[str, typer.Option("--backend", help="local or ray (docs/cluster.md).")]
_Address = Annotated[str | None, typer.Option("--address", help="Ray cluster address.")]


@app.command()
def study(
    config: _StudyConfig = None,
    only: _Only = None,
    seeds: Annotated[str, typer.Option("--seeds", help="Comma-separated seeds.")] = "0,1,2",
    shadow_models: ShadowOpt = 64,
    fpr: FprOpt = "0.1,0.01,0.001",
    attacks: Annotated[str, typer.Option("--attacks", help="As for sweep.")] = "lira-online",
    device: DeviceOpt = "cpu",
    out_dir: Annotated[Path, typer.Option("--out", help="Study directory.")] = Path("runs/study"),
    backend: _Backend = "local",
    address: _Address = None,
    fit_only: _FitOnly = False,
    json_: JsonOpt = False,
) -> None:
    """One law over S and C on images and text: sweeps (resumable), pooled fit, study.html.

    Preset: Fashion-MNIST × EfficientNet-Lite0 (C 2, 5, 10; S 1…256) and WordNet × MiniLM (C 2,
    5, 10, 20, 34 of the classes with ≥ 500 texts; S 1…128). See docs/study.md.
    """
    from miascale.study import PRESET, StudySettings, read_config, run_study, select

    _check_device(device)
    chosen = select(read_config(config) if config else PRESET, _csv(only, str, "--only"))
    settings = StudySettings(_csv(seeds, int, "--seeds"), shadow_models,
                             _parse_fpr(fpr), _attack_variants(attacks))  # fmt: skip
    res = run_study(out_dir, chosen, settings, device=device, backend=backend, address=address,
                    fit_only=fit_only)  # fmt: skip
    if json_:
        _emit_json(res.to_dict())
    for line in [] if json_ else res.lines():
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    if res.failed or res.fit is None:
        raise typer.Exit(1)


def fit_run(
    run_dir: Path,
    keep_unresolvable=False,
    keep_saturated=False,
    min_false_positives: int | None = None,
    ceiling_margin: float | None = None,
    *,
    best_effort: bool = False,
    with_doc: bool = False,
):
    """Fit the power law to a run directory's rows and write fit.json; returns the ScalingFit.

    The store is only read. With ``best_effort``, a run directory where fit.json cannot be
    written (read-only) gets a warning instead of an error; ``with_doc`` also returns the fit.json
    document and whether it was saved.
    """
    from miascale.api import fit_rows
    from miascale.experiments.store import ResultStore
    from miascale.scaling import fit_power_law, tail_rows

    if not (Path(run_dir) / "results.sqlite").is_file():
        raise MiascaleError(
            f"{run_dir} holds no results.sqlite; run `miascale sweep --out {run_dir}` first."
        )
    with ResultStore.load(run_dir) as store:
        rows = store.rows()
    if not rows:
        raise MiascaleError(f"{run_dir}/results.sqlite has no finished cells yet.")
    rows = fit_rows(rows)  # "all classes" → C, DP cells a variant of their own per ε
    rules = {
        "exclude_unresolvable": not keep_unresolvable,
        "exclude_saturated": not keep_saturated,
        **({} if min_false_positives is None else {"min_false_positives": min_false_positives}),
        **({} if ceiling_margin is None else {"ceiling_margin": ceiling_margin}),
    }
    fit = fit_power_law(rows, **rules)
    doc = fit.to_dict()
    tails = tail_rows([r for r in rows if r.get("epsilon") is None])
    tail_fit = None
    if (
        tails
    ):  # the per-example tail: a law per quantile and for the maximum, naive and cross-fitted
        tail_fit = fit_power_law(tails, **rules)
        doc["tail"] = tail_fit.to_dict()
    saved = True
    try:
        _write_json(Path(run_dir) / "fit.json", doc)
    except OSError as e:
        if not best_effort:
            raise MiascaleError(
                f"Cannot write {Path(run_dir) / 'fit.json'}: {e.strerror or e}."
            ) from None
        saved = False
        err.print(
            f"warning: cannot write {Path(run_dir) / 'fit.json'} ({e.strerror or e}); the run "
            f"directory is read-only, so the fit is printed but not saved.",
            markup=False, highlight=False,
        )  # fmt: skip
    if with_doc:
        return fit, tail_fit, doc, saved
    return fit, tail_fit


def _fit_table(fit) -> Table:
    """The fitted laws; fits 80 columns (intervals on a second line, β_C only when fitted)."""
    from rich import box

    with_c = any(lv.beta_c is not None for lv in fit.levels)
    t = Table(title="log10(TPR − FPR) = β_S·log10 S + β_C·log10 C + β_0 (weighted LS)",
              box=box.SIMPLE_HEAD, padding=(0, 1),
              caption="n: cells fitted; out: cells excluded (reasons below)")  # fmt: skip
    cols = ["attack", "FPR", "β_S [95% CI]", *(["β_C [95% CI]"] if with_c else []),
            "β_0", "R²", "S fitted", "n", "out"]  # fmt: skip
    for col in cols:
        t.add_column(col, justify="right", overflow="fold", no_wrap=col == "attack",
                     min_width=16 if col.startswith(("β_S", "β_C")) else None)  # fmt: skip

    def ci(b, c):
        return "–" if b is None else f"{b:.3f}\n[{c[0]:.3f}, {c[1]:.3f}]"

    for lv in fit.levels:
        ok = lv.status == "ok"
        rng = lv.shots_range
        t.add_row(
            f"{lv.attack}-{lv.variant}", f"{lv.fpr_level:g}",
            ci(lv.beta_s, lv.ci_s) if ok else lv.status,
            *([ci(lv.beta_c, lv.ci_c) if ok else "–"] if with_c else []),
            f"{lv.beta_0:.3f}" if ok else "–", f"{lv.r_squared:.3f}" if ok else "–",
            "–" if rng is None or not ok else f"{rng[0]}–{rng[1]}", str(lv.n_points),
            str(len(lv.excluded)),
        )  # fmt: skip
    return t


def _excluded_summary(lv) -> str:
    """e.g. '4 excluded: 3 at the ceiling, 1 too few false positives'."""
    if not lv.excluded:
        return "none excluded"
    counts: dict[str, int] = {}
    for e in lv.excluded:
        for r in e.reasons:
            counts[r] = counts.get(r, 0) + 1
    return f"{len(lv.excluded)} excluded: " + ", ".join(f"{n} {r}" for r, n in counts.items())


def level_lines(fit) -> list[str]:
    """One plain line per level: β_S with its interval, R², admitted S range, exclusions."""
    lines = []
    for lv in fit.levels:
        head = f"{lv.attack}-{lv.variant} FPR {lv.fpr_level:g}: "
        if lv.status != "ok":
            lines.append(head + f"no law ({lv.status}: {lv.reason}); {_excluded_summary(lv)}")
            continue
        lo, hi = lv.shots_range
        lines.append(
            head + f"β_S = {lv.beta_s:.3f} [{lv.ci_s[0]:.3f}, {lv.ci_s[1]:.3f}], "
            f"R² {lv.r_squared:.3f}, fitted on S = {lo}…{hi} ({lv.n_points} cells; "
            f"{_excluded_summary(lv)})"
        )
    return lines


def tail_label(lv) -> str:
    """e.g. 'separation q0.99' or 'advantage at FPR 0.1, max'."""
    if lv.attack == "separation":
        return f"separation {lv.variant}"
    return f"advantage at FPR {lv.fpr_level:g}, {lv.variant}"


def tail_lines(tail) -> list[str]:
    """The laws of the most vulnerable examples, one plain line each for the fitted ones, and one
    line counting the quantities the data could not resolve (with their main reasons)."""
    lines, skipped, why = [], 0, {}
    for lv in tail.levels:
        if lv.ok:
            lo, hi = lv.shots_range
            lines.append(f"{tail_label(lv)}: β_S = {lv.beta_s:.3f} [{lv.ci_s[0]:.3f}, "
                         f"{lv.ci_s[1]:.3f}], fitted on S = {lo}…{hi} ({lv.n_points} cells)")  # fmt: skip
            continue
        skipped += 1
        for e in lv.excluded:
            for r in e.reasons:
                why[r] = why.get(r, 0) + 1
    if skipped:
        reasons = ", ".join(r for r, _ in sorted(why.items(), key=lambda kv: -kv[1])[:2])
        lines.append(f"{skipped} per-example laws not fitted ({reasons or 'too few cells'}); "
                     "`miascale fit RUN` lists them")  # fmt: skip
    return lines


def _tail_table(tail) -> Table:
    """The laws of the most vulnerable examples: β_S per estimator where the data resolves it."""
    from rich import box

    t = Table(title="most vulnerable examples: β_S of the per-example quantiles and maximum",
              box=box.SIMPLE_HEAD, padding=(0, 1))  # fmt: skip
    for col in ("quantity", "β_S [95% CI]", "S fitted", "n", "excluded"):
        t.add_column(col, justify="right", overflow="fold")
    for lv in tail.levels:
        rng = lv.shots_range
        t.add_row(
            tail_label(lv),
            f"{lv.beta_s:.3f} [{lv.ci_s[0]:.3f}, {lv.ci_s[1]:.3f}]" if lv.ok else lv.status,
            "–" if rng is None or not lv.ok else f"{rng[0]}–{rng[1]}", str(lv.n_points),
            _excluded_summary(lv),
        )  # fmt: skip
    return t


@app.command()
def fit(
    run_dir: Annotated[Path, typer.Argument(help="A sweep's run directory.")],
    keep_unresolvable: Annotated[
        bool, typer.Option("--keep-unresolvable", help="Do not exclude unresolvable FPR levels.")
    ] = False,
    keep_saturated: Annotated[
        bool,
        typer.Option(
            "--keep-saturated",
            help="Do not exclude cells at the ceiling (TPR within the margin of 1).",
        ),
    ] = False,
    min_false_positives: Annotated[
        int | None,
        typer.Option(
            "--min-false-positives",
            help="False positives an FPR level must allow, floor(t·Q), for a cell to enter "
            "(default 10).",
        ),
    ] = None,
    ceiling_margin: Annotated[
        float | None,
        typer.Option(
            "--ceiling-margin",
            help="A cell whose TPR interval reaches 1 − margin is at the ceiling (default 0.02).",
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Fit log10(TPR − FPR) = β_S·log10 S + β_C·log10 C + β_0 per FPR level; writes fit.json.

    Cells enter only when their level allows enough false positives, their advantage is
    distinguishable from chance and their TPR is clear of the ceiling (docs/sweep.md); the fit is
    weighted by the cells' bootstrap standard errors. Excluded cells are listed with the reason.
    """
    result, tail, doc, saved = fit_run(
        run_dir, keep_unresolvable, keep_saturated, min_false_positives, ceiling_margin,
        best_effort=True, with_doc=True,
    )  # fmt: skip
    if json_:
        _emit_json(doc)
        return
    out.print(_fit_table(result))
    if tail is not None:
        out.print(_tail_table(tail))
    for line in level_lines(result):
        out.print(line, highlight=False, markup=False)
    for lv in result.levels:
        for e in lv.excluded:
            err.print(
                f"excluded ({lv.attack}-{lv.variant}, FPR {lv.fpr_level:g}): S={e.shots} "
                f"C={e.classes} {e.dataset}/{e.backbone}: {'; '.join(e.reasons)} (TPR "
                f"{e.tpr:.4f} [{e.ci_low:.4f}, {e.ci_high:.4f}], advantage {e.advantage:.4g}, "
                f"{e.n_seeds} seed(s))",
                highlight=False, markup=False,
            )  # fmt: skip
    if saved:
        out.print(f"wrote {Path(run_dir) / 'fit.json'}", markup=False)


def _coefficients(coefficients: Path | None, beta_s, beta_0, beta_c, fpr: float, attack: str):
    from miascale.planning import Coefficients
    from miascale.scaling import ScalingFit

    if coefficients is not None:
        given = [f for f, v in (("--beta-s", beta_s), ("--beta-0", beta_0), ("--beta-c", beta_c))
                 if v is not None]  # fmt: skip
        if given:
            raise MiascaleError(
                f"Give the law one way: --coefficients {coefficients} or {', '.join(given)}, not "
                f"both (the coefficients file already holds β_S, β_0 and β_C)."
            )
        try:
            data = json.loads(Path(coefficients).read_text())
        except (OSError, ValueError) as exc:
            raise MiascaleError(f"Cannot read {coefficients}: {exc}.") from None
        from miascale.audit import variant_columns

        att, var = variant_columns(attack)  # e.g. lira-online → (lira, online); loss → global
        return ScalingFit.from_dict(data).level(att, var, fpr)
    if beta_s is None or beta_0 is None:
        raise MiascaleError(
            "Give the law: either --coefficients fit.json, or --beta-s and --beta-0 (and --beta-c)."
        )
    return Coefficients(beta_s, beta_0, beta_c, fpr_level=fpr)


CoefOpt = Annotated[
    Path | None, typer.Option("--coefficients", help="fit.json from `miascale fit`.")
]
BetaS = Annotated[float | None, typer.Option("--beta-s", help="Slope in log10 S.")]
Beta0 = Annotated[float | None, typer.Option("--beta-0", help="Intercept.")]
BetaC = Annotated[float | None, typer.Option("--beta-c", help="Slope in log10 C.")]
ClassCountOpt = Annotated[int | None, typer.Option("--classes", "-c", help="Number of classes C.")]
AttackVar = Annotated[str, typer.Option("--attack", help="Attack variant in fit.json.")]
ConfidenceOpt = Annotated[
    float, typer.Option("--confidence", help="Level of the intervals (from the fit's covariance).")
]


@app.command()
def predict(
    shots: Annotated[int, typer.Option("--shots", "-s", help="Examples per class S.")],
    fpr: Annotated[float, typer.Option("--fpr", help="FPR level.")],
    classes: ClassCountOpt = None,
    coefficients: CoefOpt = None,
    beta_s: BetaS = None,
    beta_0: Beta0 = None,
    beta_c: BetaC = None,
    attack: AttackVar = "lira-online",
    confidence: ConfidenceOpt = 0.95,
    dataset_like: Annotated[
        str | None,
        typer.Option(
            "--dataset-like",
            help="A new dataset like this study dataset (or 'any'): the pooled "
            "study law (--coefficients STUDY_DIR) with a new-dataset interval (docs/study.md).",
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Predicted TPR and advantage at S examples per class, with intervals when fitted."""
    from miascale.planning import predict as _predict

    if dataset_like is not None:
        from miascale.study import predict_like

        if beta_s is not None or beta_0 is not None or beta_c is not None:
            raise MiascaleError("--dataset-like takes the law from the study, not --beta-*.")
        lp = predict_like(coefficients or Path("runs/study"), dataset_like, shots, classes, fpr,
                          attack, confidence)  # fmt: skip
        if json_:
            return _emit_json(lp.to_dict())
        return out.print(lp.sentence(), markup=False, soft_wrap=True)
    law = _coefficients(coefficients, beta_s, beta_0, beta_c, fpr, attack)
    p = _predict(law, shots, classes, confidence=confidence)
    if json_:
        _emit_json(p.to_dict())
        return
    pct = f"{round(p.confidence * 100, 6):g}%"
    if p.tpr_ci is None or p.advantage_ci is None:
        band = " (no interval: the law carries no covariance)"
    else:
        (t_lo, t_hi), (a_lo, a_hi) = p.tpr_ci, p.advantage_ci
        band = (
            f"; {pct} interval TPR {t_lo:.3g}–{t_hi:.3g}"
            + (" (clipped at 1)" if p.tpr_ci_clipped else "")
            + f", advantage {a_lo:.3g}–{a_hi:.3g}"
        )
    out.print(
        f"S={shots}{'' if classes is None else f', C={classes}'}, FPR {fpr:g}: "
        f"predicted TPR {p.tpr:.3g}, advantage {p.advantage:.3g}"
        + (" (TPR clipped at 1: outside the law's range)" if p.clipped else "")
        + band
    )
    if not p.trustworthy:
        out.print("Not trustworthy: " + " ".join(p.warnings))


@app.command()
def plan(
    fpr: Annotated[float, typer.Option("--fpr", help="FPR level.")],
    classes: ClassCountOpt = None,
    target_advantage: Annotated[
        float | None, typer.Option("--target-advantage", help="Largest acceptable TPR − FPR.")
    ] = None,
    epsilon: Annotated[
        float | None, typer.Option("--epsilon", help="Target: what an (ε, δ)-DP mechanism allows.")
    ] = None,
    delta: Annotated[float, typer.Option("--delta", help="δ of the DP target.")] = 0.0,
    relation: Annotated[
        str,
        typer.Option(
            "--relation",
            help="Neighbouring relation of the membership game (with --epsilon): add-remove "
            "uses (ε, δ) as given (independent membership, the research's Table 1); replace-one "
            "(the balanced design) reads them as add/remove and bounds the game by group "
            "privacy, (2ε, (1 + e^ε)δ).",
        ),
    ] = "add-remove",
    coefficients: CoefOpt = None,
    beta_s: BetaS = None,
    beta_0: Beta0 = None,
    beta_c: BetaC = None,
    attack: AttackVar = "lira-online",
    confidence: ConfidenceOpt = 0.95,
    json_: JsonOpt = False,
) -> None:
    """The smallest S whose predicted advantage is at most the target (or the (ε, δ)-DP bound).

    Prints the point estimate with its interval, or says plainly that the data cannot answer.
    """
    from miascale.planning import plan as _plan
    from miascale.planning import plan_sentence

    if (target_advantage is None) == (epsilon is None):
        raise MiascaleError("Give exactly one of --target-advantage and --epsilon.")
    if relation not in ("add-remove", "replace-one"):
        raise MiascaleError(f"--relation must be add-remove or replace-one, got {relation!r}.")
    law = _coefficients(coefficients, beta_s, beta_0, beta_c, fpr, attack)
    p = _plan(
        law, fpr, classes, target_advantage=target_advantage, epsilon=epsilon, delta=delta,
        confidence=confidence, relation=relation.replace("-", "_"),
    )  # fmt: skip
    if json_:
        _emit_json(p.to_dict())
    else:
        out.print(plan_sentence(p))


def _theory_table(doc: dict) -> Table:
    t = Table(title="slopes of log(TPR − FPR) vs log S; pool/fresh ratios (√2 ≈ 1.414)")
    cols = ("FPR", "fresh", "pool", "exact", "asym", "−½ from S", "regime", "sep×", "adv×")
    for col in cols:
        t.add_column(col, justify="right")

    def f(v, fmt="{:+.3f}"):
        return "–" if v is None else fmt.format(v)

    for lvl in doc["levels"]:
        po = lvl.get("pool_offset") or {}
        t.add_row(
            f"{lvl['fpr']:g}", f(lvl["slope_simulation_fresh"]), f(lvl["slope_simulation_pool"]),
            f(lvl["slope_exact"]), "-0.500", f(lvl["asymptotic_onset_shots"], "{:,.0f}"),
            lvl["regime"][:3], f(po.get("separation_ratio"), "{:.3f}"),
            f(po.get("advantage_ratio"), "{:.3f}"),
        )  # fmt: skip
    return t


@app.command()
def theory(
    dim: Annotated[int, typer.Option("--dim", help="Feature dimension d.")] = 100,
    sigma: Annotated[float, typer.Option("--sigma", help="Noise σ (x ~ N(m_c, σ²I)).")] = 0.1,
    classes: Annotated[int, typer.Option("--classes", "-c", help="Classes C (≤ d).")] = 10,
    shots: Annotated[
        str, typer.Option("--shots", "-s", help="Comma-separated S (default 1, 2, 4, …, 1024).")
    ] = "1,2,4,8,16,32,64,128,256,512,1024",
    shadow_models: ShadowOpt = 64,
    fpr: FprOpt = "0.1,0.01,0.001",
    population: Annotated[
        str, typer.Option("--population", help="fresh | pool | both (simulated populations).")
    ] = "both",
    targets: Annotated[
        int, typer.Option("--targets", help="Simulated targets per S (average case).")
    ] = 2048,
    head: Annotated[str, typer.Option("--head", help="linear | softmax")] = "linear",
    seed: Annotated[int, typer.Option("--seed", help="Seed of every simulated draw.")] = 0,
    out_dir: OutOpt = None,
    json_: JsonOpt = False,
) -> None:
    """The simplified model of fine-tuning: LiRA simulated vs exact and asymptotic closed forms.

    Class means m̂_c from S Gaussian examples per class; score ⟨x, m̂_y⟩. Reports per FPR level the
    fitted slope of log(TPR − FPR) on log S (simulation fresh/pool, exact) and the S from which the
    exact local slope is within 0.05 of −½. --out writes theory.json and theory.png.
    """
    from miascale.console import progress_bar
    from miascale.theory import TheoryConfig, run_theory

    _check_seed(seed)
    _check_out_dir(out_dir)
    pops = ("fresh", "pool") if population == "both" else (population,)
    config = TheoryConfig(
        dim=dim, sigma=sigma, classes=classes, shots=_csv(shots, int, "--shots") or (),
        shadow_models=shadow_models, fpr=_parse_fpr(fpr), population=pops, n_targets=targets,
        head=head, seed=seed,
    ).validate()  # fmt: skip
    n_steps = 2 + len(pops) * len(set(config.shots))
    with progress_bar(disable=json_) as bar:
        task = bar.add_task("theory", total=n_steps)

        def step(msg: str) -> None:
            bar.update(task, advance=1, description=msg)

        result = run_theory(config, on_step=step)
    doc = result.to_dict()
    if out_dir is not None:
        from miascale.paths import atomic_write_bytes
        from miascale.report.theory_plot import theory_png

        _write_json(Path(out_dir) / "theory.json", doc)
        atomic_write_bytes(Path(out_dir) / "theory.png", theory_png(doc))
    if json_:
        _emit_json(doc)
        return
    out.print(_theory_table(doc))
    u = doc["population_separation"]
    out.print(
        f"separation u = ⟨x, x − m⟩/√(xᵀΣx): median {u['median']:.3g}; standardised "
        f"u/√S at S = {max(config.shots)}: {u['median'] / max(config.shots) ** 0.5:.3g} "
        f"({result.seconds:.1f} s)"
    )
    if out_dir is not None:
        out.print(f"wrote {Path(out_dir) / 'theory.json'} and theory.png", markup=False)


@app.command()
def report(
    run_dir: Annotated[
        Path, typer.Argument(help="A sweep run directory or a `miascale theory --out` directory.")
    ],
    json_: JsonOpt = False,
) -> None:
    """Write RUN_DIR/report.html (one self-contained file) for a sweep run and/or `miascale theory` output."""
    from miascale.report import build_report

    path = build_report(run_dir)
    if json_:
        _emit_json({"report": str(path)})
    else:
        out.print(f"wrote {path}", markup=False)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A sweep's run directory.")],
    format_: Annotated[
        str | None,
        typer.Option("--format", "-f", help="csv | parquet (default: from --out's suffix, csv)."),
    ] = None,
    out_file: Annotated[
        Path | None,
        typer.Option("--out", help="Output file (default RUN_DIR/results.<format>)."),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Write the run's result rows as CSV or Parquet: one row per cell × attack variant × FPR
    level, every column of the store and every extra field (nested ones as name.key)."""
    from miascale.api import export_rows

    path, n = export_rows(run_dir, format_, out_file)
    if json_:
        _emit_json({"path": str(path), "rows": n})
    else:
        out.print(f"wrote {path} ({n} rows)", markup=False, highlight=False)


def main() -> None:
    """Console-script entry point: user errors become one paragraph on stderr and exit status 2."""
    try:
        app(standalone_mode=True)
    except MiascaleError as exc:
        print_error(exc)
        sys.exit(2)


def print_error(exc: BaseException | str) -> None:
    """The one rendering of a user error: "error: " and the message as plain text on stderr.

    The message is never parsed as rich markup, so a path holding ``[red]`` or ``[/]`` is printed
    verbatim (and cannot crash the printing).
    """
    from rich.text import Text

    err.print(Text.assemble(("error:", "bold red"), " ", str(exc)), highlight=False, soft_wrap=True)


if __name__ == "__main__":
    main()
