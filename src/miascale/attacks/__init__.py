"""Membership-inference attacks, looked up by name.

:data:`ATTACKS` / :func:`get_attack` map an attack name to a callable with the uniform
convention ``fn(stats, in_mask, *, online=True, population_stats=None, **options)`` returning an
object with ``.scores`` ``(K, N)``, ``.n_unscored`` and ``.n_fallback_variance`` (0 where not
applicable). ``options`` are the attack's own keyword options (LiRA: ``variance``, ``location``,
``min_shadows``, ``exclude_partner``; RMIA: ``gamma``, ``a``, ``a_grid``, ``exclude_partner``;
LOSS: none, everything is ignored); an option the attack does not know raises ``TypeError``.
``exclude_partner`` defaults to True everywhere (no variant sets it): a target's complementary
partner is never among its shadow / reference models (DESIGN §3). ``rmia_scores`` and ``loss_scores`` follow
the convention themselves; LiRA is registered through a thin adapter that ignores
``population_stats`` (``lira_scores`` itself is unchanged and still exported).

Attack *variants* (an attack plus its online/offline setting) are named in
:data:`ATTACK_VARIANTS`; :data:`VARIANT_ARGS` gives each variant's attack name and keyword
arguments, and :func:`parse_attacks` turns user text such as ``"lira,rmia-offline"`` or ``"all"``
into variant names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from miascale.attacks.lira import LiraResult, lira_scores
from miascale.attacks.loss import LossResult, loss_scores
from miascale.attacks.rmia import RmiaResult, rmia_scores
from miascale.errors import MiascaleError

__all__ = [
    "ATTACKS",
    "ATTACK_VARIANTS",
    "VARIANT_ARGS",
    "LiraResult",
    "LossResult",
    "RmiaResult",
    "get_attack",
    "lira_scores",
    "loss_scores",
    "parse_attacks",
    "rmia_scores",
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


ATTACKS: dict[str, Callable[..., Any]] = {
    "lira": _lira_attack,
    "rmia": rmia_scores,
    "loss": loss_scores,
}

#: Variant name → (attack name, keyword arguments for the registered attack).
VARIANT_ARGS: Mapping[str, tuple[str, Mapping[str, Any]]] = MappingProxyType(
    {
        "lira-online": ("lira", MappingProxyType({"online": True})),
        "lira-offline": ("lira", MappingProxyType({"online": False})),
        "rmia-online": ("rmia", MappingProxyType({"online": True})),
        "rmia-offline": ("rmia", MappingProxyType({"online": False})),
        "loss": ("loss", MappingProxyType({})),
    }
)
ATTACK_VARIANTS: tuple[str, ...] = tuple(VARIANT_ARGS)
#: Short names accepted by :func:`parse_attacks` besides the variant names.
_ALIASES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"lira": ("lira-online",), "rmia": ("rmia-online",), "all": ATTACK_VARIANTS}
)


def _unknown(kind: str, name: object, known: Iterable[str]) -> MiascaleError:
    return MiascaleError(
        f"Unknown {kind} {name!r}. Known {kind}s are: {', '.join(known)}. Check the spelling."
    )


def get_attack(name: str) -> Callable[..., Any]:
    """Return the attack registered under ``name`` (uniform convention, see the module doc)."""
    try:
        return ATTACKS[name]
    except (KeyError, TypeError):
        raise _unknown("attack", name, sorted(ATTACKS)) from None


def parse_attacks(text_or_list: str | Iterable[str]) -> tuple[str, ...]:
    """Attack variant names from user input, deduplicated in order of first appearance.

    Accepts a comma-separated string or a sequence of such strings. Each item is a variant name
    from :data:`ATTACK_VARIANTS`, ``"lira"`` (= ``lira-online``), ``"rmia"`` (= ``rmia-online``)
    or ``"all"``; case and surrounding spaces are ignored.
    """
    if isinstance(text_or_list, str):
        items: list[Any] = [text_or_list]
    else:
        try:
            items = list(text_or_list)
        except TypeError:
            raise MiascaleError(
                f"attacks must be a comma-separated string or a list of names, got "
                f"{text_or_list!r}."
            ) from None
    out: dict[str, None] = {}
    known = (*ATTACK_VARIANTS, *_ALIASES)
    for item in items:
        if not isinstance(item, str):
            raise MiascaleError(f"attack names must be strings, got {item!r}.")
        for token in item.split(","):
            name = token.strip().lower()
            if not name:
                continue
            if name in VARIANT_ARGS:
                out[name] = None
            elif name in _ALIASES:
                out.update(dict.fromkeys(_ALIASES[name]))
            else:
                raise _unknown("attack variant", token.strip(), known)
    if not out:
        raise MiascaleError(
            f"No attack given. Choose one or more (comma-separated) of: {', '.join(known)}."
        )
    return tuple(out)
