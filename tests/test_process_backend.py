"""The local backend's worker processes (`--workers N`): same rows as one process, cells really run
side by side, crashes and errors recorded, children killed when the driver stops."""

import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from miascale.cli import app
from miascale.errors import MiascaleError
from miascale.experiments import ResultStore, SweepSpec, expand, run_sweep
from miascale.experiments.backends import LocalBackend, make_backend
from miascale.experiments.processes import auto_workers, usable_cores
from miascale.paths import atomic_write_bytes

runner = CliRunner()


def _spec(**kw):
    base = dict(
        datasets=("d1",), backbones=("b1",), shots=(1, 2, 4), seeds=(0, 1),
        variants=("lira-online",), shadow_models=4, fpr=(0.1,),
    )  # fmt: skip
    return SweepSpec(**{**base, **kw})


def _backend(compute, workers, *, features=None, max_retries=0, loads=None):
    """A LocalBackend whose cells call ``compute(cell, features, run_dir)``; ``loads`` collects
    the driver's feature loads (``prepare``)."""

    def prepare(cell):
        if loads is not None:
            loads.append((cell.cell_id, os.getpid()))

    return LocalBackend(
        lambda cell: compute(cell, features), workers=workers, max_retries=max_retries,
        prepare=prepare,
    )  # fmt: skip


def _row(cell, **extra):
    return [{"attack": "lira", "variant": "online", "fpr_level": 0.1, "tpr": 0.5, **extra}]


def test_workers_store_the_same_rows_and_artifacts_as_one_process(
    tmp_path, digits_npz, assert_same_runs
):
    """A tiny real sweep (digits × identity) with --workers 2 equals the in-process run."""
    args = ["sweep", "--dataset", f"npz:{digits_npz}", "--backbone", "identity", "--shots", "2,8",
            "--seed", "0,1", "--shadow-models", "4", "--fpr", "0.1,0.01",
            "--attack", "lira-online,lira-offline", "--json"]  # fmt: skip
    for workers in (1, 2):
        r = runner.invoke(app, [*args, "--out", str(tmp_path / f"w{workers}"), "--workers",
                                str(workers)])  # fmt: skip
        assert r.exit_code == 0, r.output
    rows, artifacts = assert_same_runs(tmp_path / "w1", tmp_path / "w2")
    assert len(rows) == 4 * 2 * 2 and len(artifacts) == 4


def test_cells_run_side_by_side_in_one_thread_children(tmp_path):
    """Two cells that each wait for the other's marker finish only if they run at once."""
    import torch

    marks = tmp_path / "marks"
    marks.mkdir()
    features = {"unpicklable": lambda: None}  # children inherit it: nothing is pickled

    def compute(cell, fs):
        assert callable(fs["unpicklable"])
        (marks / cell.cell_id).touch()
        deadline = time.monotonic() + 60
        while len(list(marks.iterdir())) < 2:
            if time.monotonic() > deadline:
                raise TimeoutError("the other cell never started")
            time.sleep(0.01)
        threads = torch.get_num_threads()
        return _row(cell, pid=os.getpid(), threads=threads), None

    spec = _spec(shots=(1, 2), seeds=(0,))
    loads = []
    backend = _backend(compute, 2, features=features, loads=loads)
    with ResultStore.open(tmp_path / "run", spec.to_dict()) as store:
        s = run_sweep(expand(spec), store, quiet=True, on_error="record", backend=backend)
        assert (s.ran, s.failed) == (2, 0), s.failures
        rows = store.rows()
    pids = {r["pid"] for r in rows}
    assert len(pids) == 2 and os.getpid() not in pids
    assert {r["threads"] for r in rows} == {1}
    assert {pid for _, pid in loads} == {os.getpid()}  # features loaded by the driver


def test_the_most_expensive_cells_start_first(tmp_path):
    spec = _spec(shots=(1, 4, 2), seeds=(0,))
    started = []
    backend = _backend(lambda cell, fs: (_row(cell), None), 2)
    list(backend.run(expand(spec), on_start=lambda i, cell: started.append(cell.shots)))
    assert started == [4, 2, 1]


