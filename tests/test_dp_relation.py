"""The neighbouring relation of the membership game: replace-one ε, what is recorded, what bounds."""

from __future__ import annotations

import json
import math
import types

import numpy as np
import pytest
from typer.testing import CliRunner

from miascale.errors import MiascaleError
from miascale.planning import Coefficients, dp_max_advantage, dp_max_tpr, plan, plan_sentence
from miascale.privacy import (
    PLD_DISCRETIZATION,
    _group_privacy_epsilon,
    calibrate_noise,
    dp_roc_bound,
    epsilon_for,
    game_relation,
    replace_one_from_add_remove,
)

# (sigma, q, T, delta): subsampled and full-batch settings the trainer uses
SETTINGS = [(1.0, 0.2, 200, 1e-4), (0.8, 0.01, 1000, 1e-5), (10.0, 1.0, 200, 1e-3)]


# --------------------------------------------------------------------------------------------
# Accounting
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sigma", "q", "steps", "delta"), SETTINGS)
def test_replace_one_is_larger_and_within_group_privacy(sigma, q, steps, delta):
    e_ar = epsilon_for(sigma, q, steps, delta)
    e_r1 = epsilon_for(sigma, q, steps, delta, relation="replace_one")
    assert e_ar == epsilon_for(sigma, q, steps, delta, "pld", "add_remove")  # default unchanged
    assert e_r1 > e_ar
    # group privacy: add/remove (ε, δ) => replace-one (2ε, (1 + e^ε) δ); the library's
    # replace-one ε at that δ never exceeds 2ε
    eps2, delta2 = replace_one_from_add_remove(e_ar, delta)
    if delta2 < 1.0:
        assert epsilon_for(sigma, q, steps, delta2, relation="replace_one") <= eps2


def test_replace_one_is_the_library_pld_accounting():
    import dp_accounting
    from dp_accounting.pld import PLDAccountant

    sigma, q, steps, delta = 1.0, 0.2, 200, 1e-4
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
    )
    acc = PLDAccountant(
        dp_accounting.NeighboringRelation.REPLACE_ONE,
        value_discretization_interval=PLD_DISCRETIZATION,
    )
    want = acc.compose(event).get_epsilon(delta)
    assert epsilon_for(sigma, q, steps, delta, relation="replace_one") == pytest.approx(want)
    # q = 1: replacing one example is the Gaussian mechanism with twice the sensitivity
    full = epsilon_for(3.0, 1.0, 50, 1e-3)
    assert epsilon_for(6.0, 1.0, 50, 1e-3, relation="replace_one") == pytest.approx(full, rel=2e-3)


def test_rdp_replace_one_falls_back_to_group_privacy():
    sigma, q, steps, delta = 0.8, 0.01, 1000, 1e-5
    e_ar = epsilon_for(sigma, q, steps, delta, "rdp")
    e_r1 = epsilon_for(sigma, q, steps, delta, "rdp", "replace_one")
    assert e_r1 > 2.0 * e_ar  # 2 ε₀ at a smaller δ₀
    assert e_r1 >= 0.99 * epsilon_for(sigma, q, steps, delta, "pld", "replace_one")  # looser


def test_group_privacy_search_fits_delta_and_is_nearly_largest():
    a, delta = 0.7, 1e-5

    def eps_of(d):  # a smooth, decreasing ε(δ) with a closed-form inverse
        return a * math.sqrt(math.log(1.0 / d))

    result = _group_privacy_epsilon(eps_of, delta)
    e0 = result / 2.0
    d0 = math.exp(-((e0 / a) ** 2))
    assert (1.0 + math.exp(e0)) * d0 <= delta * (1 + 1e-9)
    assert (1.0 + math.exp(e0)) * d0 >= delta * 0.999
    assert _group_privacy_epsilon(lambda d: 0.0, delta) == 0.0
    assert _group_privacy_epsilon(lambda d: 1e9, delta) == math.inf  # nothing fits


