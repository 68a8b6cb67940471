"""The ``miascale`` command line: a thin typer app over the library (DESIGN §4).

Results go to stdout (``--json`` prints only JSON there); progress and messages go to stderr.
User errors print one paragraph and exit with status 2, never a traceback. Options are declared
in :mod:`.options`, parsed and turned into configs in :mod:`.build`, rendered in :mod:`.render`;
the commands live in :mod:`.run`, :mod:`.fit` and :mod:`.misc`.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from miascale import __version__
from miascale.cli import fit as _fit
from miascale.cli import misc as _misc
from miascale.cli import run as _run
from miascale.cli.build import check_device as _check_device
from miascale.cli.build import check_out_dir as _check_out_dir
from miascale.cli.build import check_seed as _check_seed
from miascale.cli.build import csv as _csv
from miascale.cli.build import parse_fpr as _parse_fpr
from miascale.cli.render import emit_json as _emit_json
from miascale.cli.render import level_lines, tail_label, tail_lines
from miascale.cli.run import _set_aside_older_demo
from miascale.console import err, out
from miascale.errors import MiascaleError
from miascale.experiments.workflows import fit_run, run_sweep_command
from miascale.experiments.workflows import json_default as _json_default
from miascale.experiments.workflows import write_json as _write_json

__all__ = [
    "_check_device",
    "_check_out_dir",
    "_check_seed",
    "_csv",
    "_emit_json",
    "_json_default",
    "_parse_fpr",
    "_set_aside_older_demo",
    "_write_json",
    "app",
    "fit_run",
    "level_lines",
    "main",
    "print_error",
    "run_sweep_command",
    "tail_label",
    "tail_lines",
]  # fmt: skip

app = typer.Typer(
    name="miascale",
    help="Measure, explain and predict membership-inference vulnerability of fine-tuned classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Known datasets: list them, fetch them.", no_args_is_help=True)
app.add_typer(data_app, name="data")
data_app.command("list")(_misc.data_list)
data_app.command("fetch")(_misc.data_fetch)
for _command in (_misc.features, _run.demo, _run.audit, _run.sweep, _run.study, _fit.fit,
                 _fit.predict, _fit.plan, _misc.theory, _misc.report, _fit.export):  # fmt: skip
    app.command()(_command)


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        out.print(f"miascale {__version__}")
        raise typer.Exit()


def main() -> None:
    """Console-script entry point: user errors become one paragraph on stderr and exit status 2."""
    try:
        app(standalone_mode=True)
    except MiascaleError as exc:
        print_error(exc)
        sys.exit(2)


def print_error(exc: BaseException | str) -> None:
    """The one rendering of a user error: "error: " and the message as plain text on stderr.

    The message is never parsed as rich markup, so a path holding ``[red]`` or ``[/]`` is printed
    verbatim (and cannot crash the printing).
    """
    from rich.text import Text

    err.print(Text.assemble(("error:", "bold red"), " ", str(exc)), highlight=False, soft_wrap=True)
