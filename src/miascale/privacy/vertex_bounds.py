"""The two forms of the empirical ε bound at ROC vertices, evaluated only where they can win.

The pruned search (cheap per-vertex upper bounds, exact Clopper–Pearson values in growing blocks)
is described in ``docs/design/privacy.md`` ("Fast search over vertices").
"""

from __future__ import annotations

import numpy as np

from miascale.metrics import clopper_pearson


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

    def _exact(self, form: str, block: np.ndarray) -> np.ndarray:
        """The form's exact value at the vertices ``block``."""
        low, _ = clopper_pearson(self.tp[block], np.full_like(block, self.n_pos), self.level)
        _, high = clopper_pearson(self.fp[block], np.full_like(block, self.n_neg), self.level)
        return self._value(form, low, high)

    def best(self, form: str) -> tuple[int, float]:
        """(vertex, value) of the largest bound of one form over all vertices."""
        upper = self._upper(form)
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
