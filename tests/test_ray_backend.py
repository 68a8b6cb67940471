"""The Ray backend of `miascale sweep`: same rows as the local backend, retries, failures, resume.

One local Ray instance (2 CPUs, no dashboard) is shared by the whole module; the backend reuses an
already-initialised Ray rather than starting its own.
"""

import hashlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from miascale.cli import app
from miascale.errors import MiascaleError
from miascale.experiments import ResultStore, SweepSpec, expand, run_sweep
from miascale.experiments.backends import LocalBackend, RayBackend, make_backend
from miascale.paths import atomic_write_bytes

runner = CliRunner()


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    # the fake cell functions below reach Ray's workers by value (tests/ is not importable there)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
        configure_logging=True,
    )  # fmt: skip
    yield ray
    ray.shutdown()


def invoke(*args):
    r = runner.invoke(app, [str(a) for a in args])
    if r.exception and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r


def _spec(**kw):
    base = dict(
        datasets=("d1", "d2"), backbones=("b1",), shots=(1, 2, 4), seeds=(0, 1),
        variants=("lira-online",), shadow_models=4, fpr=(0.1, 0.01),
    )  # fmt: skip
    return SweepSpec(**{**base, **kw})


def _fake_rows(cell, features):
    rows = []
    for t in cell.fpr:
        h = hashlib.sha256(f"{cell.cell_id}|{t}".encode()).digest()
        rows.append({"attack": "lira", "variant": "online", "fpr_level": t,
                     "tpr": int.from_bytes(h[:8], "big") / 2**64, "n_features": int(features.sum())})  # fmt: skip
    return rows


class CountingMemo:
    """Stands in for FeatureMemo: a tiny 'feature set' per key, counting loads."""

    def __init__(self):
        self.loads = []

    def get(self, dataset, backbone, resolution, min_per_class, finetune="head"):
        self.loads.append((dataset, backbone))
        return np.arange(10 if dataset == "d1" else 20)


def make_compute(markers: Path, crash_once=(), crash_always=(), raise_always=()):
    """A fake compute_cell (closures ship to workers by value). Selects cells by (dataset, S, seed)."""
    markers = str(markers)

    def compute(cell, features, run_dir, device):
        key = (cell.dataset, cell.shots, cell.seed)
        if key in raise_always:
            raise RuntimeError(f"cell {key} is broken")
        if key in crash_always:
            os._exit(1)
        if key in crash_once:
            marker = Path(markers) / cell.cell_id
            if not marker.exists():
                marker.touch()
                os._exit(1)  # the worker dies mid-task, as with a segfault or the OOM killer
        rel = Path("cells") / cell.cell_id
        atomic_write_bytes(Path(run_dir) / rel / "out.txt", f"{cell.label} pid".encode())
        return _fake_rows(cell, features), str(rel)

    return compute


def test_ray_and_local_store_identical_rows(ray_session, tmp_path, digits_npz, assert_same_runs):
    """A tiny real sweep (digits × identity) gives the same stored rows and artifacts both ways."""
    args = ["sweep", "--dataset", f"npz:{digits_npz}", "--backbone", "identity", "--shots", "2,8",
            "--seed", "0,1", "--shadow-models", "4", "--fpr", "0.1,0.01",
            "--attack", "lira-online,lira-offline", "--json"]  # fmt: skip
    for backend in ("local", "ray"):
        r = invoke(*args, "--out", tmp_path / backend, "--backend", backend)
        assert r.exit_code == 0, r.output
    rows, artifacts = assert_same_runs(tmp_path / "local", tmp_path / "ray")
    assert len(rows) == 4 * 2 * 2 and len(artifacts) == 4
    # resuming on ray runs nothing
    again = invoke(*args, "--out", tmp_path / "ray", "--backend", "ray")
    assert '"skipped": 4' in again.stdout and '"ran": 0' in again.stdout


def test_crashed_task_is_retried(ray_session, tmp_path):
    spec = _spec()
    cells = expand(spec)
    memo = CountingMemo()
    crash = {("d1", 2, 0), ("d2", 4, 1)}
    backend = RayBackend(memo, compute=make_compute(tmp_path, crash_once=crash), max_retries=1)
    with ResultStore.open(tmp_path / "run", spec.to_dict()) as store:
        s = run_sweep(cells, store, quiet=True, on_error="record", backend=backend)
        assert (s.total, s.ran, s.failed) == (12, 12, 0)
        assert all(c["status"] == "done" for c in store.cells())
        assert len(store.rows()) == 12 * 2
        # the features of each group were loaded and put in the object store once
        assert sorted(memo.loads) == [("d1", "b1"), ("d2", "b1")] and backend.puts == 2
        assert {r["n_features"] for r in store.rows()} == {45, 190}
    assert len(list(tmp_path.glob("*"))) == 1 + len(crash)  # run/ + one marker per crashed cell
    # artifacts written by the driver, from the bytes the task returned
    for c in cells:
        text = (tmp_path / "run" / "cells" / c.cell_id / "out.txt").read_text()
        assert text.startswith(c.label)


