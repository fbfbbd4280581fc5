"""``icetools evaluate``: score a prediction against the truth with the source methods' own metrics."""

from __future__ import annotations

import math
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from icetools.cli.app import app
from icetools.cli.common import STATE, console, emit_json, guarded, warn
from icetools.cli.options import Overwrite, Quiet, Verbose
from icetools.errors import IcetoolsError
from icetools.tasks import TASKS

Task = Enum("Task", {name: name for name in TASKS}, type=str)  # type: ignore[misc]


class Units(str, Enum):
    fraction = "fraction"
    percent = "percent"
    tenths = "tenths"


# The library names its parameters; a command-line user knows them as these flags.
_FLAGS = {
    r"\btruth_units\b": "--truth-units",
    r"\bsod_truth\b": "--sod-truth",
    r"\bfloe_truth\b": "--floe-truth",
    r"\bice_edge\b": "--ice-edge",
    r"\bpatch_size\b": "--patch-size",
    r"^(polygons|autoice|tolerance|threshold) (applies|must)": r"--\1 \2",
    r"\bset threshold\b": "pass --threshold",
    r"\bleave threshold out\b": "drop --threshold",
    r"\bset task to\b": "pass --task with",
    r"\bthe (sod|floe) prediction\b": r"--\1",
}


def as_flags(message: str) -> str:
    for pattern, flag in _FLAGS.items():
        message = re.sub(pattern, flag, message)
    return message


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def _rows(metrics: dict[str, Any]) -> list[tuple[str, Any]]:
    """Flatten per-class IoU into rows of its own."""
    rows: list[tuple[str, Any]] = []
    for name, value in metrics.items():
        if isinstance(value, dict):
            rows += [(f"iou ({label})", score) for label, score in value.items()]
        else:
            rows.append((name, value))
    return rows


def _print_table(result: dict[str, Any]) -> None:
    """Metric, value and a note per row; the conventions below the table as its footer."""
    from icetools.evaluate import metric_notes

    notes = metric_notes(result)
    files = result["files"]
    title = escape(f"{result['task']}: {files['prediction']} vs {files['truth']}")
    table = Table("metric", "value", "note", title=title, title_justify="left")
    table.add_row("n_pixels", _format(result["n_pixels"]), "valid in both rasters")
    for name, value in _rows(result["metrics"]):
        text = _format(value)
        note = notes.get(name, "class absent from both maps" if text == "n/a" else "")
        if text == "n/a" and name in notes:
            note = f"undefined; {note}"
        table.add_row(escape(name), text, escape(note))
    console.print(table)
    for role, units in (result.get("units") or {}).items():
        console.print(f"[dim]- {role} SIC read as {escape(units['units'])} ({escape(units['source'])})[/]")
    for convention in result["conventions"]:
        console.print(f"[dim]- {escape(convention)}[/]")


def _autoice_inputs(autoice: bool, sod: Path | None, sod_truth: Path | None, floe: Path | None, floe_truth: Path | None):
    from icetools.evaluate import AutoIceInputs

    for truth, prediction, flag in ((sod_truth, sod, "--sod"), (floe_truth, floe, "--floe")):
        if truth is not None and prediction is None:
            raise typer.BadParameter(f"it is the truth of a {flag} prediction: give {flag} too", param_hint=f"{flag}-truth")
    if not (autoice or sod or floe):
        return None
    return AutoIceInputs(sod=sod, sod_truth=sod_truth, floe=floe, floe_truth=floe_truth)


@app.command("evaluate")
@guarded
def evaluate_command(
    prediction: Annotated[Path, typer.Argument(help="Prediction GeoTIFF: band SIC, probability, line or class.")],
    truth: Annotated[Path, typer.Option("--truth", help="True SIC raster, labels raster, AI4Arctic netCDF, line mask or class raster.")],
    polygons: Annotated[Optional[Path], typer.Option("--polygons", help="Labels raster (polygon_id + SIC), netCDF chart, or 'scene': the chart of the scene the prediction was made from (its tags name it), for polygon-level SIC scores.")] = None,
    task: Annotated[Optional[Task], typer.Option("--task", help="Override the task the prediction's bands imply.")] = None,
    threshold: Annotated[Optional[float], typer.Option("--threshold", min=0.0, max=1.0, help="Probability threshold (default: the raster's 'threshold' tag, else 0.5).")] = None,
    tolerance: Annotated[float, typer.Option("--tolerance", min=0.0, help="Pixels within which boundary F and tolerant IoU forgive misplacement.")] = 2,
    patch_size: Annotated[Optional[int], typer.Option("--patch-size", min=1, metavar="PX", help="Also score lines patch by patch (PX x PX): distance means over found lines, misses counted apart.")] = None,
    ice_edge: Annotated[Optional[float], typer.Option("--ice-edge", min=0.0, max=1.0, help="Also score the ice/water split at this SIC (e.g. 0.15).")] = None,
    truth_units: Annotated[Optional[Units], typer.Option("--truth-units", help="What the SIC truth band holds when its file does not say: fraction 0..1, percent 0..100 or tenths 0..10 (an AI4Arctic SIC variable is read as tenths).")] = None,
    autoice: Annotated[bool, typer.Option("--autoice", help="Add the AI4Arctic challenge's scores: SIC R2 on 10 % classes (+ SOD/FLOE F1, combined).")] = False,
    sod: Annotated[Optional[Path], typer.Option("--sod", help="Stage-of-development class raster (0..5) to score by weighted F1; implies --autoice.")] = None,
    sod_truth: Annotated[Optional[Path], typer.Option("--sod-truth", help="Its truth (default: the SOD variable of --truth).")] = None,
    floe: Annotated[Optional[Path], typer.Option("--floe", help="Floe-size class raster (0..6) to score by weighted F1; implies --autoice.")] = None,
    floe_truth: Annotated[Optional[Path], typer.Option("--floe-truth", help="Its truth (default: the FLOE variable of --truth).")] = None,
    json_out: Annotated[Optional[str], typer.Option("--json", metavar="OUT", help="Write the metrics JSON to OUT ('-' for stdout).")] = None,
    overwrite: Overwrite = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Score PREDICTION against --truth: SIC (R2, RMSE, per polygon, AutoICE), lines (Dice, HD95, ...) or classes (mIoU)."""
    import warnings

    from icetools.cli.progress import EventBars
    from icetools.evaluate import evaluate, json_safe, write_json
    from icetools.io.atomic import check_output
    from icetools.io.paths import refuse_overwriting_inputs

    challenge = _autoice_inputs(autoice, sod, sod_truth, floe, floe_truth)
    if json_out not in (None, "-"):
        check_output(json_out, overwrite=overwrite)  # refuse before the work, not after
        refuse_overwriting_inputs([json_out], [prediction, truth, polygons if polygons != "scene" else None])
    try:
        with EventBars({"rows": "evaluate", "patches": "line patches"}) as bars, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # result["warnings"] holds them: printed once, below
            result = evaluate(
                prediction, truth, polygons=polygons, task=task.value if task else None, threshold=threshold,
                tolerance=tolerance, ice_edge=ice_edge, truth_units=truth_units.value if truth_units else None,
                autoice=challenge, patch_size=patch_size, progress=bars,
            )
    except IcetoolsError as exc:
        raise type(exc)(as_flags(str(exc))) from None
    for message in result["warnings"]:
        warn(escape(as_flags(message)))
    if STATE["verbosity"] >= 0:
        _print_table(result)
    if json_out == "-":
        emit_json(json_safe(result))
    elif json_out is not None:
        write_json(result, json_out, overwrite=overwrite)
