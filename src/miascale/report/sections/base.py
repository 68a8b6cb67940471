"""The section record: what one part of the report is and how it is drawn."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from miascale.report.rundata import RunData
from miascale.report.templating import render


def always(run: RunData) -> bool:
    return True


@dataclass(frozen=True)
class Section:
    """One section of the report (docs/design/report.md).

    ``context(run)`` computes the template's variables from the run (data and plain text, no HTML);
    ``templates/sections/<id>.html.j2`` draws them under the ``<h2>`` title. ``applies(run)`` says
    whether the run has anything for the section; ``nav`` is its label in the navigation line (None:
    not listed there).
    """

    id: str
    title: str
    context: Callable[[RunData], dict[str, Any]]
    applies: Callable[[RunData], bool] = always
    nav: str | None = None

    @property
    def template(self) -> str:
        return f"sections/{self.id}.html.j2"

    def render(self, run: RunData) -> Markup:
        """The section's body (everything under its title) as HTML."""
        return render(self.template, **self.context(run))
