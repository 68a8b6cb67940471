"""A simplified model of fine-tuning: simulation with the product's own attack, and closed forms.

``C`` Gaussian classes with orthonormal means; a model trained on ``S`` examples per class scores
``(x, y)`` by ``⟨x, m̂_y⟩``. Every closed form is a function of the separation ``u``, ``S`` and the
FPR ``t``. The model and derivations: docs/theory.md; module layout and contracts:
docs/design/theory.md.

Modules: :mod:`.model` (means, fixed targets, ``u``), :mod:`.closed_forms` (per target),
:mod:`.pooled` (average case), :mod:`.regimes` (local slope, onset of −½), :mod:`.simulation`,
:mod:`.fits`, :mod:`.results` (config and result types), :mod:`.driver` (:func:`run_theory`).
"""

# ``X as X``: still importable from here (tests use ``_pooled``) but not in ``__all__``.
from miascale.theory._numerics import check_fpr_levels_nd as check_fpr_levels_nd
from miascale.theory.closed_forms import (
    advantage_asymptotic,
    tpr_neyman_pearson,
    tpr_one_sided,
)
from miascale.theory.driver import run_theory
from miascale.theory.fits import PowerFit, fit_slope
from miascale.theory.model import (
    FIXED_EXAMPLES,
    HEADS,
    POPULATIONS,
    FixedExample,
    class_means,
    fixed_example,
    population_separation,
    score_laws,
    separation,
)
from miascale.theory.model import ScoreLaws as ScoreLaws
from miascale.theory.pooled import _pooled as _pooled
from miascale.theory.pooled import (
    advantage_pooled_asymptotic,
    tpr_pool_approx,
    tpr_pooled,
)
from miascale.theory.regimes import asymptotic_onset, local_slope
from miascale.theory.results import SCHEMA, TheoryConfig, TheoryResult
from miascale.theory.results import Curve as Curve
from miascale.theory.simulation import SimulationPoint, simulate

__all__ = [
    "FIXED_EXAMPLES",
    "HEADS",
    "POPULATIONS",
    "SCHEMA",
    "FixedExample",
    "PowerFit",
    "SimulationPoint",
    "TheoryConfig",
    "TheoryResult",
    "advantage_asymptotic",
    "advantage_pooled_asymptotic",
    "asymptotic_onset",
    "class_means",
    "fit_slope",
    "fixed_example",
    "local_slope",
    "population_separation",
    "run_theory",
    "score_laws",
    "separation",
    "simulate",
    "tpr_neyman_pearson",
    "tpr_one_sided",
    "tpr_pool_approx",
    "tpr_pooled",
]
