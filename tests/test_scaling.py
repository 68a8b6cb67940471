"""Tests for miascale.scaling against independent references (numpy least squares, closed forms)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from miascale.errors import MiascaleError
from miascale.scaling import (
    Coefficients,
    LevelFit,
    ScalingFit,
    fit_power_law,
    plan,
    predict,
)

FPR = 0.01
SHOTS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _row(dataset, classes, shots, seed, tpr, *, fpr=FPR, ci_high=None, resolvable=True, **kw):
    return {
        "dataset": dataset,
        "backbone": kw.get("backbone", "bb"),
        "classes": classes,
        "shots": shots,
        "seed": seed,
        "attack": kw.get("attack", "lira"),
        "variant": kw.get("variant", "online"),
        "fpr_level": fpr,
        "tpr": tpr,
        "ci_low": max(0.0, tpr - 0.05),
        "ci_high": min(0.99, tpr + 0.05) if ci_high is None else ci_high,
        "advantage": tpr - fpr,
        "resolvable": resolvable,
        "n_neg": kw.get("n_neg", 1000),
        "se": kw.get("se"),
        # Clopper–Pearson over pairs: narrower than the bootstrap (half of its width here)
        **(
            {}
            if kw.get("se") is None
            else {
                "cp_low": max(0.0, tpr - 0.98 * kw["se"]),
                "cp_high": min(1.0, tpr + 0.98 * kw["se"]),
            }
        ),
        "test_accuracy": 0.8,
    }


def _synthetic(beta_s, beta_0, beta_c=0.0, classes=(10,), seed=0, sigma=0.05, dataset="d1", **kw):
    """Rows from the law with multiplicative log-normal noise (3 seeds per cell), each with a
    bootstrap SE of sigma·advantage; also the cells as (C, S, [advantages], [SEs])."""
    rng = np.random.default_rng(seed)
    rows, cells = [], []
    for c in classes:
        for s in SHOTS:
            law = beta_s * math.log10(s) + beta_c * math.log10(c) + beta_0
            advs = 10.0**law * np.exp(rng.normal(0.0, sigma, size=3))
            ses = sigma * advs
            for k, (a, se) in enumerate(zip(advs, ses, strict=True)):
                rows.append(_row(dataset, c, s, k, FPR + float(a), se=float(se), **kw))
            cells.append((c, s, advs, ses))
    return rows, cells


def _reference_wls(cells, use_c, confidence=0.95):
    """Independent reference: cell mean and SE by hand, then statsmodels WLS."""
    import statsmodels.api as sm

    c = np.array([x[0] for x in cells], float)
    s = np.array([x[1] for x in cells], float)
    adv = np.array([np.mean(x[2]) for x in cells])
    se = np.array(
        [math.sqrt(max(np.mean(x[3] ** 2), np.var(x[2], ddof=1)) / len(x[2])) for x in cells]
    )
    y = np.log10(adv)
    y_se = se / (adv * math.log(10))
    cols = [np.ones_like(s), np.log10(s)] + ([np.log10(c)] if use_c else [])
    x = np.column_stack(cols)
    res = sm.WLS(y, x, weights=1.0 / y_se**2).fit()
    cov = res.normalized_cov_params * max(1.0, res.scale)
    bse = np.sqrt(np.diag(cov))
    t = stats.t.ppf(0.5 + confidence / 2, res.df_resid)
    return res.params, bse, t, res.rsquared, y, y_se


# ---------------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------------


def test_fit_recovers_known_law_and_matches_statsmodels_wls():
    rows, cells = _synthetic(-0.5, -0.3, seed=1)
    fit = fit_power_law(rows)
    assert len(fit.levels) == 1
    lf = fit.levels[0]
    assert lf.status == "ok" and lf.n_points == len(SHOTS) and lf.excluded == ()
    assert lf.beta_c is None and lf.se_c is None and lf.ci_c is None
    # truth inside the 95% intervals
    assert lf.ci_s[0] <= -0.5 <= lf.ci_s[1]
    assert lf.ci_0[0] <= -0.3 <= lf.ci_0[1]
    beta, se, t, r2, y, y_se = _reference_wls(cells, use_c=False)
    np.testing.assert_allclose([lf.beta_0, lf.beta_s], beta, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose([lf.se_0, lf.se_s], se, rtol=1e-8)
    np.testing.assert_allclose(lf.ci_s, [beta[1] - t * se[1], beta[1] + t * se[1]], rtol=1e-8)
    np.testing.assert_allclose(np.sqrt(np.diag(lf.cov)), se, rtol=1e-8)
    assert lf.dof == len(SHOTS) - 2 and lf.shots_range == (1, 256)
    assert lf.r_squared == pytest.approx(r2, rel=1e-9)
    assert lf.lodo is None  # a single dataset
    # fitted points carry y = log10(mean advantage) of each cell and its delta-method SE
    np.testing.assert_allclose([p.y for p in lf.points], y, rtol=1e-12)
    np.testing.assert_allclose([p.y_se for p in lf.points], y_se, rtol=1e-12)


def test_fit_with_classes_term():
    rows, cells = _synthetic(-0.5, -0.9, beta_c=0.4, classes=(2, 5, 10), seed=2)
    lf = fit_power_law(rows).levels[0]
    assert lf.status == "ok" and lf.n_points == 27
    for truth, ci in ((-0.5, lf.ci_s), (0.4, lf.ci_c), (-0.9, lf.ci_0)):
        assert ci[0] <= truth <= ci[1]
    beta, se, *_ = _reference_wls(cells, use_c=True)
    np.testing.assert_allclose([lf.beta_0, lf.beta_s, lf.beta_c], beta, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose([lf.se_0, lf.se_s, lf.se_c], se, rtol=1e-8)


def test_confidence_level_widens_interval():
    rows, _ = _synthetic(-0.5, -0.3, seed=3)
    a = fit_power_law(rows, confidence=0.8).levels[0]
    b = fit_power_law(rows, confidence=0.99).levels[0]
    assert b.ci_s[1] - b.ci_s[0] > a.ci_s[1] - a.ci_s[0]
    with pytest.raises(MiascaleError, match="confidence"):
        fit_power_law(rows, confidence=1.0)


def test_levels_fitted_separately():
    r1, _ = _synthetic(-0.5, -0.3, seed=4, attack="lira")
    r2, _ = _synthetic(-0.2, -0.6, seed=5, attack="loss")
    fit = fit_power_law(r2 + r1)
    assert [lf.attack for lf in fit.levels] == ["lira", "loss"]
    assert fit.level("loss", "online", FPR).beta_s == pytest.approx(-0.2, abs=0.05)
    assert fit.level("lira", "online", FPR).beta_s == pytest.approx(-0.5, abs=0.05)
    with pytest.raises(MiascaleError, match="No scaling fit"):
        fit.level("lira", "offline", FPR)


def test_mean_over_seeds_and_its_standard_error():
    rows, _ = _synthetic(-0.5, -0.3, seed=6)
    rows = [r for r in rows if r["shots"] != 4]
    tprs, ses = [0.1, 0.5, 0.2], [0.01, 0.02, 0.01]
    rows += [_row("d1", 10, 4, k, t, se=e) for k, (t, e) in enumerate(zip(tprs, ses, strict=True))]
    lf = fit_power_law(rows).levels[0]
    (p,) = [p for p in lf.points if p.shots == 4]
    assert p.tpr == pytest.approx(np.mean(tprs))
    assert p.advantage == pytest.approx(np.mean(tprs) - FPR)
    assert p.y == pytest.approx(math.log10(np.mean(tprs) - FPR))
    # the spread across seeds (whole cells redrawn) dominates the bootstrap SEs here
    se = math.sqrt(np.var(tprs, ddof=1) / 3)
    assert p.se == pytest.approx(se) and p.n_seeds == 3 and p.se_source == "bootstrap"
    z = stats.norm.ppf(0.975)
    assert (p.ci_low, p.ci_high) == pytest.approx((np.mean(tprs) - z * se, np.mean(tprs) + z * se))
    # without the bootstrap SE (older rows), the interval's half-width stands in, labelled
    old = [{**r, "se": None} for r in rows]
    (q,) = [q for q in fit_power_law(old).levels[0].points if q.shots == 4]
    assert q.se_source == "interval" and q.se == pytest.approx(se)
    # a bootstrap SE of 0 (every resample at TPR 1) is floored by the Clopper–Pearson half-width
    flat = [_row("d1", 10, 4, k, 0.9, se=0.0) for k in range(3)]
    flat = [{**r, "cp_low": 0.85, "cp_high": 0.95} for r in flat]
    lf = fit_power_law(flat).levels[0]
    (e,) = lf.points + lf.excluded
    assert e.se == pytest.approx(0.05 / z / math.sqrt(3))


def _with_bad_cells():
    rows, _ = _synthetic(-0.5, -0.3, seed=7)
    # a level allowing 5 false positives in one seed (t·Q = 0.01·500)
    rows += [_row("d1", 10, 512, k, 0.05, se=0.005, n_neg=500 if k == 1 else 1000)
             for k in range(3)]  # fmt: skip
    rows += [_row("d1", 10, 1024, k, t, se=0.01) for k, t in enumerate([0.005, 0.01, 0.005])]
    rows += [_row("d1", 10, 1536, k, t, se=0.01) for k, t in enumerate([0.0, 0.05, 0.0])]
    rows += [_row("d1", 10, 2048, k, 0.985, se=0.002) for k in range(3)]  # within 0.02 of 1
    return rows


def test_exclusions_recorded_with_reasons():
    fit = fit_power_law(_with_bad_cells())
    lf = fit.levels[0]
    assert lf.n_points == len(SHOTS)
    reasons = {e.shots: e.reasons for e in lf.excluded}
    assert reasons == {
        512: ("too few false positives",),
        1024: ("TPR <= FPR", "indistinguishable from chance"),
        1536: ("indistinguishable from chance",),  # mean above FPR, interval reaches chance
        2048: ("at the ceiling",),
    }
    assert {p.shots for p in lf.points} == set(SHOTS)
    (e,) = [e for e in lf.excluded if e.shots == 512]
    assert e.fp_budget == 5
    # a stricter ceiling margin or budget moves more cells out, listed with their reason
    lf = fit_power_law(_with_bad_cells(), ceiling_margin=0.5, min_false_positives=11).levels[0]
    reasons = {e.shots: e.reasons for e in lf.excluded}
    assert reasons[1] == ("too few false positives", "at the ceiling") or reasons[1][0] == (
        "too few false positives"
    )
    with pytest.raises(MiascaleError, match="min_false_positives"):
        fit_power_law(_with_bad_cells(), min_false_positives=0)
    with pytest.raises(MiascaleError, match="ceiling_margin"):
        fit_power_law(_with_bad_cells(), ceiling_margin=1.5)


def test_exclusion_flags_include_points():
    rows = _with_bad_cells()
    no_1024 = [r for r in rows if r["shots"] not in (1024,)]
    lf = fit_power_law(rows, exclude_unresolvable=False).levels[0]
    assert 512 in {p.shots for p in lf.points}
    assert {e.shots for e in lf.excluded} == {1024, 1536, 2048}
    lf = fit_power_law(rows, exclude_saturated=False).levels[0]
    assert 2048 in {p.shots for p in lf.points}
    assert {e.shots for e in lf.excluded} == {512, 1024, 1536}
    # a non-positive advantage can never enter log10: strict mode raises, naming the cell
    with pytest.raises(MiascaleError, match="shots=1024"):
        fit_power_law(rows, exclude_nonpositive=False)
    lf = fit_power_law(no_1024, exclude_nonpositive=False).levels[0]
    assert lf.status == "ok" and {e.shots for e in lf.excluded} == {512, 2048}
    assert 1536 in {p.shots for p in lf.points}  # the chance rule is off in strict mode


def test_cell_with_several_reasons_lists_all():
    rows, _ = _synthetic(-0.5, -0.3, seed=8)
    rows += [_row("d1", 10, 999, k, 0.0, resolvable=False, ci_high=1.0) for k in range(2)]
    lf = fit_power_law(rows).levels[0]
    (e,) = lf.excluded
    assert e.reasons == ("too few false positives", "TPR <= FPR", "indistinguishable from chance")
    # excluded for its budget, so strict mode does not complain about its advantage
    lf = fit_power_law(rows, exclude_nonpositive=False).levels[0]
    assert lf.excluded[0].reasons == ("too few false positives",)


def test_saturated_and_noise_cells_leave_the_slope_alone():
    """Cells at the ceiling or at noise level are excluded, so the clean law survives them."""
    rows, _ = _synthetic(-0.5, -0.3, seed=15, sigma=0.1)
    clean = fit_power_law(rows).levels[0]
    assert clean.ci_s[0] <= -0.5 <= clean.ci_s[1]
    rng = np.random.default_rng(3)
    extra = []
    for s in (1, 2, 4):  # saturated: TPR pinned just below 1 at small S
        extra += [_row("d1", 10, s * 1000, k, 0.995, se=0.002) for k in range(3)]
    for s in (512, 1024, 4096):  # noise level: advantage indistinguishable from 0
        extra += [_row("d1", 10, s, k, FPR + float(rng.normal(0.002, 0.004)), se=0.004)
                  for k in range(3)]  # fmt: skip
    rows2 = [r for r in rows] + extra
    noisy = fit_power_law(rows2).levels[0]
    assert noisy.n_points == clean.n_points
    assert noisy.beta_s == pytest.approx(clean.beta_s, abs=1e-12)
    assert noisy.ci_s[0] <= -0.5 <= noisy.ci_s[1]
    assert len(noisy.excluded) == 6
    # through them (rules switched off) the slope is dragged away from the truth
    forced = fit_power_law(
        [r for r in rows2 if r["advantage"] > 0],
        exclude_saturated=False, exclude_nonpositive=False, exclude_unresolvable=False,
    ).levels[0]  # fmt: skip
    assert not forced.ci_s[0] <= -0.5 <= forced.ci_s[1]


def test_insufficient_and_degenerate_are_entries_not_exceptions():
    rows = [_row("d1", 10, s, 0, 0.3 / s) for s in (1, 2)]
    lf = fit_power_law(rows).levels[0]
    assert lf.status == "insufficient points" and "needs at least 3" in lf.reason
    assert lf.beta_s is None
    with pytest.raises(MiascaleError, match="not fitted"):
        predict(lf, 4)
    rows = [_row("d1", c, 8, 0, 0.3) for c in (2, 5, 10, 20)]  # one shot value only
    lf = fit_power_law(rows).levels[0]
    assert lf.status == "degenerate design"


def test_row_validation():
    rows, _ = _synthetic(-0.5, -0.3)
    bad = dict(rows[0])
    del bad["ci_high"]
    with pytest.raises(MiascaleError, match="ci_high"):
        fit_power_law([bad])
    with pytest.raises(MiascaleError, match="twice"):
        fit_power_law([rows[0], rows[0]])
    with pytest.raises(MiascaleError, match="no result rows"):
        fit_power_law([])
    with pytest.raises(MiascaleError, match="finite"):
        fit_power_law([{**rows[0], "tpr": float("nan")}])
    with pytest.raises(MiascaleError, match="'se'"):
        fit_power_law([{**rows[0], "se": -1.0}])


# ---------------------------------------------------------------------------------------------
# Leave one dataset out
# ---------------------------------------------------------------------------------------------


def test_lodo_same_law_small_rmse_different_intercepts_large():
    a, _ = _synthetic(-0.5, -0.3, seed=10, dataset="a")
    b, _ = _synthetic(-0.5, -0.3, seed=11, dataset="b")
    lf = fit_power_law(a + b).levels[0]
    assert [r.dataset for r in lf.lodo] == ["a", "b"]
    assert all(r.n_points == len(SHOTS) and r.rmse < 0.08 for r in lf.lodo)
    b2, _ = _synthetic(-0.5, -0.9, seed=11, dataset="b")
    lf = fit_power_law(a + b2).levels[0]
    assert all(r.rmse > 0.5 for r in lf.lodo)  # intercepts differ by 0.6 in log10


# ---------------------------------------------------------------------------------------------
# Predict and plan
# ---------------------------------------------------------------------------------------------


def test_predict_closed_form_and_clipping():
    c = Coefficients(-0.5, -0.3, fpr_level=0.01)
    p = predict(c, 16)
    assert p.log10_advantage == pytest.approx(-0.5 * math.log10(16) - 0.3)
    assert p.advantage == pytest.approx(10 ** (-0.3) / 4)
    assert p.tpr == pytest.approx(0.01 + 10 ** (-0.3) / 4) and not p.clipped
    p = predict(Coefficients(-0.5, 0.5, fpr_level=0.01), 1)
    assert p.tpr == 1.0 and p.clipped and p.advantage > 1
    cc = Coefficients(-0.5, -0.9, 0.4, fpr_level=0.01)
    assert predict(cc, 4, classes=10).log10_advantage == pytest.approx(
        -0.5 * math.log10(4) - 0.9 + 0.4
    )
    with pytest.raises(MiascaleError, match="classes"):
        predict(cc, 4)
    with pytest.raises(MiascaleError, match="shots"):
        predict(c, 0)


def _adv(c, s, classes=None):
    ct = 0.0 if c.beta_c is None else c.beta_c * math.log10(classes)
    return 10 ** (c.beta_s * math.log10(s) + ct + c.beta_0)


@pytest.mark.parametrize("beta_s", [-0.25, -0.5, -1.0, -2.3])
@pytest.mark.parametrize("beta_c", [None, 0.4])
def test_plan_round_trip(beta_s, beta_c):
    c = Coefficients(beta_s, -0.3, beta_c, fpr_level=0.01)
    classes = None if beta_c is None else 7
    for target in np.geomspace(1e-3, 0.9, 25):
        p = plan(c, 0.01, classes, target_advantage=float(target))
        assert p.shots >= 1
        assert _adv(c, p.shots, classes) <= target * (1 + 1e-9)
        if p.shots > 1:
            assert _adv(c, p.shots - 1, classes) > target
        assert max(1.0, p.shots_real) * (1 - 1e-9) <= p.shots < max(1.0, p.shots_real) + 1
        assert _adv(c, p.shots_real, classes) == pytest.approx(target, rel=1e-9)


def test_plan_exact_integer_solution():
    # 10^(-1 * log10 4) = 0.25 exactly in reals: S* = 4, not 5 from float error
    assert plan(Coefficients(-1.0, 0.0, fpr_level=0.01), 0.01, target_advantage=0.25).shots == 4
    assert plan(Coefficients(-0.5, 0.0, fpr_level=0.01), 0.01, target_advantage=0.1).shots == 100
    for s in (3, 7, 10, 49, 1000):
        t = 10 ** (-0.7 * math.log10(s) - 0.2)
        assert plan(Coefficients(-0.7, -0.2, fpr_level=0.01), None, target_advantage=t).shots == s


def test_plan_epsilon_equals_target():
    c = Coefficients(-0.5, -0.3, fpr_level=0.01)
    for eps, delta in ((1.0, 0.0), (2.0, 1e-3), (0.1, 1e-2), (0.0, 0.005)):
        a = plan(c, 0.01, epsilon=eps, delta=delta)
        b = plan(c, 0.01, target_advantage=(math.exp(eps) - 1) * 0.01 + delta)
        assert a.shots == b.shots
        assert a.shots_real == pytest.approx(b.shots_real, rel=1e-12)
        assert a.target_advantage == pytest.approx(b.target_advantage, rel=1e-12)
        assert a.epsilon == eps and a.delta == delta


def test_plan_from_level_fit_and_errors():
    rows, _ = _synthetic(-0.5, -0.3, seed=12)
    lf = fit_power_law(rows).levels[0]
    p = plan(lf, FPR, target_advantage=0.05)
    assert p.coefficients == lf.coefficients()
    c = Coefficients(-0.5, -0.3, fpr_level=0.01)
    for kwargs, match in [
        ({"target_advantage": 0.0}, "target_advantage"),
        ({"target_advantage": 1.0}, "target_advantage"),
        ({"target_advantage": -0.1}, "target_advantage"),
        ({"epsilon": -0.5}, "epsilon"),
        ({"epsilon": 1.0, "delta": 1.0}, "delta"),
        ({"epsilon": 1.0, "delta": -0.1}, "delta"),
        ({"epsilon": 0.0}, "epsilon"),  # target 0
        # both branches of the DP region keep TPR < 1 for delta < 1 - FPR; only a delta that
        # large makes the bound vacuous (epsilon = 10 alone now gives a target below 1 - FPR)
        ({"epsilon": 1.0, "delta": 0.999}, "vacuous"),
        ({}, "exactly one"),
        ({"target_advantage": 0.1, "epsilon": 1.0}, "exactly one"),
    ]:
        with pytest.raises(MiascaleError, match=match):
            plan(c, 0.01, **kwargs)
    for slope in (0.0, 0.3):
        with pytest.raises(MiascaleError, match="does not decrease"):
            plan(Coefficients(slope, -0.3, fpr_level=0.01), 0.01, target_advantage=0.1)
    with pytest.raises(MiascaleError, match="classes"):
        plan(Coefficients(-0.5, -0.3, 0.4, fpr_level=0.01), 0.01, target_advantage=0.1)
    with pytest.raises(MiascaleError, match="fitted at"):
        plan(c, 0.1, target_advantage=0.1)
    with pytest.raises(MiascaleError, match="10\\^"):
        plan(Coefficients(-0.01, -0.3, fpr_level=0.01), 0.01, target_advantage=1e-3)


# ---------------------------------------------------------------------------------------------
# Serialisation
# ---------------------------------------------------------------------------------------------


def test_to_dict_from_dict_round_trip():
    a, _ = _synthetic(-0.5, -0.3, seed=13, dataset="a")
    b, _ = _synthetic(-0.5, -0.9, beta_c=0.4, classes=(2, 5, 10), seed=14, dataset="b")
    rows = a + b + _with_bad_cells()
    rows += [_row("d1", 10, s, 0, 0.3 / s, attack="tiny") for s in (1, 2)]
    fit = fit_power_law(rows, confidence=0.9)
    assert {lf.status for lf in fit.levels} == {"ok", "insufficient points"}
    text = json.dumps(fit.to_dict(), allow_nan=False)
    back = ScalingFit.from_dict(json.loads(text))
    assert back == fit
    lf = back.level("lira", "online", FPR)
    assert isinstance(lf, LevelFit) and lf.lodo is not None
    assert predict(lf, 8, classes=5) == predict(fit.levels[0], 8, classes=5)
    p = plan(lf, FPR, 5, target_advantage=0.02)
    json.dumps(p.to_dict(), allow_nan=False)
    with pytest.raises(MiascaleError, match="schema_version"):
        ScalingFit.from_dict({**fit.to_dict(), "schema_version": 99})
    with pytest.raises(MiascaleError, match="missing"):
        ScalingFit.from_dict({"schema_version": 2, "settings": {}})


def test_tail_rows_fit_recovers_quantile_laws():
    """Per-example fields → tail rows → laws: known slopes recovered; the separation has no
    ceiling; an unresolvable level and values at the noise floor are excluded, with reasons."""
    from miascale.scaling import SEPARATION_LEVEL, tail_rows

    rng = np.random.default_rng(7)
    truth = {"q0.5": (-0.5, -0.6), "q0.99": (-0.2, -0.2), "max": (-0.1, -0.1)}
    sep_truth = (-0.5, 0.9)  # separation d = 10^0.9 · S^-0.5: above 1, no ceiling
    rows = []
    for s in (2, 4, 8, 16, 32, 64, 128):
        for seed in range(3):
            for fpr in (0.1, 0.001):
                for variant in ("online", "offline"):  # duplicated per variant: used once
                    row = {"dataset": "d", "backbone": "b", "classes": 10, "shots": s,
                           "seed": seed, "attack": "lira", "variant": variant, "fpr_level": fpr,
                           "tpr": 0.5, "advantage": 0.49, "ci_low": 0.4, "ci_high": 0.6,
                           "resolvable": True, "cell_id": f"{s}-{seed}",
                           "pe_resolvable": fpr == 0.1}  # fmt: skip
                    for name, (b_s, b_0) in truth.items():
                        value = 10 ** (b_0 + b_s * np.log10(s) + rng.normal(scale=0.02))
                        row[f"pe_adv_{name}"] = value
                        row[f"pe_adv_se_{name}"] = 0.02 * value
                        row[f"pe_adv_floor_{name}"] = 0.0
                    d = 10 ** (sep_truth[1] + sep_truth[0] * np.log10(s) + rng.normal(scale=0.02))
                    row["pe_sep_q0.99"], row["pe_sep_se_q0.99"] = d, 0.02 * d
                    row["pe_sep_floor_q0.99"] = 0.3
                    # a cross-fitted max that sits at its noise floor everywhere
                    row["pe_adv_cross_max"], row["pe_adv_se_cross_max"] = 0.01, 0.02
                    row["pe_adv_floor_cross_max"] = 0.0
                    rows.append(row)
    tails = tail_rows(rows)
    # cells × levels × (3 quantile laws + cross_max), plus one separation row per cell
    assert len(tails) == 7 * 3 * 2 * 4 + 7 * 3
    fit = fit_power_law(tails)
    for name, (b_s, b_0) in truth.items():
        lv = fit.level("tail", name, 0.1)
        assert lv.status == "ok" and lv.ci_s[0] <= b_s <= lv.ci_s[1], (name, lv.beta_s)
        assert lv.beta_0 == pytest.approx(b_0, abs=0.05)
        low = fit.level("tail", name, 0.001)  # beyond the OUT samples: never fitted
        assert low.n_points == 0 and all(e.reasons == ("level not resolvable",) for e in
                                         low.excluded)  # fmt: skip
    sep = fit.level("separation", "q0.99", SEPARATION_LEVEL)
    assert sep.status == "ok" and sep.beta_s == pytest.approx(-0.5, abs=0.03) and not sep.excluded
    noise = fit.level("tail", "cross_max", 0.1)
    assert noise.n_points == 0
    assert {e.reasons for e in noise.excluded} == {("indistinguishable from chance",)}
