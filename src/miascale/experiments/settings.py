"""The audit settings a sweep shares with ``miascale audit``, and the one builder of an
:class:`~miascale.audit.AuditConfig` from them (used by :meth:`Cell.audit_config` and the CLI).

Contract (ids, defaults, TOML keys): docs/design/sweep-config.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from miascale.errors import MiascaleError

# TOML has no null: these strings stand for None in a spec file.
ALL_CLASSES = "all"
AUTO_SHOTS = "auto"
NO_DP = "inf"  # in epsilons: ordinary (non-DP) training

#: RMIA's population points per audit (the value of ``miascale.audit.DEFAULT_POPULATION``)
DEFAULT_POPULATION = 10_000


@dataclass(frozen=True, kw_only=True)
class AuditSettings:
    """Settings of one audit that a sweep passes unchanged to all its cells.

    Added after the first release: a cell or spec leaves them out of ``to_dict`` (so of its id)
    while they hold these defaults. The ones of :data:`MODE_SETTINGS` go into the head, DP or
    FiLM config (``dp_lr`` on DP cells only; ``epochs``, ``film_lr``, ``batch_size`` on FiLM cells
    only); every other one is the :class:`~miascale.audit.AuditConfig` field of the same name, so
    adding such a setting takes a field here and its flag (``cli/options.py``).
    """

    variance: str = "per-example"
    location: str = "mean"
    rmia_gamma: float = 1.0
    rmia_a: float | None = None
    population: int = DEFAULT_POPULATION
    optimizer: str = "lbfgs"
    dp_lr: float | None = None
    epochs: int | None = None
    film_lr: float | None = None
    batch_size: int | None = None

    def audit_settings(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(AuditSettings)}


SETTING_NAMES = tuple(f.name for f in fields(AuditSettings))
FILM_ONLY = ("epochs", "film_lr", "batch_size")
MODE_SETTINGS = ("optimizer", "dp_lr", *FILM_ONLY)
_WHAT = {"str": "a string", "int": "an integer", "float": "a number"}
#: TOML / JSON type of each setting, from its annotation (e.g. ``float | None`` → a number)
SETTING_TYPES = {f.name: _WHAT[str(f.type).split(" |")[0]] for f in fields(AuditSettings)}
OPTIONAL_SETTINGS = tuple(f.name for f in fields(AuditSettings) if "None" in str(f.type))
FLOAT_SETTINGS = tuple(n for n, what in SETTING_TYPES.items() if what == "a number")


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


_CHECKS: dict[str, Callable[[Any], bool]] = {
    "a string": lambda v: isinstance(v, str), "an integer": is_int, "a number": is_num,
}  # fmt: skip

_LIST_TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "datasets": ("strings", lambda v: isinstance(v, str)),
    "backbones": ("strings", lambda v: isinstance(v, str)),
    "variants": ("strings", lambda v: isinstance(v, str)),
    "shots": ("positive integers", is_int),
    "classes": ("integers or 'all'", lambda v: is_int(v) or v in (ALL_CLASSES, None)),
    "seeds": ("integers", is_int),
    "fpr": ("numbers", is_num),
    "epsilons": ("numbers or 'inf'", lambda v: is_num(v) or v in (NO_DP, None)),
}
_SCALAR_TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "shadow_models": ("an integer", is_int),
    "resolution": ("an integer", is_int),
    "min_per_class": ("an integer", is_int),
    "membership": ("a string", lambda v: isinstance(v, str)),
    "l2": ("a number", is_num),
    "dp_delta": ("a number", is_num),
    "dp_clip": ("a number", is_num),
    "dp_sampling_rate": ("a number", is_num),
    "dp_steps": ("an integer", is_int),
    "finetune": ("a string", lambda v: isinstance(v, str)),
    "hpo": ("an integer", is_int),
    "standardize": ("a string", lambda v: isinstance(v, str)),
    **{name: (what, _CHECKS[what]) for name, what in SETTING_TYPES.items()},
}


_OPTIONAL = (
    "shots",
    "resolution",
    "min_per_class",
    "dp_delta",
    "dp_clip",
    "dp_sampling_rate",
    "dp_steps",
    *OPTIONAL_SETTINGS,
)


def coerce(key: str, value: Any, source: str) -> Any:
    if key in _OPTIONAL and value is None:
        return None  # from JSON (to_dict); TOML has no null
    if key == "shots" and value == AUTO_SHOTS:
        return None
    if key in _LIST_TYPES:
        what, ok = _LIST_TYPES[key]
        items = value if isinstance(value, list) else [value]
        bad = [v for v in items if not ok(v)]
        if bad:
            raise MiascaleError(f"{key!r} in {source} must be a list of {what}, got {value!r}.")
        if key == "classes":
            items = [None if v == ALL_CLASSES else v for v in items]
        if key == "epsilons":
            items = [None if v == NO_DP else v for v in items]
        return tuple(items)
    what, ok = _SCALAR_TYPES[key]
    if not ok(value):
        raise MiascaleError(f"{key!r} in {source} must be {what}, got {value!r}.")
    return value


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def build_audit_config(
    *,
    shots: int,
    variants: str | tuple[str, ...] = "lira",
    classes: int | None = None,
    seed: int = 0,
    shadow_models: int = 64,
    fpr: tuple[float, ...] = (0.1, 0.01, 0.001),
    membership: str = "balanced",
    lira_variant: str = "online",
    l2: float | None = None,
    standardize: str | None = None,
    optimizer: str | None = None,
    epsilon: float | None = None,
    dp_delta: float | None = None,
    dp_clip: float | None = None,
    dp_sampling_rate: float | None = None,
    dp_steps: int | None = None,
    dp_lr: float | None = None,
    finetune: str = "head",
    epochs: int | None = None,
    film_lr: float | None = None,
    batch_size: int | None = None,
    hpo: int | None = 0,
    **direct: Any,
):
    """The :class:`~miascale.audit.AuditConfig` of these settings (``None``: the defaults);
    ``direct`` are AuditConfig fields (the audit settings outside :data:`MODE_SETTINGS`)."""
    from miascale.audit import AuditConfig
    from miascale.training.heads import HeadConfig

    dp = film = None
    if epsilon is not None:
        from miascale.training.dp import DPConfig

        given = _given(delta=dp_delta, clip=dp_clip, sampling_rate=dp_sampling_rate,
                       steps=dp_steps, learning_rate=dp_lr)  # fmt: skip
        dp = DPConfig(epsilon=epsilon, **given)
    if finetune == "film":
        from miascale.training.film import FilmConfig

        film = FilmConfig(**_given(epochs=epochs, learning_rate=film_lr, batch_size=batch_size))
    head = HeadConfig(l2=1e-3 if l2 is None else l2, optimizer=optimizer or "lbfgs",
                      standardize=standardize or "pool")  # fmt: skip
    attack = variants if isinstance(variants, str) else ",".join(variants)
    return AuditConfig(
        shots=shots, classes=classes, shadow_models=shadow_models, attack=attack,
        lira_variant=lira_variant, membership=membership, fpr=tuple(fpr), seed=seed, head=head,
        hpo_trials=hpo or 0, dp=dp, finetune=finetune, film=film, **direct,
    )  # fmt: skip


def check_settings(s: AuditSettings, dp: bool, film: bool, exact: bool = True) -> None:
    """A spec's audit settings: valid, and none given for a training mode the sweep never runs."""
    if s.optimizer != "lbfgs" and not exact:
        raise MiascaleError("optimizer only applies to exact heads (cells without DP and with "
                            "finetune = head); this sweep has none.")  # fmt: skip
    given = ["dp_lr"] if s.dp_lr is not None else []
    if given and not dp:
        raise MiascaleError(f"{', '.join(given)} only apply to DP cells; add a numeric ε to "
                            f"epsilons or leave them out.")  # fmt: skip
    given = [n for n in FILM_ONLY if getattr(s, n) is not None]
    if given and not film:
        raise MiascaleError(f"{', '.join(given)} only apply to FiLM cells (finetune = film).")
    # the rest as the audit itself checks them (names, ranges)
    checked = [n for n in SETTING_NAMES if n not in ("dp_lr", *FILM_ONLY)]
    build_audit_config(shots=1, **{n: getattr(s, n) for n in checked}).validate()
