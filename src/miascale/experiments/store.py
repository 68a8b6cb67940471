"""The sweep result store: one SQLite database, ``RUN_DIR/results.sqlite`` (see ``docs/store.md``).

Each finished cell is recorded with all of its result rows in one transaction, so after a crash —
``SIGKILL`` or power loss included — a cell is either fully recorded or absent, and a rerun resumes
from exactly the cells that are done. The database runs in WAL journal mode with
``synchronous=FULL``: a committed cell survives power loss, and readers (``sqlite3``, pandas,
DuckDB, …) can query the file while a sweep is writing to it.

Concurrency: one writer at a time. ``ResultStore.open(..., lock=True)`` (what ``miascale sweep``
does) takes an exclusive lock on ``RUN_DIR/.lock``, so a second sweep into the same run directory
stops with a clear message instead of running every remaining cell again. Any number of readers is
fine; :meth:`ResultStore.load` opens the database read-only (``fit`` and ``report`` never write it).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from miascale.errors import MiascaleError
from miascale.experiments.grid import Cell

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX: no run-directory lock
    fcntl = None  # type: ignore[assignment]

SCHEMA_VERSION = 1
DB_NAME = "results.sqlite"
LOCK_NAME = ".lock"
# columns of `cells` added after schema version 1 was released: added to older stores on open,
# NULL (unknown) in their old rows
ADDED_CELL_COLUMNS = ("fingerprint", "artifact_sha256")

# Columns filled from the cell itself.
CELL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("dataset", "TEXT"),
    ("backbone", "TEXT"),
    ("classes", "INTEGER"),
    ("shots", "INTEGER"),
    ("seed", "INTEGER"),
)
# Columns filled from a result row; the first four are required in every row.
REQUIRED_KEYS = ("attack", "variant", "fpr_level", "tpr")
ROW_COLUMNS: tuple[tuple[str, str], ...] = (
    ("attack", "TEXT"),
    ("variant", "TEXT"),
    ("fpr_level", "REAL"),
    ("tpr", "REAL"),
    ("achieved_fpr", "REAL"),
    ("ci_low", "REAL"),
    ("ci_high", "REAL"),
    ("advantage", "REAL"),
    ("true_positives", "INTEGER"),
    ("false_positives", "INTEGER"),
    ("n_pos", "INTEGER"),
    ("n_neg", "INTEGER"),
    ("resolvable", "INTEGER"),  # 0/1, returned as bool
    ("auc", "REAL"),
    ("test_accuracy", "REAL"),
)
BOOL_COLUMNS = frozenset({"resolvable"})
RESULT_COLUMNS: tuple[str, ...] = (
    "cell_id",
    *(n for n, _ in CELL_COLUMNS),
    *(n for n, _ in ROW_COLUMNS),
)
ORDER_BY = "dataset, backbone, classes, shots, seed, attack, variant, fpr_level DESC, cell_id"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT
);
CREATE TABLE IF NOT EXISTS cells (
    cell_id TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    seconds REAL,
    finished_at TEXT,
    artifacts TEXT,
    error TEXT,
    fingerprint TEXT,
    artifact_sha256 TEXT
);
CREATE TABLE IF NOT EXISTS results (
    cell_id TEXT NOT NULL REFERENCES cells(cell_id),
    {", ".join(f"{n} {t}" for n, t in CELL_COLUMNS)},
    {", ".join(f"{n} {t}" + (" NOT NULL" if n in REQUIRED_KEYS else "") for n, t in ROW_COLUMNS)},
    extra TEXT,
    PRIMARY KEY (cell_id, attack, variant, fpr_level)
);
"""


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _plain(v: Any) -> Any:
    """JSON-ready copy: numpy scalars/arrays to Python, tuples to lists, non-finite floats to None."""
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if hasattr(v, "tolist") and not isinstance(v, str | bytes):  # numpy scalar or array
        return _plain(v.tolist())
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if v is None or isinstance(v, str | int | float | bool):
        return v
    raise TypeError(f"{type(v).__name__} is not JSON-serialisable")


