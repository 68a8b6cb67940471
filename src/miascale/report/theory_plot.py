"""The figure of ``miascale theory``: log-log advantage vs S, one panel per FPR level.

Takes a theory.json document (``TheoryResult.to_dict()``) and returns PNG bytes, so the HTML
report can draw it from the stored file as well.
"""

from __future__ import annotations

import numpy as np

from miascale.report.plots import _new_figure, _plain_log_x, figure_png

_STYLE = {
    ("average", "exact"): dict(color="k", linestyle="-", linewidth=1.6, label="exact (NP, pooled)"),
    ("average", "asymptotic"): dict(
        color="k", linestyle="--", linewidth=1.0, label="asymptotic (−½ law)"
    ),
    ("average", "pool-approx"): dict(
        color="0.45", linestyle="-.", linewidth=1.0, label="pool approx. (δ·√2)"
    ),
}
_EXAMPLE_COLORS = {"near-mean": "C2", "typical": "C4", "outlier": "C3"}


def theory_png(doc: dict) -> bytes:
    """Render the theory figure from a theory.json document."""
    levels = [lvl["fpr"] for lvl in doc["levels"]]
    fig = _new_figure((4.2 * len(levels), 4.2))
    axes = np.atleast_1d(fig.subplots(1, len(levels), sharey=True))
    for ax, lvl in zip(axes, doc["levels"], strict=True):
        t = lvl["fpr"]
        curves = [c for c in doc["curves"] if abs(c["fpr"] - t) < 1e-15]
        for c in curves:
            s = np.asarray(c["shots"], dtype=float)
            adv = np.asarray([np.nan if a is None else a for a in c["advantage"]], dtype=float)
            pos = adv > 0
            key = (c["example"], c["kind"])
            if c["kind"] == "simulation":
                lo = np.asarray(c["ci_low"], dtype=float) - t
                hi = np.asarray(c["ci_high"], dtype=float) - t
                if c["example"] == "average":
                    color = "C0" if c["population"] == "fresh" else "C1"
                    marker, label = "o", f"simulation, {c['population']}"
                else:
                    color = _EXAMPLE_COLORS.get(c["example"], "C5")
                    marker, label = ".", None
                y = adv[pos]
                lo_c = np.minimum(np.clip(lo[pos], y / 10, None), y)
                ax.errorbar(
                    s[pos], y, yerr=np.vstack([y - lo_c, np.maximum(hi[pos], y) - y]),
                    fmt=marker, color=color, capsize=2, markersize=4, label=label, alpha=0.85,
                )  # fmt: skip
            elif key in _STYLE:
                ax.plot(s[pos], adv[pos], **_STYLE[key])
            elif c["kind"] == "exact":
                color = _EXAMPLE_COLORS.get(c["example"], "C5")
                ax.plot(
                    s[pos], adv[pos], color=color, linewidth=0.9, alpha=0.8,
                    label=f"exact, {c['example']} x",
                )  # fmt: skip
        slopes = ", ".join(
            f"{k} {v:+.2f}"
            for k, v in (
                ("sim fresh", lvl.get("slope_simulation_fresh")),
                ("sim pool", lvl.get("slope_simulation_pool")),
                ("exact", lvl.get("slope_exact")),
            )
            if v is not None
        )
        ax.set_title(f"FPR {t:g}\nslopes: {slopes}", fontsize=8)
        _plain_log_x(ax)
        ax.set_yscale("log")
        ax.set_xlabel("shots S")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("advantage TPR − FPR")
    axes[0].legend(fontsize=6, loc="lower left")
    return figure_png(fig)
