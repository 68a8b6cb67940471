"""The HTML sweep report (miascale.report)."""

from __future__ import annotations

import base64
import html
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from miascale.errors import MiascaleError
from miascale.experiments import ResultStore, SweepSpec, expand
from miascale.report import build_report
from miascale.report.html import fmt_coef
from miascale.scaling import fit_power_law

SHOTS = (1, 2, 4, 8, 16, 32)
FPRS = (0.1, 0.01)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "area", "base", "source", "wbr"}
IMG_RE = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')

# The known law: log10 adv = BETA_S log10 S + beta_0(fpr); the offline variant grows with S at
# FPR 0.1 (so its plan is impossible) and follows the online law otherwise.
BETA_S = -0.5
BETA_0 = {0.1: math.log10(0.3), 0.01: math.log10(0.1)}


class _Checker(HTMLParser):
    """Counts tags and checks that every non-void element is closed in order."""

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.counts: dict[str, int] = {}
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.counts[tag] = self.counts.get(tag, 0) + 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
            return
        self.stack.pop()


def _rows_for(cell, rng) -> list[dict]:
    rows = []
    acc = 1.0 - 0.6 * cell.shots**-0.3 + rng.normal(0, 0.01)
    for variant in ("online", "offline"):
        for fpr in FPRS:
            slope = 0.2 if (variant == "offline" and fpr == 0.1) else BETA_S
            adv = 10 ** (slope * math.log10(cell.shots) + BETA_0[fpr] - (0.2 if slope > 0 else 0))
            adv *= math.exp(rng.normal(0, 0.05))
            tpr = fpr + adv
            resolvable = not (fpr == 0.01 and cell.shots == 1)  # too few non-members at S=1
            rows.append(
                {
                    "attack": "lira",
                    "variant": variant,
                    "fpr_level": fpr,
                    "tpr": tpr,
                    "achieved_fpr": fpr,
                    "ci_low": max(0.0, tpr - 0.04),
                    "ci_high": min(1.0, tpr + 0.04),
                    "advantage": adv,
                    "true_positives": 10,
                    "false_positives": 1,
                    "n_pos": 100,
                    "n_neg": 10_000,
                    "resolvable": resolvable,
                    "auc": 0.5 + adv / 2,
                    "test_accuracy": acc,
                }
            )
    return rows


