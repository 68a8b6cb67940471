"""The Python API (``docs/api.md``): audit, sweep, load a run, fit, export — no printing.

Everything here is re-exported lazily from :mod:`miascale` (``miascale.run_audit``,
``miascale.run_sweep``, ``miascale.load_run``, ``miascale.fit``, …), so ``import miascale`` stays
fast; the heavy modules (torch, pandas) load on first use. Errors a user can fix raise
:class:`~miascale.errors.MiascaleError` with the same messages as the command line.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miascale.errors import MiascaleError

if TYPE_CHECKING:  # pragma: no cover - types only
    import numpy as np
    import pandas as pd

    from miascale.audit import AuditResult
    from miascale.experiments.grid import SweepSpec
    from miascale.experiments.runner import SweepSummary
    from miascale.scaling import ScalingFit

EXPORT_FORMATS = ("csv", "parquet")
_INT_COLUMNS = ("classes", "shots", "seed", "n_classes")


# ---------------------------------------------------------------------------------------- audit
def run_audit(
    x_train: np.ndarray | None = None,
    y_train: np.ndarray | None = None,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    *,
    shots: int,
    dataset: str | None = None,
    backbone: str | None = None,
    resolution: int | None = None,
    min_per_class: int | None = None,
    class_names: Iterable[str] | None = None,
    device: str = "cpu",
    **config: Any,
) -> AuditResult:
    """Audit one setting (what ``miascale audit`` does): K = M + 1 heads, the attacks, TPR at FPR.

    Give either features as arrays (``x_train`` (N, D), ``y_train`` (N,) integer labels,
    ``x_test``, ``y_test``) or a ``dataset`` and ``backbone`` by name (as on the command line,
    e.g. ``dataset="fashion-mnist", backbone="efficientnet-lite0"``; features are extracted once
    and cached). ``config`` holds the other :class:`~miascale.audit.AuditConfig` fields:
    ``classes``, ``shadow_models`` (default 64), ``attack``, ``fpr``, ``seed``, ``head``, ….
    Returns the typed :class:`~miascale.audit.AuditResult` (``.table()``, ``.summary()``; shown
    as a table in a notebook).
    """
    from miascale.audit import AuditConfig, audit_features

    arrays = (x_train, y_train, x_test, y_test)
    given = sum(a is not None for a in arrays)
    if given not in (0, 4):
        raise MiascaleError("Give all four arrays x_train, y_train, x_test, y_test, or none.")
    if given and (dataset is not None or backbone is not None):
        raise MiascaleError("Give the data one way: arrays, or dataset= and backbone=, not both.")
    if "fpr" in config and isinstance(config["fpr"], int | float):
        config["fpr"] = (config["fpr"],)
    if "fpr" in config:
        config["fpr"] = tuple(float(t) for t in config["fpr"])
    cfg = AuditConfig(shots=shots, **config).validate()
    if given:
        import numpy as np

        xtr, ytr, xte, yte = (np.asarray(a) for a in arrays)
        names = None if class_names is None else tuple(str(c) for c in class_names)
    else:
        from miascale.backbones import resolve
        from miascale.backbones.cache import features_for
        from miascale.data import load_dataset

        spec = resolve(backbone or "efficientnet-lite0", resolution)
        ds = load_dataset(dataset or "fashion-mnist", min_per_class=min_per_class)
        fs = features_for(ds, spec, device=device, quiet=True)
        xtr, ytr, xte, yte, names = fs.x_train, fs.y_train, fs.x_test, fs.y_test, fs.class_names
    return audit_features(xtr, ytr, xte, yte, cfg, names, device=device)


# ---------------------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class Run:
    """A sweep's run directory, read-only: its result rows, cells, spec and fits.

    ``rows`` and ``cells`` are read once, on first use; a sweep still writing to the directory is
    fine (open a new :func:`load_run` to see its later cells).
    """

    path: Path

    @cached_property
    def _records(self) -> tuple[dict, ...]:
        from miascale.experiments.store import ResultStore

        with ResultStore.load(self.path) as store:
            return tuple(store.rows())

    @cached_property
    def rows(self) -> pd.DataFrame:
        """One row per cell × attack variant × FPR level: the store's columns, then the extra
        fields (nested ones flattened as ``name.key``), in the store's order."""
        return rows_frame(self._records)

    @cached_property
    def cells(self) -> tuple[dict, ...]:
        """Every recorded cell (done or failed): id, config (dict), status, seconds, error, …"""
        from miascale.experiments.store import ResultStore

        with ResultStore.load(self.path) as store:
            return tuple(store.cells())

    @cached_property
    def spec(self) -> SweepSpec:
        """The :class:`~miascale.experiments.grid.SweepSpec` the run was made with."""
        from miascale.experiments.grid import SweepSpec
        from miascale.experiments.store import ResultStore

        with ResultStore.load(self.path) as store:
            return SweepSpec.from_dict(store.meta()["spec"], source=str(self.path))

    def _saved(self, key: str | None) -> ScalingFit | None:
        """The fit in ``fit.json`` (or its ``tail``) when it is newer than the results."""
        from miascale.scaling import ScalingFit

        saved = self.path / "fit.json"
        if not saved.is_file():
            return None
        # the database and its write-ahead log (readers touch only the -shm file)
        files = (self.path / "results.sqlite", self.path / "results.sqlite-wal")
        stamps = [p.stat().st_mtime for p in files if p.is_file()]
        if stamps and saved.stat().st_mtime < max(stamps):
            return None  # cells were added after `miascale fit`: refit
        try:
            doc = json.loads(saved.read_text())
        except (OSError, ValueError):
            return None
        if key is not None:
            doc = doc.get(key) if isinstance(doc, dict) else None
        try:
            return None if doc is None else ScalingFit.from_dict(doc)
        except MiascaleError:
            return None  # an older or edited fit.json: refit

    def fit(self, **rules: Any) -> ScalingFit:
        """The power law per attack variant and FPR level (as ``miascale fit``, never writing).

        Without ``rules`` a current ``fit.json`` (written by ``miascale fit`` after the last
        cell) is read, with the settings it was fitted with; otherwise the rows are fitted with
        ``rules``: the keyword arguments of :func:`miascale.scaling.fit_power_law`
        (``min_false_positives``, ``exclude_saturated``, ``ceiling_margin``, …).
        """
        saved = None if rules else self._saved(None)
        return saved if saved is not None else fit(self, **rules)

    def tail_fit(self, **rules: Any) -> ScalingFit | None:
        """The laws of the most vulnerable examples (per-example quantiles and maximum), or
        ``None`` when the run's cells carry no per-example fields; ``rules`` as for :meth:`fit`."""
        from miascale.scaling import fit_power_law, tail_rows

        saved = None if rules else self._saved("tail")
        if saved is not None:
            return saved
        tails = tail_rows([r for r in fit_rows(self._records) if r.get("epsilon") is None])
        return fit_power_law(tails, **rules) if tails else None

    def _repr_html_(self) -> str:
        from miascale.notebook import run_html

        return run_html(self)