def test_failing_cells_are_recorded_and_resumed(ray_session, tmp_path):
    spec = _spec()
    cells = expand(spec)
    bad = make_compute(tmp_path, raise_always={("d1", 1, 1)}, crash_always={("d2", 2, 0)})
    with ResultStore.open(tmp_path / "run", spec.to_dict()) as store:
        backend = RayBackend(CountingMemo(), compute=bad, max_retries=1)
        s = run_sweep(cells, store, quiet=True, on_error="record", backend=backend)
        assert (s.total, s.ran, s.failed) == (12, 10, 2)
        errors = {label: message for _, message, label in s.failures}
        assert errors["d1/b1 C=all S=1 seed=1"] == "RuntimeError: cell ('d1', 1, 1) is broken"
        crashed = errors["d2/b1 C=all S=2 seed=0"]
        assert "WorkerCrashedError" in crashed and "after 2 attempts" in crashed
        failed = {c["cell_id"]: c["error"] for c in store.cells() if c["status"] == "failed"}
        assert len(failed) == 2 and len(store.done_cells()) == 10

        # resuming reruns only the failed cells
        good = RayBackend(CountingMemo(), compute=make_compute(tmp_path))
        s = run_sweep(cells, store, quiet=True, on_error="record", backend=good)
        assert (s.total, s.skipped, s.ran, s.failed) == (12, 10, 2, 0)
        assert len(store.done_cells()) == 12

        # on_error="raise" re-raises the cell's own exception
        with ResultStore.open(tmp_path / "run2", spec.to_dict()) as store2:
            backend = RayBackend(CountingMemo(), compute=bad, max_retries=0, max_in_flight=1)
            with pytest.raises(RuntimeError, match="is broken"):
                run_sweep(cells[:6], store2, quiet=True, backend=backend)  # d1 cells
            assert len(store2.done_cells()) >= 1


def test_cli_failures_exit_nonzero(ray_session, tmp_path, monkeypatch, digits_npz):
    import miascale.experiments.cells as cells_mod

    real = cells_mod.compute_cell

    def flaky(cell, fs, run_dir, device):
        if cell.shots == 2 and cell.seed == 1:
            raise ValueError("no good")
        return real(cell, fs, run_dir, device)

    monkeypatch.setattr(cells_mod, "compute_cell", flaky)
    # M = 4 (K = 5): LiRA leaves each target's complementary partner out of its shadows (DESIGN
    # §3), which K = 4 would reduce to a single pair; only the flaky cell may fail here
    args = ["sweep", "--dataset", f"npz:{digits_npz}", "--backbone", "identity",
            "--shots", "1,2", "--seed", "0,1", "--shadow-models", "4", "--fpr", "0.1"]  # fmt: skip
    for backend in ("local", "ray"):
        run = tmp_path / backend
        r = invoke(*args, "--out", run, "--backend", backend, "--json")
        assert r.exit_code == 1, r.output
        assert '"failed": 1' in r.stdout and '"ran": 3' in r.stdout
        assert "S=2 seed=1" in r.output and "ValueError: no good" in r.output
    monkeypatch.setattr(cells_mod, "compute_cell", real)
    r = invoke(*args, "--out", tmp_path / "ray", "--backend", "ray", "--json")
    assert r.exit_code == 0 and '"ran": 1' in r.stdout and '"skipped": 3' in r.stdout


def test_backend_errors(tmp_path, monkeypatch):
    with pytest.raises(MiascaleError, match="--address applies only"):
        make_backend("local", tmp_path, CountingMemo(), address="1.2.3.4:6379")
    with pytest.raises(MiascaleError, match="Unknown backend"):
        make_backend("dask", tmp_path, CountingMemo())
    with pytest.raises(MiascaleError, match="max-retries"):
        LocalBackend(lambda c: ([], None), max_retries=-1)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(MiascaleError, match=r"pip install 'miascale\[ray\]'"):
        make_backend("ray", tmp_path, CountingMemo())
    with pytest.raises(MiascaleError, match="needs Ray"):
        invoke("sweep", "--dataset", "digits", "--backbone", "identity", "--backend", "ray",
               "--out", tmp_path / "r")  # fmt: skip
    assert not (tmp_path / "r").exists()  # failed before any work


def test_local_backend_retries_only_out_of_memory(tmp_path):
    spec = _spec(datasets=("d1",), shots=(1,), seeds=(0, 1))
    cells = expand(spec)
    calls = []

    def run_cell(cell):
        calls.append(cell.seed)
        if cell.seed == 0 and calls.count(0) < 3:
            raise MemoryError("oom")
        if cell.seed == 1:
            raise ValueError("deterministic")
        return _fake_rows(cell, np.ones(1)), None

    with ResultStore.open(tmp_path, spec.to_dict()) as store:
        s = run_sweep(cells, store, quiet=True, on_error="record",
                      backend=LocalBackend(run_cell, max_retries=2))  # fmt: skip
    assert (s.ran, s.failed) == (1, 1) and calls == [0, 0, 0, 1]


def test_ray_submits_each_groups_most_expensive_cells_first(ray_session, tmp_path):
    spec = _spec(shots=(1, 4, 2), seeds=(0,))
    submitted = []
    backend = RayBackend(CountingMemo(), compute=make_compute(tmp_path), max_in_flight=1)
    outcomes = list(backend.run(expand(spec), on_start=lambda i, c: submitted.append(c)))
    assert all(o.ok for o in outcomes)
    assert [(c.dataset, c.shots) for c in submitted] == [
        ("d1", 4), ("d1", 2), ("d1", 1), ("d2", 4), ("d2", 2), ("d2", 1)
    ]  # fmt: skip
