"""The sections of the sweep report, in page order: :data:`SECTIONS` drives both the navigation line
and the body (docs/design/report.md explains how to add one)."""

from __future__ import annotations

from miascale.report.sections import (
    accuracy,
    advantage,
    answer,
    attacks,
    fit,
    plan,
    privacy,
    roc,
    summary,
    tails,
    theory,
)
from miascale.report.sections.base import Section

SECTIONS: tuple[Section, ...] = (
    answer.SECTION,
    advantage.SECTION,
    tails.TAIL,
    tails.MOST_VULNERABLE,
    roc.SECTION,
    attacks.SECTION,
    privacy.SECTION,
    fit.SECTION,
    accuracy.SECTION,
    plan.SECTION,
    theory.SECTION,
    summary.SECTION,
)

__all__ = ["SECTIONS", "Section"]
