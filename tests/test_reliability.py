"""Nothing silently wrong (issue 19): data fingerprints and artifacts checked on resume, one
writer per run directory, read-only fit/report, checks before computing, errors as plain text."""

import json
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from miascale.cli import app
from miascale.errors import MiascaleError
from miascale.experiments import ResultStore, SweepSpec, expand
from miascale.experiments.store import DB_NAME, RunDirLock

runner = CliRunner()


def _write_features(path, seed=0, n_per_class=40, shift=0.0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(3, 12))
    y = np.repeat(np.arange(3), n_per_class)
    np.savez(path, features=means[y] + rng.normal(size=(len(y), 12)) + shift, labels=y)
    return path


def invoke(*args):
    r = runner.invoke(app, [str(a) for a in args])
    if r.exception and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "miascale.cli", *map(str, args)], capture_output=True, text=True
    )


def _sweep_args(data, run, *extra):
    return ["sweep", "--dataset", f"npz:{data}", "--backbone", "identity", "--shots", "2,4",
            "--seed", "0", "--shadow-models", "4", "--fpr", "0.1", "--out", run, "--json",
            *extra]  # fmt: skip


# ----------------------------------------------------------------------------- 1. fingerprints


def test_resume_after_the_data_changed_refuses_or_recomputes(tmp_path):
    data, run = _write_features(tmp_path / "f.npz"), tmp_path / "run"
    first = json.loads(invoke(*_sweep_args(data, run)).stdout)
    assert first["ran"] == 2
    with ResultStore.load(run) as store:
        fps = {r["fingerprint"] for r in store.done_records().values()}
    assert len(fps) == 1 and None not in fps
    again = json.loads(invoke(*_sweep_args(data, run)).stdout)
    assert again["skipped"] == 2 and again["ran"] == 0  # same data: resumed, nothing rerun

    _write_features(data, seed=1)  # other data under the same path
    with pytest.raises(MiascaleError, match=r"data changed since 2 done cell\(s\)") as e:
        invoke(*_sweep_args(data, run))
    assert f"npz:{data}" in str(e.value) and "--recompute-changed" in str(e.value)
    redone = json.loads(invoke(*_sweep_args(data, run, "--recompute-changed")).stdout)
    assert redone["skipped"] == 0 and redone["ran"] == 2
    with ResultStore.load(run) as store:
        new = {r["fingerprint"] for r in store.done_records().values()}
    assert len(new) == 1 and new != fps
    assert json.loads(invoke(*_sweep_args(data, run)).stdout)["ran"] == 0  # now consistent


def test_deleted_artifact_is_rebuilt(tmp_path):
    data, run = _write_features(tmp_path / "f.npz"), tmp_path / "run"
    invoke(*_sweep_args(data, run))
    victim = next((run / "cells").iterdir()) / "signals.npz"
    before = victim.read_bytes()
    victim.unlink()
    r = invoke(*_sweep_args(data, run))
    doc = json.loads(r.stdout)
    assert doc["skipped"] == 1 and doc["ran"] == 1
    assert "lack their artifacts" in r.stderr
    assert victim.read_bytes() == before  # rebuilt, identical (same seed)
    with ResultStore.load(run) as store:
        shas = {r["artifact_sha256"] for r in store.done_records().values()}
    assert len(shas) == 2 and None not in shas
    # a corrupt (changed) artifact is rebuilt too
    victim.write_bytes(before[:100])
    r = invoke(*_sweep_args(data, run))
    assert json.loads(r.stdout)["ran"] == 1 and "have corrupt artifacts" in r.stderr
    assert victim.read_bytes() == before


