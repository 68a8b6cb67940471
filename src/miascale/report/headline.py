"""The answer first: the block at the top of the sweep report.

Per (attack, variant, FPR level) of ordinarily trained cells: the fitted law with its interval
and the S range it was fitted on, the regime the data is in, and the plan for ε = 1 (an interval,
or the reason the data cannot answer). The regime (docs/theory.md) is read from the fit:

* ``saturated``: no admitted cell, and most cells are at the ceiling — every member is found, the
  law cannot be measured on this grid;
* ``uncertain``: a law is fitted but its slope's 95% interval is wider than
  :data:`MAX_SLOPE_WIDTH` (0.2): the data cannot place it;
* ``asymptotic``: the slope's interval contains −½, the simplified model's large-S slope;
* ``practical``: a law is fitted but flatter or steeper than −½ (the pre-asymptotic range that
  real fine-tuning datasets occupy);
* ``unresolved``: too few admitted cells for any other reason (noise level, too few false
  positives).
"""

from __future__ import annotations

import html
import math
from typing import Any

ASYMPTOTIC_SLOPE = -0.5
MAX_SLOPE_WIDTH = 0.2
EPSILON = 1.0


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def regime(lf) -> str:
    """One word for the regime of a level fit (module docstring)."""
    if not lf.ok:
        ceiling = sum("at the ceiling" in e.reasons for e in lf.excluded)
        return "saturated" if lf.n_points == 0 and ceiling * 2 > len(lf.excluded) else "unresolved"
    lo, hi = lf.ci_s
    if hi - lo > MAX_SLOPE_WIDTH:
        return "uncertain"
    return "asymptotic" if lo <= ASYMPTOTIC_SLOPE <= hi else "practical"


def _law(lf) -> str:
    if not lf.ok:
        return f"not fitted ({lf.status})"
    lo, hi = lf.shots_range
    return (
        f"β_S = {lf.beta_s:.3f} [{lf.ci_s[0]:.3f}, {lf.ci_s[1]:.3f}], R² {lf.r_squared:.3f}, "
        f"S = {lo}…{hi}"
    )


def _plan_text(lf, classes: int | None) -> str:
    from miascale.errors import MiascaleError
    from miascale.plan_text import format_shots
    from miascale.planning import plan

    if not lf.ok:
        return "no plan: the law was not fitted"
    if lf.beta_s >= 0:
        return "no plan: the advantage does not fall with S"
    try:
        p = plan(lf, lf.fpr_level, classes, epsilon=EPSILON)
    except MiascaleError as e:
        return f"no plan: {e}"
    lo, hi = p.shots_ci
    if p.trustworthy:
        return f"S ≈ {format_shots(p.shots)} [{format_shots(lo)}, {format_shots(hi)}]"
    order = f"around 10^{round(math.log10(max(p.shots_real, 1.0)))}"
    return f"cannot answer: {' '.join(p.warnings)} Order of magnitude only: {order}."


def headline(fit, classes: int | None, figure_html: str, what: str) -> str:
    """The headline block: one table row per level, then the advantage figure."""
    out = [
        '<section id="headline">',
        '<h2 id="answer">The answer</h2>',
        f'<p class="caption">{_e(what)}</p>',
    ]
    levels = [] if fit is None else [lf for lf in fit.levels if " dp " not in lf.variant]
    if not levels:
        out.append('<p class="note">No power law could be fitted from these results.</p>')
    else:
        head = ("attack", "FPR", "law log10(TPR − FPR) vs log10 S", "regime",
                f"S per class for ε = {EPSILON:g} (95% interval)")  # fmt: skip
        out.append("<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>")
        for lf in levels:
            cells = (f"{lf.attack}-{lf.variant}", f"{lf.fpr_level:g}", _law(lf), regime(lf),
                     _plan_text(lf, classes))  # fmt: skip
            out.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
        out.append("</table>")
        out.append(
            '<p class="caption">'
            + _e(
                "Read: how fast the attacker's advantage falls with the examples per class S "
                "(β_S, fitted only on cells that are measurable: enough false positives, above "
                "chance, clear of the ceiling), and how many examples per class would bring it "
                f"down to what ε = {EPSILON:g} differential privacy (add/remove) allows. Regimes: "
                "saturated (every member found), practical (a law flatter or steeper than −½), "
                "asymptotic (slope consistent with −½, the simplified model's limit), uncertain "
                "(the slope's interval is wider than 0.2)."
            )
            + "</p>"
        )
    out.append(figure_html)
    out.append("</section>")
    return "\n".join(out)