def _flaky(markers: Path, *, crash_once=(), crash_always=(), raise_always=()):
    def compute(cell, fs):
        key = (cell.shots, cell.seed)
        if key in raise_always:
            raise RuntimeError(f"cell {key} is broken")
        if key in crash_always:
            os._exit(3)
        if key in crash_once and not (markers / cell.cell_id).exists():
            (markers / cell.cell_id).touch()
            os.kill(os.getpid(), 9)  # as the out-of-memory killer does
        rel = Path("cells") / cell.cell_id
        atomic_write_bytes(markers.parent / "run" / rel / "out.txt", cell.label.encode())
        return _row(cell), str(rel)

    return compute


def test_dead_workers_are_retried_and_failures_recorded(tmp_path):
    spec = _spec()
    cells = expand(spec)
    markers = tmp_path / "markers"
    markers.mkdir()
    compute = _flaky(markers, crash_once={(2, 0)}, crash_always={(4, 1)}, raise_always={(1, 1)})
    with ResultStore.open(tmp_path / "run", spec.to_dict()) as store:
        backend = _backend(compute, 2, max_retries=1)
        s = run_sweep(cells, store, quiet=True, on_error="record", backend=backend)
        assert (s.total, s.ran, s.failed) == (6, 4, 2)
        errors = {label: message for _, message, label in s.failures}
        assert errors["d1/b1 C=all S=1 seed=1"] == "RuntimeError: cell (1, 1) is broken"
        assert errors["d1/b1 C=all S=4 seed=1"] == (
            "the worker process died without a result (exit code 3) (after 2 attempts)"
        )
        assert len(list(markers.iterdir())) == 1  # S=2 seed=0 died once, then succeeded
        [dead] = _backend(compute, 2, max_retries=1).run([c for c in cells if c.shots == 4][1:])
        assert dead.attempts == 2 and "(after 2 attempts)" in dead.error
        for c in cells:
            if c.cell_id in store.done_cells():
                assert (tmp_path / "run" / "cells" / c.cell_id / "out.txt").read_text() == c.label

        # without retries the killed worker's cell fails, naming the signal
        again = _flaky(tmp_path / "m2", crash_once={(1, 0)})
        (tmp_path / "m2").mkdir()
        outcomes = list(_backend(again, 2).run(cells[:2]))
        [dead] = [o for o in outcomes if not o.ok]
        assert "killed by signal 9 SIGKILL" in dead.error and isinstance(
            dead.exception, MiascaleError
        )


def test_raise_stops_and_kills_the_children_still_running(tmp_path):
    spec = _spec()
    pids = tmp_path / "pids"
    pids.mkdir()

    def compute(cell, fs):
        if cell.shots == 4:  # the first cell (most expensive): fails at once
            raise ValueError("no good")
        (pids / str(os.getpid())).touch()
        time.sleep(120)
        return _row(cell), None

    with ResultStore.open(tmp_path / "run", spec.to_dict()) as store:
        t0 = time.monotonic()
        with pytest.raises(ValueError, match="no good"):
            run_sweep(expand(spec), store, quiet=True, backend=_backend(compute, 2))
        assert time.monotonic() - t0 < 60
    for p in pids.iterdir():
        with pytest.raises(ProcessLookupError):
            os.kill(int(p.name), 0)