def test_old_store_without_fingerprints_is_read_and_migrated(tmp_path):
    spec = SweepSpec(datasets=("d",), backbones=("b",), shots=(1, 2), seeds=(0,), shadow_models=4)
    cells = expand(spec)
    with ResultStore.open(tmp_path, spec.to_dict()) as store:
        for c in cells:
            store.record_cell(c, [{"attack": "lira", "variant": "online", "fpr_level": 0.1,
                                   "tpr": 0.5}], 1.0, None)  # fmt: skip
    # make it look like a store written before fingerprints: rebuild `cells` without the column
    con = sqlite3.connect(tmp_path / DB_NAME)
    con.executescript(
        "PRAGMA foreign_keys=OFF; CREATE TABLE old AS SELECT cell_id, config, status, seconds, "
        "finished_at, artifacts, error FROM cells; DROP TABLE cells; ALTER TABLE old RENAME TO "
        "cells;"
    )
    con.close()
    with ResultStore.load(tmp_path) as store:  # read-only: readable as it is
        assert set(store.done_records()) == {c.cell_id for c in cells}
        assert all(r["fingerprint"] is None for r in store.done_records().values())
    with ResultStore.open(tmp_path, spec.to_dict()) as store:  # a writer migrates it
        cols = {r[1] for r in store._con.execute("PRAGMA table_info(cells)")}
        assert "fingerprint" in cols and len(store.rows()) == 2
        from miascale.experiments import check_done_cells

        assert check_done_cells(cells, store, lambda c: "new", quiet=True) == set()


# ----------------------------------------------------------------------------- 2. lock, read-only


def test_second_writer_is_refused_and_lock_released(tmp_path):
    spec = SweepSpec(datasets=("d",), backbones=("b",), shots=(1,), seeds=(0,), shadow_models=4)
    with ResultStore.open(tmp_path, spec.to_dict(), lock=True):
        with pytest.raises(MiascaleError, match="another sweep is writing to"):
            ResultStore.open(tmp_path, spec.to_dict(), lock=True)
        # in another process too
        code = (
            "import sys; from miascale.experiments.store import RunDirLock\n"
            "try:\n    RunDirLock(sys.argv[1]).acquire()\nexcept Exception as e:\n"
            "    print(e); sys.exit(3)\n"
        )
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                           text=True)  # fmt: skip
        assert r.returncode == 3 and "another sweep is writing to" in r.stdout
    ResultStore.open(tmp_path, spec.to_dict(), lock=True).close()  # released on close
    with pytest.raises(MiascaleError, match="different sweep"):  # released on errors too
        ResultStore.open(tmp_path, {**spec.to_dict(), "seeds": [5]}, lock=True)
    RunDirLock(tmp_path).acquire().release()


def test_concurrent_sweep_into_one_run_directory_exits_2(tmp_path):
    data, run = _write_features(tmp_path / "f.npz"), tmp_path / "run"
    run.mkdir()
    with RunDirLock(run):
        pass
    held = RunDirLock(run).acquire()
    try:
        r = run_cli(*_sweep_args(data, run))
    finally:
        held.release()
    assert r.returncode == 2, r.stderr
    assert "another sweep is writing to" in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""
    assert not (run / DB_NAME).exists()  # nothing computed, nothing written


def test_fit_and_report_open_the_store_read_only(tmp_path):
    data, run = _write_features(tmp_path / "f.npz"), tmp_path / "run"
    invoke(*_sweep_args(data, run))
    (run / DB_NAME).chmod(0o444)
    try:
        with ResultStore.load(run) as store:
            assert store.read_only and store.rows()
            with pytest.raises(sqlite3.OperationalError, match="readonly"):
                store._con.execute("DELETE FROM results")
        assert invoke("fit", run, "--json").exit_code == 0
        assert invoke("report", run).exit_code == 0
    finally:
        (run / DB_NAME).chmod(0o644)


def test_fit_in_a_read_only_run_directory_prints_and_warns(tmp_path, monkeypatch):
    import miascale.experiments.workflows as workflows

    data, run = _write_features(tmp_path / "f.npz"), tmp_path / "run"
    invoke(*_sweep_args(data, run))
    written = json.loads(invoke("fit", run, "--json").stdout)
    (run / "fit.json").unlink()

    def read_only(path, obj):  # what a read-only folder does (tests may run as root)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(workflows, "write_json", read_only)
    r = invoke("fit", run, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout) == written
    assert "cannot write" in r.stderr and not (run / "fit.json").exists()
    r = invoke("fit", run)
    assert r.exit_code == 0 and "wrote" not in r.stdout


# ----------------------------------------------------------------------------- 4. inputs


