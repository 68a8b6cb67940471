"""The two forms of the empirical ε bound at ROC vertices, evaluated only where they can win.

The pruned search (cheap per-vertex upper bounds, exact Clopper–Pearson values in growing blocks)
is described in ``docs/design/privacy.md`` ("Fast search over vertices").
"""

from __future__ import annotations

import numpy as np

from miascale.metrics import clopper_pearson, cp_high, cp_low

_CHUNK = 128
"""Vertices per chunk of the monotone upper bound (:meth:`_VertexBounds._chunk_upper`)."""


class _VertexBounds:
    """Exact maximum over ROC vertices of one form of the ε bound (ties: first vertex)."""

    def __init__(
        self, tp: np.ndarray, fp: np.ndarray, n_pos: int, n_neg: int, level: float, delta: float
    ) -> None:
        self.tp, self.fp, self.n_pos, self.n_neg = tp, fp, n_pos, n_neg
        self.level, self.delta = level, delta
        half = (1.0 - level) / 2.0
        self.tpr_low_max = half ** (1.0 / n_pos)  # CP lower bound at k = n
        self.fpr_high_min = 1.0 - half ** (1.0 / n_neg)  # CP upper bound at k = 0
        self.monotone = bool(np.all(np.diff(tp) >= 0) and np.all(np.diff(fp) >= 0))

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

    def _upper(self, form: str) -> np.ndarray:
        """Cheap upper bound of the form at every vertex (closed-form ends of the CP bounds)."""
        low_ub = np.minimum(self.tp / self.n_pos, self.tpr_low_max)
        high_lb = np.maximum(self.fp / self.n_neg, self.fpr_high_min)
        return self._value(form, low_ub, high_lb)

    def _low(self, tp: np.ndarray) -> np.ndarray:
        """Clopper-Pearson lower bound of the TPR at counts ``tp`` (one side: half the cost)."""
        return cp_low(tp.astype(np.float64), float(self.n_pos), self.level)

    def _high(self, fp: np.ndarray) -> np.ndarray:
        """Clopper-Pearson upper bound of the FPR at counts ``fp`` (one side)."""
        return cp_high(fp.astype(np.float64), float(self.n_neg), self.level)

    def _exact(self, form: str, block: np.ndarray) -> np.ndarray:
        """The form's exact value at the vertices ``block``."""
        return self._value(form, self._low(self.tp[block]), self._high(self.fp[block]))

    def _chunk_upper(self, form: str, upper: np.ndarray) -> np.ndarray:
        """``upper`` tightened by chunks of consecutive vertices: along the ROC ``tp`` and ``fp``
        never decrease, so on a chunk [a, b] both forms are at most their value at the exact
        Clopper-Pearson bounds ``low(tp[b])`` and ``high(fp[a])`` (two exact values a chunk)."""
        a = np.arange(0, upper.size, _CHUNK)
        b = np.minimum(a + _CHUNK - 1, upper.size - 1)
        chunk = self._value(form, self._low(self.tp[b]), self._high(self.fp[a]))
        chunk = np.repeat(chunk, _CHUNK)[: upper.size]
        return np.minimum(upper, chunk)

    def best(self, form: str) -> tuple[int, float]:
        """(vertex, value) of the largest bound of one form over all vertices."""
        upper = self._upper(form)
        if upper.size > 8 * _CHUNK and self.monotone:
            upper = self._chunk_upper(form, upper)
        order = np.argsort(-upper, kind="stable")
        best_i, best_v, start, size = int(order[0]), -np.inf, 0, 256
        while (
            start < order.size and upper[order[start]] >= best_v and upper[order[start]] > -np.inf
        ):
            block = np.sort(order[start : start + size])
            values = self._exact(form, block)
            j = int(np.argmax(values))
            v = float(values[j])
            if v > best_v or (v == best_v and block[j] < best_i):
                best_i, best_v = int(block[j]), v
            start, size = start + size, size * 4
        return best_i, best_v
