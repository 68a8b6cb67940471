"""The run behind ``miascale theory``: closed forms, simulations, fits and per-level summaries.

:func:`run_theory` is what the CLI calls; it returns a :class:`TheoryResult` and touches no
disk. The per-level fields it computes are specified in docs/theory.md §5.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from miascale.theory._numerics import _clean, _z
from miascale.theory.closed_forms import (
    advantage_asymptotic,
    tpr_neyman_pearson,
    tpr_one_sided,
)
from miascale.theory.fits import _usable, fit_slope
from miascale.theory.model import (
    FIXED_EXAMPLES,
    POPULATIONS,
    FixedExample,
    fixed_example,
    population_separation,
)
from miascale.theory.pooled import advantage_pooled_asymptotic, tpr_pool_approx, tpr_pooled
from miascale.theory.regimes import asymptotic_onset, local_slope
from miascale.theory.results import Curve, TheoryConfig, TheoryResult, find_curve
from miascale.theory.simulation import SimulationPoint, simulate


def _rows_to_curves(
    example: str, rows: dict[str, np.ndarray], levels: np.ndarray, shots: tuple[float, ...]
) -> list[Curve]:
    """Closed-form curves of one example: for each level, one curve per ``kind`` in ``rows``."""
    return [
        Curve(example, kind, None, float(t), shots, tuple(tpr[i]))
        for i, t in enumerate(levels)
        for kind, tpr in rows.items()
    ]


def _closed_form_curves(
    u_pop: np.ndarray, examples: Sequence[FixedExample], shots: np.ndarray, levels: np.ndarray
) -> tuple[list[Curve], dict[str, np.ndarray]]:
    """The closed-form curves, and the average-case TPR arrays ``(levels, shots)`` by kind."""
    sh = shots[None, :]
    tl = levels[:, None]
    st = tuple(shots.tolist())
    average = {
        "exact": tpr_pooled(u_pop, sh, tl),
        "asymptotic": advantage_pooled_asymptotic(u_pop, sh, tl) + tl,
        "pool-approx": tpr_pool_approx(u_pop, sh, tl),
    }
    curves = _rows_to_curves("average", average, levels, st)
    for ex in examples:
        rows = {
            "exact": tpr_neyman_pearson(ex.u, sh, tl),
            "one-sided": tpr_one_sided(ex.u, sh, tl),
            "asymptotic": advantage_asymptotic(ex.u, sh, tl) + tl,
        }
        curves += _rows_to_curves(ex.name, rows, levels, st)
    return curves, average


def _simulations(
    cfg: TheoryConfig,
    shots: np.ndarray,
    levels: np.ndarray,
    examples: Sequence[FixedExample],
    step: Callable[[str], None],
) -> list[SimulationPoint]:
    """Every population mode at every S (fixed examples in fresh mode only)."""
    sims: list[SimulationPoint] = []
    for pop in cfg.population:
        for s in shots.astype(int):
            step(f"simulate {pop} S={s}")
            sims.extend(
                simulate(
                    int(s), pop, dim=cfg.dim, sigma=cfg.sigma, classes=cfg.classes,
                    shadow_models=cfg.shadow_models, fpr=levels, n_targets=cfg.n_targets,
                    seed=cfg.seed, head=cfg.head, logit_scale=cfg.logit_scale,
                    fixed=examples if pop == "fresh" else (), n_fixed=cfg.n_fixed,
                )
            )  # fmt: skip
    return sims


def _simulation_curves(
    sims: Sequence[SimulationPoint],
    populations: Sequence[str],
    names: Sequence[str],
    levels: np.ndarray,
) -> list[Curve]:
    """One curve per (population, example, level) over the simulated S, with CIs and fit flags."""
    curves: list[Curve] = []
    for pop in populations:
        for name in names:
            pts = [p for p in sims if p.population == pop and p.example == name]
            if not pts:
                continue
            for i, t in enumerate(levels):
                ms = [p.metrics[i] for p in pts]
                curves.append(
                    Curve(
                        name, "simulation", pop, float(t), tuple(float(p.shots) for p in pts),
                        tuple(m.tpr for m in ms), tuple(m.ci_low for m in ms),
                        tuple(m.ci_high for m in ms), tuple(_usable(m) for m in ms),
                    )
                )  # fmt: skip
    return curves


def _sim_curve(curves: Sequence[Curve], pop: str, t: float) -> Curve:
    return find_curve(curves, "average", "simulation", t, pop)


def _level_fits(
    curves: Sequence[Curve],
    populations: Sequence[str],
    t: float,
    shots: np.ndarray,
    exact: np.ndarray,
    asymptotic: np.ndarray,
) -> dict[str, Any]:
    """Fits at level t: each simulated population's kept points, then exact and asymptotic
    restricted to the points kept by the first simulated population (else the unsaturated ones)."""
    fits: dict[str, Any] = {}
    kept: np.ndarray | None = None
    for pop in POPULATIONS:
        if pop not in populations:
            continue
        c = _sim_curve(curves, pop, t)
        used = np.asarray(c.used_in_fit, dtype=bool)
        adv = np.where(used, c.advantage(), np.nan)
        fits[f"simulation_{pop}"] = fit_slope(c.shots, adv).to_dict()
        if kept is None:
            kept = used
    kept = kept if kept is not None else exact < 1.0 - 1e-9
    fits["exact"] = fit_slope(shots, np.where(kept, exact - t, np.nan)).to_dict()
    fits["asymptotic"] = fit_slope(shots, np.where(kept, asymptotic - t, np.nan)).to_dict()
    return fits


def _separation_ratios(sims: Sequence[SimulationPoint], pop: str) -> dict[int, float]:
    """Average-case measured separation ratio by S, for S ≥ 16."""
    return {
        p.shots: p.separation_ratio
        for p in sims
        if p.example == "average" and p.population == pop and p.shots >= 16
    }


def _pool_offset(
    curves: Sequence[Curve],
    sims: Sequence[SimulationPoint],
    t: float,
    exact: np.ndarray,
    pool_approx: np.ndarray,
    shots: np.ndarray,
) -> dict:
    """Measured pool-vs-fresh offset at level t (average case), against √2.

    ``advantage_ratio``: geometric mean over the S kept in both fits of adv_pool / adv_fresh;
    ``predicted_ratio``: the same ratio from the closed forms (pool approximation / exact);
    ``separation_ratio``: median over S ≥ 16 of the measured separation ratio pool/fresh.
    """
    fresh, pool = _sim_curve(curves, "fresh", t), _sim_curve(curves, "pool", t)
    both = np.asarray(fresh.used_in_fit) & np.asarray(pool.used_in_fit)
    r = pool.advantage()[both] / fresh.advantage()[both]
    pr = (pool_approx - t)[both] / (exact - t)[both]
    sep, sep_f = _separation_ratios(sims, "pool"), _separation_ratios(sims, "fresh")
    common = sorted(set(sep) & set(sep_f))
    sep_ratio = float(np.median([sep[s] / sep_f[s] for s in common])) if common else None
    fp = fit_slope(pool.shots, np.where(both, pool.advantage(), np.nan))
    ff = fit_slope(fresh.shots, np.where(both, fresh.advantage(), np.nan))
    return {
        "shots": [int(s) for s in shots[both]],
        "advantage_ratio": _clean(np.exp(np.mean(np.log(r)))) if r.size else None,
        "advantage_ratio_per_shots": [_clean(v) for v in r],
        "predicted_ratio_per_shots": [_clean(v) for v in pr],
        "log10_intercept_difference": (
            None if fp.intercept is None or ff.intercept is None else fp.intercept - ff.intercept
        ),
        "separation_ratio": sep_ratio,
        "sqrt2": math.sqrt(2.0),
    }


def _population_summary(u_pop: np.ndarray) -> dict:
    return {
        "n": int(u_pop.size),
        "mean": float(u_pop.mean()),
        "median": float(np.median(np.abs(u_pop))),
        "q05": float(np.quantile(u_pop, 0.05)),
        "q95": float(np.quantile(u_pop, 0.95)),
    }


def _level_docs(
    cfg: TheoryConfig,
    curves: Sequence[Curve],
    sims: Sequence[SimulationPoint],
    average: dict[str, np.ndarray],
    u_pop: np.ndarray,
    examples: Sequence[FixedExample],
    shots: np.ndarray,
    levels: np.ndarray,
) -> list[dict]:
    """One summary per FPR level: fits, slopes, the −½ onset, the regime, the pool offset."""
    u_q = np.quantile(u_pop, (np.arange(256) + 0.5) / 256)  # 256 quantiles: fast, smooth
    onset = asymptotic_onset(u_q, levels, test="pooled", per_octave=4, max_log2_shots=30)
    onset_typ = asymptotic_onset(examples[1].u, levels)
    u_med = float(np.median(np.abs(u_pop)))
    smax = float(shots.max())
    docs = []
    for i, t in enumerate(levels):
        t = float(t)
        exact, asym = average["exact"][i], average["asymptotic"][i]
        fits = _level_fits(curves, cfg.population, t, shots, exact, asym)
        doc: dict[str, Any] = {"fpr": t, "fits": fits}
        doc["slope_simulation_fresh"] = fits.get("simulation_fresh", {}).get("slope")
        doc["slope_simulation_pool"] = fits.get("simulation_pool", {}).get("slope")
        doc["slope_exact"] = fits["exact"]["slope"]
        doc["slope_asymptotic"] = -0.5
        doc["asymptotic_onset_shots"] = _clean(onset[i])
        doc["asymptotic_onset_shots_typical_example"] = _clean(onset_typ[i])
        doc["standardised_separation_at_max_shots"] = u_med / math.sqrt(smax)
        doc["separation_threshold"] = 1.0 / abs(float(_z(t)))
        doc["local_slope_exact_at_max_shots"] = _clean(local_slope(u_pop, smax, t, test="pooled"))
        doc["regime"] = "asymptotic" if smax >= onset[i] else "pre-asymptotic"
        if set(POPULATIONS) <= set(cfg.population):
            pool = average["pool-approx"][i]
            doc["pool_offset"] = _pool_offset(curves, sims, t, exact, pool, shots)
        docs.append(doc)
    return docs


def run_theory(config: TheoryConfig, on_step: Callable[[str], None] | None = None) -> TheoryResult:
    """Simulate and evaluate the closed forms for every S, FPR level and population mode."""
    t0 = time.perf_counter()
    cfg = config.validate()
    shots = np.asarray(sorted(set(int(s) for s in cfg.shots)), dtype=np.float64)
    levels = np.asarray(cfg.fpr, dtype=np.float64)
    examples = tuple(
        fixed_example(n, r, cfg.dim, cfg.sigma, cfg.classes) for n, r in FIXED_EXAMPLES
    )
    u_pop = population_separation(cfg.dim, cfg.sigma, cfg.n_population, cfg.seed)
    step = on_step or (lambda _msg: None)

    step("closed forms")
    curves, average = _closed_form_curves(u_pop, examples, shots, levels)
    sims = _simulations(cfg, shots, levels, examples, step)
    names = ("average", *(e.name for e in examples))
    curves += _simulation_curves(sims, cfg.population, names, levels)

    step("fits")
    level_docs = _level_docs(cfg, curves, sims, average, u_pop, examples, shots, levels)
    return TheoryResult(
        config=cfg,
        examples=examples,
        population_u=_population_summary(u_pop),
        curves=tuple(curves),
        simulations=tuple(sims),
        levels=tuple(level_docs),
        seconds=time.perf_counter() - t0,
    )
