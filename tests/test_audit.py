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
    assert on_disk["schema_version"] == 2 and on_disk["config"]["n_models"] == 17
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
        ({"shadow_models": 3}, "at least 4"),
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
    # K = 10 split in halves keeping the balanced plan's 5 complementary pairs together
    # (DESIGN §3): 2 pairs in A, 3 in B (a random split used to give 5 and 5)
    assert levels[0]["cross_fit"]["n_models_a"] == 4
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


def test_hpo_is_reproducible_and_recorded(tmp_path, data):
    cfg = small(hpo_trials=4)
    r1, r2 = audit_features(*data, cfg), audit_features(*data, cfg)
    assert r1.hpo is not None and r1.hpo == r2.hpo
    assert len(r1.hpo["trials"]) == 4
    # every model trained with the tuned l2 (recorded), and the result follows from it
    best_l2 = r1.hpo["best_params"]["l2"]
    assert r1.head.l2 == best_l2
    plain = audit_features(*data, small(head=HeadConfig(l2=best_l2)))
    np.testing.assert_allclose(r1.stats, plain.stats)
    doc = write_audit(r1, tmp_path, {"dataset": "blobs"})
    on_disk = json.loads((tmp_path / "audit.json").read_text())
    assert on_disk["hpo"]["best_params"] == {"l2": best_l2} == doc["hpo"]["best_params"]
    assert on_disk["head_used"]["l2"] == best_l2 and on_disk["config"]["hpo_trials"] == 4


def test_all_attacks_share_models_and_are_recorded(tmp_path, data):
    _, _, xte, yte = data
    # RMIA needs >= 100 population points outside the pool: a larger train split
    xbig, ybig = blobs(n_per_class=80, seed=5)
    r = audit_features(xbig, ybig, xte, yte, small(attack="lira,rmia,loss,lira-offline"))
    assert [o.variant for o in r.outcomes] == ["lira-online", "rmia-online", "loss", "lira-offline"]
    assert r.population_stats.shape == (17, 3 * 80 - r.pool.size)
    # the primary attack is the first; every variant's metrics come from its own scores
    np.testing.assert_array_equal(r.scores, r.outcomes[0].scores)
    for o in r.outcomes:
        ok = np.isfinite(o.scores)
        again = tpr_at_fpr(o.scores[ok], r.plan.in_mask[ok], (0.1, 0.01))
        assert [m.tpr for m in o.metrics] == [m.tpr for m in again]
    # LOSS is the target model's own log p_y: monotone in the statistic
    loss = r.outcomes[2].scores
    order = np.argsort(r.stats.ravel(), kind="stable")
    assert np.all(np.diff(loss.ravel()[order]) >= 0)
    write_audit(r, tmp_path, {})
    doc = json.loads((tmp_path / "audit.json").read_text())
    assert [a["variant"] for a in doc["attacks"]] == [o.variant for o in r.outcomes]
    with np.load(tmp_path / "signals.npz") as z:
        for o in r.outcomes:
            np.testing.assert_array_equal(z[f"scores__{o.variant}"], o.scores)
        assert z["population_stats"].shape == r.population_stats.shape


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"attack": "lira,nope"}, "Unknown attack"),
        ({"attack": "rmia", "rmia_gamma": 0.0}, "γ"),
        ({"attack": "rmia-offline", "rmia_a": 1.5}, r"\[0, 1\]"),
        ({"attack": "rmia", "population": 50}, "population"),
    ],
)
def test_attack_option_errors(data, kw, msg):
    with pytest.raises(MiascaleError, match=msg):
        audit_features(*data, small(**kw))


def test_rmia_needs_a_population(data):
    # 3 classes × 40 train examples, pool 48: only 72 points left → a clear error
    with pytest.raises(MiascaleError, match="at least 100 population points"):
        audit_features(*data, small(attack="rmia"))


def test_dp_audit_records_the_guarantee_and_stays_under_it(tmp_path, data):
    from miascale.training.dp import DPConfig

    r = audit_features(*data, small(attack="lira,loss", dp=DPConfig(epsilon=2.0, steps=50)))
    assert r.dp is not None and r.head is None
    assert 0 < r.dp["epsilon"] <= 2.0 * 1.01 and r.dp["delta"] < 1 / 24
    for o in r.outcomes:  # an empirical lower bound can never exceed the accountant's ε
        assert o.empirical_epsilon["delta"] == r.dp["delta"]
        assert o.empirical_epsilon["epsilon_lb"] <= r.dp["epsilon"]
    doc = write_audit(r, tmp_path, {})
    assert doc["privacy"]["noise_multiplier"] > 0 and doc["config"]["dp"]["epsilon"] == 2.0
    # the same seed gives the same noise; DP and HPO do not mix
    again = audit_features(*data, small(attack="lira,loss", dp=DPConfig(epsilon=2.0, steps=50)))
    np.testing.assert_array_equal(r.stats, again.stats)
    with pytest.raises(MiascaleError, match="hpo"):
        audit_features(*data, small(dp=DPConfig(epsilon=2.0), hpo_trials=2))


