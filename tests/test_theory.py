"""The simplified model: closed forms against scipy / Monte Carlo, the −½ law, the simulation."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import optimize, stats
from typer.testing import CliRunner

from miascale import theory as th
from miascale.cli import app

LEVELS = np.array([0.1, 0.01, 0.001])
U_TYPICAL = th.fixed_example("typical", 1.0, 100, 0.1, 10).u  # = 1/(0.1·√2) ≈ 7.07


def test_score_laws_match_monte_carlo_of_real_vectors():
    rng = np.random.default_rng(0)
    d, sigma, shots, reps = 6, 0.4, 5, 40_000
    m = np.eye(d)[0]
    x = m + sigma * rng.standard_normal(d)
    others = m + sigma * rng.standard_normal((reps, shots, d))
    s_out = others.mean(axis=1) @ x
    s_in = (x + others[:, 1:].sum(axis=1)) / shots @ x
    law = th.score_laws(x, m, sigma, shots)
    for sample, mu, sd in ((s_out, law.mu_out, law.sd_out), (s_in, law.mu_in, law.sd_in)):
        assert abs(sample.mean() - mu) < 4 * sd / math.sqrt(reps)
        assert abs(sample.std() / sd - 1) < 0.02
    # the standardised separation is (mu_in − mu_out)/sd_out = u/√S
    u = th.separation(x, m, sigma)
    assert (law.mu_in - law.mu_out) / law.sd_out == pytest.approx(u / math.sqrt(shots))


def _np_oracle(u, shots, t):
    """NP TPR from noncentral χ² laws of (z − c)² and scipy's brentq."""
    delta, rho2 = u / math.sqrt(shots), 1 - 1 / shots
    c = delta / (1 - rho2)
    w2 = optimize.brentq(lambda w2: stats.ncx2.cdf(w2, 1, c**2) - t, 1e-12, (abs(c) + 40) ** 2)
    return stats.ncx2.cdf(w2 / rho2, 1, (delta - c) ** 2 / rho2)


@pytest.mark.parametrize("u,shots", [(2.0, 2), (0.3, 3), (7.07, 16), (1.0, 50), (-1.5, 8)])
def test_neyman_pearson_matches_noncentral_chi2(u, shots):
    got = th.tpr_neyman_pearson(u, shots, LEVELS)
    want = [_np_oracle(u, shots, t) for t in LEVELS]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    # most powerful: never below the one-sided test (whose formula is checked against scipy)
    one = th.tpr_one_sided(u, shots, LEVELS)
    zt = stats.norm.isf(LEVELS)
    np.testing.assert_allclose(
        one, stats.norm.sf((zt - u / math.sqrt(shots)) / math.sqrt(1 - 1 / shots)), rtol=1e-12
    )
    assert np.all(got >= one - 1e-12)


def test_neyman_pearson_monte_carlo():
    rng = np.random.default_rng(1)
    u, shots, t, n = 0.5, 2, 0.1, 400_000
    delta, rho = u / math.sqrt(shots), math.sqrt(1 - 1 / shots)
    llr = lambda z: stats.norm.logpdf(z, delta, rho) - stats.norm.logpdf(z)  # noqa: E731
    eta = np.quantile(llr(rng.standard_normal(n)), 1 - t)
    tpr = np.mean(llr(delta + rho * rng.standard_normal(n)) >= eta)
    assert th.tpr_neyman_pearson(u, shots, t) == pytest.approx(tpr, abs=4e-3)
    # the variance difference matters here: NP clearly beats the one-sided test
    assert th.tpr_neyman_pearson(u, shots, t) > th.tpr_one_sided(u, shots, t) + 0.02


def test_shots_one_point_mass():
    assert th.tpr_neyman_pearson(0.2, 1, 0.001) == 1.0
    assert th.tpr_one_sided(4.0, 1, 0.001) == 1.0 and th.tpr_one_sided(2.0, 1, 0.001) == 0.0


