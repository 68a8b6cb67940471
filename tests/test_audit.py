"""The audit pipeline end to end on small synthetic features, its artifacts and its errors."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from miascale.audit import AuditConfig, audit_features, write_audit
from miascale.cli import app
from miascale.errors import MiascaleError
from miascale.metrics import tpr_at_fpr
from miascale.training.heads import HeadConfig


def blobs(n_per_class=40, n_classes=3, dim=6, seed=0):
    means = np.random.default_rng(12345).normal(scale=1.5, size=(n_classes, dim))
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = means[y] + rng.normal(size=(len(y), dim))
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def data():
    xtr, ytr = blobs(seed=0)
    xte, yte = blobs(n_per_class=20, seed=1)
    return xtr, ytr, xte, yte


def small(**kw):
    return AuditConfig(shots=kw.pop("shots", 8), shadow_models=kw.pop("shadow_models", 16),
                       fpr=(0.1, 0.01), **kw)  # fmt: skip


def test_audit_is_consistent_and_deterministic(data):
    r = audit_features(*data, small())
    k, n = 17, 2 * 3 * 8
    assert r.stats.shape == r.scores.shape == r.plan.in_mask.shape == (k, n)
    # every model trains on exactly S examples per class (balanced design)
    for c in range(3):
        np.testing.assert_array_equal(r.plan.in_mask[:, r.pool.labels == c].sum(1), 8)
    # the reported metrics are the metric module's on the returned scores (one definition)
    again = tpr_at_fpr(r.scores, r.plan.in_mask, (0.1, 0.01))
    assert [m.tpr for m in r.metrics] == [m.tpr for m in again]
    assert r.metrics[0].n_neg == k * n // 2 and r.metrics[1].resolvable
    assert 0.5 < r.test_accuracy.mean() <= 1 and r.converged == k
    r2 = audit_features(*data, small())
    np.testing.assert_array_equal(r.scores, r2.scores)
    r3 = audit_features(*data, small(seed=1))
    assert not np.array_equal(r.pool.indices, r3.pool.indices)


def test_attack_has_power_on_memorisable_data():
    # high-dimensional, weakly regularised: members are recognisable
    xtr, ytr = blobs(n_per_class=30, dim=60, seed=3)
    xte, yte = blobs(n_per_class=10, dim=60, seed=4)
    r = audit_features(xtr, ytr, xte, yte, small(shots=4, head=HeadConfig(l2=1e-4)))
    assert r.auc > 0.6 and r.metrics[0].tpr > 0.1


def test_artifacts(tmp_path, data):
    r = audit_features(*data, small(lira_variant="offline", variance="global"))
    doc = write_audit(r, tmp_path / "run", {"dataset": "blobs"})
    on_disk = json.loads((tmp_path / "run" / "audit.json").read_text())
    assert on_disk == json.loads(json.dumps(doc))
    assert on_disk["schema_version"] == 1 and on_disk["config"]["n_models"] == 17
    assert [row["fpr_level"] for row in on_disk["metrics"]] == [0.1, 0.01]
    with np.load(tmp_path / "run" / "signals.npz") as z:
        assert z["stats"].dtype == np.float64 and z["stats"].shape == (17, 48)
        assert z["in_mask"].dtype == bool and z["labels"].dtype == np.int64
        np.testing.assert_array_equal(z["scores"], r.scores)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["audit.json", "signals.npz"]


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"shots": 0}, "--shots"),
        ({"shadow_models": 1}, "at least 2"),
        ({"classes": 5}, "larger than the 3 classes"),
        ({"attack": "nope"}, "lira"),
        ({"lira_variant": "sideways"}, "online, offline"),
        ({"variance": "none"}, "per-example"),
        ({"shots": 30}, "largest feasible"),
    ],
)
def test_bad_input(data, kw, msg):
    with pytest.raises(MiascaleError, match=msg):
        audit_features(*data, small(**kw))


def test_bad_fpr_and_nan(data):
    with pytest.raises(MiascaleError, match="strictly between 0 and 1"):
        audit_features(*data, AuditConfig(shots=4, fpr=(0.1, 1.0)))
    xtr = data[0].copy()
    xtr[5, 2] = np.nan
    with pytest.raises(MiascaleError, match="NaN"):
        audit_features(xtr, *data[1:], small())


def test_cli_audit_json(tmp_path, data):
    xtr, ytr, xte, yte = data
    p = tmp_path / "f.npz"
    np.savez(p, features=xtr, labels=ytr, features_test=xte, labels_test=yte)
    r = CliRunner().invoke(app, ["audit", "--dataset", f"npz:{p}", "--backbone", "identity",
                                 "--shots", "4", "--shadow-models", "8", "--fpr", "0.1",
                                 "--json", "--out", str(tmp_path / "out")])  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["config"]["shots"] == 4 and len(doc["metrics"]) == 1
    assert (tmp_path / "out" / "signals.npz").is_file()
    bad = CliRunner().invoke(app, ["audit", "--dataset", f"npz:{p}", "--backbone", "identity",
                                   "--shots", "4", "--fpr", "0.1,abc"])  # fmt: skip
    assert isinstance(bad.exception, MiascaleError)


def test_cli_audit_per_example(tmp_path, data):
    xtr, ytr, xte, yte = data
    p = tmp_path / "f.npz"
    np.savez(p, features=xtr, labels=ytr, features_test=xte, labels_test=yte)
    r = CliRunner().invoke(app, ["audit", "--dataset", f"npz:{p}", "--backbone", "identity",
                                 "--shots", "4", "--shadow-models", "9", "--fpr", "0.1,0.01",
                                 "--per-example", "--json", "--out", str(tmp_path / "o")])  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    levels = doc["per_example"]["levels"]
    assert [lv["fpr_level"] for lv in levels] == [0.1, 0.01]
    assert levels[0]["cross_fit"]["n_models_a"] == 5  # K = 10 split in halves
    with (
        np.load(tmp_path / "o" / "signals.npz") as s,
        np.load(tmp_path / "o" / "per_example.npz") as z,
    ):
        assert z["tpr"].shape == (2, 24) and len(z["dataset_index"]) == doc["pool"]["size"]
        # per-example means agree with the raw statistics
        stats, mask = s["stats"], s["in_mask"]
        np.testing.assert_allclose(z["mu_in"], (stats * mask).sum(0) / mask.sum(0))
        np.testing.assert_allclose(z["mu_out"], (stats * ~mask).sum(0) / (~mask).sum(0))
        top = levels[0]["summary"]["top_indices"][0]
        assert np.nanmax(z["tpr"][0]) == pytest.approx(z["tpr"][0][top])
    assert (
        json.loads((tmp_path / "o" / "audit.json").read_text())["per_example"] == doc["per_example"]
    )
