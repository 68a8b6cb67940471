"""The local backend's worker processes: several cells at once on one machine, one thread each.

A cell's training is a few large GEMMs between stretches of single-threaded work (the attack,
its bootstrap, ε, tails, writing the artifacts). One cell per core, each with one thread, keeps
every core on arithmetic (what Ray's one-CPU tasks do); measured in ``benchmarks/README.md``.

Each cell runs in a child **forked** from the driver right before it starts, so the child
shares the driver's loaded features without copying or pickling them; it writes its artifacts
into the run directory (atomically, as in-process) and sends back its rows. The driver alone
writes the store. Forked children must stay at one thread: GNU OpenMP (torch's CPU thread pool)
hangs in a forked child that asks for more threads once the parent has used its pool. Linux and
CPU only (CUDA cannot be used in a forked child).

Contract (failures, retries, what a crash loses): docs/design/backends.md.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import pickle
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from multiprocessing.connection import wait

from miascale.errors import MiascaleError
from miascale.experiments.grid import Cell

#: memory set aside per worker by :func:`auto_workers`: an S = 256, K = 257 cell peaks near 2 GB
WORKER_MEMORY = 3 << 30


CGROUP = "/sys/fs/cgroup"  # cgroup v2, as a container sees it


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return None


def cgroup_cpus(root: str = CGROUP) -> float | None:
    """The CPU quota of this process's cgroup (``cpu.max``: quota / period), None if unlimited."""
    text = _read(f"{root}/cpu.max")
    try:
        quota, period = text.split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (AttributeError, ValueError):
        return None


def usable_cores(root: str = CGROUP) -> int:
    """The cores this process may run on: its CPU affinity, within its cgroup's CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpus(root)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def available_memory(root: str = CGROUP) -> int | None:
    """Bytes of memory this process may still use: ``MemAvailable`` of ``/proc/meminfo``, within
    its cgroup's limit (``memory.max - memory.current``); None where neither is known."""
    found = []
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemAvailable:"):
            found.append(int(line.split()[1]) * 1024)
    limit, used = _read(f"{root}/memory.max"), _read(f"{root}/memory.current")
    if limit and used and limit.strip() != "max":
        try:
            found.append(max(0, int(limit) - int(used)))
        except ValueError:
            pass
    return min(found) if found else None


def can_fork(device: str) -> bool:
    """Worker processes are forked: Linux, and a CPU device only."""
    return sys.platform.startswith("linux") and str(device) == "cpu"


