"""Argument checks of the privacy functions, and the neighbouring relations of the audit designs.

Every check returns the value normalised (``float``/``int``/``str``) or raises
:class:`~miascale.errors.MiascaleError` with a message that says what to pass instead.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from miascale.errors import MiascaleError

ACCOUNTANTS = ("pld", "rdp")
RELATIONS = ("add_remove", "replace_one")
DESIGN_RELATIONS = {"balanced": "replace_one", "bernoulli": "add_remove"}
"""The neighbouring relation of the membership game each audit design plays."""


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


def _check_nonnegative_epsilon(epsilon: Any) -> float:
    """ε >= 0, ``inf`` allowed (for bounds rather than targets)."""
    e = _number(epsilon, "epsilon")
    if not (e >= 0):
        raise MiascaleError(f"epsilon must be >= 0, got {epsilon!r}.")
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


def _check_noise(noise_multiplier: Any) -> float:
    s = _number(noise_multiplier, "noise_multiplier")
    if not (math.isfinite(s) and s > 0):
        raise MiascaleError(
            f"noise_multiplier must be a finite number > 0, got {noise_multiplier!r} "
            "(sigma = 0 is not private: epsilon is infinite)."
        )
    return s


def game_relation(design: str) -> str:
    """The relation of the membership game of an audit design (``DESIGN_RELATIONS``)."""
    if design not in DESIGN_RELATIONS:
        raise MiascaleError(
            f"Unknown membership design {design!r}; known: {', '.join(DESIGN_RELATIONS)}."
        )
    return DESIGN_RELATIONS[design]
