"""The study: the pooled law over S and C across datasets, its intercept test and out-of-sample
errors on rows drawn from a known law, and `miascale study` end to end on tiny feature files."""

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from miascale.cli import app
from miascale.errors import MiascaleError
from miascale.report.study_page import render_study
from miascale.study import PRESET, StudyDataset, predict_like, read_config, select, sweep_spec
from miascale.study import StudySettings as Settings
from miascale.study_fit import StudyFit, fit_study

Z = 1.959963984540054
TRUE = (-0.5, 0.3, -0.8)  # beta_S, beta_C, beta_0
SIGMA = 0.05  # noise of log10 advantage, and the standard error every row reports
GRID = {"img": (2, 5, 10), "txt": (2, 5, 10, 20, 34)}
SHOTS = (1, 2, 4, 8, 16, 32, 64)


def law_rows(seed, offsets=None, sigma=SIGMA, fpr=0.01):
    """One seed per cell whose log10 advantage is the law plus N(0, sigma²) noise, reporting a
    bootstrap SE that matches it (y_se = sigma) and counts that pass every admission rule."""
    rng = np.random.default_rng(seed)
    bs, bc, b0 = TRUE
    offsets = offsets or {}
    rows = []
    for d, cs in GRID.items():
        for c in cs:
            for s in SHOTS:
                y = b0 + offsets.get(d, 0.0) + bs * math.log10(s) + bc * math.log10(c)
                adv = 10 ** (y + rng.normal(0.0, sigma))
                se, tpr = sigma * adv * math.log(10), fpr + adv
                rows.append({
                    "dataset": d, "backbone": "b", "classes": c, "shots": s, "seed": 0,
                    "attack": "lira", "variant": "online", "fpr_level": fpr, "tpr": tpr,
                    "ci_low": tpr - Z * se, "ci_high": tpr + Z * se, "advantage": adv,
                    "resolvable": True, "se": se, "n_neg": 10**6,
                })  # fmt: skip
    return rows


def _inside(value, ci):
    return ci[0] <= value <= ci[1]


@pytest.fixture(scope="module")
def null_fits():
    """The study fit of 100 independent draws from one law with one intercept."""
    return [fit_study(law_rows(seed)).levels[0] for seed in range(100)]


def test_pooled_fit_recovers_the_law_within_its_intervals(null_fits):
    p = null_fits[0].pooled
    assert p.ok and p.uses_classes and p.n_points == 56 and not p.excluded
    assert _inside(TRUE[0], p.ci_s) and _inside(TRUE[1], p.ci_c) and _inside(TRUE[2], p.ci_0)
    for name, true in (("ci_s", TRUE[0]), ("ci_c", TRUE[1]), ("ci_0", TRUE[2])):
        cover = np.mean([_inside(true, getattr(lv.pooled, name)) for lv in null_fits])
        assert 0.88 <= cover <= 1.0, (name, cover)  # nominal 95%
    # unbiased: the mean estimate is within a few standard errors of the mean of the truth
    est = np.array([[lv.pooled.beta_s, lv.pooled.beta_c, lv.pooled.beta_0] for lv in null_fits])
    se = np.array([[lv.pooled.se_s, lv.pooled.se_c, lv.pooled.se_0] for lv in null_fits])
    assert np.all(np.abs(est.mean(0) - TRUE) < 4 * se.mean(0) / math.sqrt(len(null_fits)))
    # per-dataset fits beside the pooled one
    names = [d for d, _ in null_fits[0].per_dataset]
    assert names == ["img/b", "txt/b"]
    assert all(lf.ok and _inside(TRUE[0], lf.ci_s) for _, lf in null_fits[0].per_dataset)


def test_out_of_sample_errors_match_the_noise(null_fits):
    for attr in ("lodo", "loco", "loco_separate"):
        hs = [getattr(lv, attr) for lv in null_fits]
        assert all(h is not None and h.n_points == 56 for h in hs), attr
        ratio = np.mean([h.rmse for h in hs]) / SIGMA
        assert 0.9 <= ratio <= 1.4, (attr, ratio)  # noise plus a little refit uncertainty
        mae = np.mean([h.mae for h in hs]) / (SIGMA * math.sqrt(2 / math.pi))
        assert 0.9 <= mae <= 1.4, (attr, mae)
        cover = np.mean([h.coverage for h in hs])
        assert 0.9 <= cover <= 1.0, (attr, cover)  # nominal 95% prediction intervals
    lodo = null_fits[0].lodo
    assert [g.held for g in lodo.groups] == ["img/b", "txt/b"]
    assert [g.held for g in null_fits[0].loco.groups] == ["C=2", "C=5", "C=10", "C=20", "C=34"]


