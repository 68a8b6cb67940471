"""Differential privacy glue: accountant, DP bounds on the ROC, empirical ε lower bounds.

Accounting (DP-SGD)
-------------------
One DP-SGD step on a model's training set is a Poisson-subsampled Gaussian mechanism: every
example joins the batch independently with probability ``q`` (``sampling_rate``), the summed
per-example gradients (each clipped to L2 norm ``R``) get ``N(0, (sigma R)^2)`` noise per
coordinate; ``sigma`` is the *noise multiplier*. ``T`` steps are the self-composition of that
event. The privacy loss is computed by Google's ``dp_accounting`` (never by hand here):

* ``"pld"`` (default): privacy-loss-distribution accountant (tight). Its only knob is the
  discretisation of the privacy-loss values; we use ``1e-3`` (``PLD_DISCRETIZATION``), which
  keeps one evaluation to ~0.03-0.5 s on one core and agrees with the library default
  (``1e-4``, 10-30x slower) to ~1e-4 relative for ε >= 1. For results below ε = 1 the
  evaluation is repeated with the interval shrunk in proportion (``ε * 1e-3``) so the
  discretisation error stays ~1e-4 relative. PLD's discretisation is pessimistic: the ε it
  reports is an upper bound on the true ε of the mechanism.
* ``"rdp"``: Rényi-DP accountant with the library's default orders (looser: typically 5-20%
  larger ε at the same σ, more for large ε).

The size ``n_k`` of a model's training set is treated as public (the audit fixes it by design).

Neighbouring relation (``relation``)
------------------------------------
``"add_remove"`` (default) is what σ is calibrated for and what ε means unless a caller passes
``relation``. ``"replace_one"`` (one example replaced by another) is the game of the audit's
``"balanced"`` design (:func:`game_relation`); its ε is larger at the same δ. With ``"pld"`` it
is the library's own accounting (``PLDAccountant(NeighboringRelation.REPLACE_ONE)``: mixtures
``(1 − q) N(0, σ²) + q N(∓1, σ²)``). The RDP accountant rejects REPLACE_ONE for Poisson sampling,
so ``"rdp"`` falls back to group privacy (a replacement is a removal plus an addition:
add/remove (ε₀, δ₀) ⇒ replace-one (2ε₀, (1 + e^ε₀) δ₀), :func:`replace_one_from_add_remove`),
at the δ asked for: the largest δ₀ found (bisection in log δ₀) with (1 + e^{ε₀(δ₀)}) δ₀ <= δ
gives ε = 2 ε₀(δ₀) (looser than PLD; ``inf`` if no δ₀ >= 1e-300 fits). PLD's replace-one ε at δ
can exceed 2 ε₀(δ) (at q = 1 it is the Gaussian with twice the sensitivity), but never the
group-privacy bound at the δ that goes with it.

:func:`calibrate_noise` finds the smallest σ (to a relative tolerance of 1e-6) whose ε at
``delta`` is at most the target, with
``dp_accounting.calibrate_dp_mechanism`` on an explicit bracket that we search first (the
library's own bracket search would start at σ = 0, where ε is infinite). Targets so large that
they need σ < ``MIN_NOISE_MULTIPLIER`` (0.25) raise :class:`MiascaleError`: such an ε protects
nothing (ε(σ=0.25) is in the hundreds to thousands for any realistic q, T); run without DP.

Default δ
---------
:func:`default_delta`: the largest power of ten at most ``1 / (10 n)`` (n = training-set
size), e.g. n = 640 -> 1e-4, n = 1000 -> 1e-4, n = 1001 -> 1e-5, n = 10 -> 1e-2. So
``0.01/n < δ <= 0.1/n``: always well below ``1/n`` (a δ of order 1/n allows publishing a random
training example), and round so it reads well in reports.

DP bounds on the ROC
--------------------
An (ε, δ)-DP training algorithm makes every membership test (FPR α, FNR β = 1 − TPR) satisfy
(Kairouz, Oh & Viswanath 2015, hypothesis-testing view of DP)::

    α + e^ε β >= 1 − δ     and     e^ε α + β >= 1 − δ

i.e. ``TPR <= e^ε FPR + δ`` and ``TPR <= 1 − e^{−ε} (1 − δ − FPR)``. :func:`dp_roc_bound` is the
pointwise minimum of both, clipped to [0, 1].

Empirical ε lower bound
-----------------------
Inverting the two inequalities at one ROC vertex (threshold τ) gives two lower bounds on ε:

* form ``"tpr"``: ``ε >= log((TPR − δ) / FPR)``
* form ``"fnr"``: ``ε >= log((1 − δ − FPR) / (1 − TPR))`` (= log((1 − δ − FPR) / FNR))

To be conservative at finite sample sizes each uses the Clopper–Pearson bound that makes it
*smaller*: ``TPR_low`` and ``FPR_high`` in both forms (``"tpr"``: TPR small in the numerator,
FPR large in the denominator; ``"fnr"``: FPR large in the numerator, 1 − TPR_low large in the
denominator). (The tempting ``log((1 − FPR_low − δ)/(1 − TPR_high))`` uses the optimistic end of
both intervals and can exceed the true ε; it is not used.) ``clopper_pearson`` at two-sided
level ``c`` gives each one-sided bound at ``1 − (1 − c)/2``, so TPR_low and FPR_high hold
jointly with probability ≥ ``c`` (union bound) at one threshold. The reported ``epsilon_lb`` is
the maximum over all ROC vertices and both forms, floored at 0 (0 means "no evidence against
ε = 0").

Taking the best of ``m`` thresholds on the same data needs a multiple-comparison correction:
without it, scores that carry no signal at all (members and non-members from one distribution)
give ε_lb ≈ 0.5 with 1000 + 1000 scores, from a lucky vertex at FPR ~ 0.001. With
``simultaneous=True`` (default) the Clopper–Pearson level is Bonferroni-corrected,
``c = 1 − (1 − confidence)/m`` with ``m`` the number of interior ROC vertices (the first and
last vertex can never give a positive bound), so all the bounds used hold together with
probability ≈ ``confidence`` (the vertices are the observed scores; the union bound over them is
the usual approximation). ``simultaneous=False`` gives the per-threshold number used in much of
the auditing literature (Jagielski et al. 2020; Nasr et al. 2021), which is optimistic.
For non-DP runs the same number is the model's "empirical ε".
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from miascale.errors import MiascaleError
from miascale.metrics import clopper_pearson, roc_curve

__all__ = [
    "ACCOUNTANTS",
    "DESIGN_RELATIONS",
    "MIN_NOISE_MULTIPLIER",
    "PLD_DISCRETIZATION",
    "RELATIONS",
    "EmpiricalEpsilon",
    "calibrate_noise",
    "default_delta",
    "dp_roc_bound",
    "empirical_epsilon",
    "epsilon_for",
    "game_relation",
    "replace_one_from_add_remove",
]

ACCOUNTANTS = ("pld", "rdp")
PLD_DISCRETIZATION = 1e-3
"""``value_discretization_interval`` of the PLD accountant for ε >= 1 (scaled by ε below 1)."""
MIN_NOISE_MULTIPLIER = 0.25
"""Smallest σ :func:`calibrate_noise` considers; larger target ε raise MiascaleError."""
RELATIONS = ("add_remove", "replace_one")
DESIGN_RELATIONS = {"balanced": "replace_one", "bernoulli": "add_remove"}
"""The neighbouring relation of the membership game each audit design plays."""
_LIBRARY_RELATIONS = {"add_remove": "ADD_OR_REMOVE_ONE", "replace_one": "REPLACE_ONE"}
_MAX_NOISE_MULTIPLIER = 1e7
_CALIBRATION_RTOL = 1e-6


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise MiascaleError(f"{name} must be a number, got {value!r}.")
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise MiascaleError(f"{name} must be a number, got {value!r}.") from exc
    return out


def _check_epsilon(epsilon: Any) -> float:
    e = _number(epsilon, "epsilon")
    if not (math.isfinite(e) and e > 0):
        raise MiascaleError(
            f"epsilon must be a finite number > 0, got {epsilon!r}; for a run without DP, "
            "leave epsilon unset instead."
        )
    return e


def _check_delta(delta: Any, allow_zero: bool = False) -> float:
    d = _number(delta, "delta")
    ok = (0.0 <= d < 1.0) if allow_zero else (0.0 < d < 1.0)
    if not ok:
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise MiascaleError(
            f"delta must lie in {interval}, got {delta!r}; a usual choice is well below "
            "1/n_train (see miascale.privacy.default_delta)."
        )
    return d


def _check_rate(sampling_rate: Any) -> float:
    q = _number(sampling_rate, "sampling_rate")
    if not (0.0 < q <= 1.0):
        raise MiascaleError(
            f"sampling_rate (Poisson sampling probability q) must lie in (0, 1], got "
            f"{sampling_rate!r}."
        )
    return q


def _check_steps(steps: Any) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
        raise MiascaleError(f"steps must be an integer >= 1, got {steps!r}.")
    return int(steps)


def _check_accountant(accountant: Any) -> str:
    if accountant not in ACCOUNTANTS:
        raise MiascaleError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}.")
    return str(accountant)


def _check_relation(relation: Any) -> str:
    if relation not in RELATIONS:
        raise MiascaleError(
            f"relation must be one of {RELATIONS} (the neighbouring relation of the membership "
            f"game), got {relation!r}."
        )
    return str(relation)


def game_relation(design: str) -> str:
    """The relation of the membership game of an audit design (``DESIGN_RELATIONS``)."""
    if design not in DESIGN_RELATIONS:
        raise MiascaleError(
            f"Unknown membership design {design!r}; known: {', '.join(DESIGN_RELATIONS)}."
        )
    return DESIGN_RELATIONS[design]


def _check_noise(noise_multiplier: Any) -> float:
    s = _number(noise_multiplier, "noise_multiplier")
    if not (math.isfinite(s) and s > 0):
        raise MiascaleError(
            f"noise_multiplier must be a finite number > 0, got {noise_multiplier!r} "
            "(sigma = 0 is not private: epsilon is infinite)."
        )
    return s


# --------------------------------------------------------------------------------------------
# Accountant glue
# --------------------------------------------------------------------------------------------


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
    e = _number(epsilon, "epsilon")
    if not e >= 0:
        raise MiascaleError(f"epsilon must be >= 0, got {epsilon!r}.")
    d = _check_delta(delta, allow_zero=True)
    if d == 0.0:
        return 2.0 * e, 0.0
    return 2.0 * e, (1.0 + math.exp(e)) * d if e < 700 else math.inf


def _group_privacy_epsilon(eps_of: Callable[[float], float], delta: float) -> float:
    """2 ε₀(δ₀) for the largest δ₀ found with (1 + e^{ε₀(δ₀)}) δ₀ <= ``delta`` (docstring)."""

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
    """ε of ``steps`` Poisson-subsampled Gaussian steps (σ, q) at ``delta`` (module docstring).

    ``relation``: ``"add_remove"`` (default) or ``"replace_one"``. Replace-one is the library's
    own PLD accounting with ``accountant="pld"``, group privacy with ``"rdp"`` (module
    docstring); either way the result is an ε at exactly ``delta``.
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