def load_run(run_dir: str | Path) -> Run:
    """Open a sweep's run directory (``miascale sweep --out``) read-only."""
    path = Path(run_dir)
    if not path.is_dir():
        raise MiascaleError(
            f"{run_dir} is not a folder; give the --out directory of a `miascale sweep` run."
        )
    from miascale.experiments.store import ResultStore

    ResultStore.load(path).close()  # a missing or unusable store: the store's own message
    return Run(path)


def rows_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Result rows (dicts) as a DataFrame: the store's columns first, nested fields flattened."""
    import pandas as pd

    from miascale.experiments.store import BOOL_COLUMNS, CELL_COLUMNS, RESULT_COLUMNS, ROW_COLUMNS

    rows = list(rows)
    if not rows:
        return pd.DataFrame(columns=list(RESULT_COLUMNS))
    df = pd.json_normalize(rows, sep=".")
    first = [c for c in RESULT_COLUMNS if c in df.columns]
    df = df[first + [c for c in df.columns if c not in first]]
    # the store's typed columns keep their type with missing values (classes NULL = all classes)
    for name, sqltype in (*CELL_COLUMNS, *ROW_COLUMNS):
        types = {"INTEGER": "Int64", "REAL": "float64"}
        if name in df.columns and name not in BOOL_COLUMNS and sqltype in types:
            df[name] = df[name].astype(types[sqltype])
    return df