@pytest.mark.parametrize("n_labels", [100, 140])
def test_npz_features_and_labels_must_pair_up(tmp_path, n_labels):
    from miascale.data import load_dataset

    p = tmp_path / "bad.npz"
    np.savez(p, x=np.zeros((120, 4), dtype=np.float32), y=np.arange(n_labels) % 3)
    with pytest.raises(MiascaleError, match=f"`x` has 120 rows but `y` has {n_labels} labels"):
        load_dataset(f"npz:{p}")
    np.savez(p, x=np.zeros((12, 4)), y=np.arange(12) % 3, x_test=np.zeros((5, 4)),
             y_test=np.arange(4) % 3)  # fmt: skip
    with pytest.raises(MiascaleError, match="`x_test` has 5 rows but `y_test` has 4 labels"):
        load_dataset(f"npz:{p}")


def test_test_classes_absent_from_training_are_warned_about(tmp_path, capsys):
    from miascale.data import load_dataset

    rng = np.random.default_rng(0)
    p = tmp_path / "f.npz"
    np.savez(p, x=rng.normal(size=(30, 4)), y=np.arange(30) % 3, x_test=rng.normal(size=(6, 4)),
             y_test=np.array([0, 1, 3, 3, 3, 2]))  # fmt: skip
    ds = load_dataset(f"npz:{p}")
    assert ds.n_classes == 4
    msg = capsys.readouterr().err
    assert "3 of 6 test examples" in msg and "absent from the training split" in msg
    np.savez(p, x=rng.normal(size=(30, 4)), y=np.arange(30) % 3)  # no absent classes: silent
    load_dataset(f"npz:{p}")
    assert "absent" not in capsys.readouterr().err


# ----------------------------------------------------------------------------- 5. plain text


def test_error_text_is_never_markup(capsys):
    from miascale.cli import print_error

    for path in ("/data/[red]x[/red].npz", "/data/a[/]b.npz", "/d/[bold]/[link=x]y"):
        print_error(MiascaleError(f"npz: {path} does not exist."))
        got = capsys.readouterr().err
        assert path in got.replace("\n", ""), got


# ----------------------------------------------------------------------------- 3, 6. bad inputs


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    _write_features(d / "ok.npz")
    np.savez(d / "long.npz", features=np.zeros((30, 4)), labels=np.arange(20) % 2)
    np.savez(d / "short.npz", features=np.zeros((20, 4)), labels=np.arange(30) % 2)
    (d / "ok.toml").write_text(
        f'datasets = ["npz:{d / "ok.npz"}"]\nbackbones = ["identity"]\nshots = [2]\n'
        f"seeds = [0]\nshadow_models = 4\n"
    )
    (d / "fit.json").write_text("{}")
    (d / "a_file").write_text("keep me")
    return d


def _cases(d):
    ok = f"npz:{d / 'ok.npz'}"
    audit = ["audit", "--dataset", ok, "--backbone", "identity", "--shots", "2", "-m", "4"]
    cases = [
        (["sweep", "--config", d / "ok.toml", "--shots", "4,8", "--seeds", "5", "-m", "3",
          "--out", d / "run1"], "--shots, --seeds, --shadow-models cannot be given"),
        (["predict", "--shots", "8", "--fpr", "0.1", "--coefficients", d / "fit.json",
          "--beta-s", "-0.5", "--beta-0", "-1"], "not both"),
        (["plan", "--fpr", "0.1", "--target-advantage", "0.01", "--coefficients",
          d / "fit.json", "--beta-s", "-0.5"], "not both"),
        ([*audit, "--fpr", "0.1,0.1"], "more than once"),
        ([*audit, "--seed", "-1"], "--seed must be a non-negative integer"),
        # the output folder is checked first: the missing dataset is never reached
        (["audit", "--dataset", "npz:/nonexistent.npz", "--shots", "2", "--out", d / "a_file"],
         "is a file, not a folder"),
        ([*audit, "--out", d / "a_file" / "sub"], "Cannot write to --out"),
        (["features", "--dataset", f"npz:{d / 'long.npz'}", "--backbone", "identity"],
         "has 30 rows but `labels` has 20 labels"),
        (["features", "--dataset", f"npz:{d / 'short.npz'}", "--backbone", "identity"],
         "has 20 rows but `labels` has 30 labels"),
        (["features", "--dataset", f"npz:{d}/[red]x[/red]/a[/]b.npz"],
         f"{d}/[red]x[/red]/a[/]b.npz does not exist"),
        ([*audit, "--fpr", "nan"], "got [nan]"),
        ([*_sweep_args(d / "ok.npz", d / "a_file")[:-1]], "Cannot create the run directory"),
        (["theory", "--seed", "-1"], "--seed must be a non-negative integer"),
        (["theory", "--out", d / "a_file"], "is a file, not a folder"),
    ]  # fmt: skip
    import torch

    if not torch.cuda.is_available():
        cases += [
            ([*audit, "--device", "cuda"], "torch sees no CUDA GPU"),
            ([*_sweep_args(d / "ok.npz", d / "run2")[:-1], "--device", "cuda"],
             "torch sees no CUDA GPU"),
        ]  # fmt: skip
    return cases


