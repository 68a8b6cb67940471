"""Hyperparameter optimisation (HPO) as the research did it: Optuna TPE on a 70/30 split.

One training set is drawn from the pool exactly like a target model's (S examples of each class,
a random half of every class of the 2·S-per-class pool, as the balanced membership plan draws
it) and split 70/30 per class. Every trial trains ONE model on the 70% part and is scored by its
accuracy on the 30% part; Optuna's TPE sampler maximises that accuracy. The best values are then
used for every one of the K audited models (the caller stores :meth:`HpoResult.to_dict` in the
run).

Pieces, each usable on its own:

* a tiny typed search-space description: :class:`FloatRange`, :class:`IntRange`,
  :class:`Choice`; a :data:`SearchSpace` maps parameter names to them;
* :func:`tune`: seeded TPE over any ``objective(params) -> float`` (maximised);
* :func:`hpo_split`: the seeded, stratified 70/30 split of one target-like training set;
* :func:`head_space` / :func:`tune_head`: the search space and objective for the heads of
  :mod:`miascale.training.heads`; :func:`film_space` the search space for FiLM training.

Reproducibility: the sampler is ``optuna.samplers.TPESampler(seed=seed)`` on an in-memory
study, trials run one after another in this process (no parallelism), so the same objective,
space, ``n_trials`` and seed give the same trials and the same best values (with the same Optuna
version; TPE's internals may change between Optuna releases, so the version is recorded).

Failures: an exception raised by the objective marks the trial failed and is re-raised -- a
configuration error (:class:`~miascale.errors.MiascaleError`) surfaces at once instead of being
recorded as a bad trial, and a bug is never hidden. A non-finite objective value (NaN, ±inf,
e.g. a diverged training run) is recorded as a failed trial (value ``None``) and the search goes
on; if no trial gives a finite value, :func:`tune` raises :class:`MiascaleError`. Ties in the
objective (validation accuracy is discrete) go to the earliest trial.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from miascale.errors import MiascaleError
from miascale.training.heads import HeadConfig, head_logits, train_heads

__all__ = [
    "Choice",
    "Dim",
    "FloatRange",
    "HpoResult",
    "IntRange",
    "SearchSpace",
    "apply_params",
    "dim_from_dict",
    "film_space",
    "head_space",
    "hpo_split",
    "tune",
    "tune_head",
]

DEFAULT_VAL_FRACTION = 0.3
"""Share of each class of the HPO training set held out for validation."""

_MAX_SEED = 2**32 - 1  # Optuna seeds numpy's legacy RandomState: 0 <= seed < 2**32


# --------------------------------------------------------------------------------------------
# Search space
# --------------------------------------------------------------------------------------------


def _is_real(v: object) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)


def _is_int(v: object) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


@dataclass(frozen=True)
class FloatRange:
    """A real parameter in ``[low, high]``; ``log=True`` samples uniformly in log space."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not (_is_real(self.low) and _is_real(self.high)):
            raise MiascaleError(
                f"FloatRange bounds must be numbers, got {self.low!r}, {self.high!r}."
            )
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low <= self.high):
            raise MiascaleError(
                f"FloatRange needs finite bounds with low <= high, got [{self.low}, {self.high}]."
            )
        if self.log and self.low <= 0:
            raise MiascaleError(f"A log-scale FloatRange needs low > 0, got low={self.low}.")
        object.__setattr__(self, "low", float(self.low))
        object.__setattr__(self, "high", float(self.high))
        object.__setattr__(self, "log", bool(self.log))

    def to_dict(self) -> dict[str, Any]:
        return {"type": "float", "low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class IntRange:
    """An integer parameter in ``[low, high]`` (inclusive); ``log=True`` samples in log space."""

    low: int
    high: int
    log: bool = False

    def __post_init__(self) -> None:
        if not (_is_int(self.low) and _is_int(self.high)) or self.low > self.high:
            raise MiascaleError(
                f"IntRange needs integer bounds with low <= high, got [{self.low!r}, {self.high!r}]."
            )
        if self.log and self.low < 1:
            raise MiascaleError(f"A log-scale IntRange needs low >= 1, got low={self.low}.")
        object.__setattr__(self, "low", int(self.low))
        object.__setattr__(self, "high", int(self.high))
        object.__setattr__(self, "log", bool(self.log))

    def to_dict(self) -> dict[str, Any]:
        return {"type": "int", "low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class Choice:
    """One of a few distinct values (str, int, float, bool or None: JSON-representable)."""

    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        values = tuple(self.values) if isinstance(self.values, list | tuple) else None
        if not values:
            raise MiascaleError(f"Choice needs a non-empty tuple of values, got {self.values!r}.")
        for v in values:
            if v is not None and not isinstance(v, str | int | float | bool):
                raise MiascaleError(
                    f"Choice values must be str, int, float, bool or None, got {v!r}."
                )
        if len(set(values)) != len(values):
            raise MiascaleError(f"Choice values must be distinct, got {values!r}.")
        object.__setattr__(self, "values", values)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "choice", "values": list(self.values)}


Dim = FloatRange | IntRange | Choice
SearchSpace = Mapping[str, Dim]
"""Parameter name -> its range; names are the config fields the values are written to."""


def dim_from_dict(d: Mapping[str, Any]) -> Dim:
    """Inverse of ``Dim.to_dict()`` (for reading a recorded search space back)."""
    kind = d.get("type") if isinstance(d, Mapping) else None
    if kind == "float":
        return FloatRange(d["low"], d["high"], d.get("log", False))
    if kind == "int":
        return IntRange(d["low"], d["high"], d.get("log", False))
    if kind == "choice":
        return Choice(tuple(d["values"]))
    raise MiascaleError(f"Unknown search-space dimension {d!r}; expected type float|int|choice.")


def _check_space(space: object) -> dict[str, Dim]:
    if not isinstance(space, Mapping) or not space:
        raise MiascaleError(
            "The HPO search space must be a non-empty mapping of parameter names to "
            f"FloatRange/IntRange/Choice, got {space!r}."
        )
    out: dict[str, Dim] = {}
    for name, dim in space.items():
        if not isinstance(name, str) or not name:
            raise MiascaleError(f"Search-space parameter names must be strings, got {name!r}.")
        if not isinstance(dim, FloatRange | IntRange | Choice):
            raise MiascaleError(
                f"Search-space parameter {name!r} must be a FloatRange, IntRange or Choice, "
                f"got {type(dim).__name__}."
            )
        out[name] = dim
    return out


def _distribution(dim: Dim) -> Any:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if isinstance(dim, FloatRange):
        return FloatDistribution(dim.low, dim.high, log=dim.log)
    if isinstance(dim, IntRange):
        return IntDistribution(dim.low, dim.high, log=dim.log)
    return CategoricalDistribution(dim.values)


L2_RANGE = FloatRange(1e-6, 1e1, log=True)
"""L2 strength of the head objective (on standardised features), log scale."""


def head_space(optimizer: str = "lbfgs") -> dict[str, Dim]:
    """Search space for the heads of :mod:`miascale.training.heads`.

    * ``"lbfgs"`` heads are solved to the unique optimum, so only the objective matters:
      ``l2`` in [1e-6, 10] (log).
    * ``"adam"`` heads: ``learning_rate`` in [1e-4, 0.1] (log), ``epochs`` in [10, 200]
      (integer, log), ``batch_size`` in {16, 32, 64, 128} and ``l2`` in [1e-6, 10] (log).
    """
    if optimizer == "lbfgs":
        return {"l2": L2_RANGE}
    if optimizer == "adam":
        return {
            "learning_rate": FloatRange(1e-4, 1e-1, log=True),
            "epochs": IntRange(10, 200, log=True),
            "batch_size": Choice((16, 32, 64, 128)),
            "l2": L2_RANGE,
        }
    raise MiascaleError(f"No HPO search space for head optimizer {optimizer!r}; use lbfgs or adam.")


def film_space() -> dict[str, Dim]:
    """Search space for FiLM training: ``learning_rate`` in [1e-4, 0.1] (log), ``epochs`` in
    [3, 30] (integer, log) and ``batch_size`` in {16, 32, 64}."""
    return {
        "learning_rate": FloatRange(1e-4, 1e-1, log=True),
        "epochs": IntRange(3, 30, log=True),
        "batch_size": Choice((16, 32, 64)),
    }


def apply_params(config: Any, params: Mapping[str, Any]) -> Any:
    """``dataclasses.replace(config, **params)``, with a clear error for unknown field names.

    The config's own validation (e.g. ``HeadConfig.__post_init__``) still applies.
    """
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise MiascaleError(f"config must be a dataclass instance, got {type(config).__name__}.")
    names = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(params) - names)
    if unknown:
        raise MiascaleError(
            f"Tuned parameter(s) {unknown} are not fields of {type(config).__name__} "
            f"(fields: {sorted(names)}); fix the search space."
        )
    return dataclasses.replace(config, **params)


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Tuning
# --------------------------------------------------------------------------------------------


