"""Hyperparameter optimisation (HPO) as the research did it: Optuna TPE on a 70/30 split.

What is tuned, how the split is drawn, reproducibility and failure handling:
``docs/design/hpo.md`` (user guide: ``docs/hpo.md``). Modules:

* :mod:`~miascale.hpo.space`: :class:`FloatRange`, :class:`IntRange`, :class:`Choice`,
  :func:`head_space`, :func:`film_space`, :func:`apply_params`;
* :mod:`~miascale.hpo.result`: :class:`HpoResult`;
* :mod:`~miascale.hpo.tuning`: :func:`tune`;
* :mod:`~miascale.hpo.split`: :func:`hpo_split`;
* :mod:`~miascale.hpo.heads`: :func:`tune_head`.
"""

from miascale.hpo.heads import tune_head
from miascale.hpo.result import HpoResult
from miascale.hpo.space import L2_RANGE as L2_RANGE
from miascale.hpo.space import (
    Choice,
    Dim,
    FloatRange,
    IntRange,
    SearchSpace,
    apply_params,
    dim_from_dict,
    film_space,
    head_space,
)
from miascale.hpo.split import DEFAULT_VAL_FRACTION as DEFAULT_VAL_FRACTION
from miascale.hpo.split import hpo_split
from miascale.hpo.tuning import tune

__all__ = [
    "Choice",
    "Dim",
    "FloatRange",
    "HpoResult",
    "IntRange",
    "SearchSpace",
    "apply_params",
    "dim_from_dict",
    "film_space",
    "head_space",
    "hpo_split",
    "tune",
    "tune_head",
]
