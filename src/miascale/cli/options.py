"""Every command-line option, declared once, and the signatures commands are built from.

A command declares which options it takes with :func:`options`; typer reads the signature it
sets. ``audit`` and ``sweep`` share their option names; where a sweep takes an axis the same flag
takes a comma list (``axis``). Old sweep names are hidden aliases (:data:`DEPRECATED`). Parsing
and the builders of a config from option values are in :mod:`miascale.cli.build`.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

_NO_AXIS = object()
_P = inspect.Parameter


@dataclass(frozen=True)
class Opt:
    """One option: its flags and help, its type and default (``...``: required), its default as
    a comma list where a sweep takes an axis, and its Python name where it differs from the key."""

    flags: tuple[str, ...]
    help: str
    type: Any = str | None
    default: Any = None
    axis: Any = _NO_AXIS
    param: str | None = None
    argument: bool = False
    hidden: bool = False


_DATASET = "fashion-mnist, wordnet, digits, npz:PATH, images:DIR, texts:DIR|FILE.csv"
_STANDARDIZE = (
    "Head recipe, whose statistics set the feature scale: pool (default; the pool's, shared by "
    "all models), subset (each model's own training subset; outliers at small S), none (raw "
    "features). See docs/audit.md."
)
_LIST = " A sweep takes a comma list."
_SWEEP_ONLY = re.compile(r" A sweep takes a comma list[^.]*\.")

OPTIONS: dict[str, Opt] = {
    # the setting audited: audit, sweep (a comma list for the axes), study, demo, features
    "dataset": Opt(("--dataset", "-d"), _DATASET + "." + _LIST, str, "fashion-mnist",
                   "fashion-mnist"),
    "backbone": Opt(("--backbone", "-b"), "efficientnet-lite0, minilm, identity, hf:<model-id>."
                    + _LIST, str, "efficientnet-lite0", "efficientnet-lite0"),
    "shots": Opt(("--shots", "-s"), "Training examples per class S. A sweep takes a comma list "
                 "(default 1, 2, 4, … up to the data, at most 256).", int, ..., None),
    "classes": Opt(("--classes", "-c"), "Use a seeded random subset of C classes. A sweep takes "
                   "a comma list of C values or 'all'.", int | None, None, "all"),
    "seed": Opt(("--seed",), "Seed of the pool and membership draws." + _LIST, int, 0, "0,1,2"),
    "epsilon": Opt(("--epsilon",), "Train DP-SGD heads with this ε (default: no DP). A sweep "
                   "takes a comma list, 'inf' = no DP.", float | None, None, "inf"),
    "resolution": Opt(("--resolution",), "Input size in pixels for image backbones.", int | None),
    "min_per_class": Opt(("--min-per-class",), "Keep only classes with at least this many "
                         "examples.", int | None),
    "shadow_models": Opt(("--shadow-models", "-m"), "Shadow models M (K = M + 1 models).", int, 64),
    "attack": Opt(("--attack",), "lira, rmia, loss, all, a variant (lira-offline, rmia-offline, "
                  "…) or a comma list; all run on the same trained models. The first is the "
                  "primary attack.", str, "lira"),
    "lira_variant": Opt(("--lira-variant", "--mode"), "online | offline (for bare lira / rmia)",
                        str, "online"),
    "rmia_gamma": Opt(("--gamma",), "RMIA's γ.", float, 1.0),
    "rmia_a": Opt(("--rmia-a",), "Offline RMIA's a in [0, 1] (default: tuned on shadows).",
                  float | None),
    "population": Opt(("--population",), "RMIA population points (train split, not pool).",
                      int, 10_000),
    "hpo": Opt(("--hpo",), "Optuna trials tuning the head on a 70/30 split of one target-like "
               "training set; the best values train all K models (default: off; 20 with "
               "--paper).", int | None),
    "dp_delta": Opt(("--delta",), "DP δ (default: a power of ten ≤ 1/(10·n)).", float | None),
    "dp_clip": Opt(("--clip",), "DP per-example gradient norm R (default 1).", float | None),
    "dp_sampling_rate": Opt(("--sampling-rate",), "DP Poisson rate q (default: batches of "
                            "~128).", float | None),
    "dp_steps": Opt(("--steps",), "DP-SGD steps T (default 200).", int | None),
    "dp_lr": Opt(("--dp-lr",), "DP-SGD learning rate (default 1).", float | None),
    "finetune": Opt(("--finetune",), "head (on cached features) | film (BatchNorm/LayerNorm "
                    "scale-shift + head on raw images; image backbones only)", str, "head"),
    "epochs": Opt(("--epochs",), "FiLM: epochs (10).", int | None),
    "film_lr": Opt(("--film-lr",), "FiLM: Adam learning rate (3e-3).", float | None),
    "batch_size": Opt(("--batch-size",), "FiLM: batch size (32).", int | None),
    "variance": Opt(("--variance",), "per-example | global", str, "per-example"),
    "location": Opt(("--location",), "mean | median", str, "mean"),
    "membership": Opt(("--membership",), "balanced | bernoulli", str, "balanced"),
    "fpr": Opt(("--fpr",), "FPR levels, comma-separated.", str, "0.1,0.01,0.001"),
    "l2": Opt(("--l2",), "L2 strength of the heads (default 1e-3).", float | None),
    "optimizer": Opt(("--optimizer",), "lbfgs (default) | adam", str | None),
    "standardize": Opt(("--standardize",), _STANDARDIZE, str | None),
    "device": Opt(("--device",), "torch device, e.g. cpu or cuda.", str, "cpu"),
    "out": Opt(("--out",), "Write artifacts to this folder.", Path | None, param="out_dir"),
    "json": Opt(("--json",), "Print a machine-readable result on stdout.", bool, False,
                param="json_"),
    # audit only
    "per_example": Opt(("--per-example",), "Per-example vulnerability: table in "
                       "per_example.npz, tail summary (naive and cross-fitted) in audit.json.",
                       bool, False),
    "paper": Opt(("--paper",), "The research's budget: M = 256 shadow models and --hpo 20.",
                 bool, False),
    # sweep only
    "config": Opt(("--config",), "A TOML file with the grid (see docs/sweep.md).", Path | None),
    "sweep_out": Opt(("--out",), "Run directory (resumable).", Path, Path("runs/sweep"),
                     param="out_dir"),
    "backend": Opt(("--backend",), "local (this process) or ray (one Ray task per cell; "
                   "docs/cluster.md).", str, "local"),
    "workers": Opt(("--workers",), "Cells at once on the local backend, each in a forked "
                   "one-thread process (default: one per core on a CPU; 1: this process, all "
                   "threads).", int | None),
    "address": Opt(("--address",), "Ray cluster address (default: start a local Ray on this "
                   "machine).", str | None),
    "max_retries": Opt(("--max-retries",), "Retries of a cell whose worker crashed or ran out "
                       "of memory (default: 2 on ray, 0 local).", int | None),
    "recompute_changed": Opt(("--recompute-changed",), "Recompute done cells whose data "
                             "changed since they ran (default: refuse).", bool, False),
    # study, demo
    "study_config": Opt(("--config",), "A TOML file whose datasets table array replaces the "
                        "preset (see docs/study.md).", Path | None, param="config"),
    "only": Opt(("--only",), "Run only these datasets (comma list)."),
    "study_out": Opt(("--out",), "Study directory.", Path, Path("runs/study"), param="out_dir"),
    "fit_only": Opt(("--fit-only",), "Run nothing; refit and report.", bool, False),
    "demo_out": Opt(("--out",), "Run directory.", Path, Path("runs/demo"), param="out_dir"),
    "demo_paper": Opt(("--paper",), "The paper's budget: M = 256 shadow models, 6 seeds.",
                      bool, False, param="paper"),
    "demo_shots": Opt(("--shots",), "Comma-separated S (default 1, 2, 4, …, 256).", param="shots"),
    # features, data, fit, report, export
    "feature_batch": Opt(("--batch-size",), "Inputs per batch.", int | None, param="batch_size"),
    "name": Opt((), "Dataset name.", str, ..., argument=True),
    "run_dir": Opt((), "A sweep's run directory.", Path, ..., argument=True),
    "report_dir": Opt((), "A sweep run directory or a `miascale theory --out` directory.", Path,
                      ..., param="run_dir", argument=True),
    "keep_unresolvable": Opt(("--keep-unresolvable",), "Do not exclude unresolvable FPR levels.",
                             bool, False),
    "keep_saturated": Opt(("--keep-saturated",), "Do not exclude cells at the ceiling (TPR "
                          "within the margin of 1).", bool, False),
    "min_false_positives": Opt(("--min-false-positives",), "False positives an FPR level must "
                               "allow, floor(t·Q), for a cell to enter (default 10).", int | None),
    "ceiling_margin": Opt(("--ceiling-margin",), "A cell whose TPR interval reaches 1 − margin "
                          "is at the ceiling (default 0.02).", float | None),
    "format": Opt(("--format", "-f"), "csv | parquet (default: from --out's suffix, csv).",
                  param="format_"),
    "out_file": Opt(("--out",), "Output file (default RUN_DIR/results.<format>).", Path | None),
    # predict, plan
    "predict_shots": Opt(("--shots", "-s"), "Examples per class S.", int, ..., param="shots"),
    "fpr_level": Opt(("--fpr",), "FPR level.", float, ..., param="fpr"),
    "n_classes": Opt(("--classes", "-c"), "Number of classes C.", int | None, param="classes"),
    "coefficients": Opt(("--coefficients",), "fit.json from `miascale fit`.", Path | None),
    "beta_s": Opt(("--beta-s",), "Slope in log10 S.", float | None),
    "beta_0": Opt(("--beta-0",), "Intercept.", float | None),
    "beta_c": Opt(("--beta-c",), "Slope in log10 C.", float | None),
    "variant": Opt(("--attack",), "Attack variant in fit.json.", str, "lira-online",
                   param="attack"),
    "confidence": Opt(("--confidence",), "Level of the intervals (from the fit's covariance).",
                      float, 0.95),
    "dataset_like": Opt(("--dataset-like",), "A new dataset like this study dataset (or 'any'): "
                        "the pooled study law (--coefficients STUDY_DIR) with a new-dataset "
                        "interval (docs/study.md)."),
    "target_advantage": Opt(("--target-advantage",), "Largest acceptable TPR − FPR.",
                            float | None),
    "target_epsilon": Opt(("--epsilon",), "Target: what an (ε, δ)-DP mechanism allows.",
                          float | None, param="epsilon"),
    "target_delta": Opt(("--delta",), "δ of the DP target.", float, 0.0, param="delta"),
    "relation": Opt(("--relation",), "Neighbouring relation of the membership game (with "
                    "--epsilon): add-remove uses (ε, δ) as given (independent membership, the "
                    "research's Table 1); replace-one (the balanced design) reads them as "
                    "add/remove and bounds the game by group privacy, (2ε, (1 + e^ε)δ).", str,
                    "add-remove"),
    # theory
    "dim": Opt(("--dim",), "Feature dimension d.", int, 100),
    "sigma": Opt(("--sigma",), "Noise σ (x ~ N(m_c, σ²I)).", float, 0.1),
    "theory_classes": Opt(("--classes", "-c"), "Classes C (≤ d).", int, 10, param="classes"),
    "theory_shots": Opt(("--shots", "-s"), "Comma-separated S (default 1, 2, 4, …, 1024).", str,
                        "1,2,4,8,16,32,64,128,256,512,1024", param="shots"),
    "theory_population": Opt(("--population",), "fresh | pool | both (simulated populations).",
                             str, "both", param="population"),
    "targets": Opt(("--targets",), "Simulated targets per S (average case).", int, 2048),
    "head": Opt(("--head",), "linear | softmax", str, "linear"),
    "theory_seed": Opt(("--seed",), "Seed of every simulated draw.", int, 0, param="seed"),
}  # fmt: skip

#: old sweep / study flag → the option that replaces it (hidden, for one release)
DEPRECATED: dict[str, str] = {
    "--datasets": "dataset", "--backbones": "backbone", "--seeds": "seed", "--attacks": "attack",
    "--epsilons": "epsilon", "--dp-delta": "dp_delta", "--dp-clip": "dp_clip",
    "--dp-sampling-rate": "dp_sampling_rate", "--dp-steps": "dp_steps",
}  # fmt: skip
ALIAS_OF = {new: old for old, new in DEPRECATED.items()}


def alias_param(flag: str) -> str:
    """The Python name of a deprecated flag's hidden option, e.g. ``deprecated_seeds``."""
    return "deprecated_" + flag.lstrip("-").replace("-", "_")


