"""The most vulnerable examples of an audit, measured without saturation, leaks or false precision.

From an audit's LiRA statistics ``stats`` (K, N) and membership ``in_mask`` (K, N),
:func:`tails` computes each example's shrunk standardised separation ``d_n`` (no ceiling) and its
Gaussian advantage per FPR level, their quantiles, maximum and cross-fitted maximum, each with a
noise floor and a bootstrap SE over model pairs and examples (:class:`Tails`);
:func:`cross_ranked` ranks the top examples on one half of the models, measured on the other.
All functions are pure numpy/scipy and do no I/O.

Contract: docs/design/tails.md (user guide: docs/vulnerability.md, "Per-example quantiles").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from miascale.errors import MiascaleError
from miascale.vulnerability import paired_halves

QUANTILES = (0.5, 0.75, 0.9, 0.95, 0.99, 0.999)
SHRINK_DF = 16.0
N_BOOT = 100
_BLOCK = 20  # bootstrap replicates per block (memory ~ 6 · block · N floats)


def _fl(x: float) -> float | None:
    x = float(x)
    return None if not np.isfinite(x) else x


def _names(quantiles: tuple[float, ...]) -> tuple[str, ...]:
    return (*(f"q{q:g}" for q in quantiles), "max", "cross_max")


@dataclass(frozen=True)
class Tails:
    """Separation and per-level advantage tails of one audit (docs/design/tails.md).

    ``names`` are ``q0.5 … q0.999, max, cross_max``; ``separation``/``separation_se``/
    ``separation_floor`` are indexed by name; ``advantage``/``advantage_se``/``advantage_floor``
    are (L, len(names)) for ``fpr_levels``; ``resolvable`` (L,) says whether each level is
    resolvable for the median example.
    """

    names: tuple[str, ...]
    fpr_levels: tuple[float, ...]
    separation: np.ndarray
    separation_se: np.ndarray
    separation_floor: np.ndarray
    advantage: np.ndarray
    advantage_se: np.ndarray
    advantage_floor: np.ndarray
    resolvable: np.ndarray
    n_in: float  # median IN / OUT model counts per example
    n_out: float
    n_examples: int
    n_boot: int

    def to_dict(self) -> dict:
        """JSON-ready: per estimator name the separation (value, se, floor) and per level the
        advantage (value, se, floor) with the level's resolvability."""

        def trip(v, e, f) -> dict:
            return {n: {"value": _fl(a), "se": _fl(b), "floor": _fl(c)}
                    for n, a, b, c in zip(self.names, v, e, f, strict=True)}  # fmt: skip

        levels = [
            {
                "fpr_level": t,
                "resolvable": bool(self.resolvable[i]),
                "advantage": trip(self.advantage[i], self.advantage_se[i], self.advantage_floor[i]),
            }
            for i, t in enumerate(self.fpr_levels)
        ]
        return {
            "separation": trip(self.separation, self.separation_se, self.separation_floor),
            "levels": levels,
            "n_in": self.n_in,
            "n_out": self.n_out,
            "n_examples": self.n_examples,
            "n_boot": self.n_boot,
            "shrink_df": SHRINK_DF,
        }

    def row_fields(self, fpr_level: float) -> dict:
        """Flat fields for a sweep row of level ``fpr_level`` (JSON-ready; parsed by
        :func:`miascale.scaling.tail_rows`)."""
        hit = np.flatnonzero(np.isclose(self.fpr_levels, fpr_level, rtol=1e-9, atol=0.0))
        if hit.size == 0:
            raise MiascaleError(f"No tail for FPR level {fpr_level}; have {self.fpr_levels}.")
        i = int(hit[0])
        out: dict = {"pe_resolvable": bool(self.resolvable[i]), "pe_n_out": float(self.n_out)}
        for j, name in enumerate(self.names):
            out[f"pe_adv_{name}"] = float(self.advantage[i, j])
            out[f"pe_adv_se_{name}"] = float(self.advantage_se[i, j])
            out[f"pe_adv_floor_{name}"] = float(self.advantage_floor[i, j])
            out[f"pe_sep_{name}"] = float(self.separation[j])
            out[f"pe_sep_se_{name}"] = float(self.separation_se[j])
            out[f"pe_sep_floor_{name}"] = float(self.separation_floor[j])
        return out


