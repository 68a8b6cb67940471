"""The sweep report: one self-contained HTML file, ``RUN_DIR/report.html``.

:func:`build_report` reads a run directory (:mod:`miascale.report.rundata`) and renders the
sections of :data:`miascale.report.sections.SECTIONS` into ``templates/page.html.j2`` with the CSS
inlined and the figures as PNG data URIs, so the page opens offline. How the page is put together
and how to add a section: docs/design/report.md.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from markupsafe import Markup

from miascale.paths import atomic_write_bytes
from miascale.report.common import DASH, fmt_coef, fmt_num, variant_name
from miascale.report.rundata import FIT_NAME, RunData, load_run, package_versions
from miascale.report.sections import SECTIONS, Section, privacy, theory
from miascale.report.sections.plan import PLAN_EPSILONS
from miascale.report.sections.privacy import _dp_bound_lines
from miascale.report.sections.roc import MAX_ROC_GROUPS
from miascale.report.sections.theory import THEORY_NAME
from miascale.report.templating import css, render

REPORT_NAME = "report.html"

__all__ = [
    "DASH",
    "FIT_NAME",
    "MAX_ROC_GROUPS",
    "PLAN_EPSILONS",
    "REPORT_NAME",
    "SECTIONS",
    "THEORY_NAME",
    "RunData",
    "Section",
    "_dp_bound_lines",
    "_section_privacy",
    "build_report",
    "fmt_coef",
    "fmt_num",
    "load_run",
    "package_versions",
    "render_report",
    "render_section",
    "render_theory_report",
    "variant_name",
]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _page(title: str, run_dir: Path, sections: list[Section], run: RunData) -> str:
    return render(
        "page.html.j2",
        title=title,
        css=css(),
        subtitle=f"Run directory {run_dir} · generated {_now()}",
        nav=[s for s in sections if s.nav],
        sections=[(s, s.render(run)) for s in sections],
    )


def render_section(section: Section, run: RunData) -> Markup:
    """One section with its title, as in the page; empty when it does not apply to the run."""
    if not section.applies(run):
        return Markup("")
    return render("section.html.j2", s=section, body=section.render(run))


def _section_privacy(run: RunData) -> str:
    """The Differential privacy section alone (kept for callers of the former function)."""
    return str(render_section(privacy.SECTION, run))


def render_report(run: RunData) -> str:
    """The report page as a string (see :func:`build_report`)."""
    datasets = ", ".join(sorted({r["dataset"] for r in run.rows}))
    shown = [s for s in SECTIONS if s.applies(run)]
    return _page(f"miascale sweep report: {datasets}", run.run_dir, shown, run)


def render_theory_report(run_dir: Path) -> str:
    """A report page for a directory that holds only ``theory.json``."""
    run = RunData(Path(run_dir), {}, {}, [], [], None, "")
    return _page("miascale theory report", run.run_dir, [replace(theory.SECTION, nav=None)], run)


def build_report(run_dir: str | Path, out_path: str | Path | None = None) -> Path:
    """Write the self-contained HTML report of a sweep run and return its path.

    ``out_path`` defaults to ``RUN_DIR/report.html``; the file is written atomically. Uses
    ``RUN_DIR/fit.json`` when present and otherwise fits the power law to the results. Raises
    :class:`~miascale.errors.MiascaleError` when the directory holds no sweep results.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "results.sqlite").is_file() and (run_dir / THEORY_NAME).is_file():
        page = render_theory_report(run_dir)  # a `miascale theory --out DIR` directory
    else:
        page = render_report(load_run(run_dir))
    out = Path(out_path) if out_path is not None else run_dir / REPORT_NAME
    atomic_write_bytes(out, page.encode("utf-8"))
    return out
