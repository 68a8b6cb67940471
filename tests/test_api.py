"""The Python API: typed results, rows as a DataFrame, export, notebook display."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import miascale
from miascale.cli import app
from miascale.errors import MiascaleError
from miascale.experiments.store import RESULT_COLUMNS, ResultStore

RULES = {"min_false_positives": 1, "exclude_saturated": False}  # the toy pool's relaxed rules


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    means = rng.normal(size=(4, 24))
    y = np.repeat(np.arange(4), 60)
    return means[y] + rng.normal(size=(len(y), 24)), y


@pytest.fixture(scope="module")
def swept(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("api")
    x, y = data
    np.savez(d / "f.npz", features=x, labels=y)
    summary, run = miascale.run_sweep(
        datasets=f"npz:{d / 'f.npz'}", backbones="identity", shots=(1, 2, 4, 8), seeds=(0, 1),
        shadow_models=8, variants="lira-online,lira-offline", fpr=(0.1, 0.01), l2=1e-4,
        out=d / "run", quiet=True,
    )  # fmt: skip
    return summary, run


def test_import_is_lazy():
    code = "import miascale, sys; print(sorted({'torch', 'pandas', 'typer'} & set(sys.modules)))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"
    assert {"run_audit", "run_sweep", "load_run", "fit", "plan", "predict"} <= set(dir(miascale))
    with pytest.raises(AttributeError):
        miascale.no_such_thing  # noqa: B018


def test_run_sweep_and_load_run(swept):
    summary, run = swept
    assert isinstance(summary, miascale.SweepSummary) and summary.ran == 8 and not summary.failed
    assert isinstance(run, miascale.Run)
    again = miascale.load_run(run.path)
    assert again == run and isinstance(again.spec, miascale.SweepSpec)
    assert again.spec.shots == (1, 2, 4, 8)
    assert again.spec.variants == ("lira-online", "lira-offline")
    assert len(again.cells) == 8 and all(c["status"] == "done" for c in again.cells)
    df = again.rows
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns[: len(RESULT_COLUMNS)]) == list(RESULT_COLUMNS)
    with ResultStore.load(run.path) as store:
        rows = store.rows()
    assert len(df) == len(rows) == 8 * 2 * 2  # cells × variants × FPR levels
    assert set(df.columns) == set().union(*rows)  # every extra field is a column
    assert df["tpr"].tolist() == [r["tpr"] for r in rows]
    assert "<table" in again._repr_html_()
    # a resumed sweep through the API reuses the cells
    summary2, _ = miascale.run_sweep(again.spec, out=run.path, quiet=True)
    assert summary2.skipped == 8 and summary2.ran == 0


def test_fit_from_run_rows_and_path(swept, tmp_path):
    _, run = swept
    law = miascale.fit(run, **RULES)
    assert isinstance(law, miascale.ScalingFit)
    assert miascale.fit(run.rows, **RULES) == law  # the DataFrame gives the same fit
    assert miascale.fit(str(run.path), **RULES) == law
    assert run.fit(**RULES) == law
    assert not (run.path / "fit.json").exists()  # the API never writes
    lv = law.level("lira", "online", 0.1)
    assert lv.ok and lv.beta_s < 0
    tail = run.tail_fit(**RULES)
    assert isinstance(tail, miascale.ScalingFit) and tail.levels
    # after `miascale fit`, run.fit() reads fit.json (the settings it was fitted with)
    from miascale.cli import fit_run

    cli_fit, cli_tail = fit_run(run.path, keep_saturated=True, min_false_positives=1)
    try:
        fresh = miascale.load_run(run.path)
        assert fresh.fit() == cli_fit == law and fresh.tail_fit() == cli_tail
        assert fresh.fit(min_false_positives=2) != law  # explicit rules: fitted afresh
    finally:
        (run.path / "fit.json").unlink()
    with pytest.raises(MiascaleError, match="not a folder"):
        miascale.load_run(tmp_path / "missing")
    with pytest.raises(MiascaleError, match=r"results\.sqlite is missing"):
        miascale.load_run(tmp_path)


def test_plan_predict_and_their_html(swept):
    _, run = swept
    lv = miascale.fit(run, **RULES).level("lira", "online", 0.1)
    p = miascale.plan(lv, 0.1, target_advantage=0.05)
    assert isinstance(p, miascale.Plan)
    page = p._repr_html_()
    assert miascale.plan_sentence(p).replace("'", "&#x27;") in page
    assert str(p.shots) in page
    pr = miascale.predict(lv, 8)
    assert isinstance(pr, miascale.Prediction)
    assert f"{pr.tpr:.3g}" in pr._repr_html_() and f"{pr.advantage:.3g}" in pr._repr_html_()


def test_fit_html_escapes_names(swept):
    _, run = swept
    df = run.rows.copy()
    df["variant"] = df["variant"].replace({"online": "<b>on</b>"})
    law = miascale.fit(df, **RULES)
    page = law._repr_html_()
    lv = law.level("lira", "<b>on</b>", 0.1)
    assert "lira-&lt;b&gt;on&lt;/b&gt;" in page and "<b>on</b>" not in page
    assert f"{lv.beta_s:.3f} [{lv.ci_s[0]:.3f}, {lv.ci_s[1]:.3f}]" in page
    assert f"{lv.r_squared:.3f}" in page and f"{lv.shots_range[0]}–{lv.shots_range[1]}" in page


def test_run_audit_by_dataset_name(data, tmp_path):
    x, y = data
    np.savez(tmp_path / "f.npz", features=x, labels=y)
    r = miascale.run_audit(
        dataset=f"npz:{tmp_path / 'f.npz'}", backbone="identity", shots=4, shadow_models=4,
        fpr=(0.1, 0.01), attack="lira,loss",
    )  # fmt: skip
    assert isinstance(r, miascale.AuditResult)
    assert [o.variant for o in r.outcomes] == ["lira-online", "loss"]
    assert len(r.table()) == 2 and "loss" in r._repr_html_()


def test_run_audit_arrays(data):
    x, y = data
    names = ("<i>cat</i>", "dog", "cow", "hen")
    r = miascale.run_audit(x[::2], y[::2], x[1::2], y[1::2], shots=4, shadow_models=4,
                           fpr=0.1, class_names=names)  # fmt: skip
    assert isinstance(r, miascale.AuditResult) and r.config.fpr == (0.1,)
    page = r._repr_html_()
    m = r.metrics[0]
    assert f"{m.tpr:.3f} [{m.ci_low:.3f}, {m.ci_high:.3f}]" in page and f"{r.auc:.4f}" in page
    assert "&lt;i&gt;cat&lt;/i&gt;" in page and "<i>" not in page
    with pytest.raises(MiascaleError, match="all four arrays"):
        miascale.run_audit(x, y, shots=4)
    with pytest.raises(MiascaleError, match="one way"):
        miascale.run_audit(x, y, x, y, shots=4, dataset="digits")
    with pytest.raises(MiascaleError, match="shadow-models"):
        miascale.run_audit(x, y, x, y, shots=4, shadow_models=2)


def test_export_csv_and_parquet(swept, tmp_path):
    _, run = swept
    runner = CliRunner()
    r = runner.invoke(app, ["export", str(run.path), "--format", "csv", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["path"] == str(run.path / "results.csv") and doc["rows"] == len(run.rows)
    back = pd.read_csv(doc["path"])
    pd.testing.assert_frame_equal(back, run.rows, check_dtype=False)
    out = tmp_path / "rows.parquet"
    r = runner.invoke(app, ["export", str(run.path), "--out", str(out)])  # format from suffix
    assert r.exit_code == 0 and "wrote" in r.stdout
    pd.testing.assert_frame_equal(pd.read_parquet(out), run.rows, check_dtype=False)


def test_rows_frame_flattens_nested_extras():
    from miascale.api import rows_frame

    df = rows_frame([{"cell_id": "a", "tpr": 0.5, "hpo_params": {"l2": 0.1}, "z": 1}])
    assert list(df.columns[:2]) == ["cell_id", "tpr"]  # the store's columns first
    assert set(df.columns) == {"cell_id", "tpr", "hpo_params.l2", "z"}
    assert df["hpo_params.l2"].tolist() == [0.1]


def test_cli_export_errors(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "miascale.cli", "export", *args],
                              capture_output=True, text=True)  # fmt: skip

    r = cli(str(tmp_path / "nowhere"))
    assert r.returncode == 2 and r.stdout == ""
    assert "error:" in r.stderr and "nowhere is not a folder" in r.stderr
    assert "Traceback" not in r.stderr
    r = cli(str(tmp_path), "--format", "xlsx")
    assert r.returncode == 2 and "csv or parquet" in r.stderr