def test_workers_option_errors_and_automatic_choice(tmp_path):
    def error(*args):  # raised before any work (the console entry point prints it, exit 2)
        r = runner.invoke(app, ["sweep", "--dataset", "fashion-mnist", "--out", str(tmp_path),
                                *args])  # fmt: skip
        assert isinstance(r.exception, MiascaleError), r.output
        return " ".join(str(r.exception).split())

    assert "--workers must be an integer ≥ 1, got 0" in error("--workers", "0")
    with pytest.raises(MiascaleError, match="needs Linux and --device cpu"):
        make_backend("local", tmp_path, None, "cuda", workers=2)
    assert make_backend("local", tmp_path, None, "cuda", workers=1).workers == 1
    assert "--workers applies only to --backend local" in error(
        "--workers", "2", "--backend", "ray"
    )
    assert not (tmp_path / "results.sqlite").exists()
    with pytest.raises(MiascaleError, match="applies only"):
        make_backend("ray", tmp_path, None, workers=1)
    assert auto_workers("cpu", 1) == 1 and auto_workers("cuda", 50) == 1
    assert 1 <= auto_workers("cpu", 50) <= usable_cores()


class _Picky(Exception):
    """Pickles, but cannot be rebuilt from its pickle (a required keyword-only argument)."""

    def __init__(self, message, *, code):
        super().__init__(message)
        self.code = code


def test_results_that_do_not_survive_pickling_fail_their_cell_with_the_reason(tmp_path):
    def compute(cell, fs):
        if cell.shots == 1:
            raise _Picky("picky failure", code=3)
        if cell.shots == 2:
            return [{"attack": "lira", "fpr_level": 0.1, "bad": lambda: None}], None
        if cell.shots == 4:
            raise MemoryError("no room")
        return _row(cell), None

    spec = _spec(shots=(1, 2, 4, 8), seeds=(0,))
    outcomes = {o.cell.shots: o for o in _backend(compute, 2, max_retries=2).run(expand(spec))}
    assert outcomes[8].ok
    picky = outcomes[1]
    assert picky.error.endswith("_Picky: picky failure")
    assert picky.exception is None  # could not be rebuilt in the driver; the message is kept
    assert outcomes[2].error.startswith("the cell's result could not be sent back:")
    assert "MemoryError: no room" in outcomes[4].error and outcomes[4].attempts == 3


def test_workers_die_with_the_driver(tmp_path):
    """A driver killed by SIGKILL (no cleanup runs) takes its workers with it."""
    import signal
    import subprocess
    import sys
    import textwrap

    pids = tmp_path / "pids"
    pids.mkdir()
    script = textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        from miascale.experiments import SweepSpec, expand
        from miascale.experiments.backends import LocalBackend
        def run_cell(cell):
            (Path({str(pids)!r}) / str(os.getpid())).touch()
            time.sleep(120)
        spec = SweepSpec(datasets=("d1",), backbones=("b1",), shots=(1, 2), seeds=(0,),
                         variants=("lira-online",), shadow_models=4, fpr=(0.1,))
        list(LocalBackend(run_cell, workers=2).run(expand(spec)))
    """)
    driver = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = [int(p.name) for p in pids.iterdir()]
    assert len(workers) == 2
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    deadline = time.monotonic() + 10
    alive = list(workers)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _alive(pid)]
        time.sleep(0.05)
    for pid in alive:  # do not leave them behind when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not alive


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"  # a zombie (reaped by init later) is dead
    except FileNotFoundError:
        return False


def test_automatic_workers_respect_a_containers_cgroup_limits(tmp_path):
    from miascale.experiments.processes import available_memory, cgroup_cpus

    root = tmp_path / "cgroup"
    root.mkdir()
    assert cgroup_cpus(str(root)) is None  # no cgroup files: the affinity and /proc decide
    (root / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpus(str(root)) is None
    (root / "cpu.max").write_text("150000 100000\n")  # docker --cpus=1.5
    assert cgroup_cpus(str(root)) == 1.5
    assert usable_cores(str(root)) == min(2, usable_cores("/nonexistent"))
    (root / "memory.max").write_text(f"{4 << 30}\n")
    (root / "memory.current").write_text(f"{1 << 30}\n")
    assert available_memory(str(root)) <= 3 << 30
    (root / "memory.current").write_text(f"{2 << 30}\n")  # 2 GiB left: one 3 GB worker at most
    (root / "cpu.max").write_text("800000 100000\n")
    assert auto_workers("cpu", 50, str(root)) == 1
