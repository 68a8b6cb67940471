"""Figures of the sweep report, rendered to PNG bytes.

Uses matplotlib's object-oriented API (:class:`matplotlib.figure.Figure` with the Agg renderer): no
pyplot, no global state, no display needed. Every function takes plain data and returns the PNG
file contents.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

DPI = 110
FIGSIZE = (6.0, 4.0)
ROC_FPR_MIN = 1e-5
# Largest number of ROC vertices drawn as they are; longer curves are sampled on a log FPR grid.
_ROC_MAX_VERTICES = 4000


def _new_figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _plain_log_x(ax) -> None:
    """Log-2 x axis labelled with plain numbers (1, 2, 4, ...) instead of powers of two."""
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def figure_png(fig: Figure) -> bytes:
    """The figure as PNG bytes (no software metadata, so the output is reproducible)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


# ----------------------------------------------------------------------------- advantage vs S


@dataclass
class AdvantageSeries:
    """One FPR level of an advantage-vs-S panel.

    ``median`` is the median advantage over seeds at each S; ``lower``/``upper`` the ends of the
    error bar (smallest ``ci_low`` - FPR, largest ``ci_high`` - FPR; NaN when unknown);
    ``excluded`` marks points left out of the fit. ``fit_s``/``fit_y`` is the fitted law (may be
    empty).
    """

    label: str
    shots: np.ndarray
    median: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    excluded: np.ndarray
    fit_s: np.ndarray = field(default_factory=lambda: np.empty(0))
    fit_y: np.ndarray = field(default_factory=lambda: np.empty(0))


def advantage_floor(series: Sequence[AdvantageSeries]) -> float:
    """A positive value below every plotted positive advantage: where non-positive values go."""
    vals = []
    for s in series:
        for a in (s.median, s.lower):
            a = np.asarray(a, dtype=np.float64)
            vals.extend(a[np.isfinite(a) & (a > 0)].tolist())
    if not vals:
        return 1e-4
    return float(10.0 ** math.floor(math.log10(min(vals)) - 0.5))