@pytest.mark.parametrize("test", ["neyman-pearson", "one-sided"])
def test_asymptotic_law_is_the_large_shots_limit(test):
    big = 2.0**20
    tpr = th.tpr_neyman_pearson if test == "neyman-pearson" else th.tpr_one_sided
    adv = tpr(U_TYPICAL, big, LEVELS) - LEVELS
    ratio = th.advantage_asymptotic(U_TYPICAL, big, LEVELS) / adv
    np.testing.assert_allclose(ratio, 1.0, atol=0.02)
    ratio_small = th.advantage_asymptotic(U_TYPICAL, 2.0**10, LEVELS) / (
        tpr(U_TYPICAL, 2.0**10, LEVELS) - LEVELS
    )
    assert np.all(np.abs(ratio - 1) < np.abs(ratio_small - 1))  # tends to 1
    # local slope between 2^18 and 2^20 (central difference over ±1 octave at 2^19)
    slope = th.local_slope(U_TYPICAL, 2.0**19, LEVELS, test=test, octaves=1.0)
    np.testing.assert_allclose(slope, -0.5, atol=0.02)
    # intercept difference between two levels: −½(Φ⁻¹(t1)² − Φ⁻¹(t2)²)
    z = stats.norm.ppf(LEVELS)
    for i, j in ((0, 1), (1, 2), (0, 2)):
        want = -0.5 * (z[i] ** 2 - z[j] ** 2)
        assert math.log(adv[i]) - math.log(adv[j]) == pytest.approx(want, abs=0.03)


def test_practical_range_is_steeper_and_steeper_at_low_fpr():
    shots = 2.0 ** np.arange(4, 11)  # 16 … 1024 at d = 100, σ = 0.1
    slopes = th.local_slope(U_TYPICAL, shots[None, :], LEVELS[:, None])
    assert np.all(slopes < -0.5 - 0.04)
    assert np.all(np.diff(slopes, axis=0) < 0)  # lower FPR ⇒ steeper at every S
    onset = th.asymptotic_onset(U_TYPICAL, LEVELS)
    assert np.all(onset > 1024) and np.all(np.diff(onset) > 0)
    # the onset is where δ = u/√S is well below 1/|Φ⁻¹(t)|
    delta_at_onset = U_TYPICAL / np.sqrt(onset)
    assert np.all(delta_at_onset < 0.5 / np.abs(stats.norm.ppf(LEVELS)))


def test_pooled_average_case():
    # one separation value: the pooled test is the per-example NP test
    u = np.full(8, 3.0)
    shots = np.array([2.0, 16.0, 300.0])
    np.testing.assert_allclose(
        th.tpr_pooled(u, shots[:, None], LEVELS[None, :]),
        th.tpr_neyman_pearson(3.0, shots[:, None], LEVELS[None, :]),
        rtol=1e-7,
    )
    np.testing.assert_allclose(
        th.advantage_pooled_asymptotic(u, 1000.0, LEVELS),
        th.advantage_asymptotic(3.0, 1000.0, LEVELS),
        rtol=1e-9,
    )
    # a real population: the pooled asymptote is the large-S limit too, with slope −½
    pop = th.population_separation(100, 0.1, 512, seed=3)
    assert pop.mean() == pytest.approx(U_TYPICAL, rel=0.05)
    adv = th.tpr_pooled(pop, 2.0**20, LEVELS) - LEVELS
    np.testing.assert_allclose(
        th.advantage_pooled_asymptotic(pop, 2.0**20, LEVELS) / adv, 1.0, atol=0.02
    )
    # pooling heterogeneous targets (one threshold η for all) beats averaging at the same FPR…
    # …and the pooled FPR really is t (check by brute force over η on a tiny population)
    two = np.array([1.0, 5.0])
    tpr, fpr = th._pooled(two, 9.0, 0.05, equal_var=False, gain=1.0)
    assert float(fpr) == pytest.approx(0.05, rel=1e-9)
    assert float(tpr) >= 0.5 * sum(th.tpr_neyman_pearson(two, 9.0, 0.05)) - 1e-9


