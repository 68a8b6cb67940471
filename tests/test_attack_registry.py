"""The attack registry, the Variant type, the Signals artifact and the one ROC evaluation.

A toy attack is registered from this file alone and runs through ``audit`` and ``sweep``: its
scores are the LiRA statistic itself, so the metrics the tool reports must equal the metrics of
the stored statistics computed here independently.
"""

import json
from dataclasses import dataclass

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from miascale.attacks import (
    AttackSpec,
    Variant,
    parse_attacks,
    parse_variants,
    register_attack,
    unregister_attack,
    variant_names,
)
from miascale.audit import AuditConfig, Signals
from miascale.cli import app
from miascale.errors import MiascaleError
from miascale.metrics import Evaluation, auc, best_balanced_accuracy, tpr_at_fpr


@dataclass(frozen=True)
class ToyOptions:
    sign: float = 1.0

    @classmethod
    def from_config(cls, config):
        return cls(sign=1.0)


@dataclass(frozen=True)
class ToyResult:
    scores: np.ndarray


def toy_attack(stats, in_mask, *, population_stats=None, sign=1.0):
    """Higher φ under the target = member: the statistic itself is the score."""
    return ToyResult(scores=sign * np.asarray(stats, dtype=float))


@pytest.fixture
def toy():
    spec = register_attack(AttackSpec("toy", toy_attack, modes=(), options=ToyOptions,
                                      details=lambda res, opts, v: {"sign": opts.sign}))  # fmt: skip
    try:
        yield spec
    finally:
        unregister_attack("toy")


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    rng = np.random.default_rng(3)
    means = rng.normal(scale=1.5, size=(3, 12))
    y = np.repeat(np.arange(3), 60)
    p = tmp_path_factory.mktemp("toy") / "f.npz"
    np.savez(p, features=means[y] + rng.normal(size=(len(y), 12)), labels=y)
    return p


def _check_metrics_match(signals: Signals, metrics: list[dict], fpr: tuple[float, ...]):
    """The reported metrics of the toy variant equal TPR@FPR of the stored statistics."""
    np.testing.assert_array_equal(signals.scores["toy"], signals.stats)
    ref = tpr_at_fpr(signals.stats, signals.in_mask, fpr)
    assert [m["tpr"] for m in metrics] == pytest.approx([r.tpr for r in ref])
    assert [m["true_positives"] for m in metrics] == [r.true_positives for r in ref]


