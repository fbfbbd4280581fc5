"""``icetools evaluate``: score a prediction against the truth with the source methods' own metrics."""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from icetools.cli.app import app
from icetools.cli.common import STATE, console, emit_json, guarded, make_progress
from icetools.cli.options import Overwrite


class Task(str, Enum):
    sic = "sic"
    binary = "binary"
    multiclass = "multiclass"


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
    for convention in result["conventions"]:
        console.print(f"[dim]- {escape(convention)}[/]")


@app.command("evaluate")
@guarded
def evaluate_command(
    prediction: Annotated[Path, typer.Argument(help="Prediction GeoTIFF: band SIC, probability, line or class.")],
    truth: Annotated[Path, typer.Option("--truth", help="True SIC raster, labels raster, AI4Arctic netCDF, line mask or class raster.")],
    polygons: Annotated[Optional[Path], typer.Option("--polygons", help="Labels raster (polygon_id + SIC) or netCDF chart for polygon-level SIC scores.")] = None,
    task: Annotated[Optional[Task], typer.Option("--task", help="Override the task the prediction's bands imply.")] = None,
    threshold: Annotated[Optional[float], typer.Option("--threshold", min=0.0, max=1.0, help="Probability threshold (default: the raster's 'threshold' tag, else 0.5).")] = None,
    tolerance: Annotated[float, typer.Option("--tolerance", min=0.0, help="Pixels within which boundary F and tolerant IoU forgive misplacement.")] = 2,
    ice_edge: Annotated[Optional[float], typer.Option("--ice-edge", min=0.0, max=1.0, help="Also score the ice/water split at this SIC (e.g. 0.15).")] = None,
    json_out: Annotated[Optional[str], typer.Option("--json", metavar="OUT", help="Write the metrics JSON to OUT ('-' for stdout).")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Score PREDICTION against --truth: SIC (R2, RMSE, per polygon), lines (Dice, HD95, ...) or classes (mIoU)."""
    from icetools.evaluate import evaluate, json_safe, write_json
    from icetools.io.atomic import check_output

    if json_out not in (None, "-"):
        check_output(json_out, overwrite=overwrite)  # refuse before the work, not after
    with make_progress() as bar:
        job = bar.add_task("evaluate", total=1.0)
        result = evaluate(
            prediction, truth, polygons=polygons, task=task.value if task else None, threshold=threshold,
            tolerance=tolerance, ice_edge=ice_edge, progress=lambda fraction: bar.update(job, completed=fraction),
        )
    if STATE["verbosity"] >= 0:
        _print_table(result)
    if json_out == "-":
        emit_json(json_safe(result))
    elif json_out is not None:
        write_json(result, json_out, overwrite=overwrite)