def auto_workers(device: str, n_cells: int, root: str = CGROUP) -> int:
    """How many cells to run at once when ``--workers`` is not given: one per usable core, no
    more than there are cells or than the available memory holds at :data:`WORKER_MEMORY` each
    (cgroup limits included); 1 (this process, all threads) off Linux, on a GPU, on one core or
    for a single cell."""
    if not can_fork(device):
        return 1
    n = min(usable_cores(root), n_cells)
    memory = available_memory(root)
    if memory is not None:
        n = min(n, memory // WORKER_MEMORY)
    return max(1, n)


def check_workers(workers: int | None, device: str) -> int | None:
    """``--workers``: None (automatic) or an integer ≥ 1; more than 1 needs a forkable device."""
    if workers is None:
        return None
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise MiascaleError(f"--workers must be an integer ≥ 1, got {workers!r}.")
    if workers > 1 and not can_fork(device):
        raise MiascaleError(
            f"--workers {workers} runs cells in forked processes, which needs Linux and "
            f"--device cpu (here: {sys.platform}, {device}). Use --workers 1, or --backend ray "
            "for several GPUs (docs/cluster.md)."
        )
    return workers


def _one_thread(driver: int) -> None:
    """In a forked child: torch and the BLAS libraries at one thread; Ctrl-C is the driver's,
    and the child dies with the driver (``driver``: its pid); prints and warnings go straight to
    the streams (the driver's progress bar redirects them through its console, whose lock
    another thread of the driver may have held at the fork)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - Linux has prctl
        pass
    if os.getppid() != driver:  # the driver died before prctl
        os._exit(1)
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    import torch

    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - scikit-learn brings threadpoolctl
        pass


def _round_trips(obj: object) -> bool:
    try:
        pickle.loads(pickle.dumps(obj))
    except Exception:
        return False
    return True


def _child(conn, attempt_cell: Callable, cell: Cell, retries: int, driver: int) -> None:
    """Body of a forked worker: run the cell (``retries`` out-of-memory retries left), send
    its outcome — the exception only if it survives pickling; a result that cannot be sent
    becomes a failed outcome with the reason."""
    from miascale.experiments.backends import CellOutcome, error_message

    start = time.perf_counter()
    try:
        _one_thread(driver)
        outcome = attempt_cell(cell, retries)
    except BaseException as e:  # not an Exception (SystemExit, ...): the driver gets a message
        outcome = CellOutcome(cell, seconds=time.perf_counter() - start, error=error_message(e))
    if outcome.exception is not None and not _round_trips(outcome.exception):
        outcome = replace(outcome, exception=None)
    try:
        data = pickle.dumps(outcome)
    except Exception as e:
        message = f"the cell's result could not be sent back: {error_message(e)}"
        data = pickle.dumps(CellOutcome(cell, seconds=outcome.seconds, error=message))
    conn.send_bytes(data)
    conn.close()


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else ""
        hint = " (the out-of-memory killer?)" if exitcode == -signal.SIGKILL else ""
        return f"the worker process was killed by signal {-exitcode} {name}{hint}".rstrip()
    return f"the worker process died without a result (exit code {exitcode})"


def run_in_processes(
    attempt_cell: Callable,
    cells: Sequence[Cell],
    workers: int,
    *,
    max_retries: int = 0,
    prepare: Callable[[Cell], object] | None = None,
    on_start: Callable[[int, Cell], None] | None = None,
) -> Iterator:
    """Yield one outcome per cell as the cells finish, ``workers`` of them at a time.

    ``attempt_cell(cell, retries)`` runs in the child and returns a ``CellOutcome`` (its own
    retries of out-of-memory exceptions, at most ``retries``, included); ``prepare(cell)`` runs
    in the driver first, so the child inherits what it loads. A child that dies without a
    result is forked again while the cell's attempts (dead workers and out-of-memory retries
    together) are at most ``max_retries + 1``, then its cell fails. Children still running when
    the caller stops (an exception, ``close()``) are killed; they die with the driver too.
    """
    from miascale.experiments.backends import CellOutcome

    ctx = mp.get_context("fork")
    queue = list(cells)[::-1]  # pop() takes the next cell
    in_flight: dict = {}  # receiving end → (process, cell, first start time, attempts so far)
    started = 0

    def fork(cell: Cell, start: float, attempts: int) -> None:
        receive, send = ctx.Pipe(duplex=False)
        args = (send, attempt_cell, cell, max_retries - attempts, os.getpid())
        proc = ctx.Process(target=_child, args=args, daemon=True)
        with warnings.catch_warnings():  # Python ≥ 3.12 warns about forking with threads
            warnings.simplefilter("ignore", DeprecationWarning)
            proc.start()
        send.close()
        in_flight[receive] = (proc, cell, start, attempts)

    def receive_outcome(receive, proc) -> tuple[object, str | None]:
        """(outcome or None, why there is none); the pipe is closed and the child joined."""
        try:
            return pickle.loads(receive.recv_bytes()), None
        except EOFError:
            return None, None  # the child died without a result
        except Exception as e:  # a result that cannot be read fails the cell
            return None, f"the cell's result could not be read: {type(e).__name__}: {e}"
        finally:
            receive.close()
            proc.join()

    try:
        while queue or in_flight:
            while queue and len(in_flight) < workers:
                cell = queue.pop()
                started += 1
                if on_start is not None:
                    on_start(started, cell)
                if prepare is not None:
                    prepare(cell)
                fork(cell, time.perf_counter(), 0)
            for receive in wait(list(in_flight)):
                proc, cell, start, before = in_flight.pop(receive)
                outcome, unreadable = receive_outcome(receive, proc)
                if outcome is None:
                    attempts = before + 1
                    if unreadable is None and attempts <= max_retries:
                        fork(cell, start, attempts)  # a dead worker: again, in a new one
                        continue
                    message = unreadable or _death(proc.exitcode)
                    if max_retries and unreadable is None:
                        message += f" (after {attempts} attempts)"
                    # this fork's attempt (the earlier ones are added below)
                    error = MiascaleError(f"cell {cell.label}: {message}")
                    outcome = CellOutcome(cell, error=message, exception=error)
                # attempts and time over every fork of the cell
                yield replace(
                    outcome, attempts=before + outcome.attempts,
                    seconds=time.perf_counter() - start,
                )  # fmt: skip
    finally:
        for receive, (proc, *_) in in_flight.items():
            proc.kill()
            proc.join()
            receive.close()
