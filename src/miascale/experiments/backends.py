"""Execution backends of a sweep: where each cell's work runs (see ``docs/cluster.md``).

A backend (:class:`Backend`, built by :func:`make_backend`) takes the cells still to do and
yields one :class:`CellOutcome` per cell as they finish; the driver running
:func:`miascale.experiments.runner.run_sweep` alone records them in the store.
:class:`LocalBackend` runs the cells on this machine (in this process, in order, or in forked
one-thread worker processes, :mod:`miascale.experiments.processes`); :class:`RayBackend` runs
each as a Ray task (features put in the object store once per group, artifact bytes returned to
the driver, retries only for dead workers and lack of memory).

Contract (the single writer, artifacts, failures and retries): docs/design/backends.md.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from miascale.errors import MiascaleError
from miascale.experiments.grid import Cell

BACKENDS = ("local", "ray")
DEFAULT_MAX_RETRIES = 2

# compute(cell, features, run_dir, device) -> (rows, artifacts); see cells.compute_cell
ComputeCell = Callable[[Cell, Any, Path, str], tuple[list[dict], str | None]]
RunCell = Callable[[Cell], tuple[list[dict], str | None]]
OnStart = Callable[[int, Cell], None]


@dataclass(frozen=True)
class CellOutcome:
    """The result of one cell: its rows and artifacts, or the error that made it fail.

    ``files`` maps paths relative to the run directory to file contents that the driver must write
    (atomically) before recording the cell — artifacts made on another machine. ``exception`` is
    the original exception where there is one (``on_error="raise"`` re-raises it).
    """

    cell: Cell
    rows: list[dict] = field(default_factory=list)
    artifacts: str | None = None
    seconds: float = 0.0
    files: dict[str, bytes] = field(default_factory=dict)
    error: str | None = None
    exception: BaseException | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None


class Backend(Protocol):
    name: str

    def run(self, cells: Sequence[Cell], on_start: OnStart | None = None) -> Iterator[CellOutcome]:
        """Yield one outcome per cell, as the cells finish (any order)."""
        ...


def error_message(exc: BaseException) -> str:
    """A one-line (or short) message for a failed cell, as stored in the ``cells.error`` column."""
    return "".join(traceback.format_exception_only(exc)).strip()


def retryable_exceptions() -> tuple[type[BaseException], ...]:
    """Exceptions from a cell's code that are worth retrying: running out of (GPU) memory."""
    types: list[type[BaseException]] = [MemoryError]
    try:
        import torch

        oom = getattr(torch, "OutOfMemoryError", None) or getattr(
            torch.cuda, "OutOfMemoryError", None
        )
        if isinstance(oom, type) and issubclass(oom, BaseException):
            types.append(oom)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return tuple(types)


def feature_key(cell: Cell) -> tuple:
    """Cells with the same key share one feature set (FiLM cells: one raw dataset)."""
    return (cell.dataset, cell.backbone, cell.resolution, cell.min_per_class, cell.finetune)


def _check_retries(max_retries: int) -> int:
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise MiascaleError(f"--max-retries must be an integer ≥ 0, got {max_retries!r}.")
    return max_retries


# ----------------------------------------------------------------------------- local


class LocalBackend:
    """Runs ``run_cell(cell)`` on this machine: in this process, cell after cell, in order, or
    ``workers`` cells at a time (most expensive first) in forked worker processes with one
    thread each (:mod:`miascale.experiments.processes`; ``workers=None``:
    :func:`~miascale.experiments.processes.auto_workers`, one per core on a CPU).

    ``max_retries`` extra attempts are made only for out-of-memory exceptions (see
    :func:`retryable_exceptions`) and for worker processes that die without a result; any other
    exception fails the cell at once. A crash of this process ends the sweep; rerunning it
    resumes (the store keeps every finished cell). ``prepare(cell)``, if given, runs first (in
    this process) and outside that error handling: what it raises (the features cannot be
    loaded, say) stops the sweep, as it does on the Ray backend, where the features are loaded
    by the driver.
    """

    name = "local"

    def __init__(
        self,
        run_cell: RunCell,
        *,
        max_retries: int = 0,
        prepare: Callable[[Cell], object] | None = None,
        workers: int | None = 1,
        device: str = "cpu",
    ):
        from miascale.experiments.processes import check_workers

        self.run_cell = run_cell
        self.max_retries = _check_retries(max_retries)
        self.prepare = prepare
        self.workers = check_workers(workers, device)
        self.device = device

    def attempt(self, cell: Cell, retries: int | None = None) -> CellOutcome:
        """Run one cell, retrying out-of-memory exceptions (at most ``retries`` times, default
        ``max_retries``); the outcome holds any other error."""
        retries = self.max_retries if retries is None else retries
        retry_on = retryable_exceptions()
        start = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                rows, artifacts = self.run_cell(cell)
            except Exception as e:
                if isinstance(e, retry_on) and attempt <= retries:
                    continue
                return CellOutcome(
                    cell, seconds=time.perf_counter() - start, error=error_message(e),
                    exception=e, attempts=attempt,
                )  # fmt: skip
            return CellOutcome(cell, rows, artifacts, time.perf_counter() - start, attempts=attempt)

    def run(self, cells: Sequence[Cell], on_start: OnStart | None = None) -> Iterator[CellOutcome]:
        from miascale.experiments.processes import auto_workers, run_in_processes

        workers = self.workers or auto_workers(self.device, len(cells))
        if workers > 1:
            from miascale.experiments.runner import expected_cost

            # the most expensive cells first: the cheap ones fill in at the end
            yield from run_in_processes(
                self.attempt, sorted(cells, key=expected_cost, reverse=True), workers,
                max_retries=self.max_retries, prepare=self.prepare, on_start=on_start,
            )  # fmt: skip
            return
        for i, cell in enumerate(cells, 1):
            if on_start is not None:
                on_start(i, cell)
            if self.prepare is not None:
                self.prepare(cell)
            yield self.attempt(cell)


