"""miascale: membership-inference vulnerability of fine-tuned classifiers, measured and predicted.

The Python API (``docs/api.md``; loaded lazily, so ``import miascale`` stays fast):

- :func:`run_audit` — audit one setting (arrays or a dataset and backbone) → ``AuditResult``
- :func:`run_sweep` — run a grid of audits into a run directory → ``(SweepSummary, Run)``
- :func:`load_run` — open a run directory read-only → ``Run`` (``.rows`` DataFrame, ``.fit()``)
- :func:`fit` — the power law of a run or its rows → ``ScalingFit``
- :func:`predict`, :func:`plan` — the law at S, and the smallest S for a target → ``Prediction``,
  ``Plan``
- :func:`export_rows` — a run's rows as CSV or Parquet (``miascale export``)

Results show as tables in a notebook (``_repr_html_``).
"""

__version__ = "0.1.0"

# public name → (module, attribute), imported on first access
_API = {
    "run_audit": ("miascale.api", "run_audit"),
    "run_sweep": ("miascale.api", "run_sweep"),
    "load_run": ("miascale.api", "load_run"),
    "fit": ("miascale.api", "fit"),
    "export_rows": ("miascale.api", "export_rows"),
    "Run": ("miascale.api", "Run"),
    "predict": ("miascale.planning", "predict"),
    "plan": ("miascale.planning", "plan"),
    "plan_sentence": ("miascale.plan_text", "plan_sentence"),
    "AuditConfig": ("miascale.audit", "AuditConfig"),
    "AuditResult": ("miascale.audit", "AuditResult"),
    "SweepSpec": ("miascale.experiments.grid", "SweepSpec"),
    "SweepSummary": ("miascale.experiments.runner", "SweepSummary"),
    "ScalingFit": ("miascale.scaling", "ScalingFit"),
    "Plan": ("miascale.plan_results", "Plan"),
    "Prediction": ("miascale.plan_results", "Prediction"),
    "MiascaleError": ("miascale.errors", "MiascaleError"),
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> object:
    if name not in _API:
        raise AttributeError(f"module 'miascale' has no attribute {name!r}")
    import importlib

    module, attr = _API[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
