"""``miascale study``: one law over shots and classes, on images and text (``docs/study.md``).

A study is a preset of sweeps, one per dataset (each its own resumable run directory under the
study's ``--out``), followed by the pooled fit of :mod:`miascale.study_fit` and a report page:

* Fashion-MNIST × EfficientNet-Lite0, C ∈ {2, 5, 10}, S = 1, 2, …, 256;
* WordNet glosses × MiniLM, C ∈ {2, 5, 10, 20, 34} of the 34 classes with at least 500 texts
  (``min_per_class = 500``; the smallest keeps 438 for training, so S = 1, 2, …, 128).

Class subsets are drawn per seed (each seed draws its own C classes). ``--config FILE`` replaces
the preset's datasets with ``[[datasets]]`` tables (``dataset``, ``backbone``, ``classes``,
``shots``, optional ``min_per_class``). The study directory holds ``study.json`` (what was run),
one run directory per dataset, ``study_fit.json`` and ``study.html``.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miascale.errors import MiascaleError
from miascale.paths import atomic_write_bytes
from miascale.study_fit import SEPARATE, SHARED, StudyFit, fit_study, group_label

MANIFEST = "study.json"
FIT_NAME = "study_fit.json"
REPORT_NAME = "study.html"
ANY = "any"


@dataclass(frozen=True)
class StudyDataset:
    """One dataset of a study and its grid (the study's other settings are shared)."""

    dataset: str
    backbone: str
    classes: tuple[int, ...]
    shots: tuple[int, ...]
    min_per_class: int | None = None

    @property
    def label(self) -> str:
        return group_label(self.dataset, self.backbone)

    @property
    def run_name(self) -> str:
        """The run directory's name under the study's ``--out``."""
        return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{self.dataset}__{self.backbone}").strip("_")[:80]


def _powers(top: int) -> tuple[int, ...]:
    return tuple(2**i for i in range(int(math.log2(top)) + 1))


PRESET = (
    StudyDataset("fashion-mnist", "efficientnet-lite0", (2, 5, 10), _powers(256)),
    StudyDataset("wordnet", "minilm", (2, 5, 10, 20, 34), _powers(128), min_per_class=500),
)


@dataclass(frozen=True)
class StudySettings:
    """The settings every dataset of a study shares (as ``miascale sweep``'s flags)."""

    seeds: tuple[int, ...] = (0, 1, 2)
    shadow_models: int = 64
    fpr: tuple[float, ...] = (0.1, 0.01, 0.001)
    variants: tuple[str, ...] = ("lira-online",)


def read_config(path: str | Path) -> tuple[StudyDataset, ...]:
    """The ``[[datasets]]`` tables of a study file (module docstring)."""
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise MiascaleError(f"Cannot read the study file {path}: {e}.") from None
    extra = sorted(set(doc) - {"datasets"})
    tables = doc.get("datasets")
    if extra or not isinstance(tables, list) or not tables:
        raise MiascaleError(
            f"The study file {path} must hold only [[datasets]] tables (dataset, backbone, "
            f"classes, shots, optional min_per_class); the shared settings are flags"
            + (f" (unknown key(s): {', '.join(extra)})." if extra else ".")
        )
    out = []
    for i, t in enumerate(tables):
        keys = {"dataset", "backbone", "classes", "shots", "min_per_class"}
        if not isinstance(t, dict) or not {"dataset", "backbone", "classes", "shots"} <= set(t):
            raise MiascaleError(
                f"[[datasets]] #{i + 1} of {path} needs dataset, backbone, classes and shots."
            )
        if set(t) - keys:
            raise MiascaleError(f"[[datasets]] #{i + 1} of {path}: unknown {set(t) - keys}.")
        out.append(StudyDataset(str(t["dataset"]), str(t["backbone"]), tuple(t["classes"]),
                                tuple(t["shots"]), t.get("min_per_class")))  # fmt: skip
    return tuple(out)


def select(datasets: Sequence[StudyDataset], only: Sequence[str] | None) -> list[StudyDataset]:
    """The datasets named in ``only`` (dataset names or ``dataset/backbone``); all when None."""
    if not only:
        return list(datasets)
    chosen = [d for d in datasets if d.dataset in only or d.label in only]
    unknown = [n for n in only if not any(n in (d.dataset, d.label) for d in datasets)]
    if unknown:
        have = ", ".join(d.label for d in datasets)
        raise MiascaleError(f"--only {', '.join(unknown)}: not in the study ({have}).")
    return chosen


def sweep_spec(d: StudyDataset, s: StudySettings):
    """The :class:`~miascale.experiments.grid.SweepSpec` of one dataset of the study."""
    from miascale.experiments.grid import SweepSpec

    return SweepSpec(
        datasets=(d.dataset,), backbones=(d.backbone,), shots=d.shots, classes=d.classes,
        seeds=s.seeds, variants=s.variants, shadow_models=s.shadow_models, fpr=s.fpr,
        min_per_class=d.min_per_class,
    )  # fmt: skip


def read_manifest(out: str | Path) -> dict:
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise MiascaleError(f"{out} is not a study directory ({MANIFEST} is missing); run "
                            f"`miascale study --out {out}` first.")  # fmt: skip
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise MiascaleError(f"Cannot read {path}: {e}.") from None


def _write_json(path: Path, doc: dict) -> None:
    atomic_write_bytes(path, (json.dumps(doc, indent=2) + "\n").encode())


def write_manifest(out: Path, pairs: Sequence[tuple[StudyDataset, Any]]) -> dict:
    """Record (merged with what an earlier run of the study recorded) each dataset's run."""
    old = read_manifest(out)["runs"] if (out / MANIFEST).is_file() else []
    runs = {r["run_dir"]: r for r in old}
    for d, spec in pairs:
        runs[d.run_name] = {"label": d.label, "run_dir": d.run_name, "spec": spec.to_dict()}
    doc = {"kind": "miascale-study", "schema_version": 1, "runs": list(runs.values())}
    _write_json(out / MANIFEST, doc)
    return doc


def load_rows(out: str | Path) -> tuple[list[dict], list[dict]]:
    """Every result row of the study's runs (as ``miascale fit`` prepares them) and per run
    ``{label, run_dir, cells, failed, seconds}`` (``seconds``: compute time of its done cells)."""
    from miascale.api import fit_rows
    from miascale.experiments.store import DB_NAME, ResultStore

    rows, info = [], []
    for r in read_manifest(out)["runs"]:
        run = Path(out) / r["run_dir"]
        if not (run / DB_NAME).is_file():
            info.append({**r, "cells": 0, "failed": 0, "seconds": 0.0})
            continue
        with ResultStore.load(run) as store:
            rows += fit_rows(store.rows())
            cells = store.cells()
        done = [c for c in cells if c["status"] == "done"]
        info.append({"label": r["label"], "run_dir": r["run_dir"], "cells": len(done),
                     "failed": len(cells) - len(done),
                     "seconds": float(sum(c["seconds"] or 0.0 for c in done))})  # fmt: skip
    return rows, info


def fit_study_dir(out: str | Path, **rules: Any) -> tuple[StudyFit, list[dict]]:
    """Fit the study's rows and write ``study_fit.json``; returns the fit and the runs' info."""
    rows, info = load_rows(out)
    fit = fit_study(rows, **rules)
    _write_json(Path(out) / FIT_NAME, {**fit.to_dict(), "runs": info})
    return fit, info


def load_study_fit(path: str | Path) -> StudyFit:
    """A study fit from ``study_fit.json`` or the study directory holding it."""
    p = Path(path)
    p = p / FIT_NAME if p.is_dir() else p
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise MiascaleError(
            f"Cannot read the study fit {p}: {e}. Run `miascale study` first."
        ) from None
    return StudyFit.from_dict(doc)


@dataclass
class StudyRun:
    """What :func:`run_study` did: the sweeps, the fit (or why not) and the report."""

    out: Path
    sweeps: list[tuple[str, dict]] = field(default_factory=list)
    fit: StudyFit | None = None
    runs: list[dict] = field(default_factory=list)
    fit_error: str | None = None
    report: Path | None = None

    @property
    def failed(self) -> int:
        return sum(s.get("failed", 0) for _, s in self.sweeps)

    def to_dict(self) -> dict:
        return {"out": str(self.out), "sweeps": dict(self.sweeps), "runs": self.runs,
                "fit": None if self.fit is None else self.fit.to_dict(),
                "fit_error": self.fit_error,
                "report": None if self.report is None else str(self.report)}  # fmt: skip

    def lines(self) -> list[str]:
        from miascale.report.study_page import level_line

        out = [f"{label}: {s['total']} cells ({s['skipped']} already done, {s['ran']} run, "
               f"{s['failed']} failed) in {s['seconds']:.0f} s" for label, s in self.sweeps]  # fmt: skip
        if self.fit is None:
            return [*out, f"no study fit: {self.fit_error}"]
        out += [level_line(lv) for lv in self.fit.levels]
        out += [f"study fit: {self.out / FIT_NAME}", f"report: {self.report}"]
        return out


def run_study(
    out: str | Path,
    datasets: Sequence[StudyDataset] = PRESET,
    settings: StudySettings = StudySettings(),
    *,
    device: str = "cpu",
    backend: str = "local",
    address: str | None = None,
    workers: int | None = None,
    fit_only: bool = False,
    quiet: bool = False,
    compute=None,
) -> StudyRun:
    """Run (resume) every dataset's sweep into ``out/<run_name>``, fit the study, write the report.

    ``fit_only`` runs nothing: it refits and reports what the study's runs hold. Failed cells are
    recorded (a rerun retries them); the fit uses the cells that are done. ``backend``,
    ``address`` and ``workers`` are ``miascale sweep``'s (docs/sweep.md).
    """
    from miascale.experiments.workflows import run_sweep_command
    from miascale.report.study_page import build_study_report

    out = Path(out)
    result = StudyRun(out)
    pairs = [(d, sweep_spec(d, settings)) for d in datasets]
    if not fit_only:
        out.mkdir(parents=True, exist_ok=True)
        write_manifest(out, pairs)
        for d, spec in pairs:
            summary, store = run_sweep_command(
                spec, out / d.run_name, device, quiet, backend=backend, address=address,
                workers=workers, on_error="record", compute=compute,
            )  # fmt: skip
            store.close()
            result.sweeps.append((d.label, summary.to_dict()))
    try:
        result.fit, result.runs = fit_study_dir(out)
    except MiascaleError as e:
        result.fit_error = str(e)
        return result
    result.report = build_study_report(out, result.fit, result.runs)
    return result


# ------------------------------------------------------------------------------ prediction


@dataclass(frozen=True)
class LikePrediction:
    """The study's prediction for a new dataset (see :func:`predict_like`)."""

    like: str
    basis: str
    fpr_level: float
    shots: float
    classes: int | None
    log10_advantage: float
    advantage: float
    tpr: float
    law_ci: tuple[float, float] | None  # log10: where the law's mean lies
    tau: float | None  # the new-dataset spread added to the law's uncertainty (log10)
    interval: tuple[float, float] | None  # log10: where a new dataset's cell should lie
    confidence: float
    warnings: tuple[str, ...] = ()

    @property
    def advantage_interval(self) -> tuple[float, float] | None:
        return None if self.interval is None else (10 ** self.interval[0], 10 ** self.interval[1])

    def to_dict(self) -> dict:
        from miascale.study_fit import _plain

        d = {k: _plain(v) for k, v in self.__dict__.items()}
        return {**d, "advantage_interval": _plain(self.advantage_interval)}

    def sentence(self) -> str:
        c = "" if self.classes is None else f", C={self.classes}"
        who = "unlike any in the study" if self.like == ANY else f"like {self.like}"
        text = (f"A dataset {who} at S={self.shots:g}{c}, FPR {self.fpr_level:g}: "
                f"predicted advantage {self.advantage:.3g} (TPR {self.tpr:.3g})")  # fmt: skip
        if self.advantage_interval is not None:
            lo, hi = self.advantage_interval
            text += f"; {round(self.confidence * 100, 6):g}% interval for such a dataset {lo:.3g}–{hi:.3g}"
        text += f". {self.basis}"
        return text + ("" if not self.warnings else " Caution: " + " ".join(self.warnings))


def _resolve_like(fit: StudyFit, like: str) -> str | None:
    if like.lower() in (ANY, "new"):
        return None
    hits = [d for d in fit.datasets if d == like or d.startswith(like + "/")]
    if len(hits) != 1:
        raise MiascaleError(
            f"--dataset-like {like!r} is {'ambiguous' if hits else 'not in the study'}: give one "
            f"of {', '.join(fit.datasets)} or '{ANY}' (a dataset unlike any in the study)."
        )
    return hits[0]


def predict_like(
    study: str | Path | StudyFit,
    like: str,
    shots: float,
    classes: int | None,
    fpr: float,
    attack: str = "lira-online",
    confidence: float = 0.95,
) -> LikePrediction:
    """Predict a new dataset's advantage at ``(shots, classes)`` from the pooled study fit.

    ``like`` is ``any`` (a dataset unlike any in the study) or one of the study's datasets:

    * ``any``: the shared-intercept law; the interval adds the spread of the leave-one-dataset-out
      errors (``tau^2``: their mean square) to the law's own uncertainty.
    * a study dataset ``D``: the law with ``D``'s intercept when the intercept test found that the
      datasets need their own, otherwise the shared law; ``tau^2`` is the mean squared
      leave-one-C-out error on ``D``'s cells (how far the law missed cells of ``D`` it had not
      seen: new class subsets and class counts).

    The interval is ``pred ± q · sqrt(x' Sigma x + tau^2)`` in ``log10`` advantage.
    """
    from scipy import stats

    from miascale.audit import variant_columns
    from miascale.planning import Coefficients, predict

    fit = study if isinstance(study, StudyFit) else load_study_fit(study)
    lv = fit.level(*variant_columns(attack), fpr)
    p, d = lv.pooled, _resolve_like(fit, like)
    coef = p.coefficients()
    it, hold, basis = lv.intercepts, lv.lodo, "the shared law; interval from leaving datasets out"
    if d is not None:
        hold, basis = lv.loco, f"the shared law; interval from leaving C values of {d} out"
        if it.separate and it.cov is not None:
            k, i = len(it.datasets), it.datasets.index(d)
            idx = [i, k] + ([k + 1] if p.uses_classes else [])
            cov = tuple(tuple(it.cov[a][b] for b in idx) for a in idx)
            coef = Coefficients(it.beta_s, it.intercepts[i][1], it.beta_c, fpr_level=p.fpr_level,
                                cov=cov, dof=it.dof, n_points=p.n_points, r_squared=it.r_squared,
                                shots_range=p.shots_range)  # fmt: skip
            hold, basis = lv.loco_separate, (f"{d}'s own intercept (the datasets differ, "
                                             f"{it.verdict()}); interval from leaving C values out")  # fmt: skip
    pr = predict(coef, shots, classes, confidence=confidence)
    mse = None if hold is None else hold.mse_of(d)
    warnings = list(pr.warnings)
    interval = None
    if pr.log10_advantage_ci is not None and coef.cov is not None:
        x = [1.0, math.log10(shots)] + ([] if coef.beta_c is None else [math.log10(classes)])
        var = sum(x[a] * coef.cov[a][b] * x[b] for a in range(len(x)) for b in range(len(x)))
        q = float(stats.t.ppf(0.5 + confidence / 2.0, coef.dof or 10**6))
        half = q * math.sqrt(max(var, 0.0) + (mse or 0.0))
        interval = (pr.log10_advantage - half, pr.log10_advantage + half)
    if mse is None:
        warnings.append("No out-of-sample error was measured for this case, so the interval is "
                        "the law's alone and too narrow for a new dataset.")  # fmt: skip
    cs = sorted({pt.classes for pt in p.points})
    if classes is not None and cs and not cs[0] <= classes <= cs[-1]:
        warnings.append(f"C = {classes} is outside the study's fitted C = {cs[0]}…{cs[-1]}.")
    return LikePrediction(
        like=d or ANY, basis=basis[:1].upper() + basis[1:] + ".", fpr_level=p.fpr_level,
        shots=float(shots), classes=classes, log10_advantage=pr.log10_advantage,
        advantage=pr.advantage, tpr=pr.tpr, law_ci=pr.log10_advantage_ci,
        tau=None if mse is None else math.sqrt(mse), interval=interval, confidence=confidence,
        warnings=tuple(warnings),
    )  # fmt: skip


__all__ = [
    "ANY", "FIT_NAME", "MANIFEST", "PRESET", "REPORT_NAME", "SEPARATE", "SHARED", "LikePrediction",
    "StudyDataset", "StudyRun", "StudySettings", "fit_study_dir", "load_rows", "load_study_fit",
    "predict_like", "read_config", "read_manifest", "run_study", "select", "sweep_spec",
]  # fmt: skip
