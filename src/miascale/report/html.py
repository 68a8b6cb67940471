"""The sweep report: one self-contained HTML file, ``RUN_DIR/report.html``.

:func:`build_report` reads a sweep run directory (``results.sqlite``, the cells' ``signals.npz``
artifacts and, when present, ``fit.json``) and writes a single HTML page that opens offline: the
figures are embedded as base64 PNG data URIs and the page uses no external CSS, JavaScript or fonts.

Sections: run summary and configuration, advantage vs shots with the fitted power law, ROC curves,
the fit table, test accuracy vs shots, and the shots a target privacy level needs (the plan table).
"""

from __future__ import annotations

import base64
import html
import json
import math
import platform
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from miascale.errors import MiascaleError
from miascale.paths import atomic_write_bytes
from miascale.planning import dp_max_advantage, format_shots, plan_sentence
from miascale.report import plots
from miascale.report.headline import headline
from miascale.scaling import LevelFit, ScalingFit, fit_power_law, plan, predict

REPORT_NAME = "report.html"
FIT_NAME = "fit.json"
PLAN_EPSILONS = (0.25, 0.5, 1.0, 2.0)
MAX_ROC_GROUPS = 6
DASH = "–"

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
pre { background: #f7f7f7; border: 1px solid #ddd; padding: 0.6em; overflow-x: auto;
      font-size: 0.85em; }
