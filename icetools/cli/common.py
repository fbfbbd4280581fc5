"""What every command shares: the stderr console, verbosity, progress bars and the error edge."""

from __future__ import annotations

import functools
import json
import sys
import traceback
from typing import Any, Callable, Iterable, Iterator, TypeVar

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from icetools.errors import IcetoolsError

# soft_wrap: a log line is never broken inside a path, so it can be copied and grepped.
console = Console(stderr=True, highlight=False, soft_wrap=True)
STATE = {"verbosity": 0}
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def info(message: str) -> None:
    """A diagnostic line on stderr, silenced by -q."""
    if STATE["verbosity"] >= 0:
        console.print(message)


def debug(message: str) -> None:
    if STATE["verbosity"] > 0:
        console.print(f"[dim]{message}[/]")


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/] {message}")


def emit_json(data: Any) -> None:
    """Data goes to stdout, and only data."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def progress_enabled() -> bool:
    return STATE["verbosity"] >= 0 and console.is_terminal


def make_progress(*, rate_unit: str | None = None) -> Progress:
    """A rich progress bar on stderr; invisible when stderr is not a terminal or with -q."""
    columns = [TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn()]
    if rate_unit:
        columns.append(TextColumn("{task.fields[rate]}"))
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    return Progress(*columns, console=console, disable=not progress_enabled(), transient=False)


def track(items: Iterable[T], *, total: int | None = None, description: str = "") -> Iterator[T]:
    """Iterate with a progress bar (or silently)."""
    with make_progress() as bar:
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task)


def fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(code)


def guarded(func: F) -> F:
    """The error edge: our own errors become one line and exit 1; no traceback unless -v."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except IcetoolsError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            raise fail("interrupted; no output was written", 130) from None
        # Usage errors (BadParameter...) keep Click's exit code 2. Typer vendors its own Click, so
        # both Click exception roots are let through.
        except (typer.Exit, typer.Abort, SystemExit, click.exceptions.ClickException, typer.exceptions.TyperException):
            raise
        except Exception as exc:  # the last net: one line, the traceback only on request
            if STATE["verbosity"] > 0:
                traceback.print_exc()
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise fail(f"{type(exc).__name__}: {first} (internal error; rerun with -v for the traceback)") from None

    return wrapper  # type: ignore[return-value]
