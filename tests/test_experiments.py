"""Sweep grid, SQLite result store and resumable runner (miascale.experiments)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from miascale.errors import MiascaleError
from miascale.experiments import (
    Cell,
    ResultStore,
    SweepSpec,
    default_shots,
    expand,
    run_sweep,
)
from miascale.experiments.store import DB_NAME

# ----------------------------------------------------------------------------- grid


def _spec(**kw) -> SweepSpec:
    base = dict(datasets=("d1",), backbones=("b1",), shots=(1, 2), seeds=(0,), shadow_models=4)
    base.update(kw)
    return SweepSpec(**base)


def test_default_shots():
    assert default_shots(300) == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    assert default_shots(256) == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    assert default_shots(50) == (1, 2, 4, 8, 16, 32)
    assert default_shots(1) == (1,)
    with pytest.raises(MiascaleError, match="at least 2 examples"):
        default_shots(0)


def test_expand_order_and_count():
    spec = SweepSpec(
        datasets=("b-data", "a-data"),
        backbones=("x",),
        classes=(None, 5),
        shots=(4, 1, 2),
        seeds=(1, 0),
    )
    cells = expand(spec)
    assert len(cells) == 2 * 1 * 2 * 3 * 2
    got = [(c.dataset, c.backbone, c.classes, c.shots, c.seed) for c in cells]
    # spec order for datasets/backbones/classes/seeds, shots ascending
    want = list(itertools.product(("b-data", "a-data"), ("x",), (None, 5), (1, 2, 4), (1, 0)))
    assert got == want
    assert len({c.cell_id for c in cells}) == len(cells)
    assert all(c.variants == ("lira-online",) and c.fpr == (0.1, 0.01, 0.001) for c in cells)
    assert expand(spec) == cells


def test_expand_default_shots_via_callback():
    calls = []

    def shots_for(dataset, backbone, classes):
        calls.append((dataset, backbone, classes))
        return default_shots(10 if classes is None else 3)

    spec = SweepSpec(datasets=("d",), backbones=("b",), classes=(None, 4), seeds=(0,))
    cells = expand(spec, shots_for)
    assert calls == [("d", "b", None), ("d", "b", 4)]
    assert [(c.classes, c.shots) for c in cells] == [
        (None, 1),
        (None, 2),
        (None, 4),
        (None, 8),
        (4, 1),
        (4, 2),
    ]
    with pytest.raises(ValueError, match="shots_for"):
        expand(spec)
    with pytest.raises(MiascaleError, match="shots"):
        expand(spec, lambda d, b, c: (0, 1))


def test_cell_id_stable_and_sensitive_to_every_field():
    a, b = expand(_spec()), expand(_spec())
    assert [c.cell_id for c in a] == [c.cell_id for c in b]
    cell = a[0]
    assert len(cell.cell_id) == 16 and int(cell.cell_id, 16) >= 0
    # pinned: the id must not change across versions/machines (resuming depends on it). The
    # head recipe's old value ("subset") keeps the ids of runs written before "pool" became the
    # default, so those resume as what they are; the new default gets ids of its own.
    legacy = dataclasses.replace(cell, standardize="subset")
    assert legacy.cell_id == _PINNED_ID, legacy.cell_id
    assert "standardize" not in legacy.to_dict()
    assert cell.cell_id == _PINNED_POOL_ID, cell.cell_id
    # ints given for floats hash like the floats
    assert expand(_spec(l2=0))[0].cell_id == expand(_spec(l2=0.0))[0].cell_id
    changed = {
        "dataset": "d2",
        "backbone": "b2",
        "classes": 10,
        "shots": 3,
        "seed": 7,
        "shadow_models": 8,
        "fpr": (0.1,),
        "resolution": 224,
        "min_per_class": 5,
        "membership": "bernoulli",
        "l2": 1e-2,
        "variants": ("lira-offline",),
        "epsilon": 1.0,
        "dp_delta": 1e-6,
        "dp_clip": 2.0,
        "dp_sampling_rate": 0.5,
        "dp_steps": 10,
        "finetune": "film",
        "hpo": 5,
        "standardize": "none",
        # audit settings added with the nested config (miascale.experiments.settings)
        "variance": "global",
        "location": "median",
        "rmia_gamma": 2.0,
        "rmia_a": 0.5,
        "population": 500,
        "optimizer": "adam",
        "dp_lr": 0.5,
        "epochs": 3,
        "film_lr": 1e-2,
        "batch_size": 8,
    }
    assert set(changed) == {f.name for f in dataclasses.fields(Cell)}
    ids = {cell.cell_id}
    for name, value in changed.items():
        other = dataclasses.replace(cell, **{name: value})
        ids.add(other.cell_id)
    assert len(ids) == len(changed) + 1


_PINNED_ID = "30af26dec3ef19c7"
_PINNED_POOL_ID = "dc4bf66008b70a03"


def test_a_cell_builds_its_audit_config_from_all_its_settings(tmp_path):
    from miascale.audit import AuditConfig
    from miascale.training.dp import DPConfig
    from miascale.training.heads import HeadConfig

    cell = expand(_spec(epsilons=(None, 2), dp_steps=7, dp_lr=0.5, l2=0.01))
    plain, dp = cell[0], next(c for c in cell if c.epsilon is not None)
    # the default cell: the config compute_cell built before the nested config
    assert plain.audit_config() == AuditConfig(
        shots=1, shadow_models=4, attack="lira-online", seed=0, head=HeadConfig(l2=0.01)
    )
    assert dp.audit_config().dp == DPConfig(epsilon=2.0, steps=7, learning_rate=0.5)
    assert plain.dp_lr is None and "dp_lr" not in plain.to_dict()
    other = expand(_spec(variance="global", rmia_gamma=2, population=500))[0]
    config = other.audit_config()
    assert (config.variance, config.rmia_gamma, config.population) == ("global", 2.0, 500)
    assert other.cell_id != expand(_spec())[0].cell_id
    assert expand(_spec(rmia_gamma=1))[0].cell_id == expand(_spec())[0].cell_id  # the default
    p = tmp_path / "s.toml"
    p.write_text('datasets = ["d1"]\nbackbones = ["b1"]\nvariance = "global"\nepochs = 3\n'
                 'finetune = "film"\n')  # fmt: skip
    spec = SweepSpec.from_toml(p)
    assert spec.variance == "global" and spec.epochs == 3
    assert spec.to_dict()["variance"] == "global" and "location" not in spec.to_dict()
    assert SweepSpec.from_dict(spec.to_dict()) == spec
    for bad, msg in ((dict(variance="wide"), "variance"), (dict(dp_lr=1.0), "only apply to DP"),
                     (dict(epochs=2), "only apply to FiLM"), (dict(optimizer="sgd"), "optimizer"),
                     (dict(population=5), "population")):  # fmt: skip
        with pytest.raises(MiascaleError, match=msg):
            _spec(**bad)
    p.write_text('datasets = ["d1"]\nbackbones = ["b1"]\nrmia_gamma = "big"\n')
    with pytest.raises(MiascaleError, match="rmia_gamma"):
        SweepSpec.from_toml(p)


def test_epsilon_axis_expands_and_parses_inf():
    spec = _spec(epsilons=(None, 1, 8.0))
    assert spec.epsilons == (None, 1.0, 8.0)
    cells = expand(spec)
    assert len(cells) == 3 * len(expand(_spec()))
    assert {c.epsilon for c in cells} == {None, 1.0, 8.0}
    # non-DP cells of an ε sweep are the very cells of a plain sweep (same ids: reused on resume)
    plain = {c.cell_id for c in expand(_spec())}
    assert {c.cell_id for c in cells if c.epsilon is None} == plain
    # the spec written by older versions (no new keys) still compares equal
    assert "epsilons" not in _spec().to_dict() and "epsilons" in spec.to_dict()
    toml = SweepSpec.from_dict({**_spec().to_dict(), "epsilons": ["inf", 2]})
    assert toml.epsilons == (None, 2.0)
    for bad in ({"epsilons": [0]}, {"epsilons": ["x"]}, {"dp_delta": 1.5}, {"finetune": "full"},
                {"hpo": -1}, {"epsilons": [1], "hpo": 2}, {"dp_clip": 2.0},
                {"epsilons": [1], "finetune": "film"}):  # fmt: skip
        with pytest.raises(MiascaleError):
            SweepSpec.from_dict({**_spec().to_dict(), **bad})


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(datasets=()), "datasets list is empty"),
        (dict(shots=()), "shots list is empty"),
        (dict(shots=(0, 1)), "shots value"),
        (dict(shots=(1, 2, 2)), "repeats 2"),
        (dict(seeds=(0, 0)), "repeats 0"),
        (dict(classes=(None, None)), "repeats None"),
        (dict(classes=(1,)), "classes"),
        (dict(fpr=(0.1, 1.0)), "strictly between 0 and 1"),
        (dict(fpr=(0.0,)), "strictly between 0 and 1"),
        (dict(shadow_models=3), "shadow_models"),
        (dict(membership="poisson"), "membership"),
        (dict(l2=-1.0), "l2"),
        (dict(resolution=0), "resolution"),
        (dict(variants=()), "variants list is empty"),
    ],
)
def test_spec_validation(kw, match):
    with pytest.raises(MiascaleError, match=match):
        _spec(**kw)


def test_spec_from_toml(tmp_path):
    p = tmp_path / "sweep.toml"
    p.write_text(
        textwrap.dedent(
            """
            datasets = ["fashion-mnist", "digits"]
            backbones = ["identity"]
            classes = ["all", 5]
            shots = [1, 2, 4]
            seeds = [0, 1]
            variants = ["lira-online", "lira-offline"]
            shadow_models = 16
            fpr = [0.1, 0.01]
            l2 = 0
            """
        )
    )
    spec = SweepSpec.from_toml(p)
    assert spec == SweepSpec(
        datasets=("fashion-mnist", "digits"),
        backbones=("identity",),
        classes=(None, 5),
        shots=(1, 2, 4),
        seeds=(0, 1),
        variants=("lira-online", "lira-offline"),
        shadow_models=16,
        fpr=(0.1, 0.01),
        l2=0.0,
    )
    assert isinstance(spec.l2, float)
    assert SweepSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert len(expand(spec)) == 2 * 2 * 3 * 2

    p.write_text('datasets = ["d"]\nbackbones = "b"\nshots = "auto"\n')
    spec = SweepSpec.from_toml(p)
    assert spec.backbones == ("b",) and spec.shots is None


def test_spec_from_toml_errors(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('datasets = ["d"]\nbackbones = ["b"]\nshot = [1]\n')
    with pytest.raises(MiascaleError, match=r"Unknown key\(s\) 'shot'.*bad\.toml.*shots"):
        SweepSpec.from_toml(p)

    p.write_text('datasets = ["d"]\nbackbones = ["b"]\nseeds = [0, 1\nshots = [1]\n')
    with pytest.raises(MiascaleError) as ei:
        SweepSpec.from_toml(p)
    assert str(p) in str(ei.value) and "line 4" in str(ei.value)

    p.write_text('datasets = ["d"]\nbackbones = ["b"]\nshadow_models = "many"\n')
    with pytest.raises(MiascaleError, match=r"'shadow_models'.*must be an integer"):
        SweepSpec.from_toml(p)

    p.write_text('datasets = ["d"]\nbackbones = ["b"]\nshots = [1, 2.5]\n')
    with pytest.raises(MiascaleError, match=r"'shots'.*list of positive integers"):
        SweepSpec.from_toml(p)

    p.write_text('backbones = ["b"]\n')
    with pytest.raises(MiascaleError, match="missing 'datasets'"):
        SweepSpec.from_toml(p)

    with pytest.raises(MiascaleError, match="does not exist"):
        SweepSpec.from_toml(tmp_path / "nope.toml")


# ----------------------------------------------------------------------------- store


def _rows(cell: Cell) -> list[dict]:
    """Deterministic fake result rows of a cell."""
    import hashlib

    rows = []
    for variant in cell.variants:
        for t in cell.fpr:
            h = hashlib.sha256(f"{cell.cell_id}|{variant}|{t}".encode()).digest()
            tpr = int.from_bytes(h[:8], "big") / 2**64
            rows.append(
                {
                    "attack": "lira",
                    "variant": variant,
                    "fpr_level": t,
                    "tpr": tpr,
                    "achieved_fpr": t / 2,
                    "ci_low": tpr / 2,
                    "ci_high": (1 + tpr) / 2,
                    "advantage": tpr - t,
                    "true_positives": h[8],
                    "false_positives": h[9],
                    "n_pos": 1000,
                    "n_neg": 1000,
                    "resolvable": t * 1000 >= 1,
                    "auc": 0.5 + tpr / 2,
                    "test_accuracy": 0.9,
                    "threshold": None,
                    "note": cell.label,
                }
            )
    return rows


def test_store_round_trip(tmp_path):
    spec = _spec(variants=("lira-online", "lira-offline"))
    cells = expand(spec)
    with ResultStore.open(tmp_path, spec.to_dict()) as store:
        assert store.done_cells() == set()
        assert store.rows() == []
        for c in cells:
            store.record_cell(c, _rows(c), 1.5, f"cells/{c.cell_id}")
    assert (tmp_path / DB_NAME).is_file()

    with ResultStore.open(tmp_path, spec.to_dict()) as store:
        assert store.done_cells() == {c.cell_id for c in cells}
        meta = store.meta()
        assert meta["spec"] == spec.to_dict() and meta["schema_version"] == "1"
        rows = store.rows()
        assert len(rows) == len(cells) * 2 * 3
        for c in cells:
            got = [r for r in rows if r["cell_id"] == c.cell_id]
            want = sorted(_rows(c), key=lambda r: (r["variant"], -r["fpr_level"]))
            assert len(got) == len(want)
            for g, w in zip(got, want, strict=True):
                assert {k: g[k] for k in w} == w
                assert (g["dataset"], g["backbone"], g["classes"], g["shots"], g["seed"]) == (
                    c.dataset,
                    c.backbone,
                    c.classes,
                    c.shots,
                    c.seed,
                )
                assert isinstance(g["resolvable"], bool)
        # filters
        assert {r["shots"] for r in store.rows(shots=2)} == {2}
        assert len(store.rows(variant=["lira-offline"], fpr_level=0.1)) == len(cells)
        assert len(store.rows(classes=None)) == len(rows)
        assert store.rows(shots=[]) == []
        with pytest.raises(MiascaleError, match="Cannot filter"):
            store.rows(bogus=1)
        info = store.cells()
        assert {d["cell_id"] for d in info} == store.done_cells()
        assert (
            info[0]["config"] == next(c for c in cells if c.cell_id == info[0]["cell_id"]).to_dict()
        )
        assert all(d["artifacts"] == f"cells/{d['cell_id']}" for d in info)

    # the file is an ordinary SQLite database
    con = sqlite3.connect(tmp_path / DB_NAME)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    n = con.execute("SELECT count(*) FROM results WHERE variant = 'lira-online'").fetchone()[0]
    assert n == len(cells) * 3
    con.close()


def test_store_numpy_values_and_extra(tmp_path):
    spec = _spec()
    cell = expand(spec)[0]
    row = {
        "attack": "lira",
        "variant": "lira-online",
        "fpr_level": np.float64(0.1),
        "tpr": np.float32(0.25),
        "true_positives": np.int64(3),
        "resolvable": np.bool_(True),
        "per_class": np.array([1.0, 2.0]),
        "threshold": float("inf"),
    }
    with ResultStore.open(tmp_path, spec.to_dict()) as store:
        store.record_cell(cell, [row], 0.1, None)
        (got,) = store.rows()
    assert got["tpr"] == 0.25 and got["true_positives"] == 3 and got["resolvable"] is True
    assert got["per_class"] == [1.0, 2.0] and got["threshold"] is None
    assert got["achieved_fpr"] is None


def test_store_rejects_a_different_spec(tmp_path):
    with ResultStore.open(tmp_path, _spec().to_dict()):
        pass
    with pytest.raises(MiascaleError, match=r"different sweep.*seeds.*another --out"):
        ResultStore.open(tmp_path, _spec(seeds=(0, 1)).to_dict())
    # the same spec reopens fine
    ResultStore.open(tmp_path, _spec().to_dict()).close()


def test_store_load(tmp_path):
    spec = _spec()
    with pytest.raises(MiascaleError, match="missing"):
        ResultStore.load(tmp_path)
    with ResultStore.open(tmp_path, spec.to_dict()) as store:
        store.record_cell(expand(spec)[0], _rows(expand(spec)[0]), 1.0)
    with ResultStore.load(tmp_path) as store:
        assert store.meta()["spec"] == spec.to_dict()
        assert len(store.rows()) == 3


def test_store_not_a_database(tmp_path):
    (tmp_path / DB_NAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(MiascaleError, match="not a usable miascale result store"):
        ResultStore.open(tmp_path, _spec().to_dict())


def test_failed_record_leaves_cell_absent(tmp_path):
    spec = _spec()
    first, second = expand(spec)
    with ResultStore.open(tmp_path, spec.to_dict()) as store:
        store.record_cell(first, _rows(first), 1.0, None)
        good = _rows(second)
        bad = dict(good[1])
        del bad["tpr"]
        with pytest.raises(ValueError, match="lacks required key"):
            store.record_cell(second, [good[0], bad, good[2]], 1.0, None)
        dup = [good[0], good[0]]
        with pytest.raises(ValueError, match="once per cell"):
            store.record_cell(second, dup, 1.0, None)
        mismatch = [dict(good[0], shots=99)]
        with pytest.raises(ValueError, match="shots"):
            store.record_cell(second, mismatch, 1.0, None)
        assert store.done_cells() == {first.cell_id}
        assert {r["cell_id"] for r in store.rows()} == {first.cell_id}
        assert len(store.rows()) == len(_rows(first))
        # the store is still usable, and recording again replaces
        store.record_cell(second, good, 1.0, None)
        store.record_cell(second, good[:1], 2.0, None)
        assert len(store.rows(cell_id=second.cell_id)) == 1


# ----------------------------------------------------------------------------- runner


def test_run_sweep_skips_done_and_records_failures(tmp_path):
    spec = _spec(shots=(1, 2, 4), seeds=(0, 1))
    cells = expand(spec)
    ran = []

    def run_cell(cell):
        ran.append(cell.cell_id)
        if cell.shots == 2 and cell.seed == 1:
            raise RuntimeError("boom [bracketed]")
        return _rows(cell), None

    with ResultStore.open(tmp_path, spec.to_dict()) as store:
        with pytest.raises(RuntimeError, match="boom"):
            run_sweep(cells, store, run_cell, quiet=True)
        assert len(store.done_cells()) == 3  # cells before the failing one
        ran.clear()
        s = run_sweep(cells + cells[:1], store, run_cell, quiet=True, on_error="record")
        assert (s.total, s.skipped, s.ran, s.failed) == (6, 3, 2, 1)
        assert len(ran) == 3 and s.failures[0][1] == "RuntimeError: boom [bracketed]"
        failed = [d for d in store.cells() if d["status"] == "failed"]
        assert len(failed) == 1 and "boom" in failed[0]["error"]
        assert len(store.done_cells()) == 5

        # the failed cell is retried on the next run
        ran.clear()
        s = run_sweep(cells, store, lambda c: (_rows(c), "a"), quiet=False)
        assert (s.total, s.skipped, s.ran, s.failed) == (6, 5, 1, 0)
        assert len(store.done_cells()) == 6
        assert all(d["status"] == "done" and d["error"] is None for d in store.cells())


# ----------------------------------------------------------------------------- resume after SIGKILL

_SWEEP_SCRIPT = """
import hashlib, json, sys, time
from miascale.experiments import ResultStore, SweepSpec, expand, run_sweep