def _advantage(d: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``Phi_bar(Phi_bar^-1(t) - d) - t`` broadcast over trailing axes of d (levels first)."""
    t = t.reshape((-1,) + (1,) * d.ndim)
    return norm.sf(norm.isf(t) - d[None]) - t


def _moments(s: np.ndarray, m: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Separation d (B, N) for model weights w (B, K); shrunk per-example sigma."""
    mf = m.astype(np.float64)
    of = 1.0 - mf
    n_in, n_out = w @ mf, w @ of
    s_in, s_out = w @ (mf * s), w @ (of * s)
    q_in, q_out = w @ (mf * s * s), w @ (of * s * s)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu_in, mu_out = s_in / n_in, s_out / n_out
        ss = (q_in - n_in * mu_in**2) + (q_out - n_out * mu_out**2)
        df = n_in + n_out - 2.0
        var = np.clip(ss, 0.0, None) / np.maximum(df, 1.0)
        present = (w > 0).astype(np.float64)  # a model drawn twice is still one model
        ok = (present @ mf >= 2) & (present @ of >= 2)
        # pooled variance over the usable examples (NaN, without a warning, when a replicate
        # leaves none; _summaries then skips that replicate)
        n_ok = ok.sum(axis=-1, keepdims=True)
        pool = np.where(ok, var, 0.0).sum(axis=-1, keepdims=True) / np.where(n_ok, n_ok, np.nan)
        shrunk = (SHRINK_DF * pool + df * var) / (SHRINK_DF + df)
        d = np.where(ok, (mu_in - mu_out) / np.sqrt(np.maximum(shrunk, 1e-300)), np.nan)
    return d, ok


def _summaries(d: np.ndarray, da: np.ndarray, db: np.ndarray, q) -> np.ndarray:
    """(B, Q + 2): q-quantiles and max of each row of d, and the cross-fitted max: the top
    example of half A (``da``) measured on half B (``db``) and vice versa, averaged."""
    out = np.full((d.shape[0], len(q) + 2), np.nan)
    has = np.isfinite(d).any(axis=-1)  # a replicate may leave no example with 2 IN and 2 OUT
    if has.any():
        out[has, : len(q)] = np.nanquantile(d[has], q, axis=-1).T
        out[has, len(q)] = np.nanmax(d[has], axis=-1)
    both = np.isfinite(da) & np.isfinite(db)
    ia = np.argmax(np.where(both, da, -np.inf), axis=-1)
    ib = np.argmax(np.where(both, db, -np.inf), axis=-1)
    rows = np.arange(d.shape[0])
    cross = 0.5 * (db[rows, ia] + da[rows, ib])
    out[:, len(q) + 1] = np.where(both.any(axis=-1), cross, np.nan)
    return out


def pair_groups(in_mask: np.ndarray) -> np.ndarray:
    """(K,) group id per model: a model and its complementary partner share one id."""
    from miascale.membership import complement_partners

    partner = complement_partners(in_mask)
    k = np.arange(in_mask.shape[0])
    return np.where(partner >= 0, np.minimum(k, partner), k)


def tails(
    stats: np.ndarray,
    in_mask: np.ndarray,
    fpr_levels,
    quantiles: tuple[float, ...] = QUANTILES,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> Tails:
    """Separation and advantage tails with bootstrap SEs and noise floors (docs/design/tails.md)."""
    from miascale.attacks.lira import check_signals
    from miascale.metrics import check_fpr_levels

    s, m = check_signals(stats, in_mask)
    t = check_fpr_levels(fpr_levels)
    q = np.asarray(quantiles, dtype=np.float64)
    if not isinstance(n_boot, int) or n_boot < 2:
        raise MiascaleError(f"n_boot must be an integer >= 2, got {n_boot!r}.")
    k, n = s.shape
    if k < 8:
        raise MiascaleError(f"Per-example tails need at least 8 models, got {k}.")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7A11]))
    groups = pair_groups(m)
    ha, hb = paired_halves(m, int(seed))

    def stat(w: np.ndarray, idx: np.ndarray | None) -> np.ndarray:
        d, _ = _moments(s, m, w)
        wa, wb = w.copy(), w.copy()
        wa[:, hb] = 0.0
        wb[:, ha] = 0.0
        da, _ = _moments(s, m, wa)
        db, _ = _moments(s, m, wb)
        if idx is not None:
            rows = np.arange(w.shape[0])[:, None]
            d, da, db = d[rows, idx], da[rows, idx], db[rows, idx]
        return _summaries(d, da, db, q)

    point = stat(np.ones((1, k)), None)[0]
    uniq, inv = np.unique(groups, return_inverse=True)
    reps = []
    for start in range(0, n_boot, _BLOCK):
        b = min(_BLOCK, n_boot - start)
        picks = rng.integers(0, len(uniq), size=(b, len(uniq)))
        gw = np.stack([np.bincount(p, minlength=len(uniq)) for p in picks]).astype(np.float64)
        w = gw[:, inv]  # (b, K): a group drawn c times weighs c
        idx = rng.integers(0, n, size=(b, n))
        reps.append(stat(w, idx))
    boot = np.concatenate(reps, axis=0)
    n_fin = np.isfinite(boot).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):  # fewer than 2 finite replicates: NaN
        mean = np.where(np.isfinite(boot), boot, 0.0).sum(axis=0) / n_fin
        dev = np.where(np.isfinite(boot), boot - mean, 0.0)
        se = np.where(n_fin >= 2, np.sqrt((dev * dev).sum(axis=0) / (n_fin - 1)), np.nan)

    n_in = float(np.median(m.sum(axis=0)))
    n_out = float(np.median((~m).sum(axis=0)))
    spread = np.sqrt(1.0 / max(n_in, 1.0) + 1.0 / max(n_out, 1.0))
    floor = np.concatenate(
        [norm.ppf(q) * spread, [norm.ppf((n - 0.375) / (n + 0.25)) * spread], [0.0]]
    )
    adv = _advantage(point, t)  # (L, Q + 2)
    # the advantage is monotone in d: its SE by the delta method through the density
    slope = norm.pdf(norm.isf(t)[:, None] - point[None, :])
    return Tails(
        names=_names(tuple(float(x) for x in q)),
        fpr_levels=tuple(float(x) for x in t),
        separation=point,
        separation_se=se,
        separation_floor=floor,
        advantage=adv,
        advantage_se=slope * se[None, :],
        advantage_floor=_advantage(floor, t),
        resolvable=t * n_out >= 1.0,
        n_in=n_in,
        n_out=n_out,
        n_examples=n,
        n_boot=n_boot,
    )


