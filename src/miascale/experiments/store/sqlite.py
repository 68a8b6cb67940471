"""SQLite plumbing of the result store: transactions, schema creation, read-only connections.

Durability (WAL, ``synchronous=FULL``) and the read-only fallback are explained in
``docs/design/store.md``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from miascale.errors import MiascaleError
from miascale.experiments.store.schema import (
    _SCHEMA,
    ADDED_CELL_COLUMNS,
    SCHEMA_VERSION,
)


@contextmanager
def transaction(con: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any exception."""
    # BEGIN IMMEDIATE takes the write lock up front; a second writer waits (busy timeout).
    con.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def read_meta(con: sqlite3.Connection) -> dict[str, str]:
    return dict(con.execute("SELECT key, value FROM meta").fetchall())


def create_schema(con: sqlite3.Connection, spec_json: str, path: Path) -> dict[str, str]:
    """Create (or migrate) the tables, record version and spec if new; the ``meta`` table."""
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("PRAGMA foreign_keys=ON")
        with transaction(con):
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
            return read_meta(con)
    except sqlite3.DatabaseError as e:
        raise MiascaleError(
            f"{path} is not a usable miascale result store ({e}). Move it away or choose "
            f"another --out."
        ) from None


def connect_read_only(path: Path) -> tuple[sqlite3.Connection, dict[str, str]]:
    """Open the existing ``path`` with ``mode=ro`` (``immutable=1`` as fallback); con, meta."""
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
            meta = read_meta(con)
            con.execute("SELECT count(*) FROM cells").fetchone()
            con.execute("SELECT count(*) FROM results").fetchone()
        except sqlite3.Error as e:
            con.close()
            problem = e
            continue
        return con, meta
    raise MiascaleError(
        f"{path} is not a usable miascale result store ({problem}). Give the --out "
        f"directory of a `miascale sweep` run."
    )