# ----------------------------------------------------------------------------- ray


def _import_ray():
    try:
        import ray
    except ImportError:
        raise MiascaleError(
            "The ray backend needs Ray, which is not installed: pip install 'miascale[ray]' "
            "(or use --backend local, the default)."
        ) from None
    return ray


def _run_task(compute: ComputeCell, cell: Cell, features: Any, device: str):
    """Body of one Ray task: compute the cell in a private folder, return rows and file bytes."""
    tmp = Path(tempfile.mkdtemp(prefix="miascale-cell-"))
    try:
        start = time.perf_counter()
        rows, artifacts = compute(cell, features, tmp, device)
        seconds = time.perf_counter() - start
        files = {
            p.relative_to(tmp).as_posix(): p.read_bytes()
            for p in sorted(tmp.rglob("*"))
            if p.is_file() and not p.name.startswith(".")  # stray temporary files
        }
        return rows, artifacts, files, seconds, os.getpid()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _first_line(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}".rstrip(": ")


def _ray_error_message(ray, exc: BaseException, max_retries: int) -> tuple[str, BaseException]:
    """(message, exception to re-raise) of a failed task."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, ray.exceptions.RayError):  # e.g. an argument could not be unpickled
            return _first_line(cause), cause
        if isinstance(cause, BaseException):
            message = error_message(cause)
            if isinstance(cause, retryable_exceptions()) and max_retries:
                message += f" (after {max_retries + 1} attempts)"
            return message, cause
        return f"{exc.function_name} failed: {str(exc).strip().splitlines()[-1]}", exc
    message = _first_line(exc)
    if isinstance(exc, ray.exceptions.WorkerCrashedError | ray.exceptions.OutOfMemoryError):
        message += f" (after {max_retries + 1} attempts)"
    return message, exc


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail fast (Ray itself retries for minutes) when a ``host:port`` address does not answer."""
    import socket

    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return  # "auto", "ray://…": let Ray resolve it
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise MiascaleError(
            f"Nothing answers at the Ray address {address!r} ({e}). Start the head node with "
            "`ray start --head` and pass the address it prints (see docs/cluster.md)."
        ) from None


def safe_relative(path: str) -> PurePosixPath:
    """A relative path inside the run directory, or a MiascaleError."""
    p = PurePosixPath(path)
    if p.is_absolute() or not p.parts or ".." in p.parts:
        raise MiascaleError(
            f"A cell returned an artifact path outside the run directory: {path!r}."
        )
    return p


