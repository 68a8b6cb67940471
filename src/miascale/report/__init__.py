"""The sweep report: a self-contained HTML page of a ``miascale sweep`` run (see :func:`build_report`)."""

from miascale.report.html import REPORT_NAME, build_report, load_run, render_report

__all__ = ["REPORT_NAME", "build_report", "load_run", "render_report"]
