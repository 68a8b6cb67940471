"""Sweeps: grids of audit cells, a crash-safe SQLite result store, and a resumable runner."""

from miascale.experiments.grid import Cell, SweepSpec, default_shots, expand
from miascale.experiments.runner import SweepSummary, check_done_cells, run_sweep
from miascale.experiments.store import ResultStore

__all__ = [
    "Cell",
    "ResultStore",
    "SweepSpec",
    "SweepSummary",
    "check_done_cells",
    "default_shots",
    "expand",
    "run_sweep",
]
