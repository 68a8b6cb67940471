"""The attack registry: one :class:`AttackSpec` per attack and the :class:`Variant` type.

An attack is a function ``fn(stats, in_mask, *, online=True, population_stats=None, **options)``
returning an object with ``.scores`` ``(K, N)`` (higher = member, NaN = unscored) and optionally
``.n_fallback_variance``. Its entry says which modes it has (online / offline, or none), whether
it needs population points, which frozen options type it reads from an
:class:`~miascale.audit.AuditConfig`, and which details it records. Registering an entry is the
only step needed to make an attack available to ``audit``, ``sweep``, the API and the report
(docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from miascale.errors import MiascaleError

MODES = ("online", "offline")


@dataclass(frozen=True)
class AttackSpec:
    """One registered attack.

    ``options`` is a frozen dataclass type with a ``from_config(config)`` classmethod that picks
    the attack's own settings from an audit config (None: the attack takes no options).
    ``details(result, options, variant)`` returns extra fields recorded with each outcome.
    """

    name: str
    fn: Callable[..., Any]
    modes: tuple[str, ...] = MODES  # () = one variant named like the attack
    needs_population: bool = False
    options: type | None = None
    details: Callable[[Any, Any, Variant], dict] | None = None

    def __post_init__(self) -> None:
        if not self.name or "-" in self.name or self.name != self.name.lower():
            raise MiascaleError(
                f"Attack names are lowercase and without '-', got {self.name!r} (the '-' "
                f"separates the attack from its mode in variant names such as lira-online)."
            )
        bad = [m for m in self.modes if m not in MODES]
        if bad:
            raise MiascaleError(f"Attack modes must be among {MODES}, got {bad}.")
        if self.options is not None and not hasattr(self.options, "from_config"):
            raise MiascaleError(f"{self.name}: the options type needs a from_config classmethod.")

    def variants(self) -> tuple[Variant, ...]:
        return tuple(Variant(self.name, m) for m in self.modes) or (Variant(self.name),)


@dataclass(frozen=True)
class Variant:
    """An attack and its mode: ``Variant("lira", "online")`` is named ``lira-online``;
    attacks without modes have ``mode=None`` and are named like the attack (``loss``)."""

    attack: str
    mode: str | None = None

    @property
    def name(self) -> str:
        return self.attack if self.mode is None else f"{self.attack}-{self.mode}"

    def __str__(self) -> str:
        return self.name

    @property
    def spec(self) -> AttackSpec:
        return get_spec(self.attack)

    @property
    def columns(self) -> tuple[str, str]:
        """(attack, variant) columns of a result row; a variant without mode is ``global``."""
        return variant_columns(self.name)

    @property
    def call_kwargs(self) -> dict[str, Any]:
        return {} if self.mode is None else {"online": self.mode == "online"}

    @classmethod
    def from_name(cls, name: str) -> Variant:
        """The variant of a full name (``lira-offline``, ``loss``); unknown names raise."""
        attack, _, mode = str(name).partition("-")
        v = cls(attack, mode or None)
        if attack not in _SPECS or v not in _SPECS[attack].variants():
            raise _unknown("attack variant", name, variant_names())
        return v


def variant_columns(variant: str) -> tuple[str, str]:
    """(attack, variant) columns of a result row for a variant name, registered or only stored:
    ``lira-online`` → (lira, online); ``loss`` → (loss, global)."""
    attack, _, sub = str(variant).partition("-")
    return attack, sub or "global"


_SPECS: dict[str, AttackSpec] = {}


def register_attack(spec: AttackSpec, *, replace: bool = False) -> AttackSpec:
    """Add an attack to the registry (``replace`` to overwrite an existing name)."""
    if spec.name in _SPECS and not replace:
        raise MiascaleError(f"An attack named {spec.name!r} is already registered.")
    if spec.name == "all":
        raise MiascaleError("'all' is reserved: it stands for every registered variant.")
    _SPECS[spec.name] = spec
    return spec


def unregister_attack(name: str) -> None:
    """Remove an attack from the registry (tests and plugins that clean up after themselves)."""
    _SPECS.pop(name, None)


def get_spec(name: str) -> AttackSpec:
    try:
        return _SPECS[name]
    except (KeyError, TypeError):
        raise _unknown("attack", name, sorted(_SPECS)) from None


def variant_names() -> tuple[str, ...]:
    """Every registered variant name, in registration order."""
    return tuple(v.name for s in _SPECS.values() for v in s.variants())


def _unknown(kind: str, name: object, known: Iterable[str]) -> MiascaleError:
    return MiascaleError(
        f"Unknown {kind} {name!r}. Known {kind}s are: {', '.join(known)}. Check the spelling."
    )


def parse_variants(text_or_list: str | Iterable[str], mode: str = "online") -> tuple[Variant, ...]:
    """Variants from user input, deduplicated in order of first appearance (the one parser).

    Accepts a comma-separated string or a sequence of such strings. Each item is a variant name
    (``lira-offline``), an attack name (``lira``: that attack in ``mode``; an attack without
    modes stands for itself) or ``all`` (every registered variant). Case and spaces are ignored.
    """
    if mode not in MODES:
        raise MiascaleError(f"Unknown attack mode {mode!r}; choose one of online, offline.")
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
    out: dict[Variant, None] = {}
    for item in items:
        if not isinstance(item, str):
            raise MiascaleError(f"attack names must be strings, got {item!r}.")
        for token in item.split(","):
            out.update(dict.fromkeys(_expand(token.strip().lower(), token.strip(), mode)))
    if not out:
        known = dict.fromkeys((*variant_names(), *_SPECS, "all"))
        raise MiascaleError(
            f"No attack given. Choose one or more (comma-separated) of: {', '.join(known)}."
        )
    return tuple(out)


def _expand(name: str, given: str, mode: str) -> tuple[Variant, ...]:
    if not name:
        return ()
    if name == "all":
        return tuple(v for s in _SPECS.values() for v in s.variants())
    if name in _SPECS:
        modes = _SPECS[name].modes
        if not modes:
            return (Variant(name),)
        return (Variant(name, mode if mode in modes else modes[0]),)  # else: its only mode
    if name in variant_names():
        return (Variant.from_name(name),)
    known = dict.fromkeys((*variant_names(), *sorted(_SPECS), "all"))
    raise _unknown("attack variant", given, known)


class _View(Mapping):
    """A read-only live view of the registry (the pre-registry module constants)."""

    def __init__(self, keys: Callable[[], Iterable[str]], value: Callable[[str], Any]):
        self._keys, self._value = keys, value

    def __getitem__(self, key: str) -> Any:
        if key not in tuple(self._keys()):
            raise KeyError(key)
        return self._value(key)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._keys()))

    def __len__(self) -> int:
        return len(tuple(self._keys()))


def _variant_args(name: str) -> tuple[str, Mapping[str, Any]]:
    v = Variant.from_name(name)
    return v.attack, MappingProxyType(v.call_kwargs)


#: attack name → function (live view of the registry)
ATTACKS: Mapping[str, Callable[..., Any]] = _View(lambda: _SPECS, lambda n: _SPECS[n].fn)
#: variant name → (attack name, keyword arguments for the attack function) (live view)
VARIANT_ARGS: Mapping[str, tuple[str, Mapping[str, Any]]] = _View(variant_names, _variant_args)
