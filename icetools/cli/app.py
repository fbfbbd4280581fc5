"""The ``icetools`` command: one Typer app, one small module per command."""

from __future__ import annotations

import sys

import typer

from icetools import __version__
from icetools.cli import common
from icetools.cli.options import Quiet, Verbose

app = typer.Typer(
    name="icetools",
    help="Turn full satellite scenes into ice maps: rasterize charts, sample patches, train, predict, "
    "vectorize, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"icetools {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    verbose: Verbose = 0,
    quiet: Quiet = False,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Logs and progress go to stderr; stdout carries data only. Exit 1: data or runtime error; 2: usage error.

    -q and -v are taken by every command too (icetools info -q).
    """
    common.STATE["verbosity"] = -1 if quiet else verbose  # reset on every run, given or not


def _register() -> None:
    """Each command lives in its own module; import them here so --help lists them all."""
    from icetools.cli import commands  # noqa: F401  (registers on import)


_register()


def main() -> None:
    common.install_signal_handlers()
    try:
        app()
    except Exception as exc:  # anything that escaped a command's own edge
        common.console.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}")
        sys.exit(1)