def _column_value(name: str, sqltype: str, v: Any) -> Any:
    if v is None:
        return None
    if hasattr(v, "item") and not isinstance(v, str):  # numpy scalar
        v = v.item()
    if sqltype == "TEXT":
        if not isinstance(v, str):
            raise ValueError(f"{name!r} must be a string, got {v!r}")
        return v
    if sqltype == "REAL":
        if not isinstance(v, int | float):
            raise ValueError(f"{name!r} must be a number, got {v!r}")
        return float(v)  # NaN is stored as NULL
    # INTEGER
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int):
        raise ValueError(f"{name!r} must be an integer, got {v!r}")
    return int(v)


def _diff_keys(a: dict, b: dict) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k, object()) != b.get(k, object()))


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


class ResultStore:
    """Sweep results in ``RUN_DIR/results.sqlite``; open with :meth:`ResultStore.open`."""

    def __init__(self, con: sqlite3.Connection, path: Path, *, read_only: bool = False):
        self._con = con
        self.path = path
        self.read_only = read_only
        self._lock: RunDirLock | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, run_dir: str | Path, spec_dict: dict, *, lock: bool = False) -> ResultStore:
        """Create the store in ``run_dir``, or reopen it if it was made for the same sweep spec.

        A store made for a different spec is an error: results of two sweeps never mix. With
        ``lock``, the run directory is locked exclusively (``RUN_DIR/.lock``) until :meth:`close`;
        a second locker gets a :class:`MiascaleError` at once ("another sweep is writing to …").
        """
        run_dir = Path(run_dir)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise MiascaleError(
                f"Cannot create the run directory {run_dir}: {e}. Choose a writable --out."
            ) from None
        path = run_dir / DB_NAME
        spec_json = _canonical(_plain(spec_dict))
        held = RunDirLock(run_dir).acquire() if lock else None
        try:
            con = sqlite3.connect(path, isolation_level=None, timeout=60.0)
        except sqlite3.Error as e:
            if held is not None:
                held.release()
            raise MiascaleError(f"Cannot open the result store {path}: {e}.") from None
        store = cls(con, path)
        store._lock = held
        try:
            store._init(spec_json, run_dir)
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def load(cls, run_dir: str | Path) -> ResultStore:
        """Open the existing store in ``run_dir`` read-only (to fit, to report).

        The database is opened with ``mode=ro`` (so a read-only ``results.sqlite`` or run
        directory is fine); nothing is created, migrated or written.
        """
        path = Path(run_dir) / DB_NAME
        if not path.is_file():
            raise MiascaleError(
                f"No sweep results in {run_dir} ({DB_NAME} is missing). Give the --out directory "
                f"of a `miascale sweep` run."
            )
        uri = path.resolve().as_uri()
        problem: Exception | None = None
        # immutable=1 is the fallback for a read-only folder without the WAL side files, where
        # SQLite cannot open a WAL database with mode=ro alone (no writer can exist there anyway)
        for query in ("?mode=ro", "?mode=ro&immutable=1"):
            try:
                con = sqlite3.connect(uri + query, uri=True, timeout=60.0)
            except sqlite3.Error as e:
                problem = e
                continue
            try:
                meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
                con.execute("SELECT count(*) FROM cells").fetchone()
                con.execute("SELECT count(*) FROM results").fetchone()
            except sqlite3.Error as e:
                con.close()
                problem = e
                continue
            break
        else:
            raise MiascaleError(
                f"{path} is not a usable miascale result store ({problem}). Give the --out "
                f"directory of a `miascale sweep` run."
            )
        store = cls(con, path, read_only=True)
        try:
            if "spec" not in meta:
                raise MiascaleError(
                    f"{path} is not a usable miascale result store (it records no sweep spec). "
                    f"Give the --out directory of a `miascale sweep` run."
                )
            store._check_version(meta)
        except BaseException:
            store.close()
            raise
        return store

    def _check_version(self, meta: dict) -> None:
        if meta.get("schema_version") != str(SCHEMA_VERSION):
            raise MiascaleError(
                f"The result store {self.path} has schema version {meta.get('schema_version')!r}; "
                f"this miascale reads version {SCHEMA_VERSION}. Use the miascale version that wrote "
                f"it, or choose another --out."
            )

    def _init(self, spec_json: str, run_dir: Path) -> None:
        con = self._con
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            con.execute("PRAGMA foreign_keys=ON")
            with self._transaction():
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        con.execute(stmt)
                # stores written before fingerprints were recorded: add the column (NULL = unknown)
                columns = {r[1] for r in con.execute("PRAGMA table_info(cells)")}
                for name in ADDED_CELL_COLUMNS:
                    if name not in columns:
                        con.execute(f"ALTER TABLE cells ADD COLUMN {name} TEXT")
                now = datetime.now(UTC).isoformat(timespec="seconds")
                con.executemany(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                    [
                        ("schema_version", str(SCHEMA_VERSION)),
                        ("spec", spec_json),
                        ("created_at", now),
                    ],
                )
                meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as e:
            raise MiascaleError(
                f"{self.path} is not a usable miascale result store ({e}). Move it away or choose "
                f"another --out."
            ) from None
        self._check_version(meta)
        stored = json.loads(meta["spec"])
        given = json.loads(spec_json)
        if stored != given:
            differ = _diff_keys(stored, given) if isinstance(stored, dict) else ["spec"]
            raise MiascaleError(
                f"The run directory {run_dir} already holds results of a different sweep (it "
                f"differs in: {', '.join(differ)}). Results of two sweeps never mix: give this "
                f"sweep another --out, or rerun with the same flags/spec file to resume the "
                f"existing sweep."
            )

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        # BEGIN IMMEDIATE takes the write lock up front; a second writer waits (busy timeout).
        self._con.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")

    # ------------------------------------------------------------------ reading
    def meta(self) -> dict[str, Any]:
        """The ``meta`` table; ``spec`` parsed from JSON."""
        meta = dict(self._con.execute("SELECT key, value FROM meta").fetchall())
        meta["spec"] = json.loads(meta["spec"])
        return meta

    def done_cells(self) -> set[str]:
        """Ids of the cells recorded with status ``done``."""
        cur = self._con.execute("SELECT cell_id FROM cells WHERE status = 'done'")
        return {r[0] for r in cur}

    def done_records(self) -> dict[str, dict]:
        """Per done cell id: its recorded ``artifacts`` path, data ``fingerprint`` and
        ``artifact_sha256`` (None when unknown: cells recorded by an older miascale)."""
        columns = {r[1] for r in self._con.execute("PRAGMA table_info(cells)")}
        extra = ", ".join(n if n in columns else "NULL" for n in ADDED_CELL_COLUMNS)
        cur = self._con.execute(
            f"SELECT cell_id, artifacts, {extra} FROM cells WHERE status = 'done'"
        )
        return {
            r[0]: {"artifacts": r[1], **dict(zip(ADDED_CELL_COLUMNS, r[2:], strict=True))}
            for r in cur
        }

    def cells(self) -> list[dict]:
        """Every recorded cell (done or failed) as a dict; ``config`` parsed from JSON."""
        cur = self._con.execute(
            "SELECT cell_id, config, status, seconds, finished_at, artifacts, error "
            "FROM cells ORDER BY finished_at, cell_id"
        )
        names = [d[0] for d in cur.description]
        out = []
        for r in cur:
            d = dict(zip(names, r, strict=True))
            d["config"] = json.loads(d["config"])
            out.append(d)
        return out

    def rows(self, **filters: Any) -> list[dict]:
        """Result rows as dicts, in a deterministic order, optionally filtered by column.

        A filter value may be a scalar (equality; ``None`` matches NULL) or a list/tuple/set (any
        of). Each dict holds the columns of the ``results`` table (``resolvable`` as bool) followed
        by the row's extra fields.
        """
        where, params = [], []
        for key, value in filters.items():
            if key not in RESULT_COLUMNS:
                raise MiascaleError(
                    f"Cannot filter results by {key!r}; filter by one of: "
                    f"{', '.join(RESULT_COLUMNS)}."
                )
            if value is None:
                where.append(f"{key} IS NULL")
            elif isinstance(value, list | tuple | set | frozenset):
                values = list(value)
                if not values:
                    return []
                where.append(f"{key} IN ({', '.join('?' * len(values))})")
                params.extend(_plain(values))
            else:
                where.append(f"{key} = ?")
                params.append(_plain(value))
        sql = f"SELECT {', '.join(RESULT_COLUMNS)}, extra FROM results"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {ORDER_BY}"
        out = []
        for r in self._con.execute(sql, params):
            d = dict(zip(RESULT_COLUMNS, r[:-1], strict=True))
            for b in BOOL_COLUMNS:
                if d[b] is not None:
                    d[b] = bool(d[b])
            if r[-1]:
                d.update(json.loads(r[-1]))
            out.append(d)
        return out

    # ------------------------------------------------------------------ writing
    def record_cell(
        self,
        cell: Cell,
        rows: list[dict],
        seconds: float,
        artifacts: str | None = None,
        *,
        status: str = "done",
        error: str | None = None,
        fingerprint: str | None = None,
        artifact_sha256: str | None = None,
    ) -> None:
        """Record a finished cell and all its result rows in one transaction.

        Either the cell and every row are committed, or (on any exception) nothing is. Each row needs
        ``attack``, ``variant``, ``fpr_level`` and ``tpr``; the other known metric columns default to
        NULL and any further keys are kept in the row's ``extra`` JSON. Recording a cell again
        replaces its earlier record (a failed attempt, say). ``status="failed"`` with an ``error``
        message records a failure; such cells are not in :meth:`done_cells` and are rerun on resume.
        ``fingerprint`` identifies the data the cell was computed on and ``artifact_sha256`` its
        main artifact file (both checked on resume).
        """
        if status not in ("done", "failed"):
            raise ValueError(f"status must be 'done' or 'failed', got {status!r}")
        cid = cell.cell_id
        ident = {
            "dataset": cell.dataset,
            "backbone": cell.backbone,
            "classes": cell.classes,
            "shots": cell.shots,
            "seed": cell.seed,
        }
        cols = ", ".join(RESULT_COLUMNS) + ", extra"
        insert = (
            f"INSERT INTO results ({cols}) VALUES ({', '.join('?' * (len(RESULT_COLUMNS) + 1))})"
        )
        finished = datetime.now(UTC).isoformat(timespec="milliseconds")
        with self._transaction():
            self._con.execute("DELETE FROM results WHERE cell_id = ?", (cid,))
            self._con.execute(
                "INSERT OR REPLACE INTO cells "
                "(cell_id, config, status, seconds, finished_at, artifacts, error, fingerprint, "
                "artifact_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    cid,
                    _canonical(cell.to_dict()),
                    status,
                    float(seconds),
                    finished,
                    artifacts,
                    error,
                    fingerprint,
                    artifact_sha256,
                ),
            )
            for i, row in enumerate(rows):
                params = self._row_params(cid, ident, row, i, cell)
                try:
                    self._con.execute(insert, params)
                except sqlite3.IntegrityError as e:
                    raise ValueError(
                        f"cannot record row {i} of cell {cell.label} ({cid}): {e} (each "
                        f"(attack, variant, fpr_level) may appear once per cell; the required "
                        f"values may not be NaN)"
                    ) from None

    @staticmethod
    def _row_params(cid: str, ident: dict, row: Mapping, i: int, cell: Cell) -> list[Any]:
        where = f"row {i} of cell {cell.label} ({cid})"
        missing = [k for k in REQUIRED_KEYS if row.get(k) is None]
        if missing:
            raise ValueError(f"{where} lacks required key(s) {', '.join(missing)}")
        for k, v in ident.items():
            if k in row and row[k] != v:
                raise ValueError(f"{where} has {k}={row[k]!r} but the cell has {k}={v!r}")
        if "cell_id" in row and row["cell_id"] != cid:
            raise ValueError(f"{where} has cell_id={row['cell_id']!r}")
        params: list[Any] = [cid, *ident.values()]
        try:
            params.extend(_column_value(n, t, row.get(n)) for n, t in ROW_COLUMNS)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
        known = {"cell_id", *ident, *(n for n, _ in ROW_COLUMNS)}
        extra = {k: v for k, v in row.items() if k not in known}
        try:
            params.append(_canonical(_plain(extra)) if extra else None)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: extra fields are not JSON-serialisable: {e}") from None
        return params

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        try:
            self._con.close()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