def test_pool_approximation_is_one_sided_with_sqrt2_separation():
    got = th.tpr_pool_approx(2.0, 16.0, LEVELS, pooled=False)
    want = stats.norm.sf(stats.norm.isf(LEVELS) - math.sqrt(2) * 2.0 / 4.0)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(th.tpr_pool_approx(np.full(4, 2.0), 16.0, LEVELS), want, rtol=1e-7)


def test_fresh_simulation_within_ci_of_exact():
    """The product's LiRA + metrics on fresh-population draws match the exact NP TPR.

    Many shadow models (K = 4096) so that LiRA's per-example Gaussian fits are close to the true
    laws; 16 replicate columns of one fixed target.
    """
    ex = th.fixed_example("typical", 1.0, 100, 0.1, 2)
    for shots in (2, 4, 16, 64):
        pts = th.simulate(
            shots, "fresh", dim=100, sigma=0.1, classes=2, shadow_models=4095, fpr=[0.1, 0.01],
            n_targets=4, seed=11, fixed=(ex,), n_fixed=16,
        )  # fmt: skip
        (pt,) = [p for p in pts if p.example == "typical"]
        exact = th.tpr_neyman_pearson(ex.u, shots, [0.1, 0.01])
        for m, e in zip(pt.metrics, exact, strict=True):
            assert m.ci_low <= e <= m.ci_high, (shots, m.fpr_level, m.tpr, e)
        assert pt.separation_ratio == pytest.approx(1.0, abs=0.05)


def test_pool_population_raises_separation_by_sqrt2():
    pts = th.simulate(
        64, "pool", dim=100, sigma=0.1, classes=2, shadow_models=64, fpr=[0.1],
        n_targets=256, seed=0,
    )  # fmt: skip
    fresh = th.simulate(
        64, "fresh", dim=100, sigma=0.1, classes=2, shadow_models=64, fpr=[0.1],
        n_targets=256, seed=0,
    )  # fmt: skip
    assert fresh[0].separation_ratio == pytest.approx(1.0, abs=0.05)
    # (median of ratios of noisy estimates from 32 shadows each: both sit a little below 1, √2)
    ratio = pts[0].separation_ratio / fresh[0].separation_ratio
    assert ratio == pytest.approx(math.sqrt(2), abs=0.05)
    assert pts[0].metrics[0].tpr > fresh[0].metrics[0].ci_high


def test_softmax_head_runs():
    pts = th.simulate(
        8, "pool", dim=20, sigma=0.1, classes=3, shadow_models=16, fpr=[0.1], n_targets=48,
        seed=0, head="softmax",
    )  # fmt: skip
    assert pts[0].metrics[0].advantage > 0


def test_cli_theory_json_and_artifacts(tmp_path):
    r = CliRunner().invoke(
        app,
        ["theory", "--shots", "1,4,16,64", "--shadow-models", "8", "--targets", "40",
         "--fpr", "0.1,0.01", "--json", "--out", str(tmp_path)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["schema"] == th.SCHEMA
    assert json.loads((tmp_path / "theory.json").read_text()) == doc
    assert (tmp_path / "theory.png").read_bytes()[:4] == b"\x89PNG"
    lvl = doc["levels"][0]
    assert lvl["slope_asymptotic"] == -0.5 and lvl["asymptotic_onset_shots"] > 64
    assert lvl["regime"] == "pre-asymptotic"
    kinds = {(c["example"], c["kind"], c["population"]) for c in doc["curves"]}
    assert ("average", "simulation", "pool") in kinds and ("typical", "exact", None) in kinds


def test_cli_theory_error_is_one_paragraph():
    r = subprocess.run(
        [sys.executable, "-m", "miascale.cli", "theory", "--population", "cifar"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "--population" in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""
