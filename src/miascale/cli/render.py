"""Rendering of results: rich tables and plain lines (stdout), and JSON output."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich import box
from rich.table import Table

from miascale.console import out
from miascale.experiments.workflows import json_default


def emit_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=json_default) + "\n")


def print_lines(lines, soft_wrap: bool = False) -> None:
    for line in lines:
        out.print(line, highlight=False, markup=False, soft_wrap=soft_wrap)


def data_table(rows: list[dict]) -> Table:
    t = Table(title="datasets")
    for col in ("name", "modality", "classes", "present", "location / how to get"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            r["name"], r["modality"], str(r["classes"]), "yes" if r["present"] else "no",
            r["location"] or r["how_to_get"],
        )  # fmt: skip
    return t


def audit_table(result, title: str) -> Table:
    """TPR at each FPR level per attack variant, with its intervals and false-positive budget."""
    import numpy as np

    from miascale.metrics import fp_budget

    t = Table(title=title)
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
    return t


def audit_lines(result, n_models: int) -> list[str]:
    """The primary attack's summary, the DP guarantee and the empirical ε lower bounds."""
    acc = result.test_accuracy
    lines = [
        f"{result.outcomes[0].variant}: AUC {result.auc:.4f} · best balanced accuracy "
        f"{result.best_balanced_accuracy:.4f} · test accuracy {acc.mean():.4f} ± {acc.std():.4f} · "
        f"{result.converged}/{n_models} heads converged · "
        f"{result.n_unscored} unscored pairs · {sum(result.seconds.values()):.1f} s"
    ]
    if result.dp is not None:
        d = result.dp
        lines.append(
            f"DP-SGD heads: accountant ε = {d['epsilon']:.4g} (target {d['target_epsilon']:g}), "
            f"δ = {d['delta']:.0e}, σ = {d['noise_multiplier']:.4g}, q = {d['sampling_rate']:.4g}, "
            f"T = {d['steps']}, clip {d['clip']:g} ({d['accountant']})"
        )
    for o in result.outcomes:
        if o.empirical_epsilon is not None:
            e = o.empirical_epsilon
            lines.append(
                f"{o.variant}: empirical ε ≥ {e['epsilon_lb']:.3f} (95% Clopper–Pearson, "
                f"simultaneous over all thresholds, δ = {e['delta']:.0e})"
            )
    return lines


def _value_se(v) -> str:
    return "–" if v is None else f"{v['value']:.3f} ± {v['se']:.3f}" if v.get("se") else "–"


def per_example_table(pe_doc: dict) -> Table:
    """Quantiles of the per-example separation and advantage over the pool (value ± SE)."""
    pt = Table(title="per-example vulnerability: quantiles over the pool (value ± SE)")
    for col in ("quantity", "median", "q0.99", "max", "max cross-fitted", "noise floor q0.99"):
        pt.add_column(col, justify="right", overflow="fold")
    tl = pe_doc.get("tails")
    if tl is None:
        return pt
    f = _value_se
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
    return pt


def fit_table(fit) -> Table:
    """The fitted laws; fits 80 columns (intervals on a second line, β_C only when fitted)."""
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


def excluded_summary(lv) -> str:
    """e.g. '4 excluded: 3 at the ceiling, 1 too few false positives'."""
    if not lv.excluded:
        return "none excluded"
    counts: dict[str, int] = {}
    for e in lv.excluded:
        for r in e.reasons:
            counts[r] = counts.get(r, 0) + 1
    return f"{len(lv.excluded)} excluded: " + ", ".join(f"{n} {r}" for r, n in counts.items())


def excluded_lines(fit) -> list[str]:
    """One line per excluded cell, with its reasons (for stderr)."""
    return [
        f"excluded ({lv.attack}-{lv.variant}, FPR {lv.fpr_level:g}): S={e.shots} "
        f"C={e.classes} {e.dataset}/{e.backbone}: {'; '.join(e.reasons)} (TPR "
        f"{e.tpr:.4f} [{e.ci_low:.4f}, {e.ci_high:.4f}], advantage {e.advantage:.4g}, "
        f"{e.n_seeds} seed(s))"
        for lv in fit.levels
        for e in lv.excluded
    ]


def level_lines(fit) -> list[str]:
    """One plain line per level: β_S with its interval, R², admitted S range, exclusions."""
    lines = []
    for lv in fit.levels:
        head = f"{lv.attack}-{lv.variant} FPR {lv.fpr_level:g}: "
        if lv.status != "ok":
            lines.append(head + f"no law ({lv.status}: {lv.reason}); {excluded_summary(lv)}")
            continue
        lo, hi = lv.shots_range
        lines.append(
            head + f"β_S = {lv.beta_s:.3f} [{lv.ci_s[0]:.3f}, {lv.ci_s[1]:.3f}], "
            f"R² {lv.r_squared:.3f}, fitted on S = {lo}…{hi} ({lv.n_points} cells; "
            f"{excluded_summary(lv)})"
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


def tail_table(tail) -> Table:
    """The laws of the most vulnerable examples: β_S per estimator where the data resolves it."""
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
            excluded_summary(lv),
        )  # fmt: skip
    return t


def predict_text(p, shots: int, classes: int | None, fpr: float) -> str:
    """The prediction in one sentence, with its interval when the law carries a covariance."""
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
    return (
        f"S={shots}{'' if classes is None else f', C={classes}'}, FPR {fpr:g}: "
        f"predicted TPR {p.tpr:.3g}, advantage {p.advantage:.3g}"
        + (" (TPR clipped at 1: outside the law's range)" if p.clipped else "")
        + band
    )


def theory_table(doc: dict) -> Table:
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


def theory_line(doc: dict, shots: tuple[int, ...], seconds: float) -> str:
    u = doc["population_separation"]
    return (
        f"separation u = ⟨x, x − m⟩/√(xᵀΣx): median {u['median']:.3g}; standardised "
        f"u/√S at S = {max(shots)}: {u['median'] / max(shots) ** 0.5:.3g} ({seconds:.1f} s)"
    )


def sweep_line(summary, out_dir: Path, n_rows: int) -> str:
    return (
        f"sweep: {summary.total} cells ({summary.skipped} already done, {summary.ran} run, "
        f"{summary.failed} failed) in {summary.seconds:.1f} s → {out_dir}/results.sqlite "
        f"({n_rows} rows)"
    )
