"""Run a sweep's cells, resumably: cells already in the store are skipped, each finished cell is
recorded at once (one transaction), so a sweep killed at any moment loses at most the cell in flight.

The ``run_cell`` callback does the work of one cell and returns ``(rows, artifacts)``: the result rows
(see :meth:`ResultStore.record_cell`) and an optional path of the cell's artifact files. The callback
must write those files atomically (``miascale.paths.atomic_write_bytes`` / ``atomic_path``) and before
returning, so that a recorded cell always points at complete artifacts; a cell killed mid-way leaves
at most stray files that its rerun overwrites.

Where the cells run is up to a backend (:mod:`miascale.experiments.backends`: in this process, or
as Ray tasks on a cluster); either way this process alone writes the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path

from rich.markup import escape

from miascale.console import err, progress_bar
from miascale.experiments.backends import Backend, LocalBackend, error_message, safe_relative
from miascale.experiments.grid import Cell
from miascale.experiments.store import ResultStore
from miascale.paths import atomic_write_bytes

RunCell = Callable[[Cell], tuple[list[dict], str | None]]
ON_ERROR = ("raise", "record")


@dataclass(frozen=True)
class SweepSummary:
    """What :func:`run_sweep` did. ``total = skipped + ran + failed`` (distinct cells)."""

    total: int
    skipped: int  # already done in the store before this run
    ran: int  # run and recorded as done in this run
    failed: int  # raised an exception (recorded as failed with on_error="record")
    seconds: float  # wall time of this run
    failures: tuple[tuple[str, str, str], ...] = ()  # (cell_id, error, label) per failed cell

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "skipped": self.skipped,
            "ran": self.ran,
            "failed": self.failed,
            "seconds": self.seconds,
            "failures": [list(f) for f in self.failures],
        }


def run_sweep(
    cells: Iterable[Cell],
    store: ResultStore,
    run_cell: RunCell | None = None,
    *,
    quiet: bool = False,
    on_error: str = "raise",
    backend: Backend | None = None,
) -> SweepSummary:
    """Run every cell not yet done in ``store``, recording each as soon as it finishes.

    The work of each cell is done by ``backend`` (see :mod:`miascale.experiments.backends`) — by
    default a :class:`~miascale.experiments.backends.LocalBackend` calling ``run_cell`` in this
    process, in order; give exactly one of ``run_cell`` and ``backend``. Whatever the backend, this
    process alone writes the store (and the artifact files a remote cell returns, atomically and
    before the cell is recorded).

    ``on_error="raise"`` stops at the first failing cell and re-raises its exception (the cells
    recorded so far stay recorded; a rerun resumes after them). ``on_error="record"`` records the
    failure (status ``failed``, with the error message; retried on the next run) and goes on.
    A progress bar with ETA on stderr names the current cell unless ``quiet``.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if (run_cell is None) == (backend is None):
        raise ValueError("give exactly one of run_cell and backend")
    if backend is None:
        backend = LocalBackend(run_cell)
    t0 = time.perf_counter()
    unique: dict[str, Cell] = {}
    for c in cells:
        unique.setdefault(c.cell_id, c)
    done = store.done_cells()
    todo = [c for cid, c in unique.items() if cid not in done]
    skipped = len(unique) - len(todo)
    ran = 0
    failures: list[tuple[str, str, str]] = []
    n = len(todo)
    run_dir = Path(store.path).parent

    with progress_bar(disable=quiet) as progress:
        task = progress.add_task("sweep", total=len(unique), completed=skipped)

        def on_start(i: int, cell: Cell) -> None:
            if backend.name == "local":
                progress.update(task, description=escape(f"[{i}/{n}] {cell.label}"))

        finished = 0
        with closing(backend.run(todo, on_start)) as outcomes:
            for o in outcomes:
                finished += 1
                if backend.name != "local":
                    progress.update(task, description=escape(f"[{finished}/{n}] {o.cell.label}"))
                if o.ok:
                    try:
                        for rel, data in o.files.items():
                            atomic_write_bytes(run_dir / safe_relative(rel), data)
                        store.record_cell(o.cell, o.rows, o.seconds, o.artifacts)
                    except Exception as e:
                        if on_error == "raise":
                            raise
                        o = replace(o, error=error_message(e), exception=e)
                if not o.ok:
                    if on_error == "raise":
                        if o.exception is not None:
                            raise o.exception
                        raise RuntimeError(f"cell {o.cell.label} failed: {o.error}")
                    store.record_cell(o.cell, [], o.seconds, None, status="failed", error=o.error)
                    failures.append((o.cell.cell_id, o.error, o.cell.label))
                    if not quiet:
                        progress.console.print(
                            f"[red]cell {escape(o.cell.label)} failed:[/red] {escape(o.error)}"
                        )
                else:
                    ran += 1
                progress.advance(task)

    if failures and not quiet:
        err.print(
            f"{len(failures)} of {len(unique)} cells failed (recorded as failed; rerun to retry)."
        )
    return SweepSummary(
        total=len(unique),
        skipped=skipped,
        ran=ran,
        failed=len(failures),
        seconds=time.perf_counter() - t0,
        failures=tuple(failures),
    )
