"""Names, columns and SQL schema of the sweep result store (layout: ``docs/store.md``)."""

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
