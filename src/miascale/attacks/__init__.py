"""Membership-inference attacks, looked up by name in a registry (:mod:`.registry`).

Every attack follows one convention, ``fn(stats, in_mask, *, online=True, population_stats=None,
**options)`` → an object with ``.scores`` ``(K, N)`` (higher = member), ``.n_unscored`` and
``.n_fallback_variance``; an option the attack does not know raises ``TypeError``. A target's
complementary partner is never among its shadow / reference models (``exclude_partner``, DESIGN §3).
The built-ins — LiRA, RMIA (needs population points) and LOSS (no modes) — are registered below;
:func:`register_attack` adds another (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from miascale.attacks.lira import LiraResult, lira_scores
from miascale.attacks.loss import LossResult, loss_scores
from miascale.attacks.registry import (
    ATTACKS,
    VARIANT_ARGS,
    AttackSpec,
    Variant,
    get_spec,
    parse_variants,
    register_attack,
    unregister_attack,
    variant_columns,
    variant_names,
)
from miascale.attacks.rmia import RmiaResult, rmia_scores

__all__ = [
    "ATTACKS",
    "ATTACK_VARIANTS",
    "VARIANT_ARGS",
    "AttackSpec",
    "LiraResult",
    "LossResult",
    "RmiaResult",
    "Variant",
    "get_attack",
    "get_spec",
    "lira_scores",
    "loss_scores",
    "parse_attacks",
    "parse_variants",
    "register_attack",
    "rmia_scores",
    "unregister_attack",
    "variant_columns",
    "variant_names",
]


def _lira_attack(
    stats: np.ndarray,
    in_mask: np.ndarray,
    *,
    online: bool = True,
    population_stats: np.ndarray | None = None,
    **options: Any,
) -> LiraResult:
    """``lira_scores`` under the uniform convention; LiRA uses no population points."""
    del population_stats
    return lira_scores(stats, in_mask, online=online, **options)


@dataclass(frozen=True)
class LiraOptions:
    variance: str = "per-example"
    location: str = "mean"

    @classmethod
    def from_config(cls, config: Any) -> LiraOptions:
        return cls(variance=config.variance, location=config.location)


@dataclass(frozen=True)
class RmiaOptions:
    gamma: float = 1.0
    a: float | None = None  # None = tuned on the shadow models, per target

    @classmethod
    def from_config(cls, config: Any) -> RmiaOptions:
        return cls(gamma=config.rmia_gamma, a=config.rmia_a)


def _rmia_details(res: RmiaResult, options: RmiaOptions, variant: Variant) -> dict:
    details: dict = {"gamma": options.gamma, "population": int(res.n_population)}
    if variant.mode == "offline" and res.a is not None:
        details["a_mean"] = float(np.atleast_1d(np.asarray(res.a, dtype=float)).mean())
        details["a_tuned"] = options.a is None
    return details


register_attack(AttackSpec("lira", _lira_attack, options=LiraOptions))
_RMIA = AttackSpec(
    "rmia", rmia_scores, needs_population=True, options=RmiaOptions, details=_rmia_details
)
register_attack(_RMIA)
register_attack(AttackSpec("loss", loss_scores, modes=()))

#: the built-in variants (``variant_names()`` lists every registered one)
ATTACK_VARIANTS: tuple[str, ...] = variant_names()


def get_attack(name: str):
    """Return the attack function registered under ``name``."""
    return get_spec(name).fn


def parse_attacks(text_or_list: str | Iterable[str], mode: str = "online") -> tuple[str, ...]:
    """Variant names from user input (``"lira,rmia-offline"``, ``"all"``): see
    :func:`~miascale.attacks.registry.parse_variants`."""
    return tuple(v.name for v in parse_variants(text_or_list, mode))
