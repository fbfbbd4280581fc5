"""What every command shares: the stderr console, verbosity, progress bars and the error edge."""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib
import json
import os
import logging
import signal
import sys
import traceback
import warnings
from typing import Any, Callable, Iterable, Iterator, TypeVar

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from icetools.errors import IcetoolsError
from icetools.io.atomic import StopRequested, committed_outputs, forget_committed, request_stop

# soft_wrap: a log line is never broken inside a path, so it can be copied and grepped.
console = Console(stderr=True, highlight=False, soft_wrap=True)
STATE = {"verbosity": 0}
F = TypeVar("F", bound=Callable[..., Any])
# Typer >= 0.20 vendors Click: its usage errors share no base class with the click package's.
_TYPER_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
T = TypeVar("T")


def info(message: str) -> None:
    """A diagnostic line on stderr, silenced by -q."""
    if STATE["verbosity"] >= 0:
        console.print(message)


def debug(message: str) -> None:
    if STATE["verbosity"] > 0:
        console.print(f"[dim]{message}[/]")


def warn(message: str) -> None:
    """A warning line on stderr, silenced by -q."""
    if STATE["verbosity"] >= 0:
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
    # Escaped: a path or a hint like 'icetools[distributed]' is text, not rich markup.
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def _current_context() -> Any:
    """The running command's Click context (Typer >= 0.20 vendors Click: both stacks are asked)."""
    for module in ("typer._click.globals", "click.globals"):
        try:
            ctx = importlib.import_module(module).get_current_context(silent=True)
        except (ImportError, AttributeError):
            continue
        if ctx is not None:
            return ctx
    return None


def _print_details(exc: BaseException) -> None:
    """-v: the tracebacks of an error and of every error behind it, the root cause first, the
    ones ``raise ... from None`` hides for the one-line message included."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    lines: list[str] = []
    for index, error in enumerate(reversed(chain)):
        if index:
            lines.append("\nwhich led to:\n\n")
        lines += traceback.format_exception(type(error), error, error.__traceback__, chain=False)
    sys.stderr.write("".join(lines))
    sys.stderr.flush()


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    from rich.markup import escape

    warn(escape(str(message).splitlines()[0]) if str(message) else category.__name__)


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Python warnings as one ``warning:`` line each; under -q none, nor GDAL's logged warnings."""
    quiet = STATE["verbosity"] < 0
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")
        warnings.showwarning = _show_warning
        previous = logging.root.manager.disable
        if quiet:
            logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


Terminated = StopRequested  # SIGTERM or SIGHUP, raised like Ctrl-C so that the same cleanup runs

_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def _raise_terminated(signum: int, frame: Any) -> None:
    # Later stop signals are ignored, so that a second `kill` cannot cut the cleanup short.
    for other in _STOP_SIGNALS:
        signal.signal(other, signal.SIG_IGN)
    # Also remembered: a library that catches the exception inside a callback (GDAL's progress
    # callbacks do) cannot make the run commit its outputs, since every commit checks the request.
    request_stop(signum)
    raise Terminated(signum)


def install_signal_handlers() -> None:
    """SIGTERM (`timeout`, `kill`, a batch system) and SIGHUP (a closed terminal) act like Ctrl-C.

    Called once by the ``icetools`` entry point, in the main thread; tests that call the Typer app
    in-process keep the default handlers of their own process.
    """
    for signum in _STOP_SIGNALS:
        signal.signal(signum, _raise_terminated)


def interrupted_message(written: list[Any], *, shown: int = 5) -> str:
    """What an interrupted command did and did not leave: finished outputs stay, staged ones are gone."""
    if not written:
        return "interrupted; no output was written"
    names = ", ".join(str(p) for p in written[:shown])
    more = f" and {len(written) - shown} more" if len(written) > shown else ""
    return f"interrupted; written, complete: {names}{more}; nothing else was written"


def usage_error(message: str) -> Exception:
    """A usage error (exit 2) for options that do not go together, raised in a command's body."""
    return _TYPER_USAGE_ERROR(message)


# File-system refusals the user can fix, and what to do about each.
_PLAIN_ERRNOS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
}


def plain_os_error(exc: BaseException) -> str | None:
    """One line for a permission, read-only or full-disk error, naming the path; None for others.

    GDAL's errors (rasterio, pyogrio) carry no errno: their message is matched against the C library's.
    """
    if not isinstance(exc, OSError):
        return None
    if exc.errno in _PLAIN_ERRNOS:
        path = exc.filename if exc.filename is not None else "a file"
        return f"{path}: {_PLAIN_ERRNOS[exc.errno]}"
    first = str(exc).splitlines()[0] if str(exc) else ""
    for code, cause in _PLAIN_ERRNOS.items():
        if os.strerror(code).lower() in first.lower():
            return f"{first} ({cause})"
    return None


def guarded(func: F) -> F:
    """The error edge: our own errors become one line and exit 1 (-v adds the traceback and its
    cause); usage errors keep Click's exit 2; warnings become one line each, silenced by -q."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        forget_committed()
        try:
            with _warnings_as_lines():
                return func(*args, **kwargs)
        except IcetoolsError as exc:
            if STATE["verbosity"] > 0:
                _print_details(exc)
            raise fail(str(exc)) from None
        except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP: every staged file is gone by now
            code = 128 + int(getattr(exc, "signum", signal.SIGINT))
            raise fail(interrupted_message(committed_outputs()), code) from None
        # Usage errors (BadParameter...) keep Click's exit code 2. Typer vendors its own Click, so
        # both Click exception roots are let through; one raised in a command's body gets the
        # command's context, so that it prints the same usage lines as the parser's own.
        except (click.exceptions.UsageError, _TYPER_USAGE_ERROR) as exc:
            if getattr(exc, "ctx", None) is None:
                exc.ctx = _current_context()
            raise
        except (typer.Exit, typer.Abort, SystemExit, click.exceptions.ClickException, typer.exceptions.TyperException):
            raise
        except Exception as exc:  # the last net: one line, the traceback only on request
            plain = plain_os_error(exc)
            if plain is not None:  # the file system said no: the user can fix that, it is no bug
                if STATE["verbosity"] > 0:
                    _print_details(exc)
                raise fail(plain) from None
            if STATE["verbosity"] > 0:
                traceback.print_exc()
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise fail(f"{type(exc).__name__}: {first} (internal error; rerun with -v for the traceback)") from None

    return wrapper  # type: ignore[return-value]
