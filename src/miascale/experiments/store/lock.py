"""The exclusive run-directory lock of a writing sweep (``RUN_DIR/.lock``)."""

from __future__ import annotations

import os
from pathlib import Path

from miascale.errors import MiascaleError
from miascale.experiments.store.schema import LOCK_NAME

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX: no run-directory lock
    fcntl = None  # type: ignore[assignment]


class RunDirLock:
    """An exclusive, non-blocking ``flock`` on ``RUN_DIR/.lock``, held by the one writing sweep.

    The operating system releases it when the process ends, however it ends (``kill -9``
    included), so a stale lock file never blocks a later sweep.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunDirLock:
        if fcntl is None:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise MiascaleError(
                f"Cannot create the lock file {self.path}: {e}. Choose a writable --out."
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            except OSError:
                holder = ""
            os.close(fd)
            who = f" (process {holder})" if holder.isdigit() else ""
            raise MiascaleError(
                f"another sweep is writing to {self.path.parent}{who}. Wait for it to finish, "
                f"or give this sweep another --out; a run directory has one writer at a time."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