def test_non_dp_audit_reports_an_empirical_epsilon(data):
    xtr, ytr = blobs(n_per_class=30, dim=60, seed=3)
    xte, yte = blobs(n_per_class=10, dim=60, seed=4)
    r = audit_features(xtr, ytr, xte, yte, small(shots=4, head=HeadConfig(l2=1e-4)))
    e = r.outcomes[0].empirical_epsilon
    assert r.dp is None and e["epsilon_lb"] > 0 and e["delta"] == 1e-3  # n = 12 per model


def _image_dataset(n_per_class=50, n_classes=3):
    from miascale.data.base import Dataset

    rng = np.random.default_rng(0)
    protos = rng.integers(0, 256, size=(n_classes, 16, 16))

    def draw(n):
        y = np.repeat(np.arange(n_classes), n)
        x = np.clip(protos[y] + rng.normal(scale=40, size=(len(y), 16, 16)), 0, 255)
        return x.astype(np.uint8), y.astype(np.int64)

    xtr, ytr = draw(n_per_class)
    xte, yte = draw(10)
    return Dataset("blobs-img", "image", xtr, ytr, xte, yte, ("a", "b", "c"), "test")


@pytest.mark.slow
def test_film_audit_end_to_end_with_hpo(monkeypatch):
    import miascale.hpo
    from miascale.audit import run_attacks, train_and_signal_film
    from miascale.training.film import FilmConfig

    # a small search space keeps the test fast; the real one is film_space()
    monkeypatch.setattr(miascale.hpo, "film_space", lambda: {
        "learning_rate": miascale.hpo.FloatRange(1e-3, 1e-2, log=True),
        "epochs": miascale.hpo.IntRange(1, 2)})  # fmt: skip
    ds = _image_dataset()
    # M = 4 (K = 5): with the complementary partner left out of the shadows (DESIGN §3), K = 4
    # would leave each target a single pair of shadows, from which LiRA fits no spread
    cfg = AuditConfig(shots=2, shadow_models=4, fpr=(0.1,), finetune="film", attack="lira,rmia",
                      film=FilmConfig(epochs=2, batch_size=4), film_eval=100, hpo_trials=2)  # fmt: skip
    t = train_and_signal_film(ds, "efficientnet-lite0", 32, cfg)
    assert t.stats.shape == t.plan.in_mask.shape == (5, 12) and np.isfinite(t.stats).all()
    assert t.film["resolution"] == 32 and t.film["trainable_parameters_per_model"] > 0
    assert t.hpo is not None and len(t.hpo["trials"]) == 2
    # the tuned values are the ones every model trained with
    for k, v in t.hpo["best_params"].items():
        assert t.film["config"][k] == v
    assert t.population_stats.shape == (5, 100) and 0 <= t.test_accuracy.min()
    outcomes = run_attacks(t, cfg)
    assert [o.variant for o in outcomes] == ["lira-online", "rmia-online"]
    again = train_and_signal_film(ds, "efficientnet-lite0", 32, cfg)
    np.testing.assert_allclose(again.stats, t.stats, rtol=1e-6, atol=1e-9)
    with pytest.raises(MiascaleError, match="heads only"):
        AuditConfig(shots=2, finetune="film", dp=__import__("miascale.training.dp").training.dp
                    .DPConfig(epsilon=1.0)).validate()  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "msg"),
    [
        (["--clip", "2"], r"--clip only apply to --epsilon"),
        (["--epsilon", "1", "--l2", "0.1"], r"--l2 only apply to exact heads"),
        (["--epochs", "3"], r"--epochs only apply to --finetune film"),
        (["--epsilon", "1", "--hpo", "2"], "hpo"),
        (["--epsilon", "1", "--finetune", "film"], "heads only"),
    ],
)
def test_cli_options_of_another_mode_are_errors(tmp_path, data, extra, msg):
    xtr, ytr, xte, yte = data
    p = tmp_path / "f.npz"
    np.savez(p, features=xtr, labels=ytr, features_test=xte, labels_test=yte)
    r = CliRunner().invoke(app, ["audit", "--dataset", f"npz:{p}", "--backbone", "identity",
                                 "--shots", "4", "--shadow-models", "4", *extra])  # fmt: skip
    assert isinstance(r.exception, MiascaleError), r.output
    assert __import__("re").search(msg, str(r.exception))


def test_cli_dp_audit_prints_the_guarantee(tmp_path, data):
    xtr, ytr, xte, yte = data
    p = tmp_path / "f.npz"
    np.savez(p, features=xtr, labels=ytr, features_test=xte, labels_test=yte)
    r = CliRunner().invoke(app, ["audit", "--dataset", f"npz:{p}", "--backbone", "identity",
                                 "--shots", "4", "--shadow-models", "4", "--epsilon", "2",
                                 "--steps", "20", "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["privacy"]["steps"] == 20 and doc["privacy"]["epsilon"] <= 2.0 * 1.01
    # the noise seed actually used is recorded: the plan seed derived from --seed 0
    assert doc["privacy"]["seed"] == doc["membership"]["seed"]
