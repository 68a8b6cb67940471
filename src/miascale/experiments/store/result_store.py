"""The sweep result store, :class:`ResultStore` (contract: ``docs/design/store.md``)."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from miascale.errors import MiascaleError
from miascale.experiments.grid import Cell
from miascale.experiments.store.lock import RunDirLock
from miascale.experiments.store.schema import (
    ADDED_CELL_COLUMNS,
    DB_NAME,
    ORDER_BY,
    RESULT_COLUMNS,
    SCHEMA_VERSION,
)
from miascale.experiments.store.sqlite import (
    connect_read_only,
    create_schema,
    read_meta,
    transaction,
)
from miascale.experiments.store.values import (
    _canonical,
    _diff_keys,
    _plain,
    decode_row,
    filter_clause,
    row_params,
)

_INSERT_CELL = (
    "INSERT OR REPLACE INTO cells "
    "(cell_id, config, status, seconds, finished_at, artifacts, error, fingerprint, "
    "artifact_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_ROW = (
    f"INSERT INTO results ({', '.join(RESULT_COLUMNS)}, extra) "
    f"VALUES ({', '.join('?' * (len(RESULT_COLUMNS) + 1))})"
)


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
        con, meta = connect_read_only(path)
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
        meta = create_schema(self._con, spec_json, self.path)
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

    # ------------------------------------------------------------------ reading
    def meta(self) -> dict[str, Any]:
        """The ``meta`` table; ``spec`` parsed from JSON."""
        meta: dict[str, Any] = read_meta(self._con)
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
        clause = filter_clause(filters)
        if clause is None:
            return []
        where, params = clause
        sql = f"SELECT {', '.join(RESULT_COLUMNS)}, extra FROM results"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {ORDER_BY}"
        return [decode_row(r) for r in self._con.execute(sql, params)]

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
        finished = datetime.now(UTC).isoformat(timespec="milliseconds")
        config = _canonical(cell.to_dict())
        with transaction(self._con):
            self._con.execute("DELETE FROM results WHERE cell_id = ?", (cid,))
            cell_row = (cid, config, status, float(seconds), finished, artifacts, error)
            self._con.execute(_INSERT_CELL, (*cell_row, fingerprint, artifact_sha256))
            for i, row in enumerate(rows):
                params = row_params(cid, ident, row, f"row {i} of cell {cell.label} ({cid})")
                try:
                    self._con.execute(_INSERT_ROW, params)
                except sqlite3.IntegrityError as e:
                    raise ValueError(
                        f"cannot record row {i} of cell {cell.label} ({cid}): {e} (each "
                        f"(attack, variant, fpr_level) may appear once per cell; the required "
                        f"values may not be NaN)"
                    ) from None

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