run_dir, delay = sys.argv[1], float(sys.argv[2])
spec = SweepSpec(
    datasets=("d1", "d2"), backbones=("b1",), shots=(1, 2, 4, 8, 16), seeds=(0, 1, 2),
    variants=("lira-online", "lira-offline"), shadow_models=4,
)

def fake(cell):
    time.sleep(delay)
    rows = []
    for variant in cell.variants:
        for t in cell.fpr:
            h = hashlib.sha256(f"{cell.cell_id}|{variant}|{t}".encode()).digest()
            rows.append({
                "attack": "lira", "variant": variant, "fpr_level": t,
                "tpr": int.from_bytes(h[:8], "big") / 2**64, "n_pos": h[8], "n_neg": h[9],
                "resolvable": t > 0.005, "label": cell.label,
            })
    return rows, "cells/" + cell.cell_id

with ResultStore.open(run_dir, spec.to_dict()) as store:
    summary = run_sweep(expand(spec), store, fake, quiet=True)
print(json.dumps(summary.to_dict()))
"""
N_CELLS = 30


def _sweep(script: Path, run_dir: Path, delay: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(script), str(run_dir), str(delay)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> dict:
    out, errtext = proc.communicate(timeout=120)
    assert proc.returncode == 0, errtext
    return json.loads(out.strip().splitlines()[-1])


def _done_count(db: Path) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(db, timeout=10)
    try:
        return con.execute("SELECT count(*) FROM cells WHERE status = 'done'").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0
    finally:
        con.close()


def _all_rows(run_dir: Path) -> list[dict]:
    with ResultStore.load(run_dir) as store:
        return store.rows()


def test_resume_after_sigkill(tmp_path):
    script = tmp_path / "sweep.py"
    script.write_text(_SWEEP_SCRIPT)
    killed, reference = tmp_path / "killed", tmp_path / "reference"

    # the uninterrupted reference run (in parallel with the killed one)
    ref_proc = _sweep(script, reference, 0.0)
    proc = _sweep(script, killed, 0.05)
    db = killed / DB_NAME
    deadline = time.monotonic() + 60
    while _done_count(db) < 5:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the sweep recorded no cells within 60 s"
        time.sleep(0.01)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    done = con.execute("SELECT count(*) FROM cells WHERE status = 'done'").fetchone()[0]
    # every recorded cell is complete: 2 variants × 3 FPR levels
    per_cell = con.execute("SELECT cell_id, count(*) FROM results GROUP BY cell_id").fetchall()
    con.close()
    assert 5 <= done < N_CELLS
    assert len(per_cell) == done and all(n == 6 for _, n in per_cell)

    resumed = _finish(_sweep(script, killed, 0.0))
    assert resumed["total"] == N_CELLS
    assert resumed["skipped"] == done
    assert resumed["ran"] == N_CELLS - done and resumed["failed"] == 0

    ref = _finish(ref_proc)
    assert (ref["skipped"], ref["ran"]) == (0, N_CELLS)

    got, want = _all_rows(killed), _all_rows(reference)
    assert len(want) == N_CELLS * 6
    assert got == want


def test_head_recipe_in_spec_and_cells():
    """The new default recipe (pool) is part of the spec and the ids; the old one (subset) is
    left out, so a run directory written before the change still resumes as what it is."""
    new, old = _spec(), _spec(standardize="subset")
    assert new.to_dict()["standardize"] == "pool" and "standardize" not in old.to_dict()
    assert all(c.standardize == "pool" for c in expand(new))
    assert {c.cell_id for c in expand(new)}.isdisjoint({c.cell_id for c in expand(old)})
    with pytest.raises(MiascaleError, match="standardize"):
        _spec(standardize="zscore")
    toml = SweepSpec.from_dict({"datasets": ["d"], "backbones": ["b"], "standardize": "none"})
    assert toml.standardize == "none"
