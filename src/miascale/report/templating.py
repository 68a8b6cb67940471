"""Jinja2 rendering of the report pages: templates in ``templates/``, the CSS in ``static/``.

Autoescaping is on for every template: context values are plain text and data, never HTML.
"""

from __future__ import annotations

import base64
from functools import cache
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup


@cache
def environment() -> Environment:
    return Environment(
        loader=PackageLoader("miascale.report", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html.j2", "html"), default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render(template: str, /, **context: Any) -> Markup:
    """``templates/<template>`` rendered with ``context`` (HTML-safe)."""
    return Markup(environment().get_template(template).render(**context))


@cache
def css() -> Markup:
    """The pages' stylesheet, to inline in a ``<style>`` element."""
    text = (resources.files("miascale.report") / "static" / "report.css").read_text("utf-8")
    return Markup(text)


def figure(png: bytes, alt: str, caption: str | None = None) -> dict[str, str | None]:
    """A figure for the ``figure`` macro: the PNG as a data URI, its alt text and caption."""
    src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return {"src": src, "alt": alt, "caption": caption}