# ---------------------------------------------------------------------------------------- sweep
def run_sweep(
    spec: SweepSpec | Mapping[str, Any] | str | Path | None = None,
    *,
    out: str | Path,
    device: str = "cpu",
    quiet: bool = False,
    on_error: str = "record",
    recompute_changed: bool = False,
    backend: str = "local",
    address: str | None = None,
    workers: int | None = None,
    **spec_fields: Any,
) -> tuple[SweepSummary, Run]:
    """Run a sweep into ``out`` (resumable, as ``miascale sweep``); returns ``(summary, run)``.

    The grid is a :class:`~miascale.experiments.grid.SweepSpec`, a dict of its fields, a TOML
    file (``docs/sweep.md``) or the fields as keyword arguments (``datasets``, ``backbones``,
    ``shots``, ``seeds``, ``variants`` — names or ``"lira,rmia"`` —, ``shadow_models``, ``fpr``,
    …). Failed cells are recorded (``on_error="record"``), listed in ``summary.failures`` and
    warned about; ``on_error="raise"`` stops at the first. Progress goes to stderr unless
    ``quiet``. ``workers``: cells at once on the local backend, each in a forked one-thread
    process (default: one per core on a CPU; 1: in this process).
    """
    from miascale.experiments.grid import SweepSpec
    from miascale.experiments.workflows import run_sweep_command

    if spec is not None and spec_fields:
        raise MiascaleError("Give the grid one way: a spec, or its fields as keywords, not both.")
    if isinstance(spec, str | Path):
        spec = SweepSpec.from_toml(spec)
    elif isinstance(spec, Mapping):
        spec = SweepSpec.from_dict(dict(spec))
    elif spec is None:
        spec_fields.setdefault("datasets", ("fashion-mnist",))  # the command line's defaults
        spec_fields.setdefault("backbones", ("efficientnet-lite0",))
        if isinstance(spec_fields.get("variants"), str):
            from miascale.audit import expand_attacks

            spec_fields["variants"] = expand_attacks(spec_fields["variants"])
        spec = SweepSpec(**spec_fields)
    summary, store = run_sweep_command(
        spec, Path(out), device, quiet, backend=backend, address=address, workers=workers,
        on_error=on_error, recompute_changed=recompute_changed,
    )  # fmt: skip
    store.close()
    if summary.failures:
        warnings.warn(
            f"{summary.failed} cell(s) failed (see summary.failures; run again to retry them).",
            stacklevel=2,
        )
    return summary, Run(Path(out))


# ------------------------------------------------------------------------------------------ fit
def _plain_rows(frame: pd.DataFrame) -> list[dict]:
    """DataFrame rows back to store-like dicts: NaN → None, integral counts → int."""
    out = []
    for r in frame.to_dict("records"):
        d = {}
        for k, v in r.items():
            if isinstance(v, float) and math.isnan(v):
                v = None
            elif k in _INT_COLUMNS and isinstance(v, float) and v.is_integer():
                v = int(v)
            d[str(k)] = v
        out.append(d)
    return out


def fit_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict]:
    """Rows as ``miascale fit`` prepares them: "all classes" cells get their number of classes,
    DP cells a variant of their own per ε."""
    from miascale.experiments.workflows import relabel_dp, with_classes

    return relabel_dp(with_classes([dict(row) for row in rows]))


def fit(rows: Run | str | Path | pd.DataFrame | Iterable[Mapping[str, Any]], **rules: Any):
    """Fit the power law to a run (a :class:`Run` or its directory), a rows DataFrame or row
    dicts; ``rules`` are :func:`miascale.scaling.fit_power_law`'s keywords. Nothing is written.
    Returns a :class:`~miascale.scaling.ScalingFit` (``.level(attack, variant, fpr)``)."""
    from miascale.scaling import fit_power_law

    if isinstance(rows, str | Path):
        rows = load_run(rows)
    if isinstance(rows, Run):
        records: Iterable[Mapping[str, Any]] = rows._records
    elif hasattr(rows, "to_dict") and hasattr(rows, "columns"):
        records = _plain_rows(rows)  # a DataFrame
    else:
        records = rows
    records = fit_rows(records)
    if not records:
        raise MiascaleError("No result rows to fit yet; run the sweep first.")
    return fit_power_law(records, **rules)


# --------------------------------------------------------------------------------------- export
def export_rows(run_dir: str | Path, format: str | None = None, out: str | Path | None = None):
    """Write a run's rows (:attr:`Run.rows`) as CSV or Parquet; returns ``(path, n_rows)``.

    ``format`` is ``csv`` or ``parquet`` (default: from ``out``'s suffix, else csv); ``out``
    defaults to ``RUN_DIR/results.<format>``.
    """
    if format is None:
        suffix = Path(out).suffix.lower() if out is not None else ""
        format = "parquet" if suffix in (".parquet", ".pq") else "csv"
    if format not in EXPORT_FORMATS:
        raise MiascaleError(f"--format must be csv or parquet, got {format!r}.")
    run = load_run(run_dir)
    path = Path(out) if out is not None else run.path / f"results.{format}"
    if path.is_dir():
        path = path / f"results.{format}"
    df = run.rows
    try:
        if format == "csv":
            df.to_csv(path, index=False)
        else:
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise MiascaleError(
                    "Parquet needs pyarrow: pip install 'pyarrow>=14' (or use --format csv)."
                ) from None
            df.to_parquet(path, index=False)
    except OSError as e:
        raise MiascaleError(f"Cannot write {path}: {e.strerror or e}.") from None
    return path, len(df)