class RayBackend:
    """Runs each cell as a Ray task (``num_cpus`` per task, one GPU when ``device`` is CUDA).

    Uses the Ray instance this process is already connected to, if any; otherwise connects to
    ``address`` (``ray start --head`` prints it), or starts a local instance with all of this
    machine's cores when ``address`` is None — and shuts it down again at the end of :meth:`run`.

    ``memo.get(dataset, backbone, resolution, min_per_class)`` loads a feature set in the driver
    (a :class:`~miascale.experiments.cells.FeatureMemo`); ``compute(cell, features, run_dir,
    device)`` is the unit of work, :func:`~miascale.experiments.cells.compute_cell` by default. It
    must be picklable (a module-level function; tests pass closures, which cloudpickle ships by
    value). At most ``max_in_flight`` tasks are submitted at a time (default: twice the cluster's
    CPUs), so only the feature sets of the cells in flight are held in the object store.
    """

    name = "ray"

    def __init__(
        self,
        memo: Any,
        device: str = "cpu",
        *,
        address: str | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        compute: ComputeCell | None = None,
        num_cpus: float = 1,
        max_in_flight: int | None = None,
    ):
        self.ray = _import_ray()
        self.memo = memo
        self.device = device
        self.address = address
        self.max_retries = _check_retries(max_retries)
        if compute is None:
            from miascale.experiments.cells import compute_cell as compute
        self.compute = compute
        self.num_cpus = num_cpus
        self.max_in_flight = max_in_flight
        self.puts = 0  # feature sets put in the object store by the last run (one per key)
        self.workers: set[int] = set()  # worker process ids that finished a task
        self._started = False  # this backend started (or connected) Ray: shut it down after run

    def connect(self) -> None:
        """Connect to Ray now (fail early); :meth:`run` does it otherwise. A Ray instance that this
        backend started is shut down at the end of :meth:`run`."""
        ray = self.ray
        if ray.is_initialized():
            return
        if self.address is not None:
            _check_reachable(self.address)
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            ray.init(
                address=self.address, include_dashboard=False, log_to_driver=False,
                logging_level="ERROR", configure_logging=True,
            )  # fmt: skip
        except ConnectionError as e:
            raise MiascaleError(
                f"Could not connect to the Ray cluster at {self.address!r}: {e}. Start it with "
                "`ray start --head` and pass the address it prints."
            ) from None
        self._started = True

    def run(self, cells: Sequence[Cell], on_start: OnStart | None = None) -> Iterator[CellOutcome]:
        ray = self.ray
        in_flight: dict[Any, tuple[Cell, float]] = {}
        try:
            if cells:
                self.connect()
                yield from self._run(list(cells), on_start, in_flight)
        finally:
            for ref in in_flight:  # on_error="raise", or the driver interrupted
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # best effort: the task may have finished
                    pass
            if self._started:
                ray.shutdown()
                self._started = False

    def _run(
        self, cells: list[Cell], on_start: OnStart | None, in_flight: dict
    ) -> Iterator[CellOutcome]:
        ray = self.ray
        retry_on = list(retryable_exceptions())
        gpu = 1 if str(self.device).startswith("cuda") else 0
        task = ray.remote(_run_task).options(
            num_cpus=self.num_cpus, num_gpus=gpu, max_retries=self.max_retries,
            retry_exceptions=retry_on if self.max_retries else False,
        )  # fmt: skip
        from miascale.experiments.runner import expected_cost

        # group the cells by feature set, so each set is in the object store only while its
        # cells run; within a group the most expensive first (the cheap ones fill in at the end)
        order = {k: i for i, k in enumerate(dict.fromkeys(feature_key(c) for c in cells))}
        queue = deque(sorted(cells, key=lambda c: (order[feature_key(c)], -expected_cost(c))))
        remaining = Counter(feature_key(c) for c in cells)
        refs: dict[tuple, Any] = {}
        self.puts = 0
        limit = self.max_in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        submitted = 0
        while queue or in_flight:
            while queue and len(in_flight) < limit:
                cell = queue.popleft()
                key = feature_key(cell)
                if key not in refs:
                    refs[key] = ray.put(self.memo.get(*key))
                    self.puts += 1
                submitted += 1
                if on_start is not None:
                    on_start(submitted, cell)
                ref = task.remote(self.compute, cell, refs[key], self.device)
                in_flight[ref] = (cell, time.perf_counter())
            [ref], _ = ray.wait(list(in_flight), num_returns=1)
            cell, t_submit = in_flight.pop(ref)
            key = feature_key(cell)
            remaining[key] -= 1
            if remaining[key] == 0:  # the group is done: free its features
                del refs[key]
                forget = getattr(self.memo, "forget", None)
                if forget is not None:
                    forget(*key)
            try:
                rows, artifacts, files, seconds, pid = ray.get(ref)
            except Exception as e:
                message, exc = _ray_error_message(ray, e, self.max_retries)
                yield CellOutcome(
                    cell, seconds=time.perf_counter() - t_submit, error=message, exception=exc
                )
            else:
                self.workers.add(pid)
                yield CellOutcome(cell, rows, artifacts, seconds, files)
            del ref


def make_backend(
    name: str,
    run_dir: Path,
    memo: Any,
    device: str = "cpu",
    *,
    address: str | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    compute: ComputeCell | None = None,
    workers: int | None = None,
) -> LocalBackend | RayBackend:
    """The backend called ``name`` (``local`` or ``ray``) for a sweep into ``run_dir``;
    ``workers``: cells at once on the local backend (None: one per core on a CPU)."""
    if name not in BACKENDS:
        raise MiascaleError(f"Unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}.")
    if name == "local":
        if address is not None:
            raise MiascaleError("--address applies only to --backend ray.")
        from miascale.experiments.cells import make_run_cell

        return LocalBackend(
            make_run_cell(Path(run_dir), memo, device, compute=compute),
            max_retries=max_retries,
            prepare=lambda cell: memo.get(*feature_key(cell)),
            workers=workers,
            device=device,
        )
    if workers is not None:
        raise MiascaleError("--workers applies only to --backend local (Ray runs a cell per CPU).")
    return RayBackend(memo, device, address=address, max_retries=max_retries, compute=compute)
