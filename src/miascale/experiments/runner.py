"""Run a sweep's cells, resumably: cells already in the store are skipped, each finished cell is
recorded at once (one transaction), so a sweep killed at any moment loses at most the cell in
flight.

:func:`run_sweep` hands the cells still to do to a backend (:mod:`miascale.experiments.backends`)
and records every outcome; the ``run_cell`` callback must write its artifact files atomically
before returning. :func:`check_done_cells` says which done cells to recompute before resuming
(missing or corrupt artifacts, changed data).

Contract (the callback, artifacts, the single writer): docs/design/backends.md.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Collection, Iterable
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path

from rich.markup import escape

from miascale.console import err, progress_bar
from miascale.errors import MiascaleError
from miascale.experiments.backends import Backend, LocalBackend, error_message, safe_relative
from miascale.experiments.grid import Cell
from miascale.experiments.store import ResultStore
from miascale.paths import atomic_write_bytes

RunCell = Callable[[Cell], tuple[list[dict], str | None]]
Fingerprint = Callable[[Cell], str | None]
ON_ERROR = ("raise", "record")
ARTIFACT_FILE = "signals.npz"


def expected_cost(cell: Cell) -> float:
    """Relative cost of a cell for the time-left estimate: its models times its pool size plus a
    fixed part (a sweep over S = 1..256 fits seconds ~ a + b*S with a ~ 4 S-units per cell;
    measured: benchmarks/README.md). An "all classes" cell counts 10 classes."""
    return (cell.shadow_models + 1) * (cell.shots * (cell.classes or 10) + 40)


def time_left(spent: float, done_cost: float, left_cost: float) -> float:
    """Seconds left, extrapolating the seconds per unit of :func:`expected_cost` so far."""
    return spent / done_cost * left_cost if done_cost > 0 else float("nan")


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _artifact_sha256(run_dir: Path, artifacts: str | None) -> str | None:
    if not artifacts:
        return None
    p = run_dir / artifacts / ARTIFACT_FILE
    return file_sha256(p) if p.is_file() else None


def check_done_cells(
    cells: Iterable[Cell],
    store: ResultStore,
    fingerprint: Fingerprint | None = None,
    *,
    recompute_changed: bool = False,
    artifact_file: str | None = ARTIFACT_FILE,
    quiet: bool = False,
) -> set[str]:
    """Before resuming: which done cells of ``cells`` must be computed again.

    - A done cell whose recorded artifacts folder lacks ``artifact_file`` (deleted, never
      written), or whose file no longer matches its recorded sha256 (corrupt, replaced), is
      recomputed; this is said on stderr.
    - A done cell whose recorded data ``fingerprint`` differs from ``fingerprint(cell)`` now (the
      dataset or the features changed under the same name) is an error naming the changed data,
      unless ``recompute_changed``: then those cells are recomputed. Cells recorded without a
      fingerprint (by an older miascale) are reused unchecked, and a note says so.

    Returns the ids of the done cells to recompute (give them to :func:`run_sweep` as ``rerun``).
    """
    done = store.done_records()
    run_dir = Path(store.path).parent
    mine = {c.cell_id: c for c in cells if c.cell_id in done}
    missing, corrupt = [], []
    for cid in mine:
        rel = done[cid]["artifacts"]
        if artifact_file is None or not rel:
            continue
        p = run_dir / rel / artifact_file
        if not p.is_file():
            missing.append(cid)
        elif done[cid]["artifact_sha256"] and file_sha256(p) != done[cid]["artifact_sha256"]:
            corrupt.append(cid)
    rerun = {*missing, *corrupt}
    for ids, what in ((missing, "lack their artifacts"), (corrupt, "have corrupt artifacts")):
        if ids and not quiet:
            err.print(
                f"{len(ids)} done cell(s) {what} ({artifact_file}); recomputing them: "
                + ", ".join(mine[cid].label for cid in ids[:5]) + (" …" if len(ids) > 5 else ""),
                markup=False, highlight=False,
            )  # fmt: skip
    if fingerprint is None:
        return rerun
    unknown = 0
    changed: dict[str, list[str]] = {}  # "dataset × backbone" → cell ids
    for cid, c in mine.items():
        old = done[cid]["fingerprint"]
        if old is None:
            unknown += 1
            continue
        new = fingerprint(c)
        if new is not None and new != old:
            changed.setdefault(f"{c.dataset} (backbone {c.backbone})", []).append(cid)
    if unknown and not quiet:
        err.print(
            f"note: {unknown} done cell(s) were recorded without a data fingerprint (an older "
            f"miascale); they are reused without checking that their data is unchanged.",
            markup=False, highlight=False,
        )  # fmt: skip
    if changed:
        n = sum(len(v) for v in changed.values())
        what = "; ".join(f"{k}: {len(v)} cell(s)" for k, v in changed.items())
        if not recompute_changed:
            raise MiascaleError(
                f"The data changed since {n} done cell(s) of {run_dir} were computed ({what}): "
                f"their recorded fingerprint differs from the data's now. A run never mixes two "
                f"versions of a dataset: restore the data, give this sweep another --out, or "
                f"rerun with --recompute-changed to recompute those cells on the data as it is now."
            )
        if not quiet:
            err.print(
                f"the data changed since {n} done cell(s) were computed ({what}); recomputing "
                f"them (--recompute-changed).",
                markup=False, highlight=False,
            )  # fmt: skip
        for v in changed.values():
            rerun.update(v)
    return rerun


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
    rerun: Collection[str] = (),
    fingerprint: Fingerprint | None = None,
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

    ``rerun`` names done cells to compute again (see :func:`check_done_cells`); ``fingerprint``
    gives the data fingerprint recorded with each finished cell.
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
    done = store.done_cells() - set(rerun)
    todo = [c for cid, c in unique.items() if cid not in done]
    skipped = len(unique) - len(todo)
    ran = 0
    failures: list[tuple[str, str, str]] = []
    n = len(todo)
    run_dir = Path(store.path).parent

    # in a log (stderr not a terminal) no bar, not even its last frame: one plain line per cell
    log_lines = not quiet and not err.is_terminal
    with progress_bar(disable=quiet or log_lines) as progress:
        task = progress.add_task("sweep", total=len(unique), completed=skipped)

        def on_start(i: int, cell: Cell) -> None:
            if backend.name == "local":
                progress.update(task, description=escape(f"[{i}/{n}] {cell.label}"))

        finished = 0
        left_cost = sum(expected_cost(c) for c in todo)
        done_cost = 0.0
        began = time.perf_counter()
        with closing(backend.run(todo, on_start)) as outcomes:
            for o in outcomes:
                finished += 1
                if backend.name != "local":
                    progress.update(task, description=escape(f"[{finished}/{n}] {o.cell.label}"))
                if o.ok:
                    try:
                        for rel, data in o.files.items():
                            atomic_write_bytes(run_dir / safe_relative(rel), data)
                        fp = None if fingerprint is None else fingerprint(o.cell)
                        sha = _artifact_sha256(run_dir, o.artifacts)
                        store.record_cell(
                            o.cell, o.rows, o.seconds, o.artifacts, fingerprint=fp,
                            artifact_sha256=sha,
                        )  # fmt: skip
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
                done_cost += expected_cost(o.cell)
                if log_lines:
                    spent = time.perf_counter() - began
                    eta = time_left(spent, done_cost, left_cost - done_cost)
                    err.print(
                        f"[{finished}/{n}] {o.cell.label} {'done' if o.ok else 'FAILED'} in "
                        f"{o.seconds:.1f} s (elapsed {spent:.0f} s, about {eta:.0f} s left)",
                        markup=False, highlight=False, soft_wrap=True,
                    )  # fmt: skip

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
