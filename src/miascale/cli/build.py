"""Option values → checked settings: parsers of comma lists and FPR levels, the checks done before
any work (seed, device, output folder), deprecated aliases, and the builders of an
:class:`~miascale.audit.AuditConfig` (``audit``) and a :class:`SweepSpec` (``sweep``), which share
:func:`audit_settings`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from miascale.cli.options import ALIAS_OF, DEPRECATED, OPTIONS, alias_param, param_name
from miascale.console import err
from miascale.errors import MiascaleError


def parse_fpr(text: str) -> tuple[float, ...]:
    try:
        levels = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise MiascaleError(
            f"--fpr takes comma-separated numbers in (0, 1), e.g. 0.1,0.01,0.001; got {text!r}."
        ) from None
    dup = sorted({t for t in levels if levels.count(t) > 1})
    if dup:
        raise MiascaleError(
            f"--fpr lists {', '.join(f'{t:g}' for t in dup)} more than once (got {text!r}); give "
            f"each FPR level once."
        )
    return levels


def csv(text: str | None, cast, flag: str) -> tuple | None:
    if text is None:
        return None
    try:
        return tuple(cast(t.strip()) for t in str(text).split(",") if t.strip())
    except ValueError:
        raise MiascaleError(
            f"{flag} takes a comma-separated list; could not parse {text!r}."
        ) from None


def classes_value(t: str) -> int | None:
    return None if t.lower() == "all" else int(t)


def epsilon_value(t: str) -> float | None:
    return None if t.lower() in ("inf", "none") else float(t)


def check_seed(seed: int, flag: str = "--seed") -> None:
    if seed < 0:
        raise MiascaleError(f"{flag} must be a non-negative integer, got {seed}.")


def check_out_dir(path: Path | None) -> None:
    """--out must be a folder this process can write: checked (created) before any work."""
    import tempfile

    if path is None:
        return
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MiascaleError(
            f"--out {path} is a file, not a folder; give a folder for the outputs (it is created "
            f"if missing)."
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".miascale-write-check-"):
            pass
    except OSError as e:
        raise MiascaleError(
            f"Cannot write to --out {path}: {e.strerror or e}. Give a writable folder."
        ) from None


def check_device(device: str) -> None:
    """An unusable --device is an error before any work (never one failure per cell)."""
    if device == "cpu":
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise MiascaleError(
            f"--device {device!r} is not a torch device; use cpu, cuda or cuda:N."
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise MiascaleError(
                f"--device {device} asks for CUDA, but torch sees no CUDA GPU on this machine "
                f"(torch.cuda.is_available() is False). Use --device cpu."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise MiascaleError(
                f"--device {device}: this machine has {torch.cuda.device_count()} CUDA "
                f"device(s), numbered from 0."
            )
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise MiascaleError(f"--device {device}: MPS is not available here. Use --device cpu.")


def _given(ctx: typer.Context, name: str) -> bool:
    # compared by name: typer may bring its own copy of click's ParameterSource enum
    source = getattr(ctx.get_parameter_source(name), "name", "DEFAULT")
    return source in ("COMMANDLINE", "ENVIRONMENT", "PROMPT")


def given_flags(ctx: typer.Context, keys: tuple[str, ...]) -> list[str]:
    """The flags of these options given on the command line (deprecated aliases included)."""
    out = []
    for key in keys:
        if _given(ctx, param_name(key)):
            out.append(OPTIONS[key].flags[0])
        old = ALIAS_OF.get(key)
        if old and alias_param(old) in ctx.params and _given(ctx, alias_param(old)):
            out.append(old)
    return out


def resolve_aliases(ctx: typer.Context, opts: dict) -> dict:
    """Deprecated flags act as their new names, with a message on stderr; both is an error."""
    opts = {k: v for k, v in opts.items() if not k.startswith("deprecated_")}
    used = [(old, key) for old, key in DEPRECATED.items()
            if alias_param(old) in ctx.params and _given(ctx, alias_param(old))]  # fmt: skip
    for old, key in used:
        if _given(ctx, param_name(key)):
            new = OPTIONS[key].flags[0]
            raise MiascaleError(f"Give {new} or {old}, not both ({old} is its deprecated name).")
    for old, key in used:
        err.print(f"{old} is deprecated and will be removed in the next release; use "
                  f"{OPTIONS[key].flags[0]}.", markup=False, highlight=False)  # fmt: skip
        opts[param_name(key)] = ctx.params[alias_param(old)]
    return opts


def only_with(options: dict, active: bool, mode: str) -> None:
    """Options ``{flag: value}`` of one training mode: an error when given without it."""
    given = [flag for flag, v in options.items() if v is not None]
    if given and not active:
        raise MiascaleError(
            f"{', '.join(given)} only apply to {mode}; leave them out or add that mode."
        )


def audit_settings(o: dict) -> dict:
    """The audit settings audit and sweep share (AuditSettings fields), from option values."""
    from miascale.experiments.settings import SETTING_NAMES

    return {**{n: o[n] for n in SETTING_NAMES}, "optimizer": o["optimizer"] or "lbfgs"}


def check_modes(o: dict) -> None:
    """Options of one training mode given without that mode: an error, never silently ignored."""
    flags = {k: o.flags[0] for k, o in OPTIONS.items() if o.flags}
    dp = ("dp_delta", "dp_clip", "dp_sampling_rate", "dp_steps", "dp_lr")
    only_with({flags[k]: o[k] for k in dp}, o["epsilon"] is not None, "--epsilon (DP-SGD heads)")
    film = ("epochs", "film_lr", "batch_size")
    only_with({flags[k]: o[k] for k in film}, o["finetune"] == "film", "--finetune film")
    head = {flags[k]: o[k] for k in ("l2", "optimizer", "standardize")}
    only_with(head, o["epsilon"] is None and o["finetune"] == "head",
              "exact heads (no --epsilon, --finetune head)")  # fmt: skip


def audit_config(o: dict):
    """The checked :class:`~miascale.audit.AuditConfig` of ``miascale audit``'s options."""
    from miascale.experiments.settings import build_audit_config
    from miascale.membership import DESIGNS

    check_seed(o["seed"])
    fpr = parse_fpr(o["fpr"])
    check_device(o["device"])
    if o["membership"] not in DESIGNS:
        raise MiascaleError(
            f"Unknown --membership {o['membership']!r}; choose one of {', '.join(DESIGNS)}."
        )
    check_modes(o)
    shadow_models, hpo = o["shadow_models"], o["hpo"]
    if o["paper"]:
        shadow_models = 256 if shadow_models == 64 else shadow_models
        # the research tuned every non-DP setting; tuning DP heads would spend unaccounted privacy
        hpo = 20 if hpo is None and o["epsilon"] is None else hpo
    return build_audit_config(
        shots=o["shots"], variants=o["attack"], classes=o["classes"], seed=o["seed"],
        shadow_models=shadow_models, fpr=fpr, membership=o["membership"],
        lira_variant=o["lira_variant"], l2=o["l2"], standardize=o["standardize"],
        epsilon=o["epsilon"], dp_delta=o["dp_delta"], dp_clip=o["dp_clip"],
        dp_sampling_rate=o["dp_sampling_rate"], dp_steps=o["dp_steps"],
        finetune=o["finetune"], hpo=hpo, **audit_settings(o),
    ).validate()  # fmt: skip


