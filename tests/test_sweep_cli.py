"""sweep → fit → predict/plan through the CLI on small synthetic features."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from miascale.cli import app
from miascale.errors import MiascaleError

runner = CliRunner()


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    rng = np.random.default_rng(0)
    means = rng.normal(size=(4, 40))
    y = np.repeat(np.arange(4), 80)
    p = tmp_path_factory.mktemp("f") / "f.npz"
    np.savez(p, features=means[y] + rng.normal(size=(len(y), 40)), labels=y)
    return p


def invoke(*args):
    r = runner.invoke(app, [str(a) for a in args])
    if r.exception and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r


def test_sweep_fit_predict_plan(tmp_path, features):
    run = tmp_path / "run"
    args = ["sweep", "--dataset", f"npz:{features}", "--backbone", "identity",
            "--shots", "1,2,4,8,16", "--seed", "0,1", "--shadow-models", "8",
            "--attack", "lira-online,lira-offline", "--fpr", "0.1,0.01", "--l2", "1e-4",
            "--out", run, "--json"]  # fmt: skip
    first = json.loads(invoke(*args).stdout)
    assert first["total"] == 10 and first["ran"] == 10 and first["rows"] == 10 * 2 * 2
    again = json.loads(invoke(*args).stdout)
    assert again["skipped"] == 10 and again["ran"] == 0  # resumable: nothing recomputed
    assert len(list((run / "cells").iterdir())) == 10
    with np.load(next((run / "cells").iterdir()) / "signals.npz") as z:
        assert {"scores__lira-online", "scores__lira-offline", "stats", "in_mask"} <= set(z.files)

    # default rules: this toy pool (K = 9, N ≤ 128) admits too few cells, each listed with reasons
    strict = json.loads(invoke("fit", run, "--json").stdout)
    lv = {(x["attack"], x["variant"], x["fpr_level"]): x for x in strict["levels"]}[
        ("lira", "online", 0.1)
    ]
    reasons = {r for e in lv["excluded"] for r in e["reasons"]}
    assert lv["status"] == "insufficient points" and "too few false positives" in reasons
    assert strict["settings"]["min_false_positives"] == 10
    # relaxed rules (flags): the law is fitted through what the toy data has
    fit = json.loads(
        invoke("fit", run, "--min-false-positives", 1, "--keep-saturated", "--json").stdout
    )
    assert (run / "fit.json").is_file()
    assert fit["settings"]["min_false_positives"] == 1 and not fit["settings"]["exclude_saturated"]
    levels = {(lv["attack"], lv["variant"], lv["fpr_level"]): lv for lv in fit["levels"]}
    assert len(levels) == 4
    lv = levels[("lira", "online", 0.1)]
    assert lv["status"] == "ok", lv
    pred = json.loads(invoke("predict", "--shots", 16, "--fpr", 0.1,
                             "--coefficients", run / "fit.json", "--json").stdout)  # fmt: skip
    y = lv["beta_0"] + lv["beta_s"] * np.log10(16)
    assert pred["log10_advantage"] == pytest.approx(y)
    # the most vulnerable examples: separation and per-level advantage laws (or their reasons)
    tail = {(lv["attack"], lv["variant"]) for lv in fit["tail"]["levels"]}

    assert {("tail", "max"), ("separation", "q0.99"), ("separation", "cross_max")} <= tail
    invoke("report", run)
    page = (run / "report.html").read_text()
    assert "Most vulnerable examples" in page and page.count("data:image/png;base64,") >= 5
    assert "Feature-only data: no images or texts to show." in page  # npz features: no thumbnails
    # explicit coefficients: plan is consistent with predict
    p = json.loads(invoke("plan", "--fpr", 0.001, "--epsilon", 1, "--beta-s", -0.5,
                          "--beta-0", -0.5, "--json").stdout)  # fmt: skip
    target = (np.e - 1) * 0.001
    assert 10 ** (-0.5 - 0.5 * np.log10(p["shots"])) <= target
    assert 10 ** (-0.5 - 0.5 * np.log10(p["shots"] - 1)) > target


def test_sweep_and_plan_errors(tmp_path, features):
    with pytest.raises(MiascaleError, match="lira-online"):
        invoke("sweep", "--dataset", f"npz:{features}", "--backbone", "identity",
               "--attack", "lira-sideways", "--out", tmp_path / "r")  # fmt: skip
    with pytest.raises(MiascaleError, match=r"does not decrease|slope"):
        invoke("plan", "--fpr", 0.01, "--epsilon", 1, "--beta-s", 0.1, "--beta-0", -1)
    with pytest.raises(MiascaleError, match="exactly one"):
        invoke("plan", "--fpr", 0.01, "--beta-s", -0.5, "--beta-0", -1)
    with pytest.raises(MiascaleError, match=r"results\.sqlite"):
        invoke("fit", tmp_path / "nothing")


def test_demo_sets_aside_a_run_of_an_older_recipe(tmp_path):
    from miascale.cli import _set_aside_older_demo
    from miascale.experiments.grid import SweepSpec
    from miascale.experiments.store import ResultStore

    spec = SweepSpec(datasets=("d",), backbones=("b",), shots=(1, 2), seeds=(0,))
    old = SweepSpec(datasets=("d",), backbones=("b",), shots=(1, 2), seeds=(0,),
                    standardize="subset")  # fmt: skip
    out = tmp_path / "demo"
    ResultStore.open(out, old.to_dict()).close()
    _set_aside_older_demo(out, spec)
    assert not out.exists() and (tmp_path / "demo.previous-1" / "results.sqlite").is_file()
    ResultStore.open(out, spec.to_dict()).close()  # the same recipe: left where it is
    _set_aside_older_demo(out, spec)
    assert (out / "results.sqlite").is_file()


def test_sweep_logs_a_line_per_cell_when_stderr_is_not_a_terminal(tmp_path, features):
    r = invoke("sweep", "--dataset", f"npz:{features}", "--backbone", "identity", "--shots",
               "1,2", "--seed", "0", "--shadow-models", "4", "--fpr", "0.1", "--out",
               tmp_path / "run")  # fmt: skip
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("[")]
    assert any(ln.startswith("[1/2]") and " done in " in ln for ln in lines), r.stderr
    assert any(ln.startswith("[2/2]") and "s left)" in ln for ln in lines), r.stderr
    assert "━" not in r.stderr and "eta" not in r.stderr  # no bar frame in a log


def test_time_left_weighs_cells_by_their_pool_and_models():
    # Cells whose seconds follow a + b*S (as measured for S = 1..256): after the small cells the
    # estimate is close to the truth; counting cells alike would say ~2 s for ~2 minutes.
    from miascale.experiments.grid import SweepSpec, expand
    from miascale.experiments.runner import expected_cost, time_left

    spec = SweepSpec(datasets=("d",), backbones=("b",), shots=(1, 2, 4, 8, 16, 32, 64, 128, 256),
                     seeds=(0,), shadow_models=256)  # fmt: skip
    cells = sorted(expand(spec), key=lambda c: c.shots)
    seconds = [1.2 + 0.3 * c.shots for c in cells]
    done = 6  # S = 1..32
    est = time_left(sum(seconds[:done]), sum(map(expected_cost, cells[:done])),
                    sum(map(expected_cost, cells[done:])))  # fmt: skip
    truth = sum(seconds[done:])
    assert abs(est - truth) < 0.15 * truth
    assert expected_cost(cells[-1]) > 1.9 * expected_cost(cells[-2])


# ----------------------------------------------------------------------------- one vocabulary


def _cell_ids(run):
    from miascale.experiments.store import ResultStore

    with ResultStore.load(run) as store:
        return store.done_cells()


def test_deprecated_sweep_flags_still_work_with_a_message(tmp_path, features):
    common = ["--shots", "1", "--shadow-models", "4", "--fpr", "0.1", "--json"]
    new = invoke("sweep", "--dataset", f"npz:{features}", "--backbone", "identity", "--seed", "0",
                 "--attack", "lira", *common, "--out", tmp_path / "new")  # fmt: skip
    old = invoke("sweep", "--datasets", f"npz:{features}", "--backbones", "identity", "--seeds",
                 "0", "--attacks", "lira", *common, "--out", tmp_path / "old")  # fmt: skip
    assert new.exit_code == 0 and old.exit_code == 0, old.output
    assert "deprecated" not in new.stderr
    for flag, instead in (("--datasets", "--dataset"), ("--seeds", "--seed"),
                          ("--attacks", "--attack")):  # fmt: skip
        assert f"{flag} is deprecated" in old.stderr and f"use {instead}." in old.stderr
    assert _cell_ids(tmp_path / "new") == _cell_ids(tmp_path / "old")
    with pytest.raises(MiascaleError, match="not both"):
        invoke("sweep", "--seed", "0", "--seeds", "1", "--out", tmp_path / "both")
    r = runner.invoke(app, ["study", "--seeds", "0", "--only", "nothing", "--out", str(tmp_path)])
    assert isinstance(r.exception, MiascaleError) and "--seeds is deprecated" in r.stderr


def _flags(command) -> set[str]:
    import typer

    cmd = typer.main.get_command(app).commands[command]
    return {o for p in cmd.params if not getattr(p, "hidden", False) for o in p.opts}


def test_audit_and_sweep_share_their_option_names():
    audit, sweep = _flags("audit"), _flags("sweep")
    assert audit - sweep == {"--per-example", "--paper"}
    assert sweep - audit == {"--config", "--backend", "--workers", "--address", "--max-retries",
                             "--recompute-changed"}  # fmt: skip
    assert {"--dataset", "--backbone", "--seed", "--attack", "--epsilon", "--delta", "--clip",
            "--sampling-rate", "--steps", "--variance", "--gamma"} <= audit & sweep  # fmt: skip
    r = invoke("sweep", "--help")
    assert "--datasets" not in r.stdout and "--variance" in r.stdout  # aliases are hidden


def test_a_non_default_audit_setting_gets_its_own_cell_id(tmp_path, features):
    from miascale.experiments.grid import SweepSpec, expand

    common = ["--dataset", f"npz:{features}", "--backbone", "identity", "--shots", "1", "--seed",
              "0", "--shadow-models", "4", "--fpr", "0.1", "--json"]  # fmt: skip
    assert invoke("sweep", *common, "--out", tmp_path / "a").exit_code == 0
    assert invoke("sweep", *common, "--variance", "global", "--out", tmp_path / "b").exit_code == 0
    default, other = _cell_ids(tmp_path / "a"), _cell_ids(tmp_path / "b")
    assert default.isdisjoint(other)
    spec = SweepSpec(datasets=(f"npz:{features}",), backbones=("identity",), shots=(1,),
                     seeds=(0,), shadow_models=4, fpr=(0.1,))  # fmt: skip
    assert default == {c.cell_id for c in expand(spec)}  # the id of the default is unchanged
    with pytest.raises(MiascaleError, match="cannot be given"):
        invoke("sweep", "--config", tmp_path / "x.toml", "--variance", "global")