def test_intercept_test_rejects_only_when_intercepts_differ(null_fits):
    tests = [lv.intercepts for lv in null_fits]
    assert all(t.df_num == 1 and t.df_den == 56 - 4 for t in tests)
    rate = np.mean([t.separate for t in tests])
    assert rate <= 0.12, rate  # level 0.05 (slightly conservative)
    assert np.mean([t.p_value for t in tests]) > 0.35  # p-values spread over (0, 1) under H0
    assert "One intercept serves all datasets" in tests[0].verdict() or tests[0].separate
    for seed in range(20):  # the text dataset 0.15 decades (3 sigma) more vulnerable
        t = fit_study(law_rows(seed, {"txt": 0.15})).levels[0].intercepts
        assert t.separate and t.p_value < 1e-6
        ints = dict((d, (b, lo, hi)) for d, b, lo, hi in t.intercepts)
        assert _inside(TRUE[2], ints["img/b"][1:]) or seed % 10 == 9  # ~95% coverage
        assert "Each dataset needs its own intercept" in t.verdict()
    one = fit_study([r for r in law_rows(0) if r["dataset"] == "img"]).levels[0]
    assert (
        one.intercepts.separate is None
        and one.lodo is None
        and "one dataset" in one.intercepts.reason
    )


def test_round_trip_comparison_and_report(tmp_path):
    fit = fit_study(law_rows(1, {"txt": 0.15}), min_false_positives=10)
    doc = json.loads(json.dumps(fit.to_dict()))
    again = StudyFit.from_dict(doc)
    assert again.to_dict() == doc
    comp = fit.comparison()
    assert {c["research_beta_s"] for c in comp} == {-0.64, -0.27}
    assert all(c["note"] == "for comparison, not a target" for c in comp)
    page = render_study(fit, [{"label": "img/b", "run_dir": "img", "cells": 21, "failed": 0,
                               "seconds": 36.0}])  # fmt: skip
    assert page.count("data:image/png;base64,") == 2 and "for comparison, not a target" in page
    assert (
        "Each dataset needs its own intercept" in page
        and "leave one dataset out" in page
        and "leave one C out" in page
    )
    with pytest.raises(MiascaleError, match="not a study fit"):
        StudyFit.from_dict({"levels": []})


def test_predict_like():
    fit = fit_study(law_rows(2, {"txt": 0.15}))
    lv = fit.levels[0]
    # a dataset like txt: its own intercept (the test found they differ); the truth is inside
    p = predict_like(fit, "txt", 16, 10, 0.01, "lira-online")
    truth = TRUE[2] + 0.15 + TRUE[0] * math.log10(16) + TRUE[1]
    b0 = dict((d, b) for d, b, _, _ in lv.intercepts.intercepts)["txt/b"]
    assert p.log10_advantage == pytest.approx(b0 + lv.intercepts.beta_s * math.log10(16)
                                              + lv.intercepts.beta_c)  # fmt: skip
    assert _inside(truth, p.interval) and "own intercept" in p.basis
    assert p.interval[0] < p.law_ci[0] and p.interval[1] > p.law_ci[1]  # wider than the law's
    assert p.tau == pytest.approx(math.sqrt(lv.loco_separate.mse_of("txt/b")))
    # a dataset unlike any: the shared law, widened by the leave-one-dataset-out errors
    q = predict_like(fit, "any", 16, 10, 0.01, "lira-online")
    assert q.tau == pytest.approx(lv.lodo.rmse) and q.tau > p.tau
    assert q.log10_advantage == pytest.approx(lv.pooled.beta_0 + lv.pooled.beta_s * math.log10(16)
                                              + lv.pooled.beta_c)  # fmt: skip
    assert "A dataset unlike any in the study" in q.sentence() and json.dumps(q.to_dict())
    with pytest.raises(MiascaleError, match="not in the study"):
        predict_like(fit, "cifar", 16, 10, 0.01)
    assert "outside the study's fitted C" in " ".join(
        predict_like(fit, "img", 4, 100, 0.01).warnings
    )


def test_preset_and_config(tmp_path):
    fm, wn = PRESET
    assert (fm.dataset, fm.backbone, fm.classes, fm.min_per_class) == (
        "fashion-mnist", "efficientnet-lite0", (2, 5, 10), None)  # fmt: skip
    assert (wn.dataset, wn.backbone, wn.classes, wn.min_per_class) == (
        "wordnet", "minilm", (2, 5, 10, 20, 34), 500)  # fmt: skip
    assert fm.shots[-1] == 256 and wn.shots == (1, 2, 4, 8, 16, 32, 64, 128)
    spec = sweep_spec(wn, Settings(seeds=(0,), shadow_models=8))
    assert spec.min_per_class == 500 and spec.classes == wn.classes and spec.seeds == (0,)
    assert select(PRESET, ["wordnet"]) == [wn] and select(PRESET, None) == list(PRESET)
    with pytest.raises(MiascaleError, match="not in the study"):
        select(PRESET, ["cifar"])
    bad = tmp_path / "bad.toml"
    bad.write_text('seeds = [1]\n[[datasets]]\ndataset = "x"\n')
    with pytest.raises(MiascaleError, match="only \\[\\[datasets\\]\\]"):
        read_config(bad)


