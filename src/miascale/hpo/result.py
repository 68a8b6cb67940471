"""The record of one HPO run, :class:`HpoResult` (JSON layout: ``docs/hpo.md``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from miascale.errors import MiascaleError
from miascale.hpo.space import Dim, dim_from_dict


@dataclass(frozen=True)
class HpoResult:
    """Outcome of one HPO run (store :meth:`to_dict` in the run's ``audit.json``).

    Attributes:
        best_params: the best trial's values, by parameter name.
        best_value: its objective value (maximised; e.g. validation accuracy).
        best_trial: its index in :attr:`trials` (the earliest among ties).
        n_trials: trials run.
        seed: seed of the TPE sampler.
        trials: ``(params, value)`` of every trial in order; ``value`` is ``None`` for a failed
            (non-finite) trial.
        space: the search space.
        metric: name of the maximised quantity.
        optuna_version: Optuna's version (TPE's sequence can change between releases).
        info: free-form JSON-serialisable details from the caller (split sizes, seeds, ...).
    """

    best_params: Mapping[str, Any]
    best_value: float
    best_trial: int
    n_trials: int
    seed: int
    trials: tuple[tuple[Mapping[str, Any], float | None], ...]
    space: Mapping[str, Dim]
    metric: str = "objective"
    optuna_version: str = ""
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def n_failed(self) -> int:
        return sum(v is None for _, v in self.trials)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable record (plain dicts, lists, str, int, float, bool, None)."""
        return {
            "method": "optuna-tpe",
            "direction": "maximize",
            "metric": self.metric,
            "seed": self.seed,
            "n_trials": self.n_trials,
            "n_failed": self.n_failed,
            "best_params": dict(self.best_params),
            "best_value": self.best_value,
            "best_trial": self.best_trial,
            "space": {name: dim.to_dict() for name, dim in self.space.items()},
            "trials": [
                {"number": i, "params": dict(p), "value": v} for i, (p, v) in enumerate(self.trials)
            ],
            "optuna_version": self.optuna_version,
            "info": dict(self.info),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HpoResult:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(
                best_params=dict(d["best_params"]),
                best_value=float(d["best_value"]),
                best_trial=int(d["best_trial"]),
                n_trials=int(d["n_trials"]),
                seed=int(d["seed"]),
                trials=tuple(
                    (dict(t["params"]), None if t["value"] is None else float(t["value"]))
                    for t in d["trials"]
                ),
                space={name: dim_from_dict(dim) for name, dim in d["space"].items()},
                metric=str(d.get("metric", "objective")),
                optuna_version=str(d.get("optuna_version", "")),
                info=dict(d.get("info", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MiascaleError(f"Not a recorded HPO result ({exc!r}).") from exc