def test_calibration_with_a_relation():
    q, steps, delta = 1.0, 30, 1e-3
    s_ar = calibrate_noise(2.0, delta, q, steps)
    s_r1 = calibrate_noise(2.0, delta, q, steps, relation="replace_one")
    assert s_r1 == pytest.approx(2.0 * s_ar, rel=2e-3)  # q = 1: twice the sensitivity
    got = epsilon_for(s_r1, q, steps, delta, relation="replace_one")
    assert 2.0 * 0.99 <= got <= 2.0 * (1 + 1e-6)
    s_rdp = calibrate_noise(2.0, delta, q, steps, "rdp", "replace_one")  # group-privacy bisection
    got = epsilon_for(s_rdp, q, steps, delta, "rdp", "replace_one")
    assert 2.0 * 0.99 <= got <= 2.0 * (1 + 1e-6) and s_rdp > s_r1


def test_conversion_game_relation_and_bad_relation():
    e, d = replace_one_from_add_remove(1.0, 1e-5)
    assert e == 2.0 and d == pytest.approx((1 + math.e) * 1e-5)
    assert replace_one_from_add_remove(0.5, 0.0) == (1.0, 0.0)
    assert replace_one_from_add_remove(800.0, 1e-5) == (1600.0, math.inf)
    assert game_relation("balanced") == "replace_one" and game_relation("bernoulli") == "add_remove"
    with pytest.raises(MiascaleError, match="design"):
        game_relation("poisson")
    for call in (
        lambda: epsilon_for(1.0, 0.1, 10, 1e-5, relation="replace"),
        lambda: calibrate_noise(1.0, 1e-5, 0.1, 10, relation="add-remove"),
        lambda: replace_one_from_add_remove(-1.0, 1e-5),
        lambda: replace_one_from_add_remove(1.0, 1.0),
    ):
        with pytest.raises(MiascaleError):
            call()


# --------------------------------------------------------------------------------------------
# What a DP-trained audit records, and what bounds its attacks
# --------------------------------------------------------------------------------------------


def _blobs(n_per_class, seed, n_classes=3, dim=6):
    means = np.random.default_rng(12345).normal(scale=1.5, size=(n_classes, dim))
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    return (means[y] + rng.normal(size=(len(y), dim))).astype(np.float32), y


@pytest.fixture(scope="module")
def dp_audits():
    from miascale.audit import AuditConfig, audit_features
    from miascale.training.dp import DPConfig

    xtr, ytr = _blobs(40, 0)
    xte, yte = _blobs(20, 1)
    out = {}
    for design in ("balanced", "bernoulli"):
        cfg = AuditConfig(shots=8, shadow_models=16, fpr=(0.1, 0.01), attack="lira,loss",
                          membership=design, dp=DPConfig(epsilon=2.0, steps=50))  # fmt: skip
        out[design] = audit_features(xtr, ytr, xte, yte, cfg)
    return out


def test_audit_records_the_relation_of_its_design(dp_audits, tmp_path):
    from miascale.audit import write_audit

    bal, ber = dp_audits["balanced"].dp, dp_audits["bernoulli"].dp
    assert bal["relation"] == "replace_one" and ber["relation"] == "add_remove"
    assert bal["epsilon"] <= 2.0 * 1.01 < bal["epsilon_game"]  # calibrated add/remove, game larger
    assert bal["delta_game"] == bal["delta"]
    want = epsilon_for(bal["noise_multiplier"], bal["sampling_rate"], bal["steps"], bal["delta"],
                       relation="replace_one")  # fmt: skip
    assert bal["epsilon_game"] == pytest.approx(want)
    assert ber["epsilon_game"] == ber["epsilon"] and ber["delta_game"] == ber["delta"]
    doc = write_audit(dp_audits["balanced"], tmp_path, {})
    assert {"relation", "epsilon_game", "delta_game"} <= set(doc["privacy"])
    json.dumps(doc["privacy"], allow_nan=False)


