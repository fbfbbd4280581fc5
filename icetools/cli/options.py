"""Options used by several commands, defined once, and the choices and checks behind them.

A bad option value is a usage error (exit 2, one ``Error: Invalid value for '--opt': ...`` line):
click checks the choices (``Literal``) and ranges (``min``/``max``) below, and the callbacks here
raise ``typer.BadParameter`` for the rest. The library keeps its own ``ConfigError`` checks for
callers of the Python API.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from icetools.cli.common import STATE
from icetools.models import MODEL_NAMES, MODEL_SIZES
from icetools.tasks import TASKS

# Choices the library owns in modules that import torch; copied here so that `icetools --help`
# stays fast (tests/cli/test_choices.py checks they match the library's).
LOSS_NAMES: tuple[str, ...] = ("regional", "pixel-mse", "pixel-ce", "bce-ftl", "focal", "ce")
LR_SCHEDULES: tuple[str, ...] = ("cosine", "poly", "constant")
POOLS: tuple[str, ...] = ("scene", "patch")
MERGES: tuple[str, ...] = ("average", "gaussian", "refine")
TILE_MULTIPLE = 16  # four 2x poolings: windows and patches are multiples of 16

ModelName = Literal[MODEL_NAMES]  # type: ignore[valid-type]
LossName = Literal[LOSS_NAMES]  # type: ignore[valid-type]
ModelSizeName = Literal[MODEL_SIZES]  # type: ignore[valid-type]
LrScheduleName = Literal[LR_SCHEDULES]  # type: ignore[valid-type]
PoolName = Literal[POOLS]  # type: ignore[valid-type]
MergeName = Literal[MERGES]  # type: ignore[valid-type]
TaskName = Literal[TASKS]  # type: ignore[valid-type]


def _set_verbose(value: int) -> int:
    if value:
        STATE["verbosity"] = value
    return value


def _set_quiet(value: bool) -> bool:
    if value:
        STATE["verbosity"] = -1
    return value


def multiple_of_16(value: int | None) -> int | None:
    """A window or patch side: positive and a multiple of 16 (what every model here accepts)."""
    if value is not None and (value <= 0 or value % TILE_MULTIPLE):
        raise typer.BadParameter(f"{value} is not a positive multiple of {TILE_MULTIPLE} (e.g. 128, 256)")
    return value


def name_list(choices: tuple[str, ...]):
    """A callback for comma-separated names, each one of ``choices``."""

    def check(text: str | None) -> str | None:
        if text is None:
            return None
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in choices]
        if not names or unknown:
            shown = repr(unknown[0]) if unknown else repr(text)
            raise typer.BadParameter(f"{shown} is not one of {', '.join(choices)}")
        return text

    return check


def above_zero(value: float | None) -> float | None:
    """A callback for a quantity that must be strictly positive (a learning rate, minutes)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"{value} must be > 0")
    return value


def open_fraction(value: float | None) -> float | None:
    """A callback for a fraction strictly between 0 and 1 (a share of the budget)."""
    if value is not None and not 0 < value < 1:
        raise typer.BadParameter(f"{value} must lie strictly between 0 and 1")
    return value


def key_values(values: list[str] | None) -> list[str] | None:
    """A callback for repeatable KEY=VALUE options: the shape is checked here, the values by the library."""
    for pair in values or []:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip() or not text.strip():
            raise typer.BadParameter(f"{pair!r}: write KEY=VALUE, e.g. gamma=2")
    return values


# Every command takes -q/-v as the group does (`icetools info -q` and `icetools -q info` are the
# same); their callbacks set the shared verbosity, so a command ignores the values themselves.
Verbose = Annotated[
    int, typer.Option("-v", "--verbose", count=True, callback=_set_verbose, show_default=False,
                      help="More diagnostics: tracebacks and causes of errors.")
]
Quiet = Annotated[
    bool, typer.Option("-q", "--quiet", callback=_set_quiet, help="Only errors on stderr: no progress, logs or warnings.")
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace the output if it exists.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same output.")]
NoChecks = Annotated[bool, typer.Option("--no-checks", help="Skip the input checks (values sampled against the plausible range of each band).")]
Layer = Annotated[Optional[str], typer.Option("--layer", help="Vector layer name (default: the product's name).")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of text.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
VectorCRS = Annotated[
    Optional[str], typer.Option("--vector-crs", help="CRS to assume for vectors that carry none (e.g. EPSG:3413).")
]
OutPath = Annotated[Path, typer.Option("-o", "--output", help="Output file.", dir_okay=False)]
Format = Annotated[
    Optional[str],
    typer.Option("-f", "--format", metavar="FORMAT",
                 help="Output format (GDAL/OGR driver name) when the output's extension does not say it; "
                      "it must agree with a known extension."),
]