def param_name(key: str) -> str:
    return OPTIONS[key].param or key


def _parameter(name: str, o: Opt, sweep: bool) -> inspect.Parameter:
    typ, default = o.type, o.default
    if sweep and o.axis is not _NO_AXIS:
        typ, default = (str if o.axis is not None else str | None), o.axis
    text = o.help if sweep else _SWEEP_ONLY.sub("", o.help)  # the comma lists are a sweep's
    if o.argument:
        info = typer.Argument(help=text)
    else:
        info = typer.Option(*o.flags, help=text, hidden=o.hidden)
    default = _P.empty if default is ... else default
    return _P(name, _P.KEYWORD_ONLY, default=default, annotation=Annotated[typ, info])


def parameters(keys: tuple[str, ...], sweep: bool = False) -> list[inspect.Parameter]:
    """The parameters of these options; with ``sweep`` axes take comma lists and each renamed
    option is followed by its deprecated alias."""
    out = []
    for key in keys:
        o = OPTIONS[key]
        out.append(_parameter(param_name(key), o, sweep))
        if sweep and key in ALIAS_OF:
            old = ALIAS_OF[key]
            alias = Opt((old,), f"Deprecated: use {o.flags[0]}.", hidden=True,
                        type=str | None if o.axis is not _NO_AXIS else o.type)  # fmt: skip
            out.append(_parameter(alias_param(old), alias, False))
    return out


def options(*keys: str, sweep: bool = False, context: bool = False):
    """Give the decorated ``def command(**opts)`` (or ``(ctx, **opts)``) the signature of these
    options; typer builds the command from it."""

    def decorate(fn):
        ctx = [_P("ctx", _P.POSITIONAL_OR_KEYWORD, annotation=typer.Context)] if context else []
        fn.__signature__ = inspect.Signature(ctx + parameters(keys, sweep))
        return fn

    return decorate


def flag(key: str) -> str:
    return OPTIONS[key].flags[0]
