"""The audit's configuration: :class:`AuditConfig`, validated on construction, and attack naming.

Every field that determines an audit's numbers lives here and is recorded in ``audit.json``.
Attack names are parsed by the registry's one parser (:func:`miascale.attacks.parse_variants`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from miascale.attacks import parse_variants
from miascale.errors import MiascaleError
from miascale.training.dp import DPConfig
from miascale.training.film import FilmConfig
from miascale.training.heads import HeadConfig

DEFAULT_FPR = (0.1, 0.01, 0.001)
LIRA_VARIANTS = ("online", "offline")  # also the modes of bare "lira" / "rmia" in --attack
FINETUNE_MODES = ("head", "film")
#: RMIA's population points (train-split examples outside the pool) per audit, at most
DEFAULT_POPULATION = 10_000


def expand_attacks(attack: str, mode: str = "online") -> tuple[str, ...]:
    """``--attack`` text → attack variant names, e.g. ``"lira,loss"`` → ``("lira-online", "loss")``.

    Bare attack names take ``mode`` (online / offline); ``all`` means every registered variant.
    """
    return tuple(v.name for v in parse_variants(str(attack), mode))


def dp_variant(variant: str, epsilon: float) -> str:
    """The variant label of DP rows in fits and reports, e.g. ``online dp ε=1``."""
    return f"{variant} dp ε={epsilon:g}"


@dataclass(frozen=True)
class AuditConfig:
    """Everything that determines an audit's numbers (recorded in ``audit.json``)."""

    shots: int
    classes: int | None = None  # None = all classes of the dataset
    shadow_models: int = 64  # M; K = M + 1 models, each the target once
    attack: str = "lira"
    lira_variant: str = "online"
    variance: str = "per-example"
    location: str = "mean"
    membership: str = "balanced"
    fpr: tuple[float, ...] = DEFAULT_FPR
    seed: int = 0
    head: HeadConfig = field(default_factory=HeadConfig)
    rmia_gamma: float = 1.0
    rmia_a: float | None = None  # None = tuned on shadow models, per target
    population: int = DEFAULT_POPULATION
    hpo_trials: int = 0  # Optuna trials tuning the head on one target-like training set (0 = off)
    dp: DPConfig | None = None  # DP-SGD heads (miascale.training.dp) instead of exact heads
    finetune: str = "head"  # head (cached features) | film (raw images, see train_and_signal_film)
    film: FilmConfig | None = None  # FiLM settings (None = FilmConfig defaults)
    film_eval: int = 1000  # FiLM: test and population images evaluated per audit, at most
    bootstrap: int = 200  # resamples of pool examples for TPR@FPR's CI (0 = Clopper-Pearson only)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def n_models(self) -> int:
        return self.shadow_models + 1

    @property
    def variants(self) -> tuple[str, ...]:
        """The attack variants this audit runs; the first is the primary one."""
        return expand_attacks(self.attack, self.lira_variant)

    @property
    def needs_population(self) -> bool:
        """Whether an attack of this audit compares with population points (RMIA)."""
        return any(v.spec.needs_population for v in parse_variants(self.variants))

    def validate(self) -> AuditConfig:
        """Raise :class:`MiascaleError` on an invalid setting (runs on construction)."""
        from miascale.attacks.lira import LOCATIONS, VARIANCES

        if not isinstance(self.shots, int) or self.shots < 1:
            raise MiascaleError(f"--shots must be a positive integer, got {self.shots!r}.")
        if self.shadow_models < 4:
            raise MiascaleError(
                f"--shadow-models must be at least 4 (LiRA fits IN and OUT distributions from the "
                f"shadow models, and a target's complementary partner is never one of them; 64 "
                f"or more is typical), got {self.shadow_models}."
            )
        if self.classes is not None and self.classes < 2:
            raise MiascaleError(f"--classes must be at least 2, got {self.classes}.")
        self.variants  # noqa: B018 — validates --attack
        if self.lira_variant not in LIRA_VARIANTS:
            raise MiascaleError(
                f"Unknown LiRA variant {self.lira_variant!r}; choose one of {', '.join(LIRA_VARIANTS)}."
            )
        if self.variance not in VARIANCES:
            raise MiascaleError(
                f"Unknown --variance {self.variance!r}; choose one of {', '.join(VARIANCES)}."
            )
        if self.location not in LOCATIONS:
            raise MiascaleError(
                f"Unknown --location {self.location!r}; choose one of {', '.join(LOCATIONS)}."
            )
        bad = [t for t in self.fpr if not (0.0 < t < 1.0)]
        if not self.fpr or bad:
            raise MiascaleError(
                f"FPR levels must lie strictly between 0 and 1, got {list(self.fpr)}."
            )
        if not (isinstance(self.rmia_gamma, int | float) and math.isfinite(self.rmia_gamma)
                and self.rmia_gamma > 0):  # fmt: skip
            raise MiascaleError(
                f"RMIA's γ (--gamma) must be a number > 0, got {self.rmia_gamma!r}."
            )
        if self.rmia_a is not None and not (0.0 <= self.rmia_a <= 1.0):
            raise MiascaleError(
                f"RMIA's offline a (--rmia-a) must lie in [0, 1] (or be left out to tune it on "
                f"the shadow models), got {self.rmia_a!r}."
            )
        if self.dp is not None and not isinstance(self.dp, DPConfig):
            raise MiascaleError(f"AuditConfig.dp must be a DPConfig, got {self.dp!r}.")
        if self.dp is not None and self.hpo_trials:
            raise MiascaleError(
                "--hpo cannot be combined with DP training: tuning on the private training data "
                "would spend privacy that the accountant does not count. Tune on public data and "
                "pass the values (--dp-lr, --steps, --clip) instead."
            )
        if self.finetune not in FINETUNE_MODES:
            raise MiascaleError(
                f"Unknown --finetune {self.finetune!r}; choose one of {', '.join(FINETUNE_MODES)}."
            )
        if self.finetune == "film" and self.dp is not None:
            raise MiascaleError("DP training (--epsilon) is available for heads only, not FiLM.")
        if self.film is not None and not isinstance(self.film, FilmConfig):
            raise MiascaleError(f"AuditConfig.film must be a FilmConfig, got {self.film!r}.")
        if not isinstance(self.film_eval, int) or self.film_eval < 100:
            raise MiascaleError(f"film_eval must be an integer ≥ 100, got {self.film_eval!r}.")
        bad_bootstrap = isinstance(self.bootstrap, bool) or not isinstance(self.bootstrap, int)
        if bad_bootstrap or self.bootstrap < 0:
            raise MiascaleError(
                f"bootstrap must be a number of resamples ≥ 0 (0 = report only the "
                f"Clopper-Pearson interval of TPR@FPR), got {self.bootstrap!r}."
            )
        if not isinstance(self.hpo_trials, int) or self.hpo_trials < 0:
            raise MiascaleError(f"--hpo must be a number of trials ≥ 0, got {self.hpo_trials!r}.")
        if not isinstance(self.population, int) or self.population < 100:
            raise MiascaleError(
                f"--population must be an integer ≥ 100 (RMIA compares each example with that "
                f"many population points), got {self.population!r}."
            )
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["n_models"] = self.n_models
        d["fpr"] = list(self.fpr)
        d["variants"] = list(self.variants)
        return d