def test_preset_shots_are_feasible_for_wordnet():
    from miascale.data import load_dataset
    from miascale.data.wordnet import locate

    if locate() is None:
        pytest.skip("WordNet (Debian wordnet-base) is not installed")
    ds = load_dataset("wordnet", min_per_class=PRESET[1].min_per_class)
    assert ds.n_classes == max(PRESET[1].classes) == 34
    assert 2 * max(PRESET[1].shots) <= ds.class_counts().min()


def _features(path, n_classes, seed, noise):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(n_classes, 16))
    y = np.repeat(np.arange(n_classes), 40)
    np.savez(path, features=means[y] + noise * rng.normal(size=(len(y), 16)), labels=y)


def invoke(*args):
    r = CliRunner().invoke(app, [str(a) for a in args])
    if r.exception and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r


def test_study_cli_end_to_end(tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    _features(a, 4, 0, 2.0)
    _features(b, 5, 1, 3.0)
    cfg = tmp_path / "study.toml"
    cfg.write_text(
        f'[[datasets]]\ndataset = "npz:{a}"\nbackbone = "identity"\nclasses = [2, 4]\n'
        f"shots = [4, 16]\n\n"
        f'[[datasets]]\ndataset = "npz:{b}"\nbackbone = "identity"\nclasses = [2, 3, 5]\n'
        f"shots = [4, 16]\nmin_per_class = 10\n"
    )
    out = tmp_path / "study"
    args = ["study", "--config", cfg, "--seed", "0", "--shadow-models", 16, "--fpr", "0.1,0.01",
            "--out", out]  # fmt: skip
    r = invoke(*args, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [s["ran"] for s in doc["sweeps"].values()] == [4, 6]
    assert (out / "study.json").is_file() and (out / "study_fit.json").is_file()
    assert (out / "study.html").is_file()
    fit = json.loads((out / "study_fit.json").read_text())
    assert fit["kind"] == "miascale-study-fit" and len(fit["datasets"]) == 2
    assert {r["cells"] for r in fit["runs"]} == {4, 6}
    assert len(fit["levels"]) == 2 and len(fit["comparison"]) >= 2
    manifest = json.loads((out / "study.json").read_text())
    assert [r["spec"]["min_per_class"] for r in manifest["runs"]] == [None, 10]
    again = invoke(*args)  # resumable: nothing recomputed, the fit and page rewritten
    assert again.exit_code == 0 and "0 run" in again.stdout and "report:" in again.stdout
    r = invoke("study", "--out", out, "--fit-only", "--only", f"npz:{a}", "--config", cfg)
    assert r.exit_code == 0 and "study fit:" in r.stdout
    # the pooled study law predicts a new dataset, from the study directory
    assert StudyFit.from_dict(fit).level("lira", "online", 0.1).pooled.ok
    r = invoke("predict", "--coefficients", out, "--dataset-like", "any", "--shots", 4,
               "--classes", 3, "--fpr", 0.1, "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert got["like"] == "any" and got["interval"][0] < got["log10_advantage"] < got["interval"][1]
    r = invoke("predict", "--coefficients", out / "study_fit.json", "--dataset-like", f"npz:{b}",
               "--shots", 8, "--classes", 3, "--fpr", 0.1)  # fmt: skip
    assert r.exit_code == 0 and f"A dataset like npz:{b}/identity at S=8, C=3" in r.stdout
    with pytest.raises(MiascaleError, match="not --beta"):
        invoke("predict", "--coefficients", out, "--dataset-like", "x", "--beta-s", -1,
               "--shots", 4, "--fpr", 0.1)  # fmt: skip


def test_study_dataset_run_names():
    d = StudyDataset("npz:/tmp/some dir/f.npz", "hf:org/model", (2,), (1,))
    assert "/" not in d.run_name and " " not in d.run_name and d.label.endswith("/hf:org/model")


def test_slope_test_rejects_different_slopes_and_not_equal_ones():
    # two datasets on a grid of S and C, known laws plus noise of the stated standard error
    from miascale.study_slopes import slope_test

    rng = np.random.default_rng(0)
    shots = np.tile(np.repeat([8, 16, 32, 64, 128, 256], 3), 2)
    classes = np.tile([2, 5, 10], 12)
    labels = ["a"] * 18 + ["b"] * 18
    se = np.full(36, 0.03)
    rejections = {0.0: 0, 0.2: 0}
    for diff in rejections:
        for _ in range(100):
            slope = np.where(np.array(labels) == "a", -0.5, -0.5 - diff)
            y = slope * np.log10(shots) + 0.15 * np.log10(classes) + rng.normal(0, 0.03, 36)
            t = slope_test(labels, shots, classes, y, se)
            assert t.df_num == 1 and t.df_den == 36 - 5
            rejections[diff] += bool(t.separate)
    assert rejections[0.0] <= 12  # about 5% of 100 at alpha 0.05
    assert rejections[0.2] == 100
    one = slope_test(["a"] * 6, shots[:6], None, np.zeros(6), se[:6])
    assert one.separate is None and "one dataset" in one.verdict()
