"""Tests for hyperparameter optimisation (Optuna TPE on a 70/30 split of a target-like set)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from miascale.errors import MiascaleError
from miascale.hpo import (
    Choice,
    FloatRange,
    HpoResult,
    IntRange,
    apply_params,
    dim_from_dict,
    film_space,
    head_space,
    hpo_split,
    tune,
    tune_head,
)
from miascale.pool import draw_pool
from miascale.training.heads import STD_FLOOR, HeadConfig

MIXED = {
    "learning_rate": FloatRange(1e-4, 1e-1, log=True),
    "epochs": IntRange(10, 200, log=True),
    "batch_size": Choice((16, 32, 64, 128)),
    "momentum": FloatRange(0.0, 0.99),
}


def _mixed_objective(p: dict) -> float:
    return (
        -((math.log10(p["learning_rate"]) + 2) ** 2)
        - abs(p["epochs"] - 50) / 50
        - (p["batch_size"] != 32) * 0.1
        - (p["momentum"] - 0.9) ** 2
    )


# ---------------------------------------------------------------------------------- tune


def test_same_seed_same_trials_different_seed_different() -> None:
    a = tune(_mixed_objective, MIXED, 15, seed=3)
    b = tune(_mixed_objective, MIXED, 15, seed=3)
    c = tune(_mixed_objective, MIXED, 15, seed=4)
    assert a.trials == b.trials
    assert a.best_params == b.best_params and a.best_value == b.best_value
    assert a.to_dict() == b.to_dict()
    assert [p for p, _ in a.trials] != [p for p, _ in c.trials]
    # after the 10 random start-up trials TPE (not random search) chooses: still reproducible
    assert len(a.trials) == 15 and all(v is not None for _, v in a.trials)


def test_trial_params_have_plain_types_within_the_space() -> None:
    r = tune(_mixed_objective, MIXED, 12, seed=0)
    for params, _ in r.trials:
        assert set(params) == set(MIXED)
        assert isinstance(params["learning_rate"], float) and 1e-4 <= params["learning_rate"] <= 0.1
        assert type(params["epochs"]) is int and 10 <= params["epochs"] <= 200
        assert params["batch_size"] in (16, 32, 64, 128)
        assert 0.0 <= params["momentum"] <= 0.99


def test_finds_known_optimum() -> None:
    space = {"l2": FloatRange(1e-6, 1e1, log=True)}
    seen: list[tuple[int, int, float | None]] = []
    r = tune(
        lambda p: -((math.log10(p["l2"]) + 3) ** 2),
        space,
        30,
        seed=0,
        progress=lambda i, n, best: seen.append((i, n, best)),
    )
    assert abs(math.log10(r.best_params["l2"]) + 3) < 0.3
    assert r.best_value == max(v for _, v in r.trials if v is not None)
    assert r.trials[r.best_trial][0] == r.best_params
    assert [s[0] for s in seen] == list(range(1, 31)) and all(s[1] == 30 for s in seen)
    assert seen[-1][2] == r.best_value
    assert r.n_trials == 30 and r.seed == 0 and r.n_failed == 0


def test_ties_go_to_the_earliest_trial() -> None:
    r = tune(lambda p: 1.0, {"x": FloatRange(0.0, 1.0)}, 5, seed=0)
    assert r.best_trial == 0 and r.best_params == r.trials[0][0]


def test_no_warnings_and_optuna_logging_restored() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            tune(_mixed_objective, MIXED, 12, seed=1)
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
    finally:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_non_finite_values_are_failed_trials() -> None:
    def obj(p: dict) -> float:
        return float("nan") if p["x"] > 0.5 else p["x"]

    r = tune(obj, {"x": FloatRange(0.0, 1.0)}, 20, seed=0)
    failed = [p for p, v in r.trials if v is None]
    assert failed and all(p["x"] > 0.5 for p in failed)
    assert r.n_failed == len(failed)
    assert r.best_params["x"] <= 0.5
    json.dumps(r.to_dict(), allow_nan=False)
    with pytest.raises(MiascaleError, match="non-finite"):
        tune(lambda p: float("inf"), {"x": FloatRange(0.0, 1.0)}, 3, seed=0)


def test_objective_errors_propagate() -> None:
    def bad_config(p: dict) -> float:
        raise MiascaleError("bad setting")

    with pytest.raises(MiascaleError, match="bad setting"):
        tune(bad_config, {"x": FloatRange(0.0, 1.0)}, 5, seed=0)

    def bug(p: dict) -> float:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        tune(bug, {"x": FloatRange(0.0, 1.0)}, 5, seed=0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_trials": 0},
        {"n_trials": 2.5},
        {"space": {}},
        {"space": None},
        {"space": {"x": (0, 1)}},
        {"seed": -1},
        {"seed": 2**32},
        {"seed": 1.0},
    ],
)
def test_bad_arguments(kwargs: dict) -> None:
    args = {"space": {"x": FloatRange(0.0, 1.0)}, "n_trials": 3, "seed": 0, **kwargs}
    with pytest.raises(MiascaleError):
        tune(lambda p: 0.0, args["space"], args["n_trials"], args["seed"])


@pytest.mark.parametrize(
    "make",
    [
        lambda: FloatRange(1.0, 0.0),
        lambda: FloatRange(0.0, 1.0, log=True),
        lambda: FloatRange(0.0, float("inf")),
        lambda: IntRange(5, 1),
        lambda: IntRange(0, 10, log=True),
        lambda: IntRange(1.5, 3),
        lambda: Choice(()),
        lambda: Choice((1, 1)),
        lambda: Choice(([1],)),
    ],
)
def test_bad_dimensions(make) -> None:
    with pytest.raises(MiascaleError):
        make()


def test_result_round_trips_through_json() -> None:
    r = tune(_mixed_objective, MIXED, 12, seed=2, info={"note": "x"})
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["method"] == "optuna-tpe" and d["best_params"] == r.best_params
    assert len(d["trials"]) == 12 and d["space"]["batch_size"] == {
        "type": "choice",
        "values": [16, 32, 64, 128],
    }
    back = HpoResult.from_dict(d)
    assert back == r
    for dim in MIXED.values():
        assert dim_from_dict(dim.to_dict()) == dim
    with pytest.raises(MiascaleError):
        HpoResult.from_dict({"best_params": {}})


def test_spaces() -> None:
    assert set(head_space("lbfgs")) == {"l2"}
    assert set(head_space("adam")) == {"learning_rate", "epochs", "batch_size", "l2"}
    assert set(film_space()) == {"learning_rate", "epochs", "batch_size"}
    with pytest.raises(MiascaleError):
        head_space("sgd")
    fields = set(HeadConfig.__dataclass_fields__)
    assert set(head_space("adam")) <= fields
    assert apply_params(HeadConfig(), {"l2": 0.5}).l2 == 0.5
    with pytest.raises(MiascaleError, match="not fields"):
        apply_params(HeadConfig(), {"momentum": 0.5})


# ---------------------------------------------------------------------------------- split


@pytest.mark.parametrize("shots", [2, 3, 5, 10, 20])
def test_split_stratified_70_30_from_one_training_set(shots: int) -> None:
    c = 4
    labels = np.repeat(np.arange(c), 2 * shots)[np.random.default_rng(1).permutation(2 * c * shots)]
    tr, va = hpo_split(labels, shots, seed=7)
    n_val = min(max(math.floor(0.3 * shots + 0.5), 1), shots - 1)
    assert tr.dtype == np.int64 and va.dtype == np.int64
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(va) > 0)
    assert np.intersect1d(tr, va).size == 0
    assert tr.min() >= 0 and max(tr.max(), va.max()) < labels.size
    assert np.array_equal(np.bincount(labels[tr], minlength=c), np.full(c, shots - n_val))
    assert np.array_equal(np.bincount(labels[va], minlength=c), np.full(c, n_val))
    # train + val is one target-like training set: S per class, half the pool
    assert tr.size + va.size == c * shots
    if shots == 10:
        assert (tr.size, va.size) == (28, 12)  # 7/3 per class


def test_split_reproducible_and_seeded() -> None:
    labels = np.repeat(np.arange(3), 20)
    a = hpo_split(labels, 10, seed=0)
    b = hpo_split(labels, 10, seed=0)
    c = hpo_split(labels, 10, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])


def test_split_shots_one_validates_on_the_complement() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    tr, va = hpo_split(labels, 1, seed=0)
    assert np.array_equal(np.sort(labels[tr]), [0, 1, 2])
    assert np.array_equal(np.sort(labels[va]), [0, 1, 2])
    assert np.intersect1d(tr, va).size == 0
    with pytest.raises(MiascaleError, match="class 2 has 1"):
        hpo_split(np.array([0, 0, 1, 1, 2]), 1, seed=0)


def test_split_val_fraction_and_errors() -> None:
    labels = np.repeat(np.arange(2), 20)
    tr, va = hpo_split(labels, 10, seed=0, val_fraction=0.5)
    assert (tr.size, va.size) == (10, 10)
    tr, va = hpo_split(labels, 10, seed=0, val_fraction=0.01)  # clamped to one per class
    assert va.size == 2
    tr, va = hpo_split(labels, 10, seed=0, val_fraction=0.99)  # clamped to one train per class
    assert tr.size == 2
    for bad in (0.0, 1.0, -0.1, float("nan")):
        with pytest.raises(MiascaleError):
            hpo_split(labels, 10, seed=0, val_fraction=bad)
    with pytest.raises(MiascaleError):
        hpo_split(labels, 0, seed=0)
    with pytest.raises(MiascaleError, match="class 0 has 20"):
        hpo_split(labels, 21, seed=0)
    with pytest.raises(MiascaleError):
        hpo_split(np.array([0.0, 1.0]), 1, seed=0)


# ---------------------------------------------------------------------------------- heads


@pytest.fixture(scope="module")
def digits_pool() -> tuple[np.ndarray, np.ndarray, int]:
    x, y = load_digits(return_X_y=True)
    shots = 10
    pool = draw_pool(y, shots, seed=0)
    return x[pool.indices].astype(np.float64), pool.labels, shots


def _sklearn_val_accuracy(x_tr, y_tr, x_va, y_va, l2: float) -> float:
    mu = x_tr.mean(axis=0)
    sd = np.maximum(x_tr.std(axis=0), STD_FLOOR)
    clf = LogisticRegression(C=1.0 / (l2 * len(y_tr)), tol=1e-10, max_iter=10_000)
    clf.fit((x_tr - mu) / sd, y_tr)
    return float(np.mean(clf.predict((x_va - mu) / sd) == y_va))


def test_tune_head_lbfgs_matches_independent_recomputation(digits_pool) -> None:
    x, y, shots = digits_pool
    base = HeadConfig(tol=1e-8)
    config, result = tune_head(x, y, shots, base, n_trials=6, seed=0)
    assert isinstance(config, HeadConfig)
    assert config == HeadConfig(tol=1e-8, l2=result.best_params["l2"])
    assert 1e-6 <= config.l2 <= 10.0
    assert result.metric == "validation_accuracy" and result.n_trials == 6
    info = result.info
    assert (info["n_train"], info["n_val"]) == (70, 30)
    tr, va = hpo_split(y, shots, info["split_seed"])
    assert result.seed == info["sampler_seed"]
    for params, value in result.trials:
        expect = _sklearn_val_accuracy(x[tr], y[tr], x[va], y[va], params["l2"])
        assert value == pytest.approx(expect, abs=1e-12)
    best = _sklearn_val_accuracy(x[tr], y[tr], x[va], y[va], config.l2)
    assert result.best_value == pytest.approx(best, abs=1.0 / 30 + 1e-12)
    assert 0.5 < result.best_value <= 1.0
    json.dumps(result.to_dict(), allow_nan=False)

    again_config, again = tune_head(x, y, shots, base, n_trials=6, seed=0)
    assert again_config == config and again.trials == result.trials


def test_tune_head_adam(digits_pool) -> None:
    x, y, shots = digits_pool
    base = HeadConfig(optimizer="adam", seed=5)
    space = {"learning_rate": FloatRange(1e-3, 1e-1, log=True), "batch_size": Choice((16, 32))}
    config, result = tune_head(x, y, shots, base, n_trials=3, seed=1, space=space)
    assert config.optimizer == "adam" and config.seed == 5 and config.epochs == base.epochs
    assert config.learning_rate == result.best_params["learning_rate"]
    assert config.batch_size in (16, 32)
    assert all(0.0 <= v <= 1.0 for _, v in result.trials)


def test_tune_head_bad_inputs(digits_pool) -> None:
    x, y, shots = digits_pool
    with pytest.raises(MiascaleError, match="not HeadConfig fields"):
        tune_head(x, y, shots, HeadConfig(), 2, 0, space={"momentum": FloatRange(0.0, 1.0)})
    with pytest.raises(MiascaleError):
        tune_head(x, y, shots, HeadConfig(), 0, 0)
    with pytest.raises(MiascaleError):
        tune_head(x, y, shots, {"l2": 1e-3}, 2, 0)
    with pytest.raises(MiascaleError):
        tune_head(x[:-1], y, shots, HeadConfig(), 2, 0)
    # a search space producing invalid configs surfaces the config error, not a failed trial
    with pytest.raises(MiascaleError, match="learning_rate"):
        tune_head(x, y, shots, HeadConfig(), 2, 0, space={"learning_rate": FloatRange(-1.0, -0.5)})