figure { display: inline-block; margin: 0.5em 1em 1em 0; vertical-align: top; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, .note, .caption { font-size: 0.85em; color: #555; }
.note { font-style: italic; }
details { margin: 0.2em 0; }
summary { cursor: pointer; }
.muted { color: #777; }
"""


# ----------------------------------------------------------------------------- small helpers


def _e(x: Any) -> str:
    """HTML-escaped text."""
    return html.escape(str(x), quote=True)


def fmt_num(x: float | None, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or a dash for a missing / non-finite value."""
    if x is None or not isinstance(x, int | float) or not math.isfinite(x):
        return DASH
    return f"{x:.{digits}f}"


def fmt_coef(value: float | None, ci: tuple[float | None, float | None] | None) -> str:
    """A coefficient with its confidence interval as in the fit table: ``-0.512 [-0.601, -0.423]``."""
    if value is None:
        return DASH
    text = fmt_num(value)
    if ci is not None and ci[0] is not None and ci[1] is not None:
        text += f" [{fmt_num(ci[0])}, {fmt_num(ci[1])}]"
    return text


def _fmt_c(c: int | None) -> str:
    return "all" if c is None else str(c)


def _fmt_list(values: Iterable[Any]) -> str:
    return ", ".join(str(v) for v in values) or DASH


def _ckey(c: int | None) -> tuple[bool, int]:
    return (c is None, 0 if c is None else int(c))


def _group_key(g: tuple[str, str, int | None]) -> tuple:
    return (g[0], g[1], _ckey(g[2]))


def _numeric_classes(row: Mapping[str, Any]) -> int | None:
    """The number of classes of a row: ``classes``, else an ``n_classes`` extra field, else None."""
    c = row.get("classes")
    if c is None:
        c = row.get("n_classes")
    if isinstance(c, bool) or not isinstance(c, int | np.integer):
        return None
    return int(c)


def _advantage(row: Mapping[str, Any]) -> float | None:
    adv = row.get("advantage")
    if adv is None and row.get("tpr") is not None:
        adv = float(row["tpr"]) - float(row["fpr_level"])
    return None if adv is None else float(adv)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def _figure(png: bytes, alt: str, caption: str | None = None) -> str:
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f"<figure>{_img(png, alt)}{cap}</figure>"


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def package_versions() -> dict[str, str]:
    """Versions of miascale and the libraries behind the numbers (without importing torch)."""
    import matplotlib

    import miascale

    return {
        "miascale": miascale.__version__,
        "numpy": np.__version__,
        "torch": _version("torch"),
        "matplotlib": matplotlib.__version__,
        "statsmodels": _version("statsmodels"),
        "python": platform.python_version(),
    }


# ----------------------------------------------------------------------------- loading


@dataclass
class RunData:
    """Everything the report shows, read from a run directory."""

    run_dir: Path
    meta: dict[str, Any]
    spec: dict[str, Any]
    rows: list[dict]
    cells: list[dict]
    fit: ScalingFit | None
    fit_source: str  # where the fit came from, or why there is none

    @property
    def levels(self) -> list[tuple[str, str, float]]:
        """``(attack, variant, fpr_level)`` of the rows, sorted."""
        return sorted({(r["attack"], r["variant"], float(r["fpr_level"])) for r in self.rows})

    @property
    def attack_variants(self) -> list[tuple[str, str]]:
        return sorted({(r["attack"], r["variant"]) for r in self.rows})

    @property
    def plain_rows(self) -> list[dict]:
        """Rows of ordinarily (non-DP) trained cells."""
        return [r for r in self.rows if r.get("epsilon") is None]

    @property
    def dp_rows(self) -> list[dict]:
        return [r for r in self.rows if r.get("epsilon") is not None]

    @property
    def plain_attack_variants(self) -> list[tuple[str, str]]:
        return sorted({(r["attack"], r["variant"]) for r in self.plain_rows})

    @property
    def groups(self) -> list[tuple[str, str, int | None]]:
        """``(dataset, backbone, classes)`` of the rows, sorted (``classes=None``: all, last)."""
        return sorted(
            {(r["dataset"], r["backbone"], r["classes"]) for r in self.rows}, key=_group_key
        )


def _read_fit_json(path: Path) -> ScalingFit:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MiascaleError(
            f"Cannot read the scaling fit {path}: {e}. Delete the file to let the report refit the "
            f"sweep results, or write it again with miascale."
        ) from None
    try:
        return ScalingFit.from_dict(data)
    except MiascaleError as e:
        raise MiascaleError(
            f"{path}: {e} (or delete the file to let the report refit the results)"
        ) from None


def _compute_fit(rows: list[dict]) -> tuple[ScalingFit | None, str]:
    numeric = [_numeric_classes(r) for r in rows]
    unknown = all(c is None for c in numeric)
    fit_rows = []
    for r, c in zip(rows, numeric, strict=True):
        # With "all classes" everywhere (and no n_classes field) C takes a single value, so the law
        # has no classes term and any placeholder C gives the same fit.
        fit_rows.append({**r, "classes": 1 if unknown else c})
    try:
        return fit_power_law(fit_rows), f"fitted by the report from {len(rows)} result rows"
    except MiascaleError as e:
        return None, f"the power law could not be fitted: {e}"


def load_run(run_dir: str | Path) -> RunData:
    """Read a sweep run directory; raises :class:`MiascaleError` when it holds no results."""
    from miascale.experiments.store import ResultStore

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MiascaleError(
            f"The run directory {run_dir} does not exist. Give the --out directory of a "
            f"`miascale sweep` run."
        )
    with ResultStore.load(run_dir) as store:
        meta = store.meta()
        rows = store.rows()
        cells = store.cells()
    if not rows:
        raise MiascaleError(
            f"The sweep in {run_dir} has no finished cells yet ({len(cells)} recorded, none with "
            f"results), so there is nothing to report. Run (or resume) `miascale sweep` with this "
            f"--out first."
        )
    from miascale.audit import dp_variant

    for r in rows:  # DP cells: their own series and laws, labelled with their ε
        if r.get("epsilon") is not None:
            r["base_variant"] = r["variant"]
            r["variant"] = dp_variant(r["variant"], r["epsilon"])
    fit_path = run_dir / FIT_NAME
    if fit_path.is_file():
        fit, source = _read_fit_json(fit_path), f"read from {FIT_NAME}"
    else:
        fit, source = _compute_fit(rows)
    spec = meta.get("spec") if isinstance(meta.get("spec"), dict) else {}
    return RunData(run_dir, meta, spec, rows, cells, fit, source)


# ----------------------------------------------------------------------------- sections


def _one_line(run: RunData) -> str:
    """The run in one sentence (the headline's first line)."""
    rows = run.rows
    shots = sorted({r["shots"] for r in rows})
    done = sum(c.get("status") == "done" for c in run.cells)
    return (
        f"{done} cells: {_fmt_list(sorted({r['dataset'] for r in rows}))} × "
        f"{_fmt_list(sorted({r['backbone'] for r in rows}))}, S = {shots[0]}…{shots[-1]}, "
        f"C = {_fmt_list(_fmt_c(c) for c in sorted({r['classes'] for r in rows}, key=_ckey))}, "
        f"{len({r['seed'] for r in rows})} seed(s), M = {run.spec.get('shadow_models', DASH)} "
        f"shadow models. Scaling fit: {run.fit_source}."
    )


def _section_summary(run: RunData) -> str:
    rows = run.rows
    spec = run.spec
    done = [c for c in run.cells if c.get("status") == "done"]
    failed = [c for c in run.cells if c.get("status") != "done"]
    variants = spec.get("variants") or [f"{a}-{v}" for a, v in run.attack_variants]
    items = [
        ("Datasets", _fmt_list(sorted({r["dataset"] for r in rows}))),
        ("Backbones", _fmt_list(sorted({r["backbone"] for r in rows}))),
        ("Shots S (examples per class)", _fmt_list(sorted({r["shots"] for r in rows}))),
        (
            "Classes C",
            _fmt_list(_fmt_c(c) for c in sorted({r["classes"] for r in rows}, key=_ckey)),
        ),
        ("Seeds", _fmt_list(sorted({r["seed"] for r in rows}))),
        ("Shadow models", str(spec.get("shadow_models", DASH))),
        ("Attack variants", _fmt_list(variants)),
        ("FPR levels", _fmt_list(f"{f:g}" for f in sorted({r["fpr_level"] for r in rows}))),
        ("Cells", f"{len(done)} done, {len(failed)} failed"),
        ("Result rows", str(len(rows))),
        ("Sweep started", str(run.meta.get("created_at", DASH))),
        ("Scaling fit", run.fit_source),
    ]
    out = ['<h2 id="summary">Appendix: run details</h2>', "<table>"]
    out += [f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in items]
    out.append("</table>")
    if failed:
        out.append(f"<details><summary>{len(failed)} failed cell(s)</summary><ul>")
        for c in failed:
            cfg = c.get("config") or {}
            label = (
                f"{cfg.get('dataset')}/{cfg.get('backbone')} C={_fmt_c(cfg.get('classes'))} "
                f"S={cfg.get('shots')} seed={cfg.get('seed')}"
            )
            out.append(f"<li>{_e(label)}: {_e(c.get('error') or c.get('status'))}</li>")
        out.append("</ul></details>")
    out.append("<h3>Configuration</h3>")
    out.append(f"<pre>{_e(json.dumps(spec, indent=2, sort_keys=True))}</pre>")
    out.append("<h3>Package versions</h3><table>")
    out += [f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in package_versions().items()]
    out.append("</table>")
    return "\n".join(out)


def _excluded_keys(lf: LevelFit | None) -> set[tuple[str, str, int, int]]:
    if lf is None:
        return set()
    return {(p.dataset, p.backbone, int(p.shots), int(p.classes)) for p in lf.excluded}


def _level_fit(fit: ScalingFit | None, level: tuple[str, str, float]) -> LevelFit | None:
    if fit is None:
        return None
    try:
        return fit.level(*level)
    except MiascaleError:
        return None


def _fit_line(lf: LevelFit | None, shots: np.ndarray, classes: int | None) -> tuple:
    if lf is None or not lf.ok or shots.size == 0:
        return np.empty(0), np.empty(0)
    lo, hi = lf.shots_range or (shots.min(), shots.max())  # only over the fitted (admitted) S
    xs = np.logspace(math.log10(lo), math.log10(hi), 60)
    try:
        ys = np.array([predict(lf, float(s), classes).advantage for s in xs])
    except MiascaleError:  # the law has a classes term but C is unknown
        return np.empty(0), np.empty(0)
    return xs, ys


def _section_advantage(run: RunData) -> str:
    out = ['<h2 id="advantage">Attack advantage vs shots</h2>']
    # panel: (dataset, backbone, classes, attack, variant) -> fpr -> shots -> rows
    panels: dict[tuple, dict[float, dict[int, list[dict]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for r in run.rows:
        key = (r["dataset"], r["backbone"], r["classes"], r["attack"], r["variant"])
        panels[key][float(r["fpr_level"])][int(r["shots"])].append(r)
    floors = []
    figs = []
    for key in sorted(panels, key=lambda k: (*_group_key(k[:3]), k[3], k[4])):
        dataset, backbone, classes, attack, variant = key
        series = []
        any_fit = False
        for fpr in sorted(panels[key], reverse=True):
            by_s = panels[key][fpr]
            shots = np.array(sorted(by_s), dtype=np.float64)
            med, lo, hi, exc = [], [], [], []
            lf = _level_fit(run.fit, (attack, variant, fpr))
            excluded = _excluded_keys(lf)
            cnum = None
            for s in sorted(by_s):
                rs = by_s[s]
                advs = [a for a in (_advantage(r) for r in rs) if a is not None]
                med.append(float(np.mean(advs)) if advs else math.nan)
                lows = [r["ci_low"] for r in rs if r.get("ci_low") is not None]
                highs = [r["ci_high"] for r in rs if r.get("ci_high") is not None]
                lo.append(min(lows) - fpr if lows else math.nan)
                hi.append(max(highs) - fpr if highs else math.nan)
                cnum = _numeric_classes(rs[0])
                if cnum is not None:
                    exc.append((dataset, backbone, s, cnum) in excluded)
                else:
                    exc.append(any(k[:3] == (dataset, backbone, s) for k in excluded))
            fit_s, fit_y = _fit_line(lf, shots, cnum if cnum is not None else classes)
            any_fit |= bool(len(fit_s))
            label = "separation" if attack == "separation" else f"FPR {fpr:g}"
            if lf is not None and lf.ok:
                label += f" ($\\beta_S$ = {fmt_num(lf.beta_s)})"
            series.append(
                plots.AdvantageSeries(
                    label=label,
                    shots=shots,
                    median=np.array(med),
                    lower=np.array(lo),
                    upper=np.array(hi),
                    excluded=np.array(exc, dtype=bool),
                    fit_s=fit_s,
                    fit_y=fit_y,
                )
            )
        floor = plots.advantage_floor(series)
        floors.append(floor)
        title = f"{dataset} / {backbone}, C = {_fmt_c(classes)}, {attack}-{variant}"
        ylabel = "separation (μ_in − μ_out)/σ" if attack == "separation" else (
            "per-example advantage" if attack == "tail" else "advantage TPR − FPR")  # fmt: skip
        png = plots.advantage_plot(title, series, floor, _dp_bound_lines(panels[key]), ylabel)
        cap = None if any_fit else "No fitted line: the law could not be fitted for these levels."
        figs.append(_figure(png, f"Advantage vs shots: {title}", cap))
    floor_txt = ", ".join(sorted({f"{f:.0e}" for f in floors}))
    out.append(
        '<p class="caption">'
        + _e(
            "Log-log axes. Points: mean over seeds of the advantage TPR − FPR at each FPR level "
            "(what the fit uses); error bars: from the smallest lower end to the largest upper end "
            "of the seeds' 95% intervals (bootstrap over pool examples), minus the FPR. Lower ends "
            f"≤ 0 are clipped to {floor_txt} for the log axis. Hollow circles: cells excluded from "
            "the fit (too few false positives, indistinguishable from chance or at the ceiling; "
            "see the fit table); hollow triangles at the bottom: mean advantage ≤ 0, which a log "
            "axis cannot show. Lines: the fitted law 10^(β_0 + β_S log10 S [+ β_C log10 C]) of "
            "each level, drawn over the S range it was fitted on."
        )
        + "</p>"
    )
    out += figs
    return "\n".join(out)


_RELATION_WORDS = {"replace_one": "replace-one", "add_remove": "add/remove"}


def _game_epsilon(r: Mapping[str, Any]) -> tuple[float, float, str]:
    """``(ε, δ, relation in words)`` that bound the attack of a DP row: the ε of the membership
    game played (``epsilon_game``, replace-one for the balanced design). Rows written before it
    was recorded fall back to the add/remove ε (accountant's, else the target), labelled so."""
    if r.get("epsilon_game") is not None:
        rel = r.get("relation")
        words = _RELATION_WORDS.get(rel, str(rel))
        return float(r["epsilon_game"]), float(r.get("delta_game") or 0.0), words
    eps = r.get("accountant_epsilon") or r["epsilon"]
    return float(eps), float(r.get("delta") or 0.0), "add/remove, old run"


def _dp_bound_lines(by_fpr: Mapping[float, Mapping[int, list[dict]]]) -> list:
    """For a DP panel: the advantage an (ε, δ)-DP model allows at each FPR level and S, for the
    ε, δ of the game played (:func:`_game_epsilon`; both may differ by S: q and the default δ
    depend on the training-set size)."""
    from miascale.privacy import dp_roc_bound

    lines = []
    for i, fpr in enumerate(sorted(by_fpr, reverse=True)):
        shots, values, deltas, games = [], [], set(), set()
        words = ""
        for s_ in sorted(by_fpr[fpr]):
            rs = by_fpr[fpr][s_]
            if not rs or rs[0].get("epsilon") is None:
                return []
            eps, delta, words = _game_epsilon(rs[0])
            deltas.add(delta)
            games.add(f"{eps:.3g}")
            shots.append(float(s_))
            values.append(float(dp_roc_bound(np.array([fpr]), eps, delta)[0]) - fpr)
        d = f"{next(iter(deltas)):.0e}" if len(deltas) == 1 else "by S"
        e = next(iter(games)) if len(games) == 1 else "by S"
        lines.append((f"({words} ε={e}, δ={d}) bound at FPR {fpr:g}", np.array(shots),
                      np.array(values), i))  # fmt: skip
    return lines


TAIL_SHOWN = {"separation": ("q0.5", "q0.99", "cross_max"), "tail": ("q0.99", "cross_max")}


def _floor_table(trows: list[dict]) -> str:
    """Median over seeds of value ± SE and the noise floor, per S, for the separation."""
    by: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for r in trows:
        if r["attack"] == "separation":
            by[(int(r["shots"]), r["variant"])].append(r)
    if not by:
        return ""
    names = [n for n in TAIL_SHOWN["separation"] if any(k[1] == n for k in by)]
    head = "".join(f"<th>{_e(n)}: value ± SE (floor)</th>" for n in names)
    body = []
    for shots in sorted({k[0] for k in by}):
        cells = []
        for n in names:
            rs = by.get((shots, n), [])
            if not rs:
                cells.append(f"<td>{DASH}</td>")
                continue
            v = float(np.median([r["advantage"] for r in rs]))
            se = float(np.median([r["se"] or 0.0 for r in rs]))
            fl = float(np.median([r["floor"] or 0.0 for r in rs]))
            cells.append(f'<td class="num">{v:.2f} ± {se:.2f} ({fl:.2f})</td>')
        body.append(f'<tr><td class="num">{shots}</td>{"".join(cells)}</tr>')
    return f"<table><tr><th>S</th>{head}</tr>{''.join(body)}</table>"


def _section_tail(run: RunData) -> str:
    """The most vulnerable examples against S: separation and per-example advantage tails."""
    from miascale.scaling import tail_rows

    rows = [{**r, "classes": _numeric_classes(r) or 1} for r in run.plain_rows]
    trows = [r for r in tail_rows(rows) if r["variant"] in TAIL_SHOWN[r["attack"]]]
    if not trows:
        if any(k.startswith("tail_naive_") for r in run.plain_rows for k in r):
            return (
                '<h2 id="tail">Most vulnerable examples vs shots</h2>'
                + _note("This run predates per-example quantiles (it stored the mean above a "
                        "quantile); rerun the sweep into a new directory to see them.")
            )  # fmt: skip
        return ""
    tail_fit, source = None, "fitted by the report"
    fit_path = run.run_dir / FIT_NAME
    try:
        data = json.loads(fit_path.read_text(encoding="utf-8")) if fit_path.is_file() else {}
        if "tail" in data:
            tail_fit, source = ScalingFit.from_dict(data["tail"]), f"read from {FIT_NAME}"
        else:
            tail_fit = fit_power_law(trows)
    except (OSError, ValueError, MiascaleError) as e:
        source = f"no fit: {e}"
    sub = RunData(run.run_dir, run.meta, run.spec, trows, [], tail_fit, source)
    body = _section_advantage(sub).replace(
        '<h2 id="advantage">Attack advantage vs shots</h2>',
        '<h2 id="tail">Most vulnerable examples vs shots</h2>'
        + '<p class="caption">'
        + _e(
            "separation: the per-example standardised separation (μ_in − μ_out)/σ of each "
            "example's IN/OUT statistics (σ shrunk toward the pooled one), which has no ceiling; "
            "q0.5 and q0.99 are its median and 99th percentile over the pool, cross_max the top "
            "example selected on one half of the models and measured on the other (no winner's "
            "curse). tail: the per-example advantage of the Gaussian test at each FPR level, "
            "shown only for levels the examples' OUT models resolve. Hollow points were left out "
            "of the fit (at the noise floor, at the ceiling, or not resolvable); lines span only "
            f"the fitted S range (docs/vulnerability.md). Fit {source}."
        )
        + "</p>",
    )
    floor = (
        '<p class="caption">'
        + _e(
            "Noise floor: what each separation figure is on null data (no membership signal) "
            "with this many IN/OUT models per example, next to the measured value (median over "
            "seeds, ± its bootstrap SE over model pairs and examples)."
        )
        + "</p>"
        + _floor_table(trows)
    )
    return body + floor


THUMBNAILS = 16


def _section_most_vulnerable(run: RunData) -> str:
    """Thumbnails (or texts) of the most vulnerable examples at the largest S with artifacts."""
    from miascale.data import load_dataset
    from miascale.tails import cross_ranked

    out = ['<h2 id="most-vulnerable">The most vulnerable examples</h2>']
    done = [c for c in run.cells if c.get("status") == "done" and c.get("artifacts")]
    plain = [c for c in done if (c.get("config") or {}).get("epsilon") is None]
    done = plain or done  # ordinary training first; DP cells only in an all-DP run
    if not done:
        return "\n".join([*out, _note("No cell artifacts (signals.npz) to read.")])
    cell = max(done, key=lambda c: (c["config"]["shots"], -c["config"]["seed"]))
    cfg = cell["config"]
    folder = _resolve_artifacts(run.run_dir, cell["artifacts"])
    try:
        with np.load(folder / "signals.npz", allow_pickle=False) as z:  # type: ignore[operator]
            stats, mask, pool_idx = z["stats"], z["in_mask"].astype(bool), z["pool_indices"]
        ds = load_dataset(cfg["dataset"], cfg.get("min_per_class"))
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile, MiascaleError) as e:
        return "\n".join([*out, _note(f"Cannot show the most vulnerable examples: {e}")])
    try:
        ranked = cross_ranked(stats, mask, THUMBNAILS, seed=int(cfg["seed"]))
    except MiascaleError as e:
        return "\n".join([*out, _note(f"Cannot rank the most vulnerable examples: {e}")])
    top = [int(i) for i in ranked.indices]
    value = dict(zip(top, ranked.separation.tolist(), strict=True))
    err_of = dict(zip(top, ranked.se.tolist(), strict=True))
    what = (
        f"{cfg['dataset']} / {cfg['backbone']}, S = {cfg['shots']}, seed {cfg['seed']}: the "
        f"{len(top)} pool examples ranked by their separation (μ_in − μ_out)/σ on one half of "
        "the models and shown with the separation measured on the other half (± its standard "
        "error), so the value is free of the winner's curse."
    )
    out.append(f'<p class="caption">{_e(what)}</p>')
    labels = [ds.class_names[ds.y_train[pool_idx[i]]] for i in top]
    if ds.modality == "image":
        images = [np.asarray(ds.x_train[pool_idx[i]]) for i in top]
        caps = [
            f"{lab}\nd {value[i]:.2f} ± {err_of[i]:.2f}" for lab, i in zip(labels, top, strict=True)
        ]
        short = f"most vulnerable at S = {cfg['shots']} (cross-fitted separation)"
        out.append(_figure(plots.thumbnail_grid(short, images, caps), "most vulnerable images"))
    elif ds.modality == "text":
        body = "".join(
            f"<tr><td>{_e(f'{value[i]:.2f} ± {err_of[i]:.2f}')}</td><td>{_e(lab)}</td>"
            f"<td>{_e(ds.x_train[pool_idx[i]])}</td></tr>"
            for lab, i in zip(labels, top, strict=True)
        )
        out.append(
            "<table><tr><th>separation</th><th>class</th><th>text</th></tr>" + body + "</table>"
        )
    else:
        out.append(_note("Feature-only data: no images or texts to show."))
    return "\n".join(out)


def _resolve_artifacts(run_dir: Path, artifacts: str | None) -> Path | None:
    if not artifacts:
        return None
    p = Path(artifacts)
    return p if p.is_absolute() else run_dir / p


def _load_signals(folder: Path) -> dict[str, np.ndarray]:
    path = folder / "signals.npz"
    if not path.is_file():
        raise ValueError(f"{path} is missing")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {
                k: np.asarray(z[k]) for k in z.files if k == "in_mask" or k.startswith("scores")
            }
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is unreadable ({e})") from None


def _roc_for(sig: dict[str, np.ndarray], attack: str, variant: str, single: bool):
    from miascale.metrics import roc_curve

    key = f"scores__{variant_name(attack, variant)}"
    if key not in sig:
        if single and "scores" in sig:
            key = "scores"
        else:
            raise ValueError(f"no {key} in signals.npz")
    if "in_mask" not in sig:
        raise ValueError("no in_mask in signals.npz")
    scores = np.asarray(sig[key], dtype=np.float64)
    mask = np.asarray(sig["in_mask"]).astype(bool)
    if scores.shape != mask.shape:
        raise ValueError(f"{key} has shape {scores.shape} but in_mask {mask.shape}")
    ok = np.isfinite(scores)
    try:
        return roc_curve(scores[ok], mask[ok])
    except MiascaleError as e:
        raise ValueError(str(e)) from None


def variant_name(attack: str, variant: str) -> str:
    """Row columns → the attack variant's name (``loss``/``global`` → ``loss``)."""
    return attack if variant == "global" else f"{attack}-{variant}"


def _pick_shots(shots: list[int]) -> list[int]:
    shots = sorted(set(shots))
    if len(shots) <= 3:
        return shots
    return sorted({shots[0], shots[(len(shots) - 1) // 2], shots[-1]})


def _section_roc(run: RunData) -> str:
    out = ['<h2 id="roc">ROC curves</h2>']
    # group -> shots -> [(seed, artifacts folder)]
    by_group: dict[tuple, dict[int, list[tuple[int, Path]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    n_without = 0
    for c in run.cells:
        cfg = c.get("config") or {}
        if c.get("status") != "done" or cfg.get("epsilon") is not None:
            continue  # DP cells: see the privacy section
        folder = _resolve_artifacts(run.run_dir, c.get("artifacts"))
        if folder is None:
            n_without += 1
            continue
        g = (cfg.get("dataset"), cfg.get("backbone"), cfg.get("classes"))
        by_group[g][int(cfg.get("shots"))].append((int(cfg.get("seed", 0)), folder))
    if not by_group:
        out.append(
            _note(
                "No ROC curves here: DP cells are shown in the Differential privacy section."
                if run.dp_rows and not run.plain_rows
                else "No ROC curves: no cell of this run recorded signal artifacts (signals.npz), "
                "so only the summary metrics are available."
            )
        )
        return "\n".join(out)
    avs = run.plain_attack_variants
    single = len(avs) == 1
    groups = sorted(by_group, key=_group_key)
    notes: list[str] = []
    if n_without:
        notes.append(f"{n_without} done cell(s) have no artifacts.")
    if len(groups) > MAX_ROC_GROUPS:
        notes.append(
            f"Showing the first {MAX_ROC_GROUPS} of {len(groups)} (dataset, backbone, classes) "
            f"combinations."
        )
        groups = groups[:MAX_ROC_GROUPS]
    out.append(
        '<p class="caption">'
        + _e(
            "Log-log ROC curves of the pooled target scores (all target models of one seed; "
            "unscored examples dropped) at the smallest, a middle and the largest S with "
            "artifacts. Colour: S; line style: attack variant. Dashed grey: chance (TPR = FPR)."
        )
        + "</p>"
    )
    for g in groups:
        title = f"{g[0]} / {g[1]}, C = {_fmt_c(g[2])}"
        # per S, the lowest seed whose signals.npz exists
        chosen: dict[int, tuple[int, Path]] = {}
        for s in sorted(by_group[g]):
            cands = sorted(by_group[g][s], key=lambda t: t[0])
            present = [t for t in cands if (t[1] / "signals.npz").is_file()]
            if present:
                chosen[s] = present[0]
            else:
                missing = ", ".join(str(f / "signals.npz") for _, f in cands)
                notes.append(f"{title}, S={s}: artifacts recorded but missing ({missing}).")
        series = []
        for ci, s in enumerate(_pick_shots(list(chosen))):
            seed, folder = chosen[s]
            try:
                sig = _load_signals(folder)
            except ValueError as e:
                notes.append(f"S={s} seed={seed}: {e}.")
                continue
            for si, (attack, variant) in enumerate(avs):
                try:
                    roc = _roc_for(sig, attack, variant, single)
                except ValueError as e:
                    notes.append(f"S={s} seed={seed} {attack}-{variant}: {e}.")
                    continue
                auc = float(np.trapezoid(roc.tpr, roc.fpr))
                label = f"S={s} seed {seed}, {attack}-{variant} (AUC {auc:.3f})"
                series.append(plots.RocSeries(label, roc.fpr, roc.tpr, color=ci, style=si))
        if series:
            out.append(_figure(plots.roc_plot(title, series), f"ROC curves: {title}"))
        else:
            notes.append(f"No usable signals for {title}.")
    if notes:
        out.append("<ul>" + "".join(f'<li class="note">{_e(n)}</li>' for n in notes) + "</ul>")
    return "\n".join(out)


def _median_range(values: list[float], digits: int = 3) -> str:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return DASH
    med = fmt_num(float(np.median(vals)), digits)
    if len(vals) == 1:
        return med
    return f"{med} [{fmt_num(min(vals), digits)}, {fmt_num(max(vals), digits)}]"


def _section_attacks(run: RunData) -> str:
    """Side-by-side TPR@FPR of every attack variant run on the same models (non-DP cells)."""
    avs = run.plain_attack_variants
    if len(avs) < 2:
        return ""
    out = ['<h2 id="attacks">Attacks side by side</h2>']
    out.append(
        '<p class="caption">'
        + _e(
            "All attack variants of a cell score the same trained models. Each entry: median over "
            "seeds of TPR at the FPR level, with the smallest and largest seed in brackets; AUC "
            "likewise. β_S: the fitted slope of the power law (see the fit table)."
        )
        + "</p>"
    )
    levels = sorted({float(r["fpr_level"]) for r in run.plain_rows}, reverse=True)
    table: dict[tuple, dict[tuple, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in run.plain_rows:
        g = (r["dataset"], r["backbone"], r["classes"])
        table[g][(int(r["shots"]), r["attack"], r["variant"])].append(r)
    for g in sorted(table, key=_group_key):
        out.append(f"<h3>{_e(f'{g[0]} / {g[1]}, C = {_fmt_c(g[2])}')}</h3><table>")
        head = ["S", "attack"] + [f"TPR @ FPR {t:g}" for t in levels] + ["AUC"]
        out.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>")
        for s_, attack, variant in sorted(table[g]):
            rs = table[g][(s_, attack, variant)]
            cols = []
            for t in levels:
                vals = [r["tpr"] for r in rs if float(r["fpr_level"]) == t]
                cols.append(_median_range(vals, 4))
            aucs = list({r["cell_id"]: r.get("auc") for r in rs}.values())
            cells = [str(s_), variant_name(attack, variant), *cols, _median_range(aucs, 4)]
            out.append(
                "<tr>"
                + "".join(
                    f'<td class="num">{_e(c)}</td>' if i != 1 else f"<td>{_e(c)}</td>"
                    for i, c in enumerate(cells)
                )
                + "</tr>"
            )
        out.append("</table>")
    if run.fit is not None:
        out.append("<table><tr><th>attack</th><th>FPR</th><th>β_S [95% CI]</th></tr>")
        for lf in run.fit.levels:
            if " dp " in lf.variant or lf.attack.startswith("tail"):
                continue
            beta = fmt_coef(lf.beta_s, lf.ci_s) if lf.ok else DASH
            out.append(
                f"<tr><td>{_e(variant_name(lf.attack, lf.variant))}</td>"
                f'<td class="num">{lf.fpr_level:g}</td><td class="num">{_e(beta)}</td></tr>'
            )
        out.append("</table>")
    return "\n".join(out)


def _has_privacy(run: RunData) -> bool:
    return bool(run.dp_rows) or any(r.get("empirical_epsilon") is not None for r in run.rows)


def _eps_label(eps: float | None) -> str:
    return "no DP" if eps is None else f"ε = {eps:g}"


def _section_privacy(run: RunData) -> str:
    """DP-trained cells beside ordinary ones: ε × S table, empirical ε, ROC under the DP bound."""
    if not _has_privacy(run):
        return ""
    from miascale.privacy import dp_roc_bound

    out = ['<h2 id="privacy">Differential privacy</h2>']
    primary = (run.spec.get("variants") or ["lira-online"])[0]
    rows = [r for r in run.rows
            if variant_name(r["attack"], r.get("base_variant", r["variant"])) == primary]  # fmt: skip
    levels = sorted({float(r["fpr_level"]) for r in rows})
    if not rows or not levels:
        return ""
    level = 0.01 if 0.01 in levels else levels[len(levels) // 2]
    epsilons = sorted({r.get("epsilon") for r in rows}, key=lambda e: (e is not None, e or 0.0))
    by: dict[tuple, dict[tuple, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if float(r["fpr_level"]) == level:
            g = (r["dataset"], r["backbone"], r["classes"])
            by[g][(int(r["shots"]), r.get("epsilon"))].append(r)
    out.append(
        '<p class="caption">'
        + _e(
            f"Attack {primary} at FPR {level:g}: median over seeds of TPR, test accuracy and the "
            "empirical ε lower bound (from Clopper–Pearson bounds on TPR and FPR over all "
            "thresholds, at the δ shown; for DP cells next to the ε that bounds it, the "
            "accountant's ε for the membership game played: replace-one for the balanced design, "
            "add/remove for bernoulli). DP-SGD cells train the heads with per-example clipping "
            "and Gaussian noise calibrated for the add/remove ε by the dp-accounting PLD "
            "accountant (shown too)."
        )
        + "</p>"
    )
    for g in sorted(by, key=_group_key):
        out.append(f"<h3>{_e(f'{g[0]} / {g[1]}, C = {_fmt_c(g[2])}')}</h3><table>")
        head = ["S", *(_eps_label(e) for e in epsilons)]
        out.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>")
        for s_ in sorted({k[0] for k in by[g]}):
            cells = [f'<td class="num">{s_}</td>']
            for e in epsilons:
                rs = by[g].get((s_, e), [])
                if not rs:
                    cells.append(f"<td>{DASH}</td>")
                    continue
                tpr = _median_range([r["tpr"] for r in rs], 4)
                acc = _median_range([r.get("test_accuracy") for r in rs], 3)
                lb = _median_range([r.get("empirical_epsilon") for r in rs], 2)
                acct = [r.get("accountant_epsilon") for r in rs if r.get("accountant_epsilon")]
                txt = f"TPR {tpr}<br>acc {acc}<br>ε_lb {lb}"
                if acct:
                    e_game, d_game, words = _game_epsilon(rs[0])
                    txt += f" (bound: {words} ε {e_game:.3g}, δ {d_game:.0e}"
                    if rs[0].get("epsilon_game") is not None:
                        txt += f"; accountant add/remove ε {float(acct[0]):.3g}"
                    txt += ")"
                elif rs[0].get("empirical_epsilon_delta") is not None:
                    txt += f" (δ {float(rs[0]['empirical_epsilon_delta']):.0e})"
                cells.append(f'<td class="num">{txt}</td>')
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</table>")
    # ROC curves of the largest S with DP cells, under each ε's bound region
    figs = []
    cells_by: dict[tuple, dict[tuple, list]] = defaultdict(lambda: defaultdict(list))
    for c in run.cells:
        cfg = c.get("config") or {}
        folder = _resolve_artifacts(run.run_dir, c.get("artifacts"))
        if c.get("status") != "done" or folder is None:
            continue
        g = (cfg.get("dataset"), cfg.get("backbone"), cfg.get("classes"))
        cells_by[g][(int(cfg.get("shots")), cfg.get("epsilon"))].append(
            (cfg.get("seed", 0), folder)
        )
    games = {(r["dataset"], r["backbone"], r["classes"], int(r["shots"]), r.get("epsilon")):
             _game_epsilon(r) for r in run.dp_rows}  # fmt: skip
    for g in sorted(cells_by, key=_group_key):
        dp_shots = [k[0] for k in cells_by[g] if k[1] is not None]
        if not dp_shots:
            continue
        s_top = max(dp_shots)
        series = []
        fpr_grid = np.logspace(-5, 0, 200)
        for ci, e in enumerate(epsilons):
            cands = sorted(cells_by[g].get((s_top, e), []), key=lambda t: t[0])
            if not cands:
                continue
            try:
                sig = _load_signals(cands[0][1])
                attack, _, sub = primary.partition("-")
                roc = _roc_for(sig, attack, sub or "global", single=True)
            except ValueError:
                continue
            series.append(plots.RocSeries(f"{_eps_label(e)}, seed {cands[0][0]}", roc.fpr,
                                          roc.tpr, color=ci, style=0))  # fmt: skip
            if e is not None:
                e_game, d_game, words = games.get((*g, s_top, e), (float(e), 0.0, "add/remove"))
                bound = dp_roc_bound(fpr_grid, e_game, d_game)
                series.append(plots.RocSeries(f"({words} ε = {e_game:.3g}, δ) bound", fpr_grid,
                                              bound, color=ci, style=2))  # fmt: skip
        if series:
            title = f"{g[0]} / {g[1]}, C = {_fmt_c(g[2])}, S = {s_top}, {primary}"
            figs.append(_figure(plots.roc_plot(title, series), f"ROC under DP bounds: {title}",
                                "Solid: the attack's ROC; dotted: the most any attack can achieve "
                                "against an (ε, δ)-DP model, TPR ≤ min(e^ε·FPR + δ, "
                                "1 − e^−ε·(1 − δ − FPR)), with the accountant's ε, δ for the "
                                "membership game played (replace-one for the balanced design; "
                                "add/remove for bernoulli and runs that did not record "
                                "it)."))  # fmt: skip
    out += figs
    return "\n".join(out)


THEORY_NAME = "theory.json"


def _read_theory(run_dir: Path) -> dict | None:
    path = run_dir / THEORY_NAME
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc["levels"], list) or not isinstance(doc["curves"], list):
            raise TypeError("'levels' and 'curves' must be lists")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise MiascaleError(
            f"Cannot read the theory results {path}: {e}. Write them again with "
            f"`miascale theory --out {run_dir}`."
        ) from None
    return doc


def _section_theory(doc: dict | None) -> str:
    """The simplified model of fine-tuning (``miascale theory``): slopes and the figure."""
    if doc is None:
        return ""
    from miascale.report.theory_plot import theory_png

    cfg = doc.get("config", {})
    out = ['<h2 id="theory">Theory: the simplified model of fine-tuning</h2>']
    out.append(
        '<p class="caption">'
        + _e(
            "Class means estimated from S examples; score ⟨x, m̂_y⟩; LiRA, the membership plan and "
            "the metrics are the product's own. Exact: the Neyman–Pearson test of the closed-form "
            "score laws; asymptotic: the −½ law. Slopes are fitted over the simulated S range; "
            "'−½ from S' is where the exact local slope comes within 0.05 of −½. "
            + ", ".join(f"{k} = {v}" for k, v in cfg.items() if not isinstance(v, list | dict))
        )
        + "</p>"
    )
    head = ["FPR", "simulation (fresh)", "simulation (pool)", "exact", "asymptotic", "−½ from S",
            "regime"]  # fmt: skip
    out.append("<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>")
    for lv in doc["levels"]:
        cells = [f"{lv.get('fpr'):g}"] + [
            fmt_num(lv.get(k))
            for k in (
                "slope_simulation_fresh",
                "slope_simulation_pool",
                "slope_exact",
                "slope_asymptotic",
            )
        ]
        onset = lv.get("asymptotic_onset_shots")
        cells += [DASH if onset is None else f"{onset:,.0f}", str(lv.get("regime", DASH))]
        out.append("<tr>" + "".join(f'<td class="num">{_e(c)}</td>' for c in cells) + "</tr>")
    out.append("</table>")
    try:
        out.append(_figure(theory_png(doc), "Theory: advantage vs shots"))
    except (KeyError, TypeError, ValueError) as e:
        out.append(_note(f"The theory figure could not be drawn: {e}."))
    return "\n".join(out)


def _excluded_details(lf: LevelFit) -> str:
    parts = []
    if lf.excluded:
        items = "".join(
            f"<li>{_e(p.dataset)}/{_e(p.backbone)} C={p.classes} S={p.shots}: "
            f"{_e('; '.join(p.reasons))} (mean advantage {fmt_num(p.advantage, 4)}, "
            f"95% CI of TPR [{fmt_num(p.ci_low, 4)}, {fmt_num(p.ci_high, 4)}], "
            f"{p.n_seeds} seed(s))</li>"
            for p in lf.excluded
        )
        parts.append(
            f"<details><summary>{len(lf.excluded)} excluded</summary><ul>{items}</ul></details>"
        )
    else:
        parts.append('<span class="muted">none</span>')
    if lf.lodo:
        items = "".join(
            f"<li>{_e(r.dataset)} ({r.n_points} pts): "
            + (f"RMSE {fmt_num(r.rmse)}" if r.rmse is not None else _e(r.reason or DASH))
            + "</li>"
            for r in lf.lodo
        )
        parts.append(
            "<details><summary>leave-one-dataset-out (log10 advantage)</summary>"
            f"<ul>{items}</ul></details>"
        )
    return "".join(parts)


def _section_fit(run: RunData) -> str:
    out = ['<h2 id="fit">Power-law fit</h2>']
    if run.fit is None:
        out.append(_note(f"No fit: {run.fit_source}."))
        return "\n".join(out)
    conf = f"{run.fit.confidence * 100:g}%"
    out.append(
        '<p class="caption">'
        + _e(
            f"log10(TPR − FPR) = β_S log10 S [+ β_C log10 C] + β_0, fitted by ordinary least "
            f"squares per attack variant and FPR level on the medians over seeds; {conf} "
            f"confidence intervals in brackets. The classes term is fitted only when C varies. "
            f"Source: {run.fit_source}."
        )
        + "</p>"
    )
    head = [
        "Attack",
        "Variant",
        "FPR",
        f"β_S [{conf} CI]",
        f"β_C [{conf} CI]",
        f"β_0 [{conf} CI]",
        "R²",
        "Points",
        "Status",
        "Excluded points",
    ]
    out.append("<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>")
    for lf in run.fit.levels:
        status = lf.status if lf.ok else f"{lf.status}: {lf.reason}"
        cells = [
            f"<td>{_e(lf.attack)}</td>",
            f"<td>{_e(lf.variant)}</td>",
            f'<td class="num">{_e(f"{lf.fpr_level:g}")}</td>',
            f'<td class="num">{_e(fmt_coef(lf.beta_s, lf.ci_s))}</td>',
            f'<td class="num">{_e(fmt_coef(lf.beta_c, lf.ci_c))}</td>',
            f'<td class="num">{_e(fmt_coef(lf.beta_0, lf.ci_0))}</td>',
            f'<td class="num">{_e(fmt_num(lf.r_squared))}</td>',
            f'<td class="num">{lf.n_points}</td>',
            f"<td>{_e(status)}</td>",
            f"<td>{_excluded_details(lf)}</td>",
        ]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _section_accuracy(run: RunData) -> str:
    out = ['<h2 id="accuracy">Test accuracy vs shots</h2>']
    per_cell: dict[str, tuple] = {}
    for r in run.plain_rows:  # DP cells: see the privacy section
        acc = r.get("test_accuracy")
        if acc is None or not math.isfinite(acc) or r["cell_id"] in per_cell:
            continue
        per_cell[r["cell_id"]] = ((r["dataset"], r["backbone"], r["classes"]), r["shots"], acc)
    if not per_cell:
        out.append(_note(
            "Test accuracy of DP cells is in the Differential privacy section."
            if run.dp_rows and not run.plain_rows
            else "No test accuracy was recorded for this run."
        ))  # fmt: skip
        return "\n".join(out)
    groups: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for g, s, acc in per_cell.values():
        groups[g][int(s)].append(float(acc))
    series = []
    for g in sorted(groups, key=_group_key):
        shots = sorted(groups[g])
        vals = [groups[g][s] for s in shots]
        series.append(
            plots.AccuracySeries(
                label=f"{g[0]} / {g[1]}, C = {_fmt_c(g[2])}",
                shots=np.array(shots, dtype=np.float64),
                median=np.array([np.median(v) for v in vals]),
                low=np.array([min(v) for v in vals]),
                high=np.array([max(v) for v in vals]),
            )
        )
    png = plots.accuracy_plot("Test accuracy of the target models", series)
    out.append(
        _figure(
            png,
            "Test accuracy vs shots",
            "Median over seeds of the mean test accuracy of the target models; bars: min to max "
            "over seeds. Log x axis.",
        )
    )
    return "\n".join(out)


def _plan_classes(rows: list[dict]) -> tuple[int | None, str]:
    raw = {r["classes"] for r in rows}
    numeric = {c for c in (_numeric_classes(r) for r in rows) if c is not None}
    if len(raw) == 1:
        c = next(iter(raw))
        if c is None:
            c = max(numeric) if numeric else None
        return c, f"C = {_fmt_c(c)}, the run's number of classes"
    c = max(numeric) if numeric else None
    return c, f"C = {_fmt_c(c)}, the largest number of classes of the run"


def _section_plan(run: RunData) -> str:
    out = ['<h2 id="plan">Shots needed for a privacy target</h2>']
    if run.fit is None:
        out.append(_note(f"No plan: {run.fit_source}."))
        return "\n".join(out)
    classes, c_text = _plan_classes(run.rows)
    out.append(
        '<p class="caption">'
        + _e(
            "The S per class at which the fitted law's advantage falls to what an (ε, δ = 0) "
            "differentially private mechanism allows at the level's FPR, "
            "min(e^ε·FPR, 1 − e^−ε·(1 − FPR)) − FPR (target advantage in parentheses), "
            f"for {c_text}, with its 95% interval from the fit's covariance. Where the data cannot "
            "answer (too few admitted cells, R² below 0.9, an interval wider than a decade, or "
            "extrapolation beyond a decade of the swept S) the cell says so in a note instead of "
            "printing a number."
        )
        + "</p>"
    )
    head = ["Attack", "Variant", "FPR", *(f"ε = {eps:g}" for eps in PLAN_EPSILONS)]
    out.append("<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>")
    reasons: list[str] = []

    def why(reason: str) -> str:
        if reason not in reasons:
            reasons.append(reason)
        n = reasons.index(reason) + 1
        return f'{DASH} <sup><a href="#plan-note-{n}">[{n}]</a></sup>'

    for lf in run.fit.levels:
        cells = [
            f"<td>{_e(lf.attack)}</td>",
            f"<td>{_e(lf.variant)}</td>",
            f'<td class="num">{_e(f"{lf.fpr_level:g}")}</td>',
        ]
        for eps in PLAN_EPSILONS:
            target = dp_max_advantage(lf.fpr_level, eps)
            if not lf.ok:
                cells.append(f'<td class="num">{why(f"fit {lf.status}: {lf.reason}")}</td>')
                continue
            if lf.beta_s is not None and lf.beta_s >= 0:
                reason = (
                    f"The fitted slope β_S = {fmt_num(lf.beta_s)} is ≥ 0: the predicted advantage "
                    f"does not fall as S grows, so no number of shots reaches the target."
                )
                cells.append(f'<td class="num">{why(reason)}</td>')
                continue
            try:
                p = plan(lf, lf.fpr_level, classes, epsilon=eps)
            except MiascaleError as e:
                cells.append(f'<td class="num">{why(str(e))}</td>')
                continue
            muted = f'<span class="muted">({_e(f"{target:.3g}")})</span>'
            if not p.trustworthy:
                cells.append(f'<td class="num">{why(plan_sentence(p))} {muted}</td>')
                continue
            lo, hi = p.shots_ci
            cells.append(
                f'<td class="num">{_e(format_shots(p.shots))} '
                f'<span class="muted">[{_e(format_shots(lo))}, {_e(format_shots(hi))}]</span> {muted}</td>'
            )
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    if reasons:
        out.append(
            '<ol class="caption">'
            + "".join(
                f'<li id="plan-note-{i}">{_e(r)}</li>' for i, r in enumerate(reasons, start=1)
            )
            + "</ol>"
        )
    return "\n".join(out)


# ----------------------------------------------------------------------------- assembly


def render_report(run: RunData) -> str:
    """The report page as a string (see :func:`build_report`)."""
    datasets = ", ".join(sorted({r["dataset"] for r in run.rows}))
    title = f"miascale sweep report: {datasets}"
    now = datetime.now(UTC).isoformat(timespec="seconds")
    advantage = _section_advantage(run)
    start = advantage.find("<figure")
    first_fig = advantage[start : advantage.find("</figure>", start) + 9] if start >= 0 else ""
    classes, _ = _plan_classes(run.rows)
    sections = [
        headline(run.fit, classes, first_fig, _one_line(run)),
        advantage,
        _section_tail(run),
        _section_most_vulnerable(run),
        _section_roc(run),
        _section_attacks(run),
        _section_privacy(run),
        _section_fit(run),
        _section_accuracy(run),
        _section_plan(run),
        _section_theory(_read_theory(run.run_dir)),
        _section_summary(run),
    ]
    nav = " · ".join(
        f'<a href="#{a}">{_e(t)}</a>'
        for a, t in [
            ("answer", "Answer"),
            ("advantage", "Advantage vs S"),
            ("roc", "ROC"),
            *([("attacks", "Attacks")] if len(run.plain_attack_variants) > 1 else []),
            *([("privacy", "Privacy")] if _has_privacy(run) else []),
            ("fit", "Fit"),
            ("accuracy", "Accuracy"),
            ("plan", "Plan"),
            *([("theory", "Theory")] if (run.run_dir / THEORY_NAME).is_file() else []),
            ("summary", "Appendix"),
        ]
    )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(title)}</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            "<body>",
            f"<h1>{_e(title)}</h1>",
            f'<p class="muted">Run directory {_e(run.run_dir)} · generated {_e(now)}</p>',
            f"<p>{nav}</p>",
            *sections,
            "</body>",
            "</html>",
            "",
        ]
    )


def render_theory_report(run_dir: Path) -> str:
    """A report page for a directory that holds only ``theory.json``."""
    title = "miascale theory report"
    now = datetime.now(UTC).isoformat(timespec="seconds")
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            '<head><meta charset="utf-8">',
            f"<title>{_e(title)}</title><style>{_CSS}</style></head>",
            "<body>",
            f"<h1>{_e(title)}</h1>",
            f'<p class="muted">Run directory {_e(run_dir)} · generated {_e(now)}</p>',
            _section_theory(_read_theory(run_dir)),
            "</body>",
            "</html>",
            "",
        ]
    )


def build_report(run_dir: str | Path, out_path: str | Path | None = None) -> Path:
    """Write the self-contained HTML report of a sweep run and return its path.

    ``out_path`` defaults to ``RUN_DIR/report.html``; the file is written atomically. Uses
    ``RUN_DIR/fit.json`` when present and otherwise fits the power law to the results. Raises
    :class:`~miascale.errors.MiascaleError` when the directory holds no sweep results.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "results.sqlite").is_file() and (run_dir / THEORY_NAME).is_file():
        page = render_theory_report(run_dir)  # a `miascale theory --out DIR` directory
    else:
        run = load_run(run_dir)
        page = render_report(run)
    out = Path(out_path) if out_path is not None else run_dir / REPORT_NAME
    atomic_write_bytes(out, page.encode("utf-8"))
    return out