def test_bad_inputs_exit_2_with_one_paragraph(bad_inputs):
    d = bad_inputs
    for args, msg in _cases(d):
        r = run_cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        text = " ".join(r.stderr.split())
        assert "Traceback" not in r.stderr and r.stderr.startswith("error: "), (args, r.stderr)
        assert "\n\n" not in r.stderr.strip(), r.stderr
        assert " ".join(msg.split()) in text, (args, r.stderr)
        assert r.stdout == ""
    # nothing written where nothing should be
    assert (d / "a_file").read_text() == "keep me"
    assert not (d / "run1").exists() and not (d / "run2").exists()


# ----------------------------------------------------------------------------- kill -9, two writers

_SCRIPT = """
import hashlib, json, os, sys, time
from miascale.errors import MiascaleError
from miascale.experiments import ResultStore, SweepSpec, check_done_cells, expand, run_sweep
from miascale.paths import atomic_write_bytes

run_dir, delay, log = sys.argv[1], float(sys.argv[2]), sys.argv[3]
spec = SweepSpec(datasets=("d1", "d2"), backbones=("b1",), shots=(1, 2, 4, 8, 16),
                 seeds=(0, 1, 2), variants=("lira-online",), shadow_models=4)

def fake(cell):
    time.sleep(delay)
    h = hashlib.sha256(cell.cell_id.encode()).digest()
    rows = [{"attack": "lira", "variant": "online", "fpr_level": t,
             "tpr": int.from_bytes(h[:8], "big") / 2**64, "n_neg": h[9]} for t in cell.fpr]
    atomic_write_bytes(os.path.join(run_dir, "cells", cell.cell_id, "signals.npz"), h * 100)
    with open(log, "a") as fh:
        fh.write(cell.cell_id + "\\n")
    return rows, "cells/" + cell.cell_id

try:
    store = ResultStore.open(run_dir, spec.to_dict(), lock=True)
except MiascaleError as e:
    print(e, file=sys.stderr)
    sys.exit(2)
with store:
    cells = expand(spec)
    rerun = check_done_cells(cells, store, lambda c: "fp-" + c.dataset, quiet=True)
    summary = run_sweep(cells, store, fake, quiet=True, rerun=rerun,
                        fingerprint=lambda c: "fp-" + c.dataset)
print(json.dumps(summary.to_dict()))
"""
N = 30