def test_toy_attack_runs_through_audit(toy, features, tmp_path):
    assert "toy" in variant_names() and parse_attacks("toy,lira") == ("toy", "lira-online")
    out = tmp_path / "audit"
    r = CliRunner().invoke(app, ["audit", "--dataset", f"npz:{features}", "--backbone",
                                 "identity", "--shots", "8", "--shadow-models", "8", "--attack",
                                 "toy,lira", "--fpr", "0.1,0.05", "--json", "--out", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [a["variant"] for a in doc["attacks"]] == ["toy", "lira-online"]
    assert doc["attacks"][0]["sign"] == 1.0  # the attack's details are recorded
    signals = Signals.load(out)
    assert signals.primary == "toy" and set(signals.scores) == {"toy", "lira-online"}
    _check_metrics_match(signals, doc["attacks"][0]["metrics"], (0.1, 0.05))
    ref_auc = roc_auc_score(signals.in_mask.ravel(), signals.stats.ravel())
    assert doc["attacks"][0]["auc"] == pytest.approx(ref_auc)


def test_toy_attack_runs_through_sweep(toy, features, tmp_path):
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["sweep", "--dataset", f"npz:{features}", "--backbone",
                                 "identity", "--shots", "4,8", "--seed", "0",
                                 "--shadow-models", "8", "--attack", "toy", "--fpr", "0.1",
                                 "--out", str(run), "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["ran"] == 2
    from miascale.experiments.store import ResultStore

    with ResultStore.load(run) as store:
        rows = store.rows()
    assert {(row["attack"], row["variant"]) for row in rows} == {("toy", "global")}
    for row in rows:
        signals = Signals.load(run / "cells" / row["cell_id"])
        _check_metrics_match(signals, [row], (0.1,))


def test_registry_rules(toy):
    assert Variant.from_name("toy") == Variant("toy") and Variant("toy").columns == (
        "toy",
        "global",
    )
    assert "toy" in parse_attacks("all")
    assert parse_variants("lira", mode="offline") == (Variant("lira", "offline"),)
    with pytest.raises(MiascaleError, match="already registered"):
        register_attack(AttackSpec("toy", toy_attack))
    with pytest.raises(MiascaleError, match="without '-'"):
        AttackSpec("toy-2", toy_attack)
    with pytest.raises(MiascaleError, match="Unknown attack variant"):
        Variant.from_name("toy-online")  # the toy attack has no modes
    assert not AuditConfig(shots=2, attack="toy").needs_population
    assert AuditConfig(shots=2, attack="toy,rmia").needs_population


def test_unregistered_attack_is_gone():
    assert "toy" not in variant_names()
    with pytest.raises(MiascaleError, match="Unknown attack"):
        AuditConfig(shots=2, attack="toy")


def test_evaluation_sorts_once_and_matches_the_functions():
    rng = np.random.default_rng(0)
    labels = rng.random(2000) < 0.5
    scores = np.round(rng.normal(size=2000) + labels, 1)  # ties on purpose
    groups = np.arange(2000) % 250
    ev = Evaluation(scores, labels, groups)
    assert ev.auc() == pytest.approx(roc_auc_score(labels, scores)) == auc(scores, labels)
    assert ev.best_balanced_accuracy() == best_balanced_accuracy(scores, labels)
    assert ev.tpr_at_fpr((0.1, 0.01), n_boot=30, seed=2) == tpr_at_fpr(
        scores, labels, (0.1, 0.01), groups=groups, n_boot=30, seed=2
    )


def test_signals_roundtrip_and_versions(tmp_path):
    rng = np.random.default_rng(1)
    k, n = 5, 12
    s = Signals(stats=rng.normal(size=(k, n)), in_mask=rng.random((k, n)) < 0.5,
                labels=np.arange(n) % 3, scores={"b": rng.normal(size=(k, n)),
                                                 "a": rng.normal(size=(k, n))})  # fmt: skip
    path = s.save(tmp_path / "signals.npz")
    back = Signals.load(path)
    assert back.primary == "b" and list(back.scores) == ["b", "a"]
    np.testing.assert_array_equal(back.primary_scores, s.scores["b"])
    with np.load(path) as z:  # the documented keys (docs/audit.md)
        assert int(z["schema_version"]) == 2
        np.testing.assert_array_equal(z["scores"], s.scores["b"])
    np.savez(tmp_path / "v1.npz", stats=s.stats, in_mask=s.in_mask, scores=s.scores["a"])
    old = Signals.load(tmp_path / "v1.npz")
    assert old.schema_version == 1 and old.primary == "scores"
    np.savez(tmp_path / "v9.npz", stats=s.stats, in_mask=s.in_mask, schema_version=9)
    with pytest.raises(MiascaleError, match="schema version 9"):
        Signals.load(tmp_path / "v9.npz")
    with pytest.raises(MiascaleError, match="one \\(K, N\\) shape"):
        Signals(stats=s.stats, in_mask=s.in_mask[:, :3])


def test_an_attack_with_one_mode_takes_it():
    register_attack(AttackSpec("only", toy_attack, modes=("offline",)))
    try:
        assert AuditConfig(shots=2, attack="only").variants == ("only-offline",)
        assert parse_attacks("only,lira", mode="online") == ("only-offline", "lira-online")
        with pytest.raises(MiascaleError, match="Unknown attack variant"):
            AuditConfig(shots=2, attack="only-online")
    finally:
        unregister_attack("only")
