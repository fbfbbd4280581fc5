"""``icetools info``: what a user checks first about a scene, a labels raster, a chart or a model.

Like ``gdalinfo`` and ``rio info`` the report is data: it goes to stdout (text, or JSON with
``--json``), sizes as GDAL writes them (``Size is COLUMNS, ROWS``). Unlike them it takes several
paths, one block each (a JSON list with ``--json``), so one call checks a whole folder of scenes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from icetools.cli.app import app
from icetools.cli.common import emit_json, guarded
from icetools.cli.options import JsonFlag, Quiet, Verbose

CHART_ROWS_SHOWN = 25


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _columns(header: tuple[str, ...], rows: list[tuple[str, ...]], indent: str = "  ") -> list[str]:
    """A plain aligned table: grep- and awk-friendly, no box drawing."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]


def _chart_lines(rows: list[dict[str, Any]]) -> list[str]:
    table = [(str(r["poly_id"]), _fmt(r["CT"]), _fmt(r["POLY_TYPE"]), _fmt(r["SIC"])) for r in rows[:CHART_ROWS_SHOWN]]
    lines = [f"Chart: {len(rows)} polygons"]
    if table:
        lines += _columns(("poly_id", "CT", "POLY_TYPE", "SIC"), table)
    if len(rows) > CHART_ROWS_SHOWN:
        lines.append(f"  ... {len(rows) - CHART_ROWS_SHOWN} more (--json lists them all)")
    return lines


def scene_lines(report: dict[str, Any]) -> list[str]:
    lines = [f"File: {report['path']}", f"Format: {report['format']}", f"Size is {report['width']}, {report['height']}"]
    grid = report["grid"]
    if grid["type"] == "gcps":
        lines.append(f"Grid: {grid['gcp_count']} GCPs in {grid['gcp_crs']}")
    elif grid["type"] == "affine":
        a, _, c, _, e, f = grid["transform"]
        lines += [f"Coordinate system: {grid.get('crs') or 'none'}", f"Origin = ({c!r}, {f!r})", f"Pixel Size = ({a!r}, {e!r})"]
    else:
        lines.append("Grid: none (pixel coordinates only)")
    if grid.get("lonlat_bounds"):
        w, s, e, n = grid["lonlat_bounds"]
        lines.append(f"Lon/lat bounds: W {w:.4f} S {s:.4f} E {e:.4f} N {n:.4f} (pixel ~{grid['pixel_size_m']} m)")
    lines.append(f"Valid share: {report['valid_share']:.1%} ({report['statistics']})")
    for index, band in enumerate(report["bands"], start=1):
        lines.append(
            f"Band {index} {band['name']}: min {_fmt(band['min'])} max {_fmt(band['max'])} mean {_fmt(band['mean'])} "
            f"finite {band['finite_share']:.1%}"
        )
    if "chart" in report:
        lines += _chart_lines(report["chart"]["table"])
    return lines


def vector_lines(report: dict[str, Any]) -> list[str]:
    lines = [f"File: {report['path']}", f"Format: vector, {len(report['layers'])} layer(s)"]
    for layer in report["layers"]:
        lines.append(f"Layer '{layer['name']}': {layer['features']} {layer['geometry_type']} features, CRS {layer['crs']}")
        lines.append(f"  Fields: {', '.join(layer['fields']) or '-'}")
        if layer.get("bounds") is not None:
            lines.append("  Extent: " + ", ".join(f"{float(v):.10g}" for v in layer["bounds"]))
        if layer.get("chart"):
            lines += ["  " + line for line in _chart_lines(layer["chart"])]
    return lines


def model_lines(report: dict[str, Any]) -> list[str]:
    lines = [f"File: {report['path']}", "Format: model directory"]
    for key, value in report.items():
        if key in ("path", "format", "normalization"):
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        lines.append(f"{key}: {text}")
    return lines


def report_lines(report: dict[str, Any]) -> list[str]:
    if report["format"] == "vector":
        return vector_lines(report)
    if report["format"] == "model":
        return model_lines(report)
    return scene_lines(report)


@app.command("info")
@guarded
def info_command(
    paths: Annotated[
        list[Path],
        typer.Argument(metavar="PATH", help="Scene (.nc/.tif), labels raster, vector file or model directory; several give one block each."),
    ],
    json_out: JsonFlag = False,
    exact: Annotated[bool, typer.Option("--exact", help="Band statistics from every pixel, not a sample of windows.")] = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Format, size (GDAL's order: columns, rows), bands and value ranges, grid (CRS/transform or
    GCPs), valid share, chart polygons; on stdout. With --json and several PATHs, a JSON list."""
    from icetools.info import describe

    reports = [describe(path, exact=exact) for path in paths]  # all read before any is printed
    if json_out:
        emit_json(reports[0] if len(reports) == 1 else reports)
        return
    blocks = ["\n".join(report_lines(report)) for report in reports]
    typer.echo("\n\n".join(blocks))
