"""The sweep result store: one SQLite database, ``RUN_DIR/results.sqlite``.

Each finished cell is recorded with all its rows in one transaction (crash-safe, resumable);
one writer at a time (``RUN_DIR/.lock``), any number of readers. Contract:
``docs/design/store.md``; schema and queries: ``docs/store.md``. Modules:

* :mod:`~miascale.experiments.store.schema`: names, columns, SQL schema;
* :mod:`~miascale.experiments.store.values`: value and row conversions (pure);
* :mod:`~miascale.experiments.store.sqlite`: transactions, schema creation, read-only opening;
* :mod:`~miascale.experiments.store.lock`: :class:`RunDirLock`;
* :mod:`~miascale.experiments.store.result_store`: :class:`ResultStore`.
"""

from miascale.experiments.store.lock import RunDirLock
from miascale.experiments.store.result_store import ResultStore
from miascale.experiments.store.schema import (
    ADDED_CELL_COLUMNS,
    BOOL_COLUMNS,
    CELL_COLUMNS,
    DB_NAME,
    LOCK_NAME,
    ORDER_BY,
    REQUIRED_KEYS,
    RESULT_COLUMNS,
    ROW_COLUMNS,
    SCHEMA_VERSION,
)

# private helpers that miascale.cli uses
from miascale.experiments.store.values import _canonical as _canonical
from miascale.experiments.store.values import _plain as _plain

__all__ = [
    "ADDED_CELL_COLUMNS",
    "BOOL_COLUMNS",
    "CELL_COLUMNS",
    "DB_NAME",
    "LOCK_NAME",
    "ORDER_BY",
    "REQUIRED_KEYS",
    "RESULT_COLUMNS",
    "ROW_COLUMNS",
    "SCHEMA_VERSION",
    "ResultStore",
    "RunDirLock",
]
