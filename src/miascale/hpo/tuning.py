"""Seeded Optuna TPE over any ``objective(params) -> float`` (maximised): :func:`tune`.

Reproducibility and the handling of failed trials: ``docs/design/hpo.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from miascale.errors import MiascaleError
from miascale.hpo.result import HpoResult
from miascale.hpo.space import Dim, SearchSpace, _check_space, _distribution, _is_int

_MAX_SEED = 2**32 - 1  # Optuna seeds numpy's legacy RandomState: 0 <= seed < 2**32

Trials = list[tuple[dict[str, Any], float | None]]
Progress = Callable[[int, int, float | None], object]


def _check_seed(seed: object, what: str = "seed") -> int:
    if not _is_int(seed) or not 0 <= int(seed) <= _MAX_SEED:
        raise MiascaleError(f"The HPO {what} must be an integer in [0, 2**32), got {seed!r}.")
    return int(seed)


def _check_n_trials(n_trials: object) -> int:
    if not _is_int(n_trials) or int(n_trials) < 1:
        raise MiascaleError(f"The number of HPO trials must be an integer >= 1, got {n_trials!r}.")
    return int(n_trials)


def _run_trials(
    study: Any,
    dims: dict[str, Dim],
    objective: Callable[[dict[str, Any]], float],
    n_trials: int,
    progress: Progress | None,
) -> tuple[Trials, int | None, float]:
    """Ask/tell ``n_trials`` trials; ``(trials, best index or None, best value)``.

    The best is the earliest among ties; non-finite values are failed trials (value ``None``);
    an exception from the objective fails the trial and propagates.
    """
    import optuna

    distributions = {name: _distribution(dim) for name, dim in dims.items()}
    trials: Trials = []
    best: int | None = None
    best_value = -math.inf
    for done in range(1, n_trials + 1):
        trial = study.ask(distributions)
        params = {name: trial.params[name] for name in dims}
        try:
            value = float(objective(dict(params)))
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
    return trials, best, best_value


def tune(
    objective: Callable[[dict[str, Any]], float],
    space: SearchSpace,
    n_trials: int,
    seed: int,
    *,
    metric: str = "objective",
    info: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
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
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=seed),
            storage=None,  # in memory
        )
        trials, best, best_value = _run_trials(study, dims, objective, n_trials, progress)
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