def calibrate_noise(
    epsilon: float,
    delta: float,
    sampling_rate: float,
    steps: int,
    accountant: str = "pld",
    relation: str = "add_remove",
) -> float:
    """Smallest noise multiplier σ with ε(σ, q, T, δ) <= ``epsilon`` (module docstring).

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
    hi = 1.0
    e_hi = eps_at(hi)
    if e_hi > target:
        lo = hi
        while e_hi > target:
            lo, hi = hi, hi * 4.0
            if hi > _MAX_NOISE_MULTIPLIER:
                raise MiascaleError(
                    f"epsilon={target:g} at delta={d:g} needs a noise multiplier above "
                    f"{_MAX_NOISE_MULTIPLIER:g} for q={q:g}, T={t}; use fewer steps, a smaller "
                    "sampling rate or a larger epsilon."
                )
            e_hi = eps_at(hi)
    else:
        lo = hi
        while True:
            lo = max(lo / 2.0, MIN_NOISE_MULTIPLIER)
            e_lo = eps_at(lo)
            if e_lo > target:
                break
            if lo <= MIN_NOISE_MULTIPLIER:
                raise MiascaleError(
                    f"epsilon={target:g} is larger than the epsilon of noise multiplier "
                    f"{MIN_NOISE_MULTIPLIER:g} ({e_lo:.4g} at delta={d:g}, q={q:g}, T={t}): "
                    "such an epsilon gives no meaningful protection. Run without --epsilon "
                    "for a non-private model, or ask for a smaller epsilon."
                )
            hi, e_hi = lo, e_lo
    if not _library(acc, rel):  # group privacy: bisect σ (ε decreases in σ)
        while hi - lo > _CALIBRATION_RTOL * lo:
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if eps_at(mid) > target else (lo, mid)
        return float(hi)
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


# --------------------------------------------------------------------------------------------
# DP bound on the ROC
# --------------------------------------------------------------------------------------------


def dp_roc_bound(fpr: Any, epsilon: float, delta: float) -> np.ndarray:
    """Largest TPR an (ε, δ)-DP mechanism allows at each FPR (float64, same shape as ``fpr``).

    ``min(e^ε FPR + δ, 1 − e^{−ε}(1 − δ − FPR))`` clipped to [0, 1]. ``epsilon`` may be 0
    (then the bound is ``min(FPR + δ, 1)``) or ``inf`` (bound 1 for FPR > 0); ``delta`` in
    [0, 1).
    """
    e = _number(epsilon, "epsilon")
    if not (e >= 0):
        raise MiascaleError(f"epsilon must be >= 0, got {epsilon!r}.")
    d = _check_delta(delta, allow_zero=True)
    try:
        f = np.asarray(fpr, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MiascaleError(f"fpr must be numbers, got {fpr!r}.") from exc
    if not np.all((f >= 0.0) & (f <= 1.0)):
        raise MiascaleError("fpr values must lie in [0, 1] (NaN is not allowed).")
    with np.errstate(over="ignore", invalid="ignore"):
        first = np.where(f > 0, np.exp(e) * f, 0.0) + d
        second = 1.0 - math.exp(-e) * (1.0 - d - f)
    return np.clip(np.minimum(first, second), 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Empirical epsilon
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmpiricalEpsilon:
    """Empirical lower bound on ε from attack scores (module docstring).

    Attributes:
        epsilon_lb: max over ROC vertices and both forms of the bound, floored at 0.
        form: ``"tpr"`` (log((TPR_low − δ)/FPR_high)), ``"fnr"``
            (log((1 − δ − FPR_high)/(1 − TPR_low))) or ``"none"`` when no bound is positive.
        threshold: score threshold of the vertex (predict member when score >= threshold);
            ``nan`` when ``form == "none"``.
        tpr, fpr: empirical rates at that vertex (nan when ``form == "none"``).
        tpr_low, fpr_high: the Clopper–Pearson bounds used (nan when ``form == "none"``).
        true_positives, false_positives: counts at that vertex (-1 when ``form == "none"``).
        n_pos, n_neg: members and non-members pooled.
        delta: δ used.
        confidence: overall confidence asked for.
        level: two-sided Clopper–Pearson level used at each vertex (``confidence``, or its
            Bonferroni correction when ``simultaneous``).
    """

    epsilon_lb: float
    form: str
    threshold: float
    tpr: float
    fpr: float
    tpr_low: float
    fpr_high: float
    true_positives: int
    false_positives: int
    n_pos: int
    n_neg: int
    delta: float
    confidence: float
    level: float

    def to_dict(self) -> dict[str, float | int | str | None]:
        """Plain Python values; non-finite floats become ``None`` (JSON-safe)."""
        out: dict[str, float | int | str | None] = {}
        for key, value in self.__dict__.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
            else:
                out[key] = value
        return out


def empirical_epsilon(
    scores: Any,
    labels: Any,
    delta: float = 0.0,
    confidence: float = 0.95,
    simultaneous: bool = True,
) -> EmpiricalEpsilon:
    """Lower bound on ε from membership scores (higher = member; pooled like ``roc_curve``).

    Vectorised over every ROC vertex (one sort). ``delta`` in [0, 1) is the δ of the
    hypothesis being tested (use the run's δ for DP runs, 0 or the same default δ otherwise).
    ``simultaneous`` Bonferroni-corrects the Clopper–Pearson level for the number of
    thresholds (module docstring).
    """
    d = _check_delta(delta, allow_zero=True)
    if not isinstance(simultaneous, bool):
        raise MiascaleError(f"simultaneous must be a bool, got {simultaneous!r}.")
    roc = roc_curve(scores, labels)
    clopper_pearson(0, 1, confidence)  # validates confidence
    conf = float(confidence)
    m = max(roc.tpr.size - 2, 1)
    level = 1.0 - (1.0 - conf) / m if simultaneous else conf
    n_pos, n_neg = roc.n_pos, roc.n_neg
    tp = np.rint(roc.tpr * n_pos).astype(np.int64)
    fp = np.rint(roc.fpr * n_neg).astype(np.int64)
    bounds = _VertexBounds(tp, fp, n_pos, n_neg, level, d)
    ia, best_a = bounds.best("tpr")
    ib, best_b = bounds.best("fnr")
    if max(best_a, best_b) <= 0.0:
        nan = math.nan
        return EmpiricalEpsilon(
            0.0, "none", nan, nan, nan, nan, nan, -1, -1, n_pos, n_neg, d, conf, level
        )
    tpr_low, fpr_high = bounds.at(ia if best_a >= best_b else ib)
    i, form, value = (ia, "tpr", best_a) if best_a >= best_b else (ib, "fnr", best_b)
    return EmpiricalEpsilon(
        epsilon_lb=value,
        form=form,
        threshold=float(roc.thresholds[i]),
        tpr=float(roc.tpr[i]),
        fpr=float(roc.fpr[i]),
        tpr_low=tpr_low,
        fpr_high=fpr_high,
        true_positives=int(tp[i]),
        false_positives=int(fp[i]),
        n_pos=n_pos,
        n_neg=n_neg,
        delta=d,
        confidence=conf,
        level=level,
    )


class _VertexBounds:
    """The two forms of the ε bound at ROC vertices, evaluated where they can win.

    Clopper–Pearson bounds cost a beta quantile each (about 8 µs), and an audit's ROC has up to
    a million vertices. Since ``tpr_low <= min(TPR, tpr_low(n_pos))`` and ``fpr_high >=
    max(FPR, fpr_high(0))`` (both bounds increase with the count; the two end values have closed
    forms), each form has a cheap upper bound per vertex. Vertices are evaluated exactly in
    order of that upper bound, in growing blocks, until the next upper bound is below the best
    exact value: the result is the full maximum (ties go to the first vertex, as ``argmax``).
    """

    def __init__(
        self, tp: np.ndarray, fp: np.ndarray, n_pos: int, n_neg: int, level: float, delta: float
    ) -> None:
        self.tp, self.fp, self.n_pos, self.n_neg = tp, fp, n_pos, n_neg
        self.level, self.delta = level, delta
        half = (1.0 - level) / 2.0
        self.tpr_low_max = half ** (1.0 / n_pos)  # CP lower bound at k = n
        self.fpr_high_min = 1.0 - half ** (1.0 / n_neg)  # CP upper bound at k = 0

    def at(self, i: int) -> tuple[float, float]:
        low, _ = clopper_pearson(int(self.tp[i]), self.n_pos, self.level)
        _, high = clopper_pearson(int(self.fp[i]), self.n_neg, self.level)
        return float(low), float(high)

    def _value(self, form: str, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        d = self.delta
        with np.errstate(divide="ignore", invalid="ignore"):
            if form == "tpr":
                num = low - d
                return np.where(num > 0, np.log(np.maximum(num, 1e-300) / high), -np.inf)
            num = 1.0 - d - high
            return np.where(num > 0, np.log(np.maximum(num, 1e-300) / (1.0 - low)), -np.inf)

    def best(self, form: str) -> tuple[int, float]:
        """(vertex, value) of the largest bound of one form over all vertices."""
        low_ub = np.minimum(self.tp / self.n_pos, self.tpr_low_max)
        high_lb = np.maximum(self.fp / self.n_neg, self.fpr_high_min)
        upper = self._value(form, low_ub, high_lb)
        order = np.argsort(-upper, kind="stable")
        best_i, best_v, start, size = int(order[0]), -np.inf, 0, 256
        while (
            start < order.size and upper[order[start]] >= best_v and upper[order[start]] > -np.inf
        ):
            block = np.sort(order[start : start + size])
            low, _ = clopper_pearson(self.tp[block], np.full_like(block, self.n_pos), self.level)
            _, high = clopper_pearson(self.fp[block], np.full_like(block, self.n_neg), self.level)
            values = self._value(form, low, high)
            j = int(np.argmax(values))
            v = float(values[j])
            if v > best_v or (v == best_v and block[j] < best_i):
                best_i, best_v = int(block[j]), v
            start, size = start + size, size * 4
        return best_i, best_v