@dataclass(frozen=True)
class Ranked:
    """The most vulnerable examples, selected on one half of the models and measured on the
    other (pairs kept together): ``separation`` is measured on half B for examples ranked by
    half A, with standard error ``se`` ≈ sqrt(1/n_in + 1/n_out) of half B."""

    indices: np.ndarray  # (top,) pool indices, most vulnerable first
    selected_on: np.ndarray  # d on half A (the ranking; biased upward)
    separation: np.ndarray  # d on half B (unbiased measurement)
    se: np.ndarray


def cross_ranked(stats: np.ndarray, in_mask: np.ndarray, top: int = 16, seed: int = 0) -> Ranked:
    """The ``top`` examples ranked by the cross-fitted separation (see :class:`Ranked`)."""
    from miascale.attacks.lira import check_signals

    s, m = check_signals(stats, in_mask)
    if s.shape[0] < 8:
        raise MiascaleError(f"Cross-fitted ranking needs at least 8 models, got {s.shape[0]}.")
    ha, hb = paired_halves(m, int(seed))
    wa = np.zeros((1, s.shape[0]))
    wa[0, ha] = 1.0
    wb = 1.0 - wa
    da = _moments(s, m, wa)[0][0]
    db = _moments(s, m, wb)[0][0]
    order = np.argsort(-np.nan_to_num(da, nan=-np.inf), kind="stable")
    order = order[np.isfinite(da[order]) & np.isfinite(db[order])][:top]
    mb = m[hb]
    n_in, n_out = mb.sum(axis=0)[order], (~mb).sum(axis=0)[order]
    se = np.sqrt(1.0 / np.maximum(n_in, 1) + 1.0 / np.maximum(n_out, 1))
    return Ranked(order, da[order], db[order], se)
