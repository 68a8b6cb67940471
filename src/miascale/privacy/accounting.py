"""DP-SGD accounting with Google's ``dp_accounting``: ε of (σ, q, T, δ), σ for a target ε, δ.

The mechanism, the two accountants, the neighbouring relations and the calibration search are
specified in ``docs/design/privacy.md``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from miascale.errors import MiascaleError
from miascale.privacy.checks import (
    _check_accountant,
    _check_delta,
    _check_epsilon,
    _check_noise,
    _check_nonnegative_epsilon,
    _check_rate,
    _check_relation,
    _check_steps,
)

PLD_DISCRETIZATION = 1e-3
"""``value_discretization_interval`` of the PLD accountant for ε >= 1 (scaled by ε below 1)."""
MIN_NOISE_MULTIPLIER = 0.25
"""Smallest σ :func:`calibrate_noise` considers; larger target ε raise MiascaleError."""
_LIBRARY_RELATIONS = {"add_remove": "ADD_OR_REMOVE_ONE", "replace_one": "REPLACE_ONE"}
_MAX_NOISE_MULTIPLIER = 1e7
_CALIBRATION_RTOL = 1e-6


@contextmanager
def _quiet_absl() -> Iterator[None]:
    """RDP logs a warning per excluded order on stderr; keep our stderr for progress."""
    logger = logging.getLogger("absl")
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


def _event(noise_multiplier: float, sampling_rate: float, steps: int) -> Any:
    import dp_accounting

    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(
            sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier)
        ),
        steps,
    )


def _library(accountant: str, relation: str) -> bool:
    """Whether dp_accounting accounts ``relation`` itself (otherwise: group privacy)."""
    return relation == "add_remove" or accountant == "pld"


def _accountant_factory(
    accountant: str, interval: float, relation: str = "add_remove"
) -> Callable[[], Any]:
    import dp_accounting

    rel = getattr(dp_accounting.NeighboringRelation, _LIBRARY_RELATIONS[relation])
    if accountant == "pld":
        from dp_accounting.pld import PLDAccountant

        return lambda: PLDAccountant(rel, value_discretization_interval=interval)
    from dp_accounting.rdp import RdpAccountant

    return lambda: RdpAccountant(neighboring_relation=rel)


def replace_one_from_add_remove(epsilon: float, delta: float) -> tuple[float, float]:
    """Group privacy: add/remove (ε, δ)-DP implies replace-one (2ε, (1 + e^ε) δ)-DP.

    A replacement is a removal followed by an addition. ``epsilon`` >= 0 (``inf`` allowed),
    ``delta`` in [0, 1); the returned δ may be >= 1 (then the guarantee is vacuous).
    """
    e = _check_nonnegative_epsilon(epsilon)
    d = _check_delta(delta, allow_zero=True)
    if d == 0.0:
        return 2.0 * e, 0.0
    return 2.0 * e, (1.0 + math.exp(e)) * d if e < 700 else math.inf


def _group_privacy_epsilon(eps_of: Callable[[float], float], delta: float) -> float:
    """2 ε₀(δ₀) for the largest δ₀ found with (1 + e^{ε₀(δ₀)}) δ₀ <= ``delta`` (design doc)."""

    def fits(log_d0: float) -> bool:
        return log_d0 + float(np.logaddexp(0.0, eps_of(math.exp(log_d0)))) <= math.log(delta)

    hi = math.log(delta / 2.0)  # 1 + e^ε₀ >= 2: δ₀ = δ/2 fits only when ε₀ = 0
    if fits(hi):
        return 2.0 * eps_of(delta / 2.0)
    lo = hi
    while not fits(lo):  # decades down to a δ₀ that fits
        hi, lo = lo, lo - math.log(10.0)
        if lo < math.log(1e-300):
            return math.inf
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return 2.0 * eps_of(math.exp(lo))


def _epsilon(
    sigma: float,
    q: float,
    steps: int,
    delta: float,
    accountant: str,
    interval: float,
    relation: str = "add_remove",
) -> float:
    library = _library(accountant, relation)
    with _quiet_absl():
        acc = _accountant_factory(accountant, interval, relation if library else "add_remove")()
        acc.compose(_event(sigma, q, steps))
        if library:
            return float(acc.get_epsilon(delta))
        return _group_privacy_epsilon(lambda d: float(acc.get_epsilon(d)), delta)


def _pld_interval(epsilon: float) -> float:
    return PLD_DISCRETIZATION * min(1.0, max(epsilon, 1e-3))


def epsilon_for(
    noise_multiplier: float,
    sampling_rate: float,
    steps: int,
    delta: float,
    accountant: str = "pld",
    relation: str = "add_remove",
) -> float:
    """ε of ``steps`` Poisson-subsampled Gaussian steps (σ, q) at ``delta`` (design doc).

    ``relation``: ``"add_remove"`` (default) or ``"replace_one"``. Replace-one is the library's
    own PLD accounting with ``accountant="pld"``, group privacy with ``"rdp"``; either way the
    result is an ε at exactly ``delta``.
    """
    sigma = _check_noise(noise_multiplier)
    q = _check_rate(sampling_rate)
    t = _check_steps(steps)
    d = _check_delta(delta)
    acc = _check_accountant(accountant)
    rel = _check_relation(relation)
    eps = _epsilon(sigma, q, t, d, acc, PLD_DISCRETIZATION, rel)
    if acc == "pld" and eps < 1.0:
        eps = _epsilon(sigma, q, t, d, acc, _pld_interval(eps), rel)
    return eps


def _bracket_up(
    eps_at: Callable[[float], float], target: float, d: float, q: float, t: int
) -> tuple[float, float]:
    """σ bracket above 1 (ε(1) > target): ×4 steps until ε <= target."""
    lo, hi = 1.0, 4.0
    while True:
        if hi > _MAX_NOISE_MULTIPLIER:
            raise MiascaleError(
                f"epsilon={target:g} at delta={d:g} needs a noise multiplier above "
                f"{_MAX_NOISE_MULTIPLIER:g} for q={q:g}, T={t}; use fewer steps, a smaller "
                "sampling rate or a larger epsilon."
            )
        if eps_at(hi) <= target:
            return lo, hi
        lo, hi = hi, hi * 4.0


def _bracket_down(
    eps_at: Callable[[float], float], target: float, d: float, q: float, t: int
) -> tuple[float, float]:
    """σ bracket below 1 (ε(1) <= target): halving down to ``MIN_NOISE_MULTIPLIER``."""
    lo = hi = 1.0
    while True:
        lo = max(lo / 2.0, MIN_NOISE_MULTIPLIER)
        e_lo = eps_at(lo)
        if e_lo > target:
            return lo, hi
        if lo <= MIN_NOISE_MULTIPLIER:
            raise MiascaleError(
                f"epsilon={target:g} is larger than the epsilon of noise multiplier "
                f"{MIN_NOISE_MULTIPLIER:g} ({e_lo:.4g} at delta={d:g}, q={q:g}, T={t}): "
                "such an epsilon gives no meaningful protection. Run without --epsilon "
                "for a non-private model, or ask for a smaller epsilon."
            )
        hi = lo


def _bisect_sigma(eps_at: Callable[[float], float], target: float, lo: float, hi: float) -> float:
    """Smallest σ in [lo, hi] with ε(σ) <= target, to ``_CALIBRATION_RTOL`` (ε decreases in σ)."""
    while hi - lo > _CALIBRATION_RTOL * lo:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if eps_at(mid) > target else (lo, mid)
    return float(hi)


def calibrate_noise(
    epsilon: float,
    delta: float,
    sampling_rate: float,
    steps: int,
    accountant: str = "pld",
    relation: str = "add_remove",
) -> float:
    """Smallest noise multiplier σ with ε(σ, q, T, δ) <= ``epsilon`` (design doc).

    ``relation`` is the neighbouring relation ``epsilon`` refers to (default ``"add_remove"``,
    what DP-SGD training calibrates for); with ``"replace_one"`` and ``accountant="rdp"`` (group
    privacy) the last step is a plain bisection in σ instead of
    ``dp_accounting.calibrate_dp_mechanism``. Raises :class:`MiascaleError` for invalid
    arguments and for targets that need σ below ``MIN_NOISE_MULTIPLIER`` (or above 1e7).
    """
    import dp_accounting

    target = _check_epsilon(epsilon)
    d = _check_delta(delta)
    q = _check_rate(sampling_rate)
    t = _check_steps(steps)
    acc = _check_accountant(accountant)
    rel = _check_relation(relation)
    interval = _pld_interval(target)

    def eps_at(sigma: float) -> float:
        return _epsilon(sigma, q, t, d, acc, interval, rel)

    # Explicit bracket [lo, hi] with eps(lo) > target >= eps(hi); eps decreases in sigma.
    bracket = _bracket_up if eps_at(1.0) > target else _bracket_down
    lo, hi = bracket(eps_at, target, d, q, t)
    if not _library(acc, rel):  # group privacy: bisect σ
        return _bisect_sigma(eps_at, target, lo, hi)
    with _quiet_absl():
        sigma = dp_accounting.calibrate_dp_mechanism(
            _accountant_factory(acc, interval, rel),
            lambda s: _event(s, q, t),
            target,
            d,
            bracket_interval=dp_accounting.ExplicitBracketInterval(lo, hi),
            tol=_CALIBRATION_RTOL * lo,
        )
    return float(sigma)


def default_delta(n_train: int) -> float:
    """The largest power of ten at most ``1/(10 n_train)`` (e.g. 640 -> 1e-4, 1000 -> 1e-4)."""
    if isinstance(n_train, bool) or not isinstance(n_train, int | np.integer) or n_train < 1:
        raise MiascaleError(f"n_train must be an integer >= 1, got {n_train!r}.")
    n = int(n_train)
    digits = len(str(n))
    # 10**(e-1) < n <= 10**e  =>  10**-(e+1) <= 1/(10 n) < 10**-e
    e = digits - 1 if n == 10 ** (digits - 1) else digits
    return float(10.0 ** -(e + 1))
