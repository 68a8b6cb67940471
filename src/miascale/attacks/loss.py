"""LOSS baseline (Yeom et al., 2018): a global threshold on the target model's own loss,
``log p_y = log_sigmoid(φ)`` from the stored LiRA statistic. Contract: docs/design/attacks.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from miascale.attacks.lira import check_signals

__all__ = ["LossResult", "loss_scores"]


@dataclass(frozen=True)
class LossResult:
    """LOSS scores for every (target model, pool example).

    Attributes:
        scores: ``(K, N)`` float64, ``log p_y`` under the target model (≤ 0; higher = member).
        n_unscored: always 0.
        n_fallback_variance: always 0 (kept for a uniform interface).
    """

    scores: np.ndarray
    n_unscored: int = 0
    n_fallback_variance: int = 0

    @property
    def n_models(self) -> int:
        return int(self.scores.shape[0])

    @property
    def n_examples(self) -> int:
        return int(self.scores.shape[1])


def loss_scores(stats: np.ndarray, in_mask: Any = None, **ignored: Any) -> LossResult:
    """LOSS attack scores ``log p_y`` (= −cross-entropy) of every example under every model.

    Args:
        stats: ``(K, N)`` LiRA statistic φ of pool example n under model k.
        in_mask: accepted for the uniform attack interface and never read.
        **ignored: other attack options (``online``, ``population_stats``, …), ignored.

    Returns:
        :class:`LossResult`.
    """
    del in_mask, ignored  # LOSS is a global threshold on the target's own loss.
    s = np.asarray(stats)
    s, _ = check_signals(s, np.zeros(s.shape, dtype=bool))
    return LossResult(scores=-np.logaddexp(0.0, -s))