@pytest.mark.parametrize("design", ["balanced", "bernoulli"])
def test_attacks_stay_under_the_bound_of_the_game(dp_audits, design):
    r = dp_audits[design]
    eps, delta = r.dp["epsilon_game"], r.dp["delta_game"]
    for o in r.outcomes:
        assert o.empirical_epsilon["delta"] == delta
        assert 0.0 <= o.empirical_epsilon["epsilon_lb"] <= eps
        for m in o.metrics:  # the Clopper–Pearson low end of TPR sits under the game's bound
            bound = dp_roc_bound(np.array([m.achieved_fpr]), eps, delta)[0]
            assert m.cp_low <= bound + 1e-12


def test_sweep_rows_carry_the_game_epsilon(tmp_path):
    from miascale.experiments.cells import compute_cell
    from miascale.experiments.grid import Cell

    xtr, ytr = _blobs(20, 0)
    xte, yte = _blobs(10, 1)
    fs = types.SimpleNamespace(x_train=xtr, y_train=ytr, x_test=xte, y_test=yte,
                               class_names=("a", "b", "c"))  # fmt: skip
    cell = Cell(dataset="blobs", backbone="none", classes=None, shots=4, seed=3, shadow_models=7,
                fpr=(0.1,), resolution=None, min_per_class=None, membership="balanced", l2=1e-3,
                variants=("lira-online",), epsilon=2.0, dp_steps=20)  # fmt: skip
    rows, _ = compute_cell(cell, fs, tmp_path)
    row = rows[0]
    assert row["relation"] == "replace_one" and row["delta_game"] == row["delta"]
    assert row["epsilon_game"] > row["accountant_epsilon"]
    assert row["empirical_epsilon_delta"] == row["delta_game"]
    json.dumps(row, allow_nan=False)


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def _dp_row(shots, **kw):
    row = {"dataset": "d", "backbone": "b", "classes": 3, "shots": shots, "fpr_level": 0.01,
           "attack": "lira", "variant": "online dp ε=2", "base_variant": "online", "tpr": 0.02,
           "test_accuracy": 0.5, "empirical_epsilon": 0.3, "epsilon": 2.0,
           "accountant_epsilon": 1.99, "delta": 1e-3, "noise_multiplier": 3.0}  # fmt: skip
    return {**row, **kw}


def test_report_bounds_use_the_game_epsilon():
    from miascale.report.html import _dp_bound_lines

    game = {"relation": "replace_one", "epsilon_game": 4.5, "delta_game": 1e-3}
    by_fpr = {0.01: {4: [_dp_row(4, **game)], 8: [_dp_row(8, **game)]}}
    ((label, shots, values, _),) = _dp_bound_lines(by_fpr)
    np.testing.assert_array_equal(shots, [4.0, 8.0])
    assert "replace-one" in label and "4.5" in label
    want = dp_roc_bound(np.array([0.01]), 4.5, 1e-3)[0] - 0.01
    np.testing.assert_allclose(values, [want, want])
    assert values[0] > dp_roc_bound(np.array([0.01]), 2.0, 1e-3)[0] - 0.01
    # rows written before the game's ε was recorded: the add/remove ε, labelled
    ((label, _, values, _),) = _dp_bound_lines({0.01: {4: [_dp_row(4)]}})
    assert "add/remove, old run" in label
    np.testing.assert_allclose(values, [dp_roc_bound(np.array([0.01]), 1.99, 1e-3)[0] - 0.01])