def _check_seed(seed: object, what: str = "seed") -> int:
    if not _is_int(seed) or not 0 <= int(seed) <= _MAX_SEED:
        raise MiascaleError(f"The HPO {what} must be an integer in [0, 2**32), got {seed!r}.")
    return int(seed)


def _check_n_trials(n_trials: object) -> int:
    if not _is_int(n_trials) or int(n_trials) < 1:
        raise MiascaleError(f"The number of HPO trials must be an integer >= 1, got {n_trials!r}.")
    return int(n_trials)


def tune(
    objective: Callable[[dict[str, Any]], float],
    space: SearchSpace,
    n_trials: int,
    seed: int,
    *,
    metric: str = "objective",
    info: Mapping[str, Any] | None = None,
    progress: Callable[[int, int, float | None], object] | None = None,
) -> HpoResult:
    """Maximise ``objective(params)`` over ``space`` with Optuna's TPE sampler.

    Args:
        objective: called once per trial with a fresh dict ``{name: value}`` (one value per
            dimension of ``space``, plain Python types); returns the value to maximise.
        space: the search space (non-empty).
        n_trials: trials to run, >= 1 (TPE samples the first 10 at random).
        seed: seed of ``TPESampler`` (0 <= seed < 2**32); same inputs and seed ⇒ same trials.
        metric: name of the objective, recorded in the result.
        info: extra JSON-serialisable details recorded in the result.
        progress: optional ``progress(trials_done, n_trials, best_value_so_far)`` after each trial.

    Raises:
        MiascaleError: invalid arguments, or no trial gave a finite value. Exceptions raised by
        the objective propagate unchanged (the trial is marked failed first).
    """
    import optuna

    dims = _check_space(space)
    n_trials = _check_n_trials(n_trials)
    seed = _check_seed(seed)
    if not callable(objective):
        raise MiascaleError(f"objective must be callable, got {type(objective).__name__}.")
    distributions = {name: _distribution(dim) for name, dim in dims.items()}

    trials: list[tuple[dict[str, Any], float | None]] = []
    best: int | None = None  # index of the best trial so far (earliest among ties)
    best_value = -math.inf
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=seed),
            storage=None,  # in memory
        )
        for done in range(1, n_trials + 1):
            trial = study.ask(distributions)
            params = {name: trial.params[name] for name in dims}
            try:
                raw = objective(dict(params))
                value = float(raw)
            except BaseException:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise
            if math.isfinite(value):
                study.tell(trial, value)
                trials.append((params, value))
                if best is None or value > best_value:
                    best, best_value = len(trials) - 1, value
            else:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                trials.append((params, None))
            if progress is not None:
                progress(done, n_trials, None if best is None else best_value)
    finally:
        optuna.logging.set_verbosity(verbosity)
    if best is None:
        raise MiascaleError(
            f"All {n_trials} HPO trials gave a non-finite {metric}; check the search space "
            "(e.g. a learning rate that makes training diverge) or the objective."
        )
    return HpoResult(
        best_params=dict(trials[best][0]),
        best_value=best_value,
        best_trial=best,
        n_trials=n_trials,
        seed=seed,
        trials=tuple(trials),
        space=dims,
        metric=metric,
        optuna_version=optuna.__version__,
        info=dict(info or {}),
    )


