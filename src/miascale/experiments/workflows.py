"""Library workflows behind ``miascale sweep`` and ``miascale fit``: run a spec into a run
directory, read a run's rows as fits and reports use them, fit them and write ``fit.json``.

No terminal rendering here (the CLI renders); user errors raise :class:`MiascaleError`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from miascale.errors import MiascaleError


def json_default(o: object):
    """``json.dumps`` fallback: numpy scalars and arrays, paths."""
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def write_json(path: Path, obj: object) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    from miascale.paths import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=json_default) + "\n").encode())


def run_sweep_command(
    spec,
    out_dir: Path,
    device: str = "cpu",
    quiet: bool = False,
    *,
    backend: str = "local",
    address: str | None = None,
    max_retries: int | None = None,
    on_error: str = "raise",
    compute=None,
    recompute_changed: bool = False,
    workers: int | None = None,
):
    """Expand a SweepSpec and run it into ``out_dir`` (resumable); returns (summary, store).

    ``backend`` is ``local`` or ``ray`` (``address``: a running Ray cluster's; ``max_retries``:
    bounded retries of crashed / out-of-memory cells, default 2 on Ray, 0 locally; ``workers``:
    cells at once on the local backend, default one per core on a CPU); ``compute``
    replaces :func:`~miascale.experiments.cells.compute_cell` (tests).

    The run directory is locked for the whole run (released when the returned store is closed).
    Done cells whose data fingerprint changed are an error unless ``recompute_changed``; done
    cells whose ``signals.npz`` is missing are recomputed (:func:`check_done_cells`).
    """
    from miascale.backbones import resolve
    from miascale.experiments.backends import DEFAULT_MAX_RETRIES, make_backend
    from miascale.experiments.cells import FeatureMemo, check_variants
    from miascale.experiments.grid import expand
    from miascale.experiments.runner import check_done_cells, run_sweep
    from miascale.experiments.store import ResultStore

    check_variants(spec.variants)
    for b in spec.backbones:
        resolve(b, spec.resolution)  # unknown backbone / bad resolution: fail before any work
    memo = FeatureMemo(device, quiet)
    if max_retries is None:
        max_retries = DEFAULT_MAX_RETRIES if backend == "ray" else 0
    # no Ray installed, bad flags: fail before any work
    runner = make_backend(
        backend, Path(out_dir), memo, device, address=address, max_retries=max_retries,
        compute=compute, workers=workers,
    )  # fmt: skip
    if hasattr(runner, "connect"):
        runner.connect()  # a Ray cluster that cannot be reached: fail before any work
    # one writer per run directory: a second sweep into it stops here, before any work
    store = ResultStore.open(out_dir, spec.to_dict(), lock=True)
    try:
        cells = expand(spec, memo.shots_for(spec.resolution, spec.min_per_class, spec.finetune))
        rerun = check_done_cells(
            cells, store, memo.fingerprint, recompute_changed=recompute_changed, quiet=quiet
        )
        summary = run_sweep(
            cells, store, quiet=quiet, on_error=on_error, backend=runner, rerun=rerun,
            fingerprint=memo.fingerprint,
        )  # fmt: skip
    except BaseException:
        store.close()
        raise
    return summary, store


def relabel_dp(rows: list[dict]) -> list[dict]:
    """DP cells get series and laws of their own: ``variant`` becomes e.g. ``online dp ε=1``
    (the original kept as ``base_variant``). Changes the rows in place and returns them."""
    from miascale.audit import dp_variant

    for r in rows:
        if r.get("epsilon") is not None:
            r["base_variant"] = r["variant"]
            r["variant"] = dp_variant(r["variant"], r["epsilon"])
    return rows


def numeric_classes(row: dict) -> int | None:
    """The number of classes of a row: ``classes``, else its ``n_classes`` field, else None."""
    c = row.get("classes")
    if c is None:
        c = row.get("n_classes")
    if isinstance(c, bool) or not isinstance(c, int | np.integer):
        return None
    return int(c)


def with_classes(rows: list[dict]) -> list[dict]:
    """Rows as fits use them: "all classes" cells get their number of classes (copies). When no
    row records one, every row gets 1: C then takes one value and the law has no classes term."""
    known = [numeric_classes(r) for r in rows]
    unknown = all(c is None for c in known)
    return [{**r, "classes": 1 if unknown else c} for r, c in zip(rows, known, strict=True)]


def load_rows(run_dir: str | Path) -> list[dict]:
    """A run directory's result rows with DP cells relabelled (:func:`relabel_dp`); the store is
    only read. Raises :class:`MiascaleError` when the directory holds no finished cells."""
    from miascale.experiments.store import ResultStore

    if not (Path(run_dir) / "results.sqlite").is_file():
        raise MiascaleError(
            f"{run_dir} holds no results.sqlite; run `miascale sweep --out {run_dir}` first."
        )
    with ResultStore.load(run_dir) as store:
        rows = store.rows()
    if not rows:
        raise MiascaleError(f"{run_dir}/results.sqlite has no finished cells yet.")
    return relabel_dp(rows)


def fit_run(
    run_dir: Path,
    keep_unresolvable=False,
    keep_saturated=False,
    min_false_positives: int | None = None,
    ceiling_margin: float | None = None,
    *,
    best_effort: bool = False,
    with_doc: bool = False,
    write: Callable[[Path, object], None] | None = None,
):
    """Fit the power law to a run directory's rows and write fit.json; returns the ScalingFit.

    The store is only read. With ``best_effort``, a run directory where fit.json cannot be
    written (read-only) gets a warning on stderr instead of an error; ``with_doc`` also returns
    the fit.json document and whether it was saved. ``write`` replaces :func:`write_json`.
    """
    from miascale.scaling import fit_power_law, tail_rows

    rows = with_classes(load_rows(run_dir))
    rules = {
        "exclude_unresolvable": not keep_unresolvable,
        "exclude_saturated": not keep_saturated,
        **({} if min_false_positives is None else {"min_false_positives": min_false_positives}),
        **({} if ceiling_margin is None else {"ceiling_margin": ceiling_margin}),
    }
    fit = fit_power_law(rows, **rules)
    doc = fit.to_dict()
    tails = tail_rows([r for r in rows if r.get("epsilon") is None])
    tail_fit = None
    if tails:  # the per-example tail: a law per quantile and for the maximum, naive and cross-fit
        tail_fit = fit_power_law(tails, **rules)
        doc["tail"] = tail_fit.to_dict()
    saved = _save_fit(Path(run_dir) / "fit.json", doc, write or write_json, best_effort)
    if with_doc:
        return fit, tail_fit, doc, saved
    return fit, tail_fit


def _save_fit(path: Path, doc: dict, write, best_effort: bool) -> bool:
    try:
        write(path, doc)
    except OSError as e:
        if not best_effort:
            raise MiascaleError(f"Cannot write {path}: {e.strerror or e}.") from None
        print(
            f"warning: cannot write {path} ({e.strerror or e}); the run directory is read-only, "
            f"so the fit is printed but not saved.",
            file=sys.stderr,
        )
        return False
    return True