def test_report_privacy_table_names_the_game(tmp_path):
    from miascale.report.html import RunData, _section_privacy

    game = {"relation": "replace_one", "epsilon_game": 4.5, "delta_game": 1e-3}
    plain = {k: v for k, v in _dp_row(4).items() if k not in ("epsilon", "accountant_epsilon")}
    plain["variant"] = "online"
    run = RunData(tmp_path, {}, {"variants": ["lira-online"]},
                  [plain, _dp_row(4, **game), _dp_row(8)], [], None, "none")  # fmt: skip
    text = _section_privacy(run)
    assert "bound: replace-one ε 4.5, δ 1e-03; accountant add/remove ε 1.99" in text
    assert "bound: add/remove, old run ε 1.99" in text


# --------------------------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------------------------


def _law():
    return Coefficients(-0.5, -1.5, fpr_level=0.001, cov=((0.01, 0.0), (0.0, 0.001)), dof=10,
                        n_points=8, r_squared=0.99, shots_range=(1.0, 1000.0))  # fmt: skip


def test_plan_for_a_replace_one_game():
    ar = plan(_law(), None, epsilon=1.0, delta=1e-5)
    r1 = plan(_law(), None, epsilon=1.0, delta=1e-5, relation="replace_one")
    assert r1.target_advantage > ar.target_advantage and r1.shots < ar.shots
    assert r1.target_advantage == pytest.approx(dp_max_advantage(0.001, 2.0, (1 + math.e) * 1e-5))
    assert ar.target_advantage == dp_max_advantage(0.001, 1.0, 1e-5)  # default unchanged
    d = r1.to_dict()
    assert d["relation"] == "replace_one" and d["epsilon"] == 1.0
    assert d["bound_epsilon"] == 2.0 and d["bound_delta"] == pytest.approx((1 + math.e) * 1e-5)
    assert ar.to_dict()["relation"] == "add_remove" and ar.to_dict()["bound_epsilon"] == 1.0
    assert "(add/remove ε, bound for the replace-one game)" in plan_sentence(r1)
    assert "replace-one" not in plan_sentence(ar)
    direct = plan(_law(), None, target_advantage=0.01)
    assert direct.bound_epsilon is None and direct.to_dict()["bound_delta"] is None
    with pytest.raises(MiascaleError, match="needs epsilon"):
        plan(_law(), None, target_advantage=0.01, relation="replace_one")
    with pytest.raises(MiascaleError, match="relation"):
        plan(_law(), None, epsilon=1.0, relation="replace")
    with pytest.raises(MiascaleError, match=r"replace-one game.*vacuous"):
        plan(_law(), None, epsilon=8.0, delta=1e-2, relation="replace_one")


def test_dp_max_with_relation():
    assert dp_max_tpr(0.01, 1.0, 1e-5, "replace_one") == pytest.approx(
        dp_max_tpr(0.01, 2.0, (1 + math.e) * 1e-5)
    )
    assert dp_max_advantage(0.01, 1.0, 0.0, "replace_one") == dp_max_advantage(0.01, 2.0)
    assert dp_max_advantage(0.01, 8.0, 0.5, "replace_one") >= 1.0 - 0.01  # δ capped at 1: vacuous


def test_cli_plan_relation():
    from miascale.cli import app

    runner = CliRunner()
    bare = ["plan", "--fpr", "0.01", "--beta-s", "-0.5", "--beta-0", "-0.3", "--epsilon", "1"]
    ar = json.loads(runner.invoke(app, [*bare, "--json"]).stdout)
    r = runner.invoke(app, [*bare, "--relation", "replace-one", "--json"])
    assert r.exit_code == 0, r.output
    r1 = json.loads(r.stdout)
    assert ar["relation"] == "add_remove" and r1["relation"] == "replace_one"
    assert r1["shots"] < ar["shots"] and r1["target_advantage"] > ar["target_advantage"]
    r = runner.invoke(app, [*bare, "--relation", "replace-one"])
    assert "replace-one game" in r.stdout
    r = runner.invoke(app, [*bare, "--relation", "swap"])
    assert isinstance(r.exception, MiascaleError) and "--relation" in str(r.exception)
