"""Plans in words, for people (:func:`plan_sentence`); numbers are rounded so that an
untrustworthy plan is never printed with false precision."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from miascale.plan_results import Plan


def _pct(confidence: float) -> str:
    return f"{round(confidence * 100, 6):g}%"


# ----------------------------------------------------------------------------------------------
# Words
# ----------------------------------------------------------------------------------------------

_LONG_DIGITS = re.compile(r"\d{5,}")


def format_shots(x: float) -> str:
    """``x`` (a number of shots) to 2 significant figures, thousands separated: 3,417 → 3,400."""
    if not math.isfinite(x):
        return "∞"
    v = float(f"{x:.2g}")
    return f"{v:,.0f}" if v >= 10 or v.is_integer() else f"{v:g}"


def _short(x: float) -> str:
    """At most 3 significant digits and never a run of 5 digits (0.00172 → 1.72e-3)."""
    text = f"{x:.3g}"
    if _LONG_DIGITS.search(text):
        mantissa, exponent = f"{x:.2e}".split("e")
        text = f"{float(mantissa):g}e{int(exponent)}"
    return text


def _goal(p: Plan, num: Callable[[float], str]) -> str:
    if p.epsilon is None:
        what = f"advantage ≤ {num(p.target_advantage)} at FPR {num(p.fpr_level)}"
    else:
        dp = f"ε = {num(p.epsilon)}" + (f", δ = {num(p.delta)}" if p.delta else "")
        dp += " (add/remove ε" + (", bound for the replace-one game)"
                                  if p.relation == "replace_one" else ")")  # fmt: skip
        what = f"{dp} at FPR {num(p.fpr_level)} (advantage ≤ {num(p.target_advantage)})"
    return what + ("" if p.classes is None else f", C = {p.classes}")


def plan_sentence(p: Plan) -> str:
    """The plan in words, for people.

    Trustworthy: ``"ε = 1 at FPR 0.001 (advantage ≤ 0.00172): S ≈ 3,400 examples per class, 95%
    interval [1,900, 7,100]"`` (S to 2 significant figures). Otherwise it says plainly that the
    data cannot answer, gives the warnings, and only an order of magnitude (``around 10^11``,
    ``more than 10^6``); no number in it has more than 3 significant digits.
    """
    pct = _pct(p.confidence)
    if p.trustworthy and p.shots_ci is not None:
        lo, hi = p.shots_ci
        return (
            f"{_goal(p, lambda x: f'{x:.3g}')}: S ≈ {format_shots(p.shots)} examples per class, "
            f"{pct} interval [{format_shots(lo)}, {format_shots(hi)}]"
        )
    k = round(math.log10(max(1.0, p.shots_real)))
    text = (
        f"{_goal(p, _short)}: the data cannot answer how many examples per class this needs. "
        + " ".join(p.warnings)
        + f" Order of magnitude only: around 10^{k} examples per class"
    )
    if p.shots_ci is not None:
        lo, hi = p.shots_ci
        lo_k = math.floor(math.log10(lo))
        if math.isinf(hi):
            text += (
                f"; the {pct} interval allows any S from 1 upwards"
                if lo_k <= 0
                else f"; the {pct} interval only says more than 10^{lo_k}"
            )
        else:
            text += (
                f"; the {pct} interval runs from about 10^{lo_k} to 10^{math.ceil(math.log10(hi))}"
            )
    return text + "."