# --------------------------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------------------------


def hpo_split(
    labels: np.ndarray,
    shots: int,
    seed: int,
    val_fraction: float = DEFAULT_VAL_FRACTION,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one target-like training set from the pool and split it for validation.

    From each class of the pool (``labels``: the pool's labels, normally 2·S per class) a
    random ``S = shots`` examples are drawn -- the training set of one target model under the
    balanced membership plan -- and split per class (stratified): ``n_val = round(val_fraction
    · S)`` of each class (half up, clamped to ``[1, S-1]``) for validation, the other
    ``S - n_val`` for training. With the default 0.3 that is exactly 70/30 when ``0.3·S`` is
    an integer (S = 10: 7/3 per class), and S = 2 gives 1/1.

    S = 1 fallback: a one-example-per-class training set cannot be split without leaving a
    class untrained, so the model trains on the whole drawn training set (1 per class) and is
    validated on one further pool example of each class -- the complementary half of the
    pool, i.e. examples that this target-like model does not train on. Needs at least 2
    examples per class (a pool always has them).

    Args:
        labels: ``(N,)`` integer labels of the pool.
        shots: S >= 1, training examples per class of one model.
        seed: seed for :func:`numpy.random.default_rng`.
        val_fraction: share held out per class, strictly between 0 and 1.

    Returns:
        ``(train_idx, val_idx)``: sorted int64 positions into ``labels``, disjoint.

    Raises:
        MiascaleError: bad arguments, or a class with fewer than S (S = 1: 2) examples.
    """
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0 or not np.issubdtype(y.dtype, np.integer):
        raise MiascaleError(
            f"hpo_split needs a non-empty 1-D integer label array (the pool's labels), got shape "
            f"{y.shape} and dtype {y.dtype}. Pass Pool.labels."
        )
    if not _is_int(shots) or int(shots) < 1:
        raise MiascaleError(f"shots must be a positive integer, got {shots!r}.")
    shots = int(shots)
    if not (_is_real(val_fraction) and 0.0 < float(val_fraction) < 1.0):
        raise MiascaleError(
            f"val_fraction must lie strictly between 0 and 1, got {val_fraction!r}."
        )
    if not _is_int(seed) or int(seed) < 0:
        raise MiascaleError(f"seed must be an integer >= 0, got {seed!r}.")
    classes, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    need = 2 if shots == 1 else shots
    small = counts < need
    if np.any(small):
        bad = ", ".join(
            f"class {int(c)} has {int(n)}"
            for c, n in zip(classes[small], counts[small], strict=True)
        )
        raise MiascaleError(
            f"HPO with shots={shots} draws {shots} training example(s) per class"
            + (" and validates on one more" if shots == 1 else "")
            + f", but {bad}. Pass the labels of a pool drawn with the same shots "
            "(miascale.pool.draw_pool gives 2*shots per class)."
        )
    rng = np.random.default_rng(int(seed))
    n = y.size
    # Random order within each class (as the balanced plan draws a half): rank of every example.
    order = np.lexsort((rng.random(n), inv))
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[inv[order]]
    if shots == 1:
        train = rank == 0
        val = rank == 1
    else:
        n_val = min(max(math.floor(float(val_fraction) * shots + 0.5), 1), shots - 1)
        train = rank < shots - n_val
        val = (rank >= shots - n_val) & (rank < shots)
    return np.flatnonzero(train).astype(np.int64), np.flatnonzero(val).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------


def _derived_seeds(seed: int) -> tuple[int, int]:
    """Independent seeds for the split and the sampler, derived from one seed."""
    split_ss, sampler_ss = np.random.SeedSequence(seed).spawn(2)
    return int(split_ss.generate_state(1)[0]), int(sampler_ss.generate_state(1)[0])


def tune_head(
    features: np.ndarray,
    labels: np.ndarray,
    shots: int,
    base: HeadConfig,
    n_trials: int,
    seed: int,
    device: str = "cpu",
    *,
    n_classes: int | None = None,
    space: SearchSpace | None = None,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    progress: Callable[[int, int, float | None], object] | None = None,
) -> tuple[HeadConfig, HpoResult]:
    """Tune a head's hyperparameters on a 70/30 split of one target-like training set.

    Each trial trains one head (:func:`~miascale.training.heads.train_heads` with K = 1) with
    ``base`` updated by the trial's values on the training part of :func:`hpo_split` and
    returns its accuracy on the validation part. Everything not in the space (tol, max_iter,
    dtype, Adam's minibatch seed ``base.seed``, ...) comes from ``base``.

    Args:
        features: ``(N, D)`` pool features.
        labels: ``(N,)`` pool labels in ``[0, n_classes)`` (2·S per class).
        shots: S, training examples per class of one model.
        base: head settings; the tuned values replace its fields.
        n_trials: TPE trials (>= 1).
        seed: one seed; the split seed and the sampler seed are derived from it
            (``numpy.random.SeedSequence(seed).spawn(2)``) and recorded in ``result.info``.
        device: torch device for training.
        n_classes: C; default ``labels.max() + 1``.
        space: default :func:`head_space` ``(base.optimizer)``; names must be HeadConfig fields.
        val_fraction: see :func:`hpo_split`.
        progress: see :func:`tune`.

    Returns:
        ``(config, result)``: ``base`` with the best values, and the :class:`HpoResult`
        (metric ``"validation_accuracy"``).
    """
    if not isinstance(base, HeadConfig):
        raise MiascaleError(f"base must be a HeadConfig, got {type(base).__name__}.")
    seed = _check_seed(seed)
    dims = _check_space(head_space(base.optimizer) if space is None else space)
    unknown = sorted(set(dims) - {f.name for f in dataclasses.fields(HeadConfig)})
    if unknown:
        raise MiascaleError(
            f"Search-space parameter(s) {unknown} are not HeadConfig fields; fix the space."
        )
    x = np.asarray(features)
    y = np.asarray(labels)
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise MiascaleError(
            f"features (N, D) and labels (N,) must describe the same pool, got shapes {x.shape} "
            f"and {y.shape}."
        )
    if n_classes is None:
        if y.size == 0 or not np.issubdtype(y.dtype, np.integer):
            raise MiascaleError("labels must be a non-empty integer array (the pool's labels).")
        n_classes = int(y.max()) + 1
    split_seed, sampler_seed = _derived_seeds(seed)
    train_idx, val_idx = hpo_split(y, shots, split_seed, val_fraction)
    x_train, y_train = x[train_idx], y[train_idx]
    x_val, y_val = x[val_idx], y[val_idx]
    mask = np.ones((1, train_idx.size), dtype=bool)

    def objective(params: dict[str, Any]) -> float:
        config = apply_params(base, params)
        heads = train_heads(x_train, y_train, mask, n_classes, config, device=device)
        pred = head_logits(heads, x_val)[0].argmax(axis=-1)
        return float(np.mean(pred == y_val))

    result = tune(
        objective,
        dims,
        n_trials,
        sampler_seed,
        metric="validation_accuracy",
        info={
            "target": "head",
            "optimizer": base.optimizer,
            "seed": seed,
            "split_seed": split_seed,
            "sampler_seed": sampler_seed,
            "shots": int(shots),
            "val_fraction": float(val_fraction),
            "n_train": int(train_idx.size),
            "n_val": int(val_idx.size),
        },
        progress=progress,
    )
    return apply_params(base, result.best_params), result
