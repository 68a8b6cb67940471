"""Notebook display: the ``_repr_html_`` of the result types, as small escaped HTML tables.

Each result class delegates here in one line (``AuditResult``, ``ScalingFit``, ``Plan``,
``Prediction``, ``Run``), so the result modules stay small and free of HTML.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], caption: str | None = None) -> str:
    """An HTML table; every cell and the caption are escaped (the header is given as text)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    cap = "" if caption is None else f"<caption>{_e(caption)}</caption>"
    head = f"<thead><tr>{head}</tr></thead>"
    return f'<table class="miascale">{cap}{head}<tbody>{body}</tbody></table>'


def paragraph(text: str) -> str:
    return f"<p>{_e(text)}</p>"


def _ci(value: float | None, ci: Sequence[float | None] | None, fmt: str = "{:.3f}") -> str:
    if value is None:
        return "–"
    text = fmt.format(value)
    if ci is not None and None not in ci:
        text += f" [{fmt.format(ci[0])}, {fmt.format(ci[1])}]"
    return text


def audit_html(result: Any) -> str:
    """The metrics table of an :class:`~miascale.audit.AuditResult`: per attack variant and FPR
    level, TPR with its interval, advantage and the false positives the level allows."""
    import numpy as np

    from miascale.metrics import fp_budget

    cfg = result.config
    rows = []
    outcomes = [(o.variant, o.metrics) for o in result.outcomes] or [(cfg.attack, result.metrics)]
    for variant, metrics in outcomes:
        for m in metrics:
            budget = int(fp_budget(np.asarray(m.fpr_level), m.n_neg))
            rows.append(
                (variant, f"{m.fpr_level:g}", _ci(m.tpr, (m.ci_low, m.ci_high)),
                 f"{m.advantage:+.3f}", budget if budget >= 10 else f"{budget} (< 10)")
            )  # fmt: skip
    names = ", ".join(result.class_names[:10]) + (" …" if len(result.class_names) > 10 else "")
    caption = f"audit: S = {cfg.shots}, C = {result.pool.n_classes}, K = {cfg.n_models} models"
    acc = result.test_accuracy
    foot = (
        f"{outcomes[0][0]}: AUC {result.auc:.4f}, "
        f"test accuracy {float(acc.mean()):.4f} ± {float(acc.std()):.4f}, "
        f"{result.converged}/{cfg.n_models} heads converged; classes: {names}"
    )
    header = ("attack", "FPR", "TPR [95% CI]", "advantage", "FP allowed")
    return table(header, rows, caption) + paragraph(foot)


def fit_html(fit: Any) -> str:
    """The levels of a :class:`~miascale.scaling.ScalingFit`: β_S [CI], R², fitted S range,
    cells and excluded count (or why a level has no law)."""
    pct = f"{round(fit.confidence * 100, 6):g}%"
    rows = []
    for lv in fit.levels:
        rng = lv.shots_range
        rows.append(
            (f"{lv.attack}-{lv.variant}", f"{lv.fpr_level:g}",
             _ci(lv.beta_s, lv.ci_s) if lv.ok else f"{lv.status}: {lv.reason}",
             _ci(lv.beta_c, lv.ci_c) if lv.ok else "–",
             f"{lv.r_squared:.3f}" if lv.ok and lv.r_squared is not None else "–",
             "–" if rng is None else f"{rng[0]}–{rng[1]}", lv.n_points, len(lv.excluded))
        )  # fmt: skip
    header = ("attack", "FPR", f"β_S [{pct} CI]", f"β_C [{pct} CI]", "R²", "S fitted", "cells",
              "excluded")  # fmt: skip
    caption = "power law: log10(TPR − FPR) = β_S·log10 S + β_C·log10 C + β_0"
    return table(header, rows, caption)


def prediction_sentence(p: Any) -> str:
    """A :class:`~miascale.planning.Prediction` in words (as ``miascale predict`` prints it)."""
    pct = f"{round(p.confidence * 100, 6):g}%"
    text = (
        f"S = {p.shots:g}{'' if p.classes is None else f', C = {p.classes}'}, FPR {p.fpr_level:g}: "
        f"predicted TPR {p.tpr:.3g}, advantage {p.advantage:.3g}"
    )
    if p.tpr_ci is None or p.advantage_ci is None:
        text += " (no interval: the law carries no covariance)"
    else:
        (t_lo, t_hi), (a_lo, a_hi) = p.tpr_ci, p.advantage_ci
        text += f"; {pct} interval TPR {t_lo:.3g}–{t_hi:.3g}, advantage {a_lo:.3g}–{a_hi:.3g}"
    if not p.trustworthy:
        text += ". Not trustworthy: " + " ".join(p.warnings)
    return text


def prediction_html(p: Any) -> str:
    return paragraph(prediction_sentence(p))


def plan_html(p: Any) -> str:
    """The plan sentence (:func:`miascale.plan_text.plan_sentence`) and its numbers."""
    from miascale.plan_text import plan_sentence

    lo_hi = "–"
    if p.shots_ci is not None:
        lo, hi = p.shots_ci
        lo_hi = f"{lo:.4g} – " + ("∞" if math.isinf(hi) else f"{hi:.4g}")
    rows = [
        ("S (examples per class)", p.shots),
        (f"{round(p.confidence * 100, 6):g}% interval of S", lo_hi),
        ("target advantage", f"{p.target_advantage:.4g}"),
        ("predicted advantage at S", f"{p.predicted.advantage:.4g}"),
        ("trustworthy", "yes" if p.trustworthy else "no"),
    ]
    return paragraph(plan_sentence(p)) + table(("", "value"), rows)


def run_html(run: Any) -> str:
    """A run directory: where it is, its cells and rows."""
    cells = run.cells
    done = sum(c["status"] == "done" for c in cells)
    rows = [("run", run.path), ("cells", f"{done} done, {len(cells) - done} failed"),
            ("rows", len(run._records))]  # fmt: skip
    return table(("", ""), rows, "miascale run")
