"""Run a sweep's cells, resumably: cells already in the store are skipped, each finished cell is
recorded at once (one transaction), so a sweep killed at any moment loses at most the cell in flight.

The ``run_cell`` callback does the work of one cell and returns ``(rows, artifacts)``: the result rows
(see :meth:`ResultStore.record_cell`) and an optional path of the cell's artifact files. The callback
must write those files atomically (``miascale.paths.atomic_write_bytes`` / ``atomic_path``) and before
returning, so that a recorded cell always points at complete artifacts; a cell killed mid-way leaves
at most stray files that its rerun overwrites.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from rich.markup import escape

from miascale.console import err, progress_bar
from miascale.experiments.grid import Cell
from miascale.experiments.store import ResultStore

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
    failures: tuple[tuple[str, str], ...] = ()  # (cell_id, one-line error) per failed cell

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
    run_cell: RunCell,
    *,
    quiet: bool = False,
    on_error: str = "raise",
) -> SweepSummary:
    """Run every cell not yet done in ``store``, in order, recording each as soon as it finishes.

    ``on_error="raise"`` stops at the first failing cell and re-raises its exception (the cells
    recorded so far stay recorded; a rerun resumes after them). ``on_error="record"`` records the
    failure (status ``failed``, with the error message; retried on the next run) and goes on.
    A progress bar with ETA on stderr names the current cell unless ``quiet``.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    t0 = time.perf_counter()
    unique: dict[str, Cell] = {}
    for c in cells:
        unique.setdefault(c.cell_id, c)
    done = store.done_cells()
    todo = [c for cid, c in unique.items() if cid not in done]
    skipped = len(unique) - len(todo)
    ran = 0
    failures: list[tuple[str, str]] = []

    with progress_bar(disable=quiet) as progress:
        task = progress.add_task("sweep", total=len(unique), completed=skipped)
        for i, cell in enumerate(todo, 1):
            progress.update(task, description=escape(f"[{i}/{len(todo)}] {cell.label}"))
            start = time.perf_counter()
            try:
                rows, artifacts = run_cell(cell)
                store.record_cell(cell, rows, time.perf_counter() - start, artifacts)
            except Exception as e:
                if on_error == "raise":
                    raise
                message = "".join(traceback.format_exception_only(e)).strip()
                store.record_cell(
                    cell, [], time.perf_counter() - start, None, status="failed", error=message
                )
                failures.append((cell.cell_id, message))
                if not quiet:
                    progress.console.print(
                        f"[red]cell {escape(cell.label)} failed:[/red] {escape(message)}"
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