def sweep_spec(o: dict):
    """The :class:`~miascale.experiments.grid.SweepSpec` of ``miascale sweep``'s options."""
    from miascale.audit import expand_attacks
    from miascale.experiments.grid import SweepSpec

    return SweepSpec(
        datasets=csv(o["dataset"], str, "--dataset"),
        backbones=csv(o["backbone"], str, "--backbone"), shots=csv(o["shots"], int, "--shots"),
        classes=csv(o["classes"], classes_value, "--classes"), seeds=csv(o["seed"], int, "--seed"),
        variants=expand_attacks(o["attack"], o["lira_variant"]),
        shadow_models=o["shadow_models"], fpr=csv(o["fpr"], float, "--fpr"),
        resolution=o["resolution"], min_per_class=o["min_per_class"], membership=o["membership"],
        l2=1e-3 if o["l2"] is None else o["l2"], standardize=o["standardize"] or "pool",
        epsilons=csv(o["epsilon"], epsilon_value, "--epsilon"), dp_delta=o["dp_delta"],
        dp_clip=o["dp_clip"], dp_sampling_rate=o["dp_sampling_rate"], dp_steps=o["dp_steps"],
        finetune=o["finetune"], hpo=o["hpo"] or 0, **audit_settings(o),
    )  # fmt: skip
