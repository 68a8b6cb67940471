"""Membership-inference attacks, looked up by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from miascale.attacks.lira import LiraResult, lira_scores
from miascale.errors import MiascaleError

__all__ = ["ATTACKS", "LiraResult", "get_attack", "lira_scores"]

ATTACKS: dict[str, Callable[..., Any]] = {"lira": lira_scores}


def get_attack(name: str) -> Callable[..., Any]:
    """Return the attack function registered under ``name``."""
    try:
        return ATTACKS[name]
    except (KeyError, TypeError):
        raise MiascaleError(
            f"Unknown attack {name!r}. Known attacks are: {', '.join(sorted(ATTACKS))}. "
            "Check the spelling of the attack name."
        ) from None
