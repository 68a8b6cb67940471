"""The ``(epsilon, delta)`` region: the largest TPR and advantage a DP mechanism allows at an FPR,
on both branches, for either neighbouring relation (``docs/design/scaling.md``, "Planning")."""

from __future__ import annotations

import math
from typing import Any

from miascale.errors import MiascaleError
from miascale.plan_results import _is_number


def _dp_args(fpr: Any, epsilon: Any, delta: Any) -> tuple[float, float, float]:
    if not _is_number(fpr) or not (0.0 <= float(fpr) <= 1.0):
        raise MiascaleError(f"fpr must be a number in [0, 1], got {fpr!r}.")
    if not _is_number(epsilon) or not (math.isfinite(float(epsilon)) and float(epsilon) >= 0):
        raise MiascaleError(f"epsilon must be a finite number >= 0, got {epsilon!r}.")
    if not _is_number(delta) or not (0.0 <= float(delta) <= 1.0):
        raise MiascaleError(f"delta must be a number in [0, 1], got {delta!r}.")
    return float(fpr), float(epsilon), float(delta)


def _check_relation(relation: Any) -> str:
    from miascale.privacy import _check_relation

    return _check_relation(relation)


def _bound_args(epsilon: float, delta: float, relation: str) -> tuple[float, float]:
    """The ``(epsilon, delta)`` the bound uses for an add/remove guarantee (group privacy for
    ``"replace_one"``)."""
    if _check_relation(relation) == "add_remove":
        return epsilon, delta
    from miascale.privacy import replace_one_from_add_remove

    eps, d = replace_one_from_add_remove(epsilon, delta)
    return eps, min(d, 1.0)  # delta >= 1 says nothing: the bound allows TPR 1


def dp_max_advantage(
    fpr: float, epsilon: float, delta: float = 0.0, relation: str = "add_remove"
) -> float:
    """The largest ``TPR - FPR`` an ``(epsilon, delta)``-DP mechanism allows at ``fpr``.

    ``min((e^epsilon - 1) * FPR + delta, (1 - e^-epsilon) * (1 - FPR) + delta * e^-epsilon)``,
    i.e. :func:`dp_max_tpr` minus ``fpr``, computed without cancellation. Not clipped: a value
    ``>= 1 - fpr`` means the bound allows TPR 1 (it says nothing at this FPR). With
    ``relation="replace_one"`` the add/remove ``(epsilon, delta)`` is first converted to
    ``(2 epsilon, min(1, (1 + e^epsilon) delta))`` for a replace-one game.
    """
    fpr, eps, delta = _dp_args(fpr, epsilon, delta)
    eps, delta = _bound_args(eps, delta, relation)
    first = delta if fpr == 0.0 else (math.inf if eps > 700 else math.expm1(eps)) * fpr + delta
    second = -math.expm1(-eps) * (1.0 - fpr) + delta * math.exp(-eps)
    return min(first, second)


def dp_max_tpr(
    fpr: float, epsilon: float, delta: float = 0.0, relation: str = "add_remove"
) -> float:
    """The largest TPR at ``fpr`` inside the ``(epsilon, delta)``-DP region (both branches).

    ``min(e^epsilon * FPR + delta, 1 - e^-epsilon * (1 - delta - FPR))``: the first branch is the
    bound on the test itself, the second the same bound on its complement
    (``1 - FPR <= e^epsilon * (1 - TPR) + delta``). Not clipped to 1. ``relation`` as in
    :func:`dp_max_advantage`.
    """
    return float(fpr) + dp_max_advantage(fpr, epsilon, delta, relation)
