"""Tests for miascale.planning: intervals, both branches of the (ε, δ) region, the verdict.

References are independent of the implementation: brute-force grids, closed-form quadratic roots
of the band hyperbola, statsmodels' own prediction intervals, and Monte Carlo coverage on laws
with known truth.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import statsmodels.api as sm
from scipy import stats
from typer.testing import CliRunner

from miascale.cli import app
from miascale.errors import MiascaleError
from miascale.planning import (
    MAX_CI_DECADES,
    MIN_POINTS,
    MIN_R_SQUARED,
    Coefficients,
    dp_max_advantage,
    dp_max_tpr,
    plan,
    plan_sentence,
    predict,
)

SHOTS = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256], dtype=np.float64)
LONG_NUMBER = re.compile(r"\d{5,}")


def _ols(y: np.ndarray, shots: np.ndarray = SHOTS, fpr: float = 0.01) -> Coefficients:
    """Ordinary least squares of y on [1, log10 S] with numpy, as Coefficients with cov/dof."""
    x = np.column_stack([np.ones(len(shots)), np.log10(shots)])
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ beta
    dof = len(y) - 2
    s2 = float(resid @ resid) / dof
    cov = s2 * np.linalg.inv(x.T @ x)
    r2 = 1 - float(resid @ resid) / float(np.sum((y - y.mean()) ** 2))
    return Coefficients(
        float(beta[1]), float(beta[0]), fpr_level=fpr, cov=tuple(map(tuple, cov)), dof=dof,
        n_points=len(y), r_squared=r2, shots_range=(float(shots.min()), float(shots.max())),
    )  # fmt: skip


def _good(beta_s=-0.5, beta_0=-0.3, fpr=0.01, **kw) -> Coefficients:
    """A well-determined law (small covariance) measured on S = 1..256."""
    args = dict(
        cov=((4e-4, -2e-4), (-2e-4, 1.5e-4)),
        dof=7,
        n_points=9,
        r_squared=0.99,
        shots_range=(1.0, 256.0),
    )
    args.update(kw)
    return Coefficients(beta_s, beta_0, fpr_level=fpr, **args)


# ---------------------------------------------------------------------------------------------
# The (ε, δ) region
# ---------------------------------------------------------------------------------------------


def _brute_max_tpr(fpr, eps, delta, n=200_001):
    """Largest TPR on a grid satisfying both DP inequalities (test and complement)."""
    t = np.linspace(0.0, 1.0, n)
    ok = (t <= math.exp(eps) * fpr + delta + 1e-12) & (
        1 - fpr <= math.exp(eps) * (1 - t) + delta + 1e-12
    )
    return float(t[ok].max())


def test_dp_second_branch_binds_at_large_fpr_and_epsilon():
    fpr, eps, delta = 0.5, 2.0, 0.0
    second = 1 - math.exp(-eps) * (1 - delta - fpr)
    assert second < math.exp(eps) * fpr + delta  # the complement's bound is the binding one
    assert dp_max_tpr(fpr, eps, delta) == pytest.approx(second, rel=1e-12)
    assert dp_max_advantage(fpr, eps, delta) == pytest.approx(second - fpr, rel=1e-12)
    p = plan(Coefficients(-0.5, 0.3, fpr_level=fpr), None, epsilon=eps, delta=delta)
    assert p.target_advantage == pytest.approx(second - fpr, rel=1e-12)
    # with delta too
    fpr, eps, delta = 0.3, 3.0, 0.05
    second = 1 - math.exp(-eps) * (1 - delta - fpr)
    p = plan(Coefficients(-0.5, 0.3, fpr_level=fpr), None, epsilon=eps, delta=delta)
    assert p.target_advantage == pytest.approx(second - fpr, rel=1e-12)


def test_dp_first_branch_binds_at_small_fpr():
    for fpr, eps, delta in ((0.001, 1.0, 0.0), (0.01, 2.0, 1e-3), (1e-4, 4.0, 1e-5)):
        first = math.exp(eps) * fpr + delta
        assert first < 1 - math.exp(-eps) * (1 - delta - fpr)
        assert dp_max_tpr(fpr, eps, delta) == pytest.approx(first, rel=1e-12)
        p = plan(Coefficients(-0.5, -0.3, fpr_level=fpr), None, epsilon=eps, delta=delta)
        assert p.target_advantage == pytest.approx(first - fpr, rel=1e-12)


@pytest.mark.parametrize("fpr", [0.001, 0.01, 0.1, 0.3, 0.5, 0.8])
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("delta", [0.0, 1e-3, 0.05])
def test_dp_bound_matches_brute_force(fpr, eps, delta):
    brute = _brute_max_tpr(fpr, eps, delta)
    assert min(1.0, dp_max_tpr(fpr, eps, delta)) == pytest.approx(brute, abs=1e-5)
    assert dp_max_advantage(fpr, eps, delta) == pytest.approx(
        min(math.exp(eps) * fpr + delta, 1 - math.exp(-eps) * (1 - delta - fpr)) - fpr, abs=1e-12
    )


def test_dp_bound_edges_and_errors():
    assert dp_max_advantage(0.01, 0.0, 0.0) == 0.0  # no privacy loss: TPR = FPR
    assert dp_max_advantage(0.01, 1000.0, 0.0) == pytest.approx(0.99)  # no overflow: TPR 1
    for bad in ((-0.1, 1.0, 0.0), (0.1, -1.0, 0.0), (0.1, math.inf, 0.0), (0.1, 1.0, 2.0)):
        with pytest.raises(MiascaleError):
            dp_max_tpr(*bad)
    c = Coefficients(-0.5, -0.3, fpr_level=0.01)
    with pytest.raises(MiascaleError, match="epsilon"):
        plan(c, None, epsilon=0.0)  # target 0
    with pytest.raises(MiascaleError, match="vacuous"):
        plan(c, None, epsilon=1.0, delta=0.995)  # TPR 1 allowed
    # epsilon = 10 used to be "vacuous" with one branch; with both it is a real target < 1 - FPR
    p = plan(c, None, epsilon=10.0)
    assert p.target_advantage == pytest.approx(1 - math.exp(-10) * 0.99 - 0.01, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Coefficients
# ---------------------------------------------------------------------------------------------


def test_coefficients_validation_and_to_dict():
    c = _good()
    d = c.to_dict()
    assert d["cov"] == [[4e-4, -2e-4], [-2e-4, 1.5e-4]] and d["dof"] == 7
    assert d["n_points"] == 9 and d["r_squared"] == 0.99 and d["shots_range"] == [1.0, 256.0]
    json.dumps(d, allow_nan=False)
    assert Coefficients(-0.5, 0.0, fpr_level=0.1).to_dict()["cov"] is None
    # numpy inputs are normalised to plain tuples / ints
    c2 = Coefficients(-0.5, 0.0, fpr_level=0.1, cov=np.eye(2) * 1e-3, dof=np.float64(5.0))
    assert c2.cov == ((1e-3, 0.0), (0.0, 1e-3)) and type(c2.dof) is int
    for kw, match in [
        ({"cov": np.eye(3)}, "2×2"),  # no classes term: 2×2
        ({"cov": [[1.0, 0.5], [0.0, 1.0]]}, "symmetric"),
        ({"cov": [[1.0, 2.0], [2.0, 1.0]]}, "semi-definite"),
        ({"cov": [[math.nan, 0.0], [0.0, 1.0]]}, "finite"),
        ({"cov": "x"}, "covariance"),
        ({"dof": 0}, "dof"),
        ({"dof": 2.5}, "dof"),
        ({"n_points": -1}, "n_points"),
        ({"r_squared": math.nan}, "r_squared"),
        ({"shots_range": (256, 1)}, "shots_range"),
        ({"shots_range": (0, 1)}, "shots_range"),
    ]:
        with pytest.raises(MiascaleError, match=match):
            Coefficients(-0.5, 0.0, fpr_level=0.1, **kw)
    with pytest.raises(MiascaleError, match="3×3"):
        Coefficients(-0.5, 0.0, 0.3, fpr_level=0.1, cov=np.eye(2))


# ---------------------------------------------------------------------------------------------
# Prediction intervals
# ---------------------------------------------------------------------------------------------


def test_prediction_interval_matches_statsmodels():
    rng = np.random.default_rng(1)
    y = -0.5 * np.log10(SHOTS) - 0.3 + rng.normal(0, 0.1, len(SHOTS))
    c = _ols(y)
    x = sm.add_constant(np.log10(SHOTS))
    res = sm.OLS(y, x).fit()
    for s in (1.0, 10.0, 256.0, 5000.0):
        for conf in (0.9, 0.95):
            p = predict(c, s, confidence=conf)
            ref = res.get_prediction(np.array([[1.0, math.log10(s)]])).conf_int(alpha=1 - conf)
            np.testing.assert_allclose(p.log10_advantage_ci, ref[0], rtol=1e-9, atol=1e-12)
            assert p.advantage_ci == pytest.approx(tuple(10.0 ** ref[0]), rel=1e-9)
            assert p.tpr_ci == pytest.approx(tuple(0.01 + 10.0 ** ref[0]), rel=1e-9)


def test_prediction_interval_with_classes_term_and_normal_quantile():
    cov = np.array([[0.02, -0.005, -0.004], [-0.005, 0.003, 0.0], [-0.004, 0.0, 0.004]])
    c = Coefficients(-0.5, -0.9, 0.4, fpr_level=0.01, cov=tuple(map(tuple, cov)))  # dof None
    p = predict(c, 50, classes=20)
    x = np.array([1.0, math.log10(50), math.log10(20)])
    half = stats.norm.ppf(0.975) * math.sqrt(x @ cov @ x)
    assert p.log10_advantage_ci == pytest.approx(
        (p.log10_advantage - half, p.log10_advantage + half), rel=1e-12
    )


def test_prediction_interval_coverage():
    rng = np.random.default_rng(20240601)
    beta_s, beta_0, sigma = -0.5, -0.3, 0.1
    hits = {16.0: 0, 1000.0: 0}
    reps = 400
    for _ in range(reps):
        y = beta_s * np.log10(SHOTS) + beta_0 + rng.normal(0, sigma, len(SHOTS))
        c = _ols(y)
        for s in hits:
            lo, hi = predict(c, s).log10_advantage_ci
            hits[s] += lo <= beta_s * math.log10(s) + beta_0 <= hi
    for s, h in hits.items():
        assert 0.9 <= h / reps <= 0.99, (s, h / reps)


def test_tpr_interval_clipped_to_fpr_and_one():
    c = Coefficients(-0.5, -0.05, fpr_level=0.1, cov=((0.04, 0.0), (0.0, 0.01)), dof=5)
    p = predict(c, 1)
    lo, hi = p.tpr_ci
    assert 0.1 <= lo <= p.tpr and hi == 1.0 and p.tpr_ci_clipped
    assert p.advantage_ci[1] > 0.9  # the advantage interval itself is not clipped
    p = predict(c, 10_000)
    assert not p.tpr_ci_clipped and p.tpr_ci[0] > 0.1
    assert predict(Coefficients(-0.5, -0.3, fpr_level=0.01), 4).tpr_ci is None


# ---------------------------------------------------------------------------------------------
# Plan intervals: the hyperbola inversion
# ---------------------------------------------------------------------------------------------


def _band_reference(c: Coefficients, target: float, classes=None, conf=0.95):
    """Closed-form roots of the band hyperbola and a dense-grid brute force, in log10 S."""
    cov = np.array(c.cov)
    lc = None if c.beta_c is None else math.log10(classes)
    a = c.beta_0 + (0.0 if lc is None else c.beta_c * lc)
    b = c.beta_s
    q = stats.t.ppf(0.5 + conf / 2, c.dof) if c.dof else stats.norm.ppf(0.5 + conf / 2)
    t = math.log10(target)

    # v(u) = A u^2 + B u + C0 with x = [1, u, (lc)]
    A = cov[1, 1]
    B = 2 * cov[0, 1] + (0.0 if lc is None else 2 * lc * cov[1, 2])
    C0 = cov[0, 0] + (0.0 if lc is None else 2 * lc * cov[0, 2] + lc * lc * cov[2, 2])
    d = t - a
    roots = np.roots([b * b - q * q * A, -(2 * b * d + q * q * B), d * d - q * q * C0])
    roots = np.sort(roots[np.isreal(roots)].real)

    u = np.linspace(0.0, 15.0, 1_500_001)
    se = np.sqrt(A * u * u + B * u + C0)
    lower, upper = a + b * u - q * se, a + b * u + q * se
    below = np.nonzero(lower <= t)[0]
    grid_lo = u[below[0]]
    above = np.nonzero(upper >= t)[0]
    grid_hi = math.inf if above[-1] == len(u) - 1 else u[above[-1]]
    return roots, grid_lo, grid_hi


@pytest.mark.parametrize(
    "coeffs, target, classes",
    [
        (_good(), 0.01, None),
        (_good(beta_s=-0.3, beta_0=0.2), 0.003, None),
        (_good(cov=((0.05, -0.02), (-0.02, 0.012))), 0.02, None),  # wide
        (
            Coefficients(
                -0.6, -0.5, 0.3, fpr_level=0.01, dof=12,
                cov=((0.01, -0.003, -0.004), (-0.003, 0.002, 0.0005), (-0.004, 0.0005, 0.003)),
            ),
            0.005,
            10,
        ),
    ],
)  # fmt: skip
def test_plan_interval_inverts_the_band(coeffs, target, classes):
    p = plan(coeffs, None, classes, target_advantage=target)
    roots, grid_lo, grid_hi = _band_reference(coeffs, target, classes)
    lo, hi = (math.log10(v) for v in p.shots_ci)
    assert lo == pytest.approx(grid_lo, abs=2e-5)
    assert hi == pytest.approx(grid_hi, abs=2e-5)
    # the slope is clearly negative here, so both roots are real: one each side of S*
    assert len(roots) == 2
    assert lo == pytest.approx(max(0.0, roots[0]), abs=1e-9)
    assert hi == pytest.approx(roots[1], rel=1e-9)
    assert p.shots_ci[0] <= max(1.0, p.shots_real) <= p.shots_ci[1]


def test_plan_interval_unbounded_when_slope_is_uncertain():
    # se(beta_s) ≈ 0.32 against beta_s = -0.3: the upper edge turns back up and never settles
    c = _good(beta_s=-0.3, beta_0=0.0, cov=((0.05, -0.02), (-0.02, 0.1)))
    p = plan(c, None, target_advantage=0.01)
    assert p.shots_ci[1] == math.inf and p.shots_ci[0] <= p.shots_real
    _, grid_lo, grid_hi = _band_reference(c, 0.01)
    assert math.log10(p.shots_ci[0]) == pytest.approx(grid_lo, abs=2e-5) and grid_hi == math.inf
    assert not p.trustworthy and any("no upper end" in w for w in p.warnings)
    d = p.to_dict()
    assert d["shots_ci"][1] is None
    json.dumps(d, allow_nan=False)
    # the lower edge already below the target at S = 1
    p = plan(_good(cov=((1.0, 0.0), (0.0, 0.01))), None, target_advantage=0.3)
    assert p.shots_ci[0] == 1.0


def test_plan_interval_coverage():
    """Fieller intervals from OLS fits of simulated laws cover the true S* about 95% of the time."""
    rng = np.random.default_rng(7)
    beta_s, beta_0, sigma = -0.5, -0.3, 0.1
    for s_true in (100.0, 2000.0):
        target = 10 ** (beta_s * math.log10(s_true) + beta_0)
        reps, hits = 300, 0
        for _ in range(reps):
            y = beta_s * np.log10(SHOTS) + beta_0 + rng.normal(0, sigma, len(SHOTS))
            p = plan(_ols(y), None, target_advantage=target)
            lo, hi = p.shots_ci
            assert lo <= max(1.0, p.shots_real) <= hi
            hits += lo <= s_true <= hi
        assert 0.9 <= hits / reps <= 0.99, (s_true, hits / reps)


def test_plan_keeps_point_estimate():
    c = _good()
    bare = Coefficients(c.beta_s, c.beta_0, fpr_level=c.fpr_level)
    for target in (0.3, 0.05, 0.01, 1e-3):
        a, b = plan(c, None, target_advantage=target), plan(bare, None, target_advantage=target)
        assert (a.shots, a.shots_real) == (b.shots, b.shots_real)
        assert b.shots_ci is None and a.shots_ci is not None
    assert plan(c, None, target_advantage=0.3, confidence=0.99).confidence == 0.99
    with pytest.raises(MiascaleError, match="confidence"):
        plan(c, None, target_advantage=0.3, confidence=1.0)


# ---------------------------------------------------------------------------------------------
# The verdict and the words
# ---------------------------------------------------------------------------------------------


def test_trustworthy_plan_and_sentence():
    p = plan(_good(beta_0=-1.5, fpr=0.001), None, epsilon=1.0)  # S* ≈ 340
    assert p.trustworthy and p.warnings == (), p.warnings
    assert p.predicted.trustworthy
    assert math.log10(p.shots_ci[1] / p.shots_ci[0]) <= MAX_CI_DECADES
    text = plan_sentence(p)
    m = re.fullmatch(
        r"ε = 1 \(add/remove ε\) at FPR 0\.001 \(advantage ≤ 0\.00172\): "
        r"S ≈ ([\d,]+) examples per class, "
        r"95% interval \[([\d,.]+), ([\d,.]+)\]",
        text,
    )
    assert m, text
    s, lo, hi = (float(g.replace(",", "")) for g in m.groups())
    assert s == float(f"{p.shots:.2g}")  # 2 significant figures
    assert lo == float(f"{p.shots_ci[0]:.2g}") and hi == float(f"{p.shots_ci[1]:.2g}")
    d = p.to_dict()
    assert d["trustworthy"] is True and d["warnings"] == [] and d["confidence"] == 0.95
    assert d["predicted"]["tpr_ci"] is not None and len(d["shots_ci"]) == 2


@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"n_points": MIN_POINTS - 1}, f"only {MIN_POINTS - 1} admitted"),
        ({"r_squared": MIN_R_SQUARED - 0.2}, "R²"),
        ({"cov": None}, "no covariance"),
        ({"cov": ((0.05, -0.02), (-0.02, 0.012))}, "decades"),
        ({"shots_range": (1.0, 16.0)}, "max measured S = 16"),
    ],
)
def test_each_warning_makes_plan_untrustworthy(kw, needle):
    p = plan(_good(**kw), None, target_advantage=0.01)
    assert not p.trustworthy
    assert len(p.warnings) == 1 and needle in p.warnings[0], p.warnings
    assert p.to_dict()["warnings"] == list(p.warnings)
    text = plan_sentence(p)
    assert "cannot answer" in text and needle in text
    assert not LONG_NUMBER.search(text), text


def test_prediction_verdict():
    c = _good()
    assert predict(c, 100).trustworthy
    far = predict(c, 10_000)
    assert not far.trustworthy and "max measured S = 256" in far.warnings[0]
    below = predict(_good(shots_range=(64.0, 256.0)), 2)
    assert not below.trustworthy and "min measured S = 64" in below.warnings[0]
    assert not predict(_good(r_squared=0.5), 100).trustworthy
    assert not predict(_good(n_points=3), 100).trustworthy
    bare = predict(Coefficients(-0.5, -0.3, fpr_level=0.01), 100)
    assert not bare.trustworthy and "no covariance" in bare.warnings[0]
    d = far.to_dict()
    assert d["trustworthy"] is False and d["warnings"] == list(far.warnings)
    json.dumps(d, allow_nan=False)


def test_untrustworthy_sentence_gives_only_an_order_of_magnitude():
    # a shallow law needing ~10^11 shots: extrapolated, and the interval is enormous
    c = _good(beta_s=-0.1, beta_0=-0.3, cov=((0.01, -0.004), (-0.004, 0.002)))
    p = plan(c, None, target_advantage=10 ** (-0.1 * 11 - 0.3))
    assert 10**10.9 < p.shots_real < 10**11.1 and not p.trustworthy
    text = plan_sentence(p)
    assert "around 10^11" in text and "cannot answer" in text
    assert not LONG_NUMBER.search(text), text
    assert str(p.shots) not in text.replace(",", "")
    # unbounded interval: "more than 10^k"
    c = _good(beta_s=-0.3, beta_0=0.0, cov=((0.05, -0.02), (-0.02, 0.1)))
    text = plan_sentence(plan(c, None, target_advantage=0.001))
    assert re.search(r"more than 10\^\d+|any S from 1", text) and not LONG_NUMBER.search(text)
    # many untrustworthy plans, awkward numbers included: never 5 digits in a row
    rng = np.random.default_rng(3)
    for _ in range(200):
        fpr = float(10 ** rng.uniform(-5, -0.5))
        c = Coefficients(
            float(rng.uniform(-1.5, -0.05)), float(rng.uniform(-2, 0.5)), fpr_level=fpr,
            cov=None if rng.random() < 0.3 else ((0.02, -0.01), (-0.01, float(rng.uniform(0.006, 0.2)))),
            dof=int(rng.integers(2, 20)), n_points=int(rng.integers(2, 12)),
            r_squared=float(rng.uniform(0.5, 1)), shots_range=(1.0, float(rng.integers(2, 300))),
        )  # fmt: skip
        eps = float(rng.uniform(0.01, 3.0))
        delta = float(rng.choice([0.0, 1e-5, 0.0123456]))
        try:
            p = plan(c, None, epsilon=eps, delta=delta)
        except MiascaleError:
            continue  # unreachable within 10^15 shots
        if not p.trustworthy:
            text = plan_sentence(p)
            assert not LONG_NUMBER.search(text), text


def _fit_rows(seed=5):
    """Sweep-like rows of the law -0.5 log10 S - 0.3 at FPR 0.01 (3 seeds, 5% noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in SHOTS.astype(int):
        for k in range(3):
            adv = 10 ** (-0.5 * math.log10(s) - 0.3) * math.exp(rng.normal(0, 0.05))
            tpr = 0.01 + adv
            rows.append(
                {
                    "dataset": "d1", "backbone": "bb", "classes": 10, "shots": int(s),
                    "seed": k, "attack": "lira", "variant": "online", "fpr_level": 0.01,
                    "tpr": tpr, "ci_low": max(0.0, tpr - 0.05), "ci_high": min(0.99, tpr + 0.05),
                    "advantage": adv, "resolvable": True, "n_neg": 1000, "se": 0.05 * adv,
                    "test_accuracy": 0.8,
                }
            )  # fmt: skip
    return rows


def test_plan_from_fit_carries_its_uncertainty():
    from miascale.scaling import ScalingFit, fit_power_law

    fit = fit_power_law(_fit_rows())
    lf = fit.levels[0]
    c = lf.coefficients()
    assert c.n_points == lf.n_points and c.r_squared == lf.r_squared
    assert c.cov is not None and c.dof == lf.dof and c.shots_range == (1.0, 256.0)
    p = plan(lf, 0.01, target_advantage=0.02)
    assert p.shots_ci[0] <= p.shots_real <= p.shots_ci[1]
    assert p.trustworthy, p.warnings
    back = ScalingFit.from_dict(json.loads(json.dumps(fit.to_dict()))).levels[0]
    assert plan(back, 0.01, target_advantage=0.02) == p


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_plan_and_predict_text_and_json(tmp_path):
    bare = ["--fpr", "0.01", "--beta-s", "-0.5", "--beta-0", "-0.3"]
    r = runner.invoke(app, ["plan", *bare, "--epsilon", "1"])
    assert r.exit_code == 0, r.output
    assert "cannot answer" in r.stdout and "no covariance" in r.stdout
    r = runner.invoke(app, ["plan", *bare, "--epsilon", "1", "--json"])
    d = json.loads(r.stdout)
    assert d["trustworthy"] is False and d["shots_ci"] is None and d["shots"] == 851
    r = runner.invoke(app, ["predict", *bare, "--shots", "100"])
    assert r.exit_code == 0 and "Not trustworthy" in r.stdout
    r = runner.invoke(app, ["predict", *bare, "--shots", "100", "--json"])
    assert json.loads(r.stdout)["advantage_ci"] is None

    from miascale.scaling import fit_power_law

    path = tmp_path / "fit.json"
    path.write_text(json.dumps(fit_power_law(_fit_rows()).to_dict()))
    law = ["--fpr", "0.01", "--coefficients", str(path)]
    r = runner.invoke(app, ["plan", *law, "--target-advantage", "0.02"])
    assert r.exit_code == 0, r.output
    assert "S ≈" in r.stdout and "95% interval [" in r.stdout
    r = runner.invoke(app, ["predict", *law, "--shots", "100", "--confidence", "0.9"])
    assert r.exit_code == 0, r.output
    assert "90% interval TPR" in r.stdout and "Not trustworthy" not in r.stdout