def _write_signals(folder: Path, rng, shots: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    k, n = 8, 60
    in_mask = np.zeros((k, n), dtype=bool)
    in_mask[0::2, : n // 2] = True
    in_mask[1::2, n // 2 :] = True
    shift = 2.0 / math.sqrt(shots)
    online = rng.normal(size=(k, n)) + shift * in_mask
    online[0, :3] = np.nan  # unscored examples
    offline = rng.normal(size=(k, n)) + 0.5 * shift * in_mask
    np.savez(
        folder / "signals.npz",
        stats=rng.normal(size=(k, n)),  # documented as always present (docs/audit.md)
        in_mask=in_mask,
        scores=online,
        **{"scores__lira-online": online, "scores__lira-offline": offline},
    )


def _make_run(run_dir: Path, *, artifacts: bool = True, seeds=(0, 1, 2)) -> list[dict]:
    spec = SweepSpec(
        datasets=("toy",),
        backbones=("identity",),
        shots=SHOTS,
        classes=(10,),
        seeds=seeds,
        variants=("lira-online", "lira-offline"),
        shadow_models=8,
        fpr=FPRS,
    )
    rng = np.random.default_rng(0)
    all_rows = []
    with ResultStore.open(run_dir, spec.to_dict()) as store:
        for cell in expand(spec):
            rows = _rows_for(cell, rng)
            art = None
            if artifacts and cell.seed == 0:
                if cell.shots == 32:
                    art = "cells/missing"  # recorded but gone: reported, not fatal
                elif cell.shots == 16:
                    folder = run_dir / "elsewhere" / cell.cell_id  # absolute path
                    _write_signals(folder, rng, cell.shots)
                    art = str(folder.resolve())
                else:
                    _write_signals(run_dir / "cells" / cell.cell_id, rng, cell.shots)
                    art = f"cells/{cell.cell_id}"
            store.record_cell(cell, rows, 0.1, art)
        all_rows = store.rows()
    return all_rows


def _check_html(text: str) -> _Checker:
    p = _Checker()
    p.feed(text)
    p.close()
    assert not p.errors, p.errors[:5]
    assert p.stack == [], p.stack
    assert p.counts.get("html") == 1 and p.counts.get("body") == 1
    return p


def _pngs(text: str) -> list[bytes]:
    return [base64.b64decode(m, validate=True) for m in IMG_RE.findall(text)]


def test_report_end_to_end(tmp_path):
    run_dir = tmp_path / "run"
    rows = _make_run(run_dir)
    out = build_report(run_dir)
    assert out == run_dir / "report.html"
    text = out.read_text(encoding="utf-8")
    _check_html(text)

    pngs = _pngs(text)
    # 2 advantage panels (online, offline) + 1 ROC + 1 accuracy
    assert len(pngs) >= 4
    assert all(p.startswith(PNG_MAGIC) for p in pngs)
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text and "<link" not in text

    # the fit table shows the fitted slope exactly as formatted there
    fit = fit_power_law(rows)
    lf = fit.level("lira", "online", 0.1)
    assert lf.ok and abs(lf.beta_s - BETA_S) < 0.1
    assert fmt_coef(lf.beta_s, lf.ci_s) in text
    assert f"{lf.beta_s:.3f} [{lf.ci_s[0]:.3f}, {lf.ci_s[1]:.3f}]" in text
    # excluded (unresolvable) points are listed with their reason
    assert "too few false positives" in text and "<details>" in text
    # the plan: a decreasing law gives an integer S, the increasing one a dash with the reason
    assert "The fitted slope β_S = " in text and "is ≥ 0" in text
    # the missing artifacts folder is reported, not fatal
    assert "artifacts recorded but missing" in text
    # summary and configuration
    assert "toy" in text and "identity" in text and "shadow_models" in text
    for name in ("miascale", "numpy", "torch", "matplotlib", "statsmodels", "python"):
        assert f"<th>{name}</th>" in text


def test_plan_values_match_scaling_plan(tmp_path):
    from miascale.scaling import plan

    run_dir = tmp_path / "run"
    rows = _make_run(run_dir, artifacts=False)
    text = build_report(run_dir).read_text(encoding="utf-8")
    from miascale.planning import format_shots, plan_sentence

    lf = fit_power_law(rows).level("lira", "online", 0.01)
    p = plan(lf, 0.01, 10, epsilon=1.0)
    if p.trustworthy:  # the number with its interval
        lo, hi = (format_shots(v) for v in p.shots_ci)
        assert f'{format_shots(p.shots)} <span class="muted">[{lo}, {hi}]</span>' in text
    else:  # no number: a note says why, in words (the page escapes it: compare the text)
        assert plan_sentence(p) in html.unescape(text)
    lf1 = fit_power_law(rows).level("lira", "online", 0.1)
    p1 = plan(lf1, 0.1, 10, epsilon=1.0)
    assert p.trustworthy or p1.trustworthy  # the synthetic law is clean enough for one plan


def test_uses_fit_json_and_custom_out_path(tmp_path):
    run_dir = tmp_path / "run"
    rows = _make_run(run_dir, artifacts=False, seeds=(0, 1))
    fit = fit_power_law(rows)
    (run_dir / "fit.json").write_text(json.dumps(fit.to_dict()))
    out = build_report(run_dir, tmp_path / "sub" / "r.html")
    assert out == tmp_path / "sub" / "r.html"
    text = out.read_text(encoding="utf-8")
    _check_html(text)
    assert "read from fit.json" in text
    # no artifacts: the ROC section says so; the other figures are still there
    assert "No ROC curves" in text
    assert len(_pngs(text)) >= 3
    lf = fit.level("lira", "online", 0.1)
    assert fmt_coef(lf.beta_s, lf.ci_s) in text


def test_bad_fit_json_is_a_user_error(tmp_path):
    run_dir = tmp_path / "run"
    _make_run(run_dir, artifacts=False, seeds=(0,))
    (run_dir / "fit.json").write_text("{not json")
    with pytest.raises(MiascaleError, match=r"fit\.json"):
        build_report(run_dir)


def test_run_dir_without_results_raises(tmp_path):
    with pytest.raises(MiascaleError):
        build_report(tmp_path / "nothing-here")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MiascaleError):
        build_report(empty)
    assert not (empty / "report.html").exists()
    # a store with no finished cells
    spec = SweepSpec(datasets=("toy",), backbones=("identity",), shots=(1, 2), seeds=(0,))
    ResultStore.open(tmp_path / "fresh", spec.to_dict()).close()
    with pytest.raises(MiascaleError, match="no finished cells"):
        build_report(tmp_path / "fresh")


def test_text_is_escaped(tmp_path):
    run_dir = tmp_path / "run"
    spec = SweepSpec(
        datasets=("<b>evil</b>",),
        backbones=("a&b",),
        shots=(1, 2, 4),
        seeds=(0,),
        shadow_models=4,
        fpr=(0.1,),
    )
    rng = np.random.default_rng(1)
    with ResultStore.open(run_dir, spec.to_dict()) as store:
        for cell in expand(spec):
            rows = [r for r in _rows_for(cell, rng) if r["fpr_level"] == 0.1]
            store.record_cell(cell, rows, 0.1, None)
    text = build_report(run_dir).read_text(encoding="utf-8")
    _check_html(text)
    assert "<b>evil</b>" not in text
    assert "&lt;b&gt;evil&lt;/b&gt;" in text and "a&amp;b" in text


def test_classes_term_and_unfittable_level(tmp_path):
    """C varies (β_C is fitted and shown); one level never beats chance (no fit, dashes)."""
    run_dir = tmp_path / "run"
    spec = SweepSpec(
        datasets=("toy",),
        backbones=("identity",),
        shots=(1, 4, 16),
        classes=(5, 20),
        seeds=(0, 1),
        shadow_models=4,
        fpr=(0.1, 0.001),
    )
    rng = np.random.default_rng(2)
    with ResultStore.open(run_dir, spec.to_dict()) as store:
        for cell in expand(spec):
            rows = []
            for fpr in (0.1, 0.001):
                if fpr == 0.1:
                    adv = 10 ** (-0.5 * math.log10(cell.shots) + 0.3 * math.log10(cell.classes) - 1)
                    adv *= math.exp(rng.normal(0, 0.03))
                else:
                    adv = -0.0005  # TPR below the FPR: cannot enter the log-log fit
                tpr = fpr + adv
                rows.append(
                    {
                        "attack": "lira",
                        "variant": "online",
                        "fpr_level": fpr,
                        "tpr": tpr,
                        "ci_low": max(0.0, tpr - 0.02),
                        "ci_high": tpr + 0.02,
                        "advantage": adv,
                        "resolvable": True,
                        "test_accuracy": 0.5,
                    }
                )
            store.record_cell(cell, rows, 0.1, None)
        rows = store.rows()
    text = build_report(run_dir).read_text(encoding="utf-8")
    _check_html(text)
    lf = fit_power_law(rows).level("lira", "online", 0.1)
    assert lf.uses_classes
    assert fmt_coef(lf.beta_c, lf.ci_c) in text
    assert fmt_coef(lf.beta_s, lf.ci_s) in text
    assert "insufficient points" in text and "TPR &lt;= FPR" in text
    assert "C = 20, the largest number of classes" in text
    assert len(_pngs(text)) >= 3


def test_one_section_list_drives_navigation_and_body(tmp_path):
    from miascale.report.html import SECTIONS, load_run, render_report

    run_dir = tmp_path / "run"
    _make_run(run_dir, artifacts=False, seeds=(0,))
    run = load_run(run_dir)
    text = render_report(run)
    _check_html(text)
    shown = [s for s in SECTIONS if s.applies(run)]
    head = text.split("<section", 1)[0]
    assert re.findall(r'<a href="#([\w-]+)">', head) == [s.id for s in shown if s.nav]
    assert re.findall(r'<section id="([\w-]+)">', text) == [s.id for s in shown]
    ids = [s.id for s in shown]
    assert "attacks" in ids  # two attack variants
    assert "theory" not in ids and "privacy" not in ids  # no theory.json, no DP cells
    assert len({s.id for s in SECTIONS}) == len(SECTIONS)


def test_templates_and_css_are_package_data():
    from importlib import resources

    from miascale.report.templating import css, environment

    root = resources.files("miascale.report")
    assert "td.num" in (root / "static" / "report.css").read_text("utf-8") and "td.num" in css()
    env = environment()
    assert env.autoescape("page.html.j2") and env.autoescape("sections/plan.html.j2")
    for name in env.list_templates():
        env.get_template(name)  # every template parses


def test_dp_cells_get_the_privacy_section_and_bound_figure(tmp_path):
    run_dir = tmp_path / "run"
    spec = SweepSpec(datasets=("toy",), backbones=("identity",), shots=(2, 8), classes=(10,),
                     seeds=(0,), variants=("lira-online",), shadow_models=8, fpr=(0.1, 0.01),
                     epsilons=(None, 2.0))  # fmt: skip
    rng = np.random.default_rng(3)
    game = {"accountant_epsilon": 1.98, "delta": 1e-3, "epsilon_game": 3.9, "delta_game": 1e-3,
            "relation": "replace_one"}  # fmt: skip
    with ResultStore.open(run_dir, spec.to_dict()) as store:
        for cell in expand(spec):
            rows = [r for r in _rows_for(cell, rng) if r["variant"] == "online"]
            for r in rows:
                r["empirical_epsilon"] = 0.4
                if cell.epsilon is not None:
                    r.update(epsilon=cell.epsilon, **game)
            _write_signals(run_dir / "cells" / cell.cell_id, rng, cell.shots)
            store.record_cell(cell, rows, 0.1, f"cells/{cell.cell_id}")
    text = build_report(run_dir).read_text(encoding="utf-8")
    _check_html(text)
    assert '<a href="#privacy">Privacy</a>' in text and '<section id="privacy">' in text
    assert "bound: replace-one ε 3.9, δ 1e-03; accountant add/remove ε 1.98" in text
    assert 'alt="ROC under DP bounds: toy / identity, C = 10, S = 8, lira-online"' in text
