"""Commands on a finished run and its law: ``fit``, ``predict``, ``plan`` and ``export``."""

from __future__ import annotations

import json
from pathlib import Path

from miascale.cli import render
from miascale.cli.options import options
from miascale.console import err, out
from miascale.errors import MiascaleError
from miascale.experiments.workflows import fit_run

LAW = ("coefficients", "beta_s", "beta_0", "beta_c", "variant", "confidence")


@options("run_dir", "keep_unresolvable", "keep_saturated", "min_false_positives",
         "ceiling_margin", "json")  # fmt: skip
def fit(**o) -> None:
    """Fit log10(TPR − FPR) = β_S·log10 S + β_C·log10 C + β_0 per FPR level; writes fit.json.

    Cells enter only when their level allows enough false positives, their advantage is
    distinguishable from chance and their TPR is clear of the ceiling (docs/sweep.md); the fit is
    weighted by the cells' bootstrap standard errors. Excluded cells are listed with the reason.
    """
    run_dir = o["run_dir"]
    result, tail, doc, saved = fit_run(
        run_dir, o["keep_unresolvable"], o["keep_saturated"], o["min_false_positives"],
        o["ceiling_margin"], best_effort=True, with_doc=True,
    )  # fmt: skip
    if o["json_"]:
        return render.emit_json(doc)
    out.print(render.fit_table(result))
    if tail is not None:
        out.print(render.tail_table(tail))
    render.print_lines(render.level_lines(result))
    for line in render.excluded_lines(result):
        err.print(line, highlight=False, markup=False)
    if saved:
        out.print(f"wrote {Path(run_dir) / 'fit.json'}", markup=False)


def _coefficients(o: dict):
    """The law to predict or plan with: a level of a fit.json, or the --beta-* values."""
    from miascale.planning import Coefficients
    from miascale.scaling import ScalingFit

    coefficients, fpr = o["coefficients"], o["fpr"]
    betas = (("--beta-s", o["beta_s"]), ("--beta-0", o["beta_0"]), ("--beta-c", o["beta_c"]))
    if coefficients is not None:
        given = [f for f, v in betas if v is not None]
        if given:
            raise MiascaleError(
                f"Give the law one way: --coefficients {coefficients} or {', '.join(given)}, not "
                f"both (the coefficients file already holds β_S, β_0 and β_C)."
            )
        try:
            data = json.loads(Path(coefficients).read_text())
        except (OSError, ValueError) as exc:
            raise MiascaleError(f"Cannot read {coefficients}: {exc}.") from None
        from miascale.audit import variant_columns

        att, var = variant_columns(o["attack"])  # e.g. lira-online → (lira, online); loss → global
        return ScalingFit.from_dict(data).level(att, var, fpr)
    if o["beta_s"] is None or o["beta_0"] is None:
        raise MiascaleError(
            "Give the law: either --coefficients fit.json, or --beta-s and --beta-0 (and --beta-c)."
        )
    return Coefficients(o["beta_s"], o["beta_0"], o["beta_c"], fpr_level=fpr)


@options("predict_shots", "fpr_level", "n_classes", *LAW, "dataset_like", "json")
def predict(**o) -> None:
    """Predicted TPR and advantage at S examples per class, with intervals when fitted."""
    from miascale.planning import predict as _predict

    shots, classes, fpr = o["shots"], o["classes"], o["fpr"]
    if o["dataset_like"] is not None:
        from miascale.study import predict_like

        if any(o[b] is not None for b in ("beta_s", "beta_0", "beta_c")):
            raise MiascaleError("--dataset-like takes the law from the study, not --beta-*.")
        lp = predict_like(o["coefficients"] or Path("runs/study"), o["dataset_like"], shots,
                          classes, fpr, o["attack"], o["confidence"])  # fmt: skip
        if o["json_"]:
            return render.emit_json(lp.to_dict())
        return out.print(lp.sentence(), markup=False, soft_wrap=True)
    p = _predict(_coefficients(o), shots, classes, confidence=o["confidence"])
    if o["json_"]:
        return render.emit_json(p.to_dict())
    out.print(render.predict_text(p, shots, classes, fpr))
    if not p.trustworthy:
        out.print("Not trustworthy: " + " ".join(p.warnings))


@options("fpr_level", "n_classes", "target_advantage", "target_epsilon", "target_delta",
         "relation", *LAW, "json")  # fmt: skip
def plan(**o) -> None:
    """The smallest S whose predicted advantage is at most the target (or the (ε, δ)-DP bound).

    Prints the point estimate with its interval, or says plainly that the data cannot answer.
    """
    from miascale.planning import plan as _plan
    from miascale.planning import plan_sentence

    if (o["target_advantage"] is None) == (o["epsilon"] is None):
        raise MiascaleError("Give exactly one of --target-advantage and --epsilon.")
    if o["relation"] not in ("add-remove", "replace-one"):
        raise MiascaleError(f"--relation must be add-remove or replace-one, got {o['relation']!r}.")
    p = _plan(
        _coefficients(o), o["fpr"], o["classes"], target_advantage=o["target_advantage"],
        epsilon=o["epsilon"], delta=o["delta"], confidence=o["confidence"],
        relation=o["relation"].replace("-", "_"),
    )  # fmt: skip
    if o["json_"]:
        render.emit_json(p.to_dict())
    else:
        out.print(plan_sentence(p))


@options("run_dir", "format", "out_file", "json")
def export(**o) -> None:
    """Write the run's result rows as CSV or Parquet: one row per cell × attack variant × FPR
    level, every column of the store and every extra field (nested ones as name.key)."""
    from miascale.api import export_rows

    path, n = export_rows(o["run_dir"], o["format_"], o["out_file"])
    if o["json_"]:
        render.emit_json({"path": str(path), "rows": n})
    else:
        out.print(f"wrote {path} ({n} rows)", markup=False, highlight=False)