def advantage_plot(
    title: str,
    series: Sequence[AdvantageSeries],
    floor: float,
    bounds: Sequence[tuple[str, np.ndarray, np.ndarray, int]] = (),
    ylabel: str = "advantage TPR − FPR",
) -> bytes:
    """Log-log advantage (TPR - FPR) vs shots, one colour per FPR level.

    Filled markers: points in the fit; hollow: excluded; downward triangles at ``floor``: median
    advantage <= 0. Error-bar lower ends <= 0 are clipped to ``floor``. ``bounds``: dotted lines
    ``(label, shots, advantage, series index)``, e.g. the most an (ε, δ)-DP model allows at that
    series' FPR level, in the series' colour.
    """
    fig = _new_figure()
    ax = fig.subplots()
    colors = [f"C{i % 10}" for i in range(len(series))]
    all_s: list[float] = []
    for s, color in zip(series, colors, strict=True):
        shots = np.asarray(s.shots, dtype=np.float64)
        med = np.asarray(s.median, dtype=np.float64)
        lo = np.asarray(s.lower, dtype=np.float64)
        hi = np.asarray(s.upper, dtype=np.float64)
        exc = np.asarray(s.excluded, dtype=bool)
        all_s.extend(shots.tolist())
        pos = np.isfinite(med) & (med > 0)
        # error bars (only where the point itself is drawn at its value)
        has_ci = pos & np.isfinite(lo) & np.isfinite(hi)
        if has_ci.any():
            y = med[has_ci]
            lo_c = np.clip(lo[has_ci], floor, None)
            lo_c = np.minimum(lo_c, y)
            hi_c = np.maximum(hi[has_ci], y)
            ax.errorbar(
                shots[has_ci],
                y,
                yerr=np.vstack([y - lo_c, hi_c - y]),
                fmt="none",
                ecolor=color,
                elinewidth=1,
                capsize=2,
                alpha=0.7,
            )
        inc = pos & ~exc
        if inc.any():
            ax.plot(shots[inc], med[inc], "o", color=color, label=s.label)
        out = pos & exc
        if out.any():
            ax.plot(
                shots[out],
                med[out],
                "o",
                markerfacecolor="none",
                markeredgecolor=color,
                label=None if inc.any() else s.label,
            )
        neg = ~pos & np.isfinite(med)
        if neg.any():
            ax.plot(
                shots[neg],
                np.full(int(neg.sum()), floor),
                "v",
                markerfacecolor="none",
                markeredgecolor=color,
            )
        if len(s.fit_s):
            ax.plot(s.fit_s, s.fit_y, "-", color=color, linewidth=1.3, alpha=0.9)
    for label, b_shots, b_values, i in bounds:
        ok = np.asarray(b_values) > 0
        if ok.any():
            ax.plot(np.asarray(b_shots)[ok], np.asarray(b_values)[ok], linestyle=":",
                    color=f"C{i % 10}", linewidth=1.2, label=label)  # fmt: skip
    _plain_log_x(ax)
    ax.set_yscale("log")
    if all_s:
        lo_s, hi_s = min(all_s), max(all_s)
        ax.set_xlim(lo_s / 1.4, hi_s * 1.4)
    ax.set_xlabel("shots S (examples per class)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    if series:
        ax.legend(fontsize=8, loc="best")
    return figure_png(fig)


# ----------------------------------------------------------------------------- ROC


@dataclass
class RocSeries:
    """One ROC curve; ``color`` and ``style`` index the colour cycle and the line styles."""

    label: str
    fpr: np.ndarray
    tpr: np.ndarray
    color: int = 0
    style: int = 0


def _thin_roc(fpr: np.ndarray, tpr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices with FPR, TPR > 0 (log axes); long curves sampled as a step function."""
    fpr = np.asarray(fpr, dtype=np.float64)
    tpr = np.asarray(tpr, dtype=np.float64)
    if fpr.size > _ROC_MAX_VERTICES:
        grid = np.logspace(math.log10(ROC_FPR_MIN), 0.0, 600)
        idx = np.searchsorted(fpr, grid, side="right") - 1
        keep = idx >= 0
        fpr, tpr = grid[keep], tpr[idx[keep]]
    ok = (fpr > 0) & (tpr > 0)
    return fpr[ok], tpr[ok]


def roc_plot(title: str, series: Sequence[RocSeries]) -> bytes:
    """Log-log ROC curves (FPR from 1e-5 to 1) with the chance diagonal."""
    fig = _new_figure()
    ax = fig.subplots()
    diag = np.array([ROC_FPR_MIN, 1.0])
    ax.plot(diag, diag, "--", color="0.5", linewidth=1, label="chance (TPR = FPR)")
    styles = ["-", "--", ":", "-."]
    for s in series:
        f, t = _thin_roc(s.fpr, s.tpr)
        ax.plot(
            f,
            t,
            linestyle=styles[s.style % len(styles)],
            color=f"C{s.color % 10}",
            linewidth=1.2,
            label=s.label,
            drawstyle="steps-post",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(ROC_FPR_MIN, 1.0)
    ax.set_ylim(ROC_FPR_MIN, 1.05)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return figure_png(fig)


# ----------------------------------------------------------------------------- accuracy


@dataclass
class AccuracySeries:
    label: str
    shots: np.ndarray
    median: np.ndarray
    low: np.ndarray
    high: np.ndarray


def accuracy_plot(title: str, series: Sequence[AccuracySeries]) -> bytes:
    """Test accuracy vs shots (log x): median over seeds with min/max bars."""
    fig = _new_figure()
    ax = fig.subplots()
    for i, s in enumerate(series):
        med = np.asarray(s.median, dtype=np.float64)
        ax.errorbar(
            s.shots,
            med,
            yerr=np.vstack([med - np.asarray(s.low), np.asarray(s.high) - med]),
            fmt="o-",
            color=f"C{i % 10}",
            capsize=2,
            markersize=4,
            label=s.label,
        )
    _plain_log_x(ax)
    ax.set_xlabel("shots S (examples per class)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    if series:
        ax.legend(fontsize=8, loc="best")
    return figure_png(fig)


def thumbnail_grid(title: str, images: Sequence[np.ndarray], captions: Sequence[str]) -> bytes:
    """A grid of small images (grayscale or RGB uint8) with a caption under each."""
    n = len(images)
    cols = min(8, max(1, n))
    rows = (n + cols - 1) // cols
    fig = _new_figure((1.3 * cols, 1.5 * rows + 0.4))
    for i, (img, cap) in enumerate(zip(images, captions, strict=True)):
        ax = fig.add_subplot(rows, cols, i + 1)
        a = np.asarray(img)
        ax.imshow(a, cmap="gray" if a.ndim == 2 else None, interpolation="nearest")
        ax.set_title(cap, fontsize=6)
        ax.set_axis_off()
    fig.suptitle(title, fontsize=8)
    return figure_png(fig)
