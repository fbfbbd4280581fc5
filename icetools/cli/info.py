"""``icetools info``: what a user checks first about a scene, a labels raster, a chart or a model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from icetools.cli.app import app
from icetools.cli.common import console, emit_json, guarded
from icetools.cli.options import JsonFlag

CHART_ROWS_SHOWN = 25


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _print_scene(report: dict) -> None:
    console.print(f"[bold]{report['path']}[/]  {report['format']}  {report['height']} x {report['width']} px")
    grid = report["grid"]
    if grid["type"] == "gcps":
        console.print(f"grid: {grid['gcp_count']} GCPs ({grid['gcp_crs']})")
    else:
        console.print(f"grid: {grid['type']}  CRS {grid.get('crs')}  transform {grid.get('transform')}")
    if grid.get("lonlat_bounds"):
        w, s, e, n = grid["lonlat_bounds"]
        console.print(f"lon/lat bounds: W {w:.4f}  S {s:.4f}  E {e:.4f}  N {n:.4f}   pixel ~{grid['pixel_size_m']} m")
    console.print(f"valid share: {report['valid_share']:.1%} ({report['statistics']})")
    table = Table("band", "min", "max", "mean", "finite", title="bands", title_justify="left")
    for band in report["bands"]:
        table.add_row(band["name"], _fmt(band["min"]), _fmt(band["max"]), _fmt(band["mean"]), f"{band['finite_share']:.1%}")
    console.print(table)
    if "chart" in report:
        _print_chart(report["chart"]["table"])


def _print_chart(rows: list[dict]) -> None:
    table = Table("poly_id", "CT", "POLY_TYPE", "SIC", title=f"chart polygons ({len(rows)})", title_justify="left")
    for row in rows[:CHART_ROWS_SHOWN]:
        table.add_row(str(row["poly_id"]), _fmt(row["CT"]), _fmt(row["POLY_TYPE"]), _fmt(row["SIC"]))
    console.print(table)
    if len(rows) > CHART_ROWS_SHOWN:
        console.print(f"... {len(rows) - CHART_ROWS_SHOWN} more (use --json for all)")


def _print_vector(report: dict) -> None:
    console.print(f"[bold]{report['path']}[/]  vector, {len(report['layers'])} layer(s)")
    for layer in report["layers"]:
        console.print(f"layer '{layer['name']}': {layer['features']} {layer['geometry_type']} features, CRS {layer['crs']}")
        console.print(f"  fields: {', '.join(layer['fields'])}")
        if layer.get("chart"):
            _print_chart(layer["chart"])


@app.command("info")
@guarded
def info_command(
    path: Annotated[Path, typer.Argument(help="Scene (.nc/.tif), labels raster, vector file or model directory.")],
    json_out: JsonFlag = False,
    exact: Annotated[bool, typer.Option("--exact", help="Band statistics from every pixel, not a sample of windows.")] = False,
) -> None:
    """Format, size, bands and value ranges, grid (CRS/transform or GCPs), valid share, chart polygons."""
    from icetools.info import describe

    report = describe(path, exact=exact)
    if json_out:
        emit_json(report)
    elif report["format"] == "vector":
        _print_vector(report)
    elif report["format"] == "model":
        console.print_json(data={k: v for k, v in report.items() if k != "normalization"}, default=str)
    else:
        _print_scene(report)