def _start(script, run_dir, delay, log):
    return subprocess.Popen(
        [sys.executable, str(script), str(run_dir), str(delay), str(log)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _done(db):
    if not db.exists():
        return 0
    con = sqlite3.connect(db, timeout=10)
    try:
        return con.execute("SELECT count(*) FROM cells WHERE status = 'done'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def _snapshot(run_dir):
    with ResultStore.load(run_dir) as store:
        rows = [{k: v for k, v in r.items()} for r in store.rows()]
        recs = store.done_records()
    files = {p.parent.name: p.read_bytes() for p in (run_dir / "cells").glob("*/signals.npz")}
    return rows, {k: (v["fingerprint"], v["artifact_sha256"]) for k, v in recs.items()}, files


def test_kill_9_at_random_points_then_resume_equals_uninterrupted(tmp_path):
    import os
    import signal
    import time

    script = tmp_path / "sweep.py"
    script.write_text(_SCRIPT)
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    p = _start(script, ref, 0.0, tmp_path / "ref.log")
    assert p.wait(timeout=120) == 0, p.communicate()
    rng = np.random.default_rng(19)
    db = killed / DB_NAME
    kills = 0
    for _ in range(14):  # at least 10 kills at random moments, each resumed by the next run
        start = _done(db)
        if start >= N - 2:
            break
        target = start + int(rng.integers(0, 2))  # kill before the first cell, or after one
        proc = _start(script, killed, 0.02, tmp_path / "killed.log")
        deadline = time.monotonic() + 60
        while _done(db) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(float(rng.uniform(0, 0.03)))  # mid-cell, mid-commit, or between cells
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        con = sqlite3.connect(db)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        con.close()
    assert kills >= 10
    final = _start(script, killed, 0.0, tmp_path / "killed.log")  # the lock was released by kill
    _, err = final.communicate(timeout=120)
    assert final.returncode == 0, err
    assert _snapshot(killed) == _snapshot(ref)


def test_two_concurrent_sweeps_do_the_work_once(tmp_path):
    script = tmp_path / "sweep.py"
    script.write_text(_SCRIPT)
    run, log = tmp_path / "run", tmp_path / "work.log"
    procs = [_start(script, run, 0.05, log) for _ in range(2)]
    results = [(p.wait(timeout=120), p.communicate()) for p in procs]
    codes = sorted(c for c, _ in results)
    assert codes in ([0, 0], [0, 2]), results
    if codes == [0, 2]:
        assert any("another sweep is writing to" in e for c, (_, e) in results if c == 2)
    computed = log.read_text().split()
    assert len(computed) == len(set(computed)) == N  # every cell once, none twice


# ----------------------------------------------------------------------------- feature cache


def test_feature_cache_is_checked_against_the_dataset(tmp_path, monkeypatch, capsys):
    from miascale.backbones import cache
    from miascale.backbones.base import BackboneSpec, Extractor
    from miascale.data import load_dataset

    spec = BackboneSpec("fake", "features", None, "x2")
    calls = []

    class Doubler(Extractor):
        dim = 12

        def __init__(self):
            self.spec = spec

        def embed(self, batch):
            calls.append(len(batch))
            return 2 * np.asarray(batch, dtype=np.float32)

    monkeypatch.setattr(cache, "load_extractor", lambda s, device: Doubler())
    ds = load_dataset(f"npz:{_write_features(tmp_path / 'f.npz')}")
    first = cache.features_for(ds, spec, root=tmp_path / "c", quiet=True)
    assert not first.from_cache and calls
    assert cache.features_for(ds, spec, root=tmp_path / "c", quiet=True).from_cache
    with np.load(first.path) as z:
        saved = {k: z[k] for k in z.files}
    bad_files = {
        "fewer rows": {**saved, "x_train": saved["x_train"][:-3], "y_train": saved["y_train"][:-3]},
        "random values": {**saved, "x_train": np.random.default_rng(0).normal(
            size=saved["x_train"].shape).astype(np.float32)},
    }  # fmt: skip
    for what, arrays in bad_files.items():
        np.savez(first.path, **arrays)
        calls.clear()
        fs = cache.features_for(ds, spec, root=tmp_path / "c")
        assert not fs.from_cache and calls, what  # recomputed, not served
        np.testing.assert_array_equal(fs.x_train, first.x_train)
        assert "does not match" in capsys.readouterr().err
        assert cache.features_for(ds, spec, root=tmp_path / "c", quiet=True).from_cache  # replaced


def test_data_messages_name_the_right_things(tmp_path):
    from miascale.data import load_dataset

    x = np.random.default_rng(0).normal(size=(40, 3))
    x[[7, 33]] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.arange(40) % 2)
    with pytest.raises(MiascaleError, match=r"NaN/inf values in 2 rows .*\[7, 33\]"):
        load_dataset(f"npz:{tmp_path / 'nan.npz'}")  # rows of the file, not of a split
    (tmp_path / "text.npz").write_text("not numpy at all\n" * 10)
    with pytest.raises(MiascaleError, match=r"not an \.npz file") as e:
        load_dataset(f"npz:{tmp_path / 'text.npz'}")
    assert "allow_pickle" not in str(e.value)
    for c in ("a", "b"):
        (tmp_path / "t" / c).mkdir(parents=True)
    (tmp_path / "t" / "a" / "1.txt").write_text("hello")
    with pytest.raises(MiascaleError, match=r"holds no \.txt files"):
        load_dataset(f"texts:{tmp_path / 't'}")
