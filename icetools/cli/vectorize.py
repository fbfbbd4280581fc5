"""``icetools vectorize``: a predicted raster -> class polygons or grounding lines in a vector file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from icetools.cli.app import app
from icetools.cli.common import guarded, info, make_progress, warn
from icetools.cli.options import Layer, OutPath, Overwrite


def _connectivity(value: int) -> int:
    if value not in (4, 8):
        raise typer.BadParameter("must be 4 or 8")
    return value


@app.command("vectorize")
@guarded
def vectorize_command(
    raster: Annotated[Path, typer.Argument(help="Predicted raster: classes (integers), SIC 0..1, or a line probability/mask.")],
    output: OutPath,
    band: Annotated[str, typer.Option("--band", help="Band name (description) or 1-based index.")] = "1",
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="Polygons: two classes, below / at-or-above T. Lines: the mask is >= T (default 0.5).")] = None,
    bins: Annotated[Optional[str], typer.Option("--bins", help="Class edges, e.g. 0.1,0.4,0.7,0.9: class i holds edge[i-1] <= value < edge[i].")] = None,
    min_area: Annotated[float, typer.Option("--min-area", help="Sieve away regions smaller than this, in map units squared (m2 for GCP rasters).")] = 0.0,
    min_area_px: Annotated[int, typer.Option("--min-area-px", help="Sieve away regions with fewer pixels than this.")] = 0,
    simplify: Annotated[float, typer.Option("--simplify", help="Simplification tolerance in map units (m for GCP rasters); polygons keep their shared edges.")] = 0.0,
    connectivity: Annotated[int, typer.Option("--connectivity", callback=_connectivity, help="4 or 8. 8-connectivity yields invalid polygons (pixels touching at a corner), by GDAL's design.")] = 4,
    lines: Annotated[bool, typer.Option("--lines", help="Skeleton lines of a mask (grounding lines) instead of polygons.")] = False,
    min_length: Annotated[float, typer.Option("--min-length", help="Lines: drop lines shorter than this, in map units (m for GCP rasters).")] = 0.0,
    strip_rows: Annotated[int, typer.Option("--strip-rows", min=1, help="Rows read and vectorized at a time; bounds the memory.")] = 1024,
    layer: Layer = None,
    overwrite: Overwrite = False,
) -> None:
    """Vectorize RASTER into class polygons (class, value_min, value_max, mean, area, n_pixels) or lines (length).

    Coordinates are in the raster's CRS; rasters with only tie points (radar geometry) are written in
    EPSG:4326; rasters with neither get pixel coordinates and no CRS. Nodata and NaN pixels make no feature.
    """
    from icetools.errors import ConfigError
    from icetools.io.atomic import check_output
    from icetools.io.vector import write_layer
    from icetools.vectorize import describe_georeference, parse_bins, vectorize_lines, vectorize_polygons

    check_output(output, overwrite=overwrite)  # fail before the work, not after it
    start = time.perf_counter()
    kind = "lines" if lines else "polygons"
    with make_progress() as bar:
        task = bar.add_task(f"vectorize {kind}", total=1.0)
        report = lambda fraction: bar.update(task, completed=fraction)  # noqa: E731
        if lines:
            polygon_only = {"--bins": bins is not None, "--min-area": min_area > 0, "--min-area-px": min_area_px > 0,
                            "--connectivity 8": connectivity == 8}
            given = [name for name, used in polygon_only.items() if used]
            if given:
                raise ConfigError(f"{', '.join(given)} apply to polygons only, not to --lines")
            frame = vectorize_lines(
                raster, band=band, threshold=0.5 if threshold is None else threshold, min_length=min_length,
                simplify=simplify, strip_rows=strip_rows, progress=report,
            )
        else:
            if min_length > 0:
                raise ConfigError("--min-length applies to --lines only; for polygons use --min-area")
            frame = vectorize_polygons(
                raster, band=band, threshold=threshold, bins=parse_bins(bins) if bins is not None else None,
                min_area=min_area, min_area_px=min_area_px, simplify=simplify, connectivity=connectivity,
                strip_rows=strip_rows, progress=report,
            )
    georeference = frame.attrs.get("georeference")
    if georeference == "gcps":
        info(f"{raster} has tie points only: coordinates moved through them to EPSG:4326")
    elif georeference == "none":
        warn(f"{raster} has neither a CRS nor tie points: writing pixel coordinates (x = column, y = row), no CRS")
    elif frame.crs is None:
        warn(f"{raster} has a transform but no CRS: the layer is written without a CRS")
    layer_name = layer or kind
    write_layer(frame, output, layer=layer_name, overwrite=overwrite)
    info(
        f"wrote {output}: {len(frame)} {kind if len(frame) != 1 else kind[:-1]} in layer '{layer_name}', {describe_georeference(frame)} "
        f"({time.perf_counter() - start:.1f} s)"
    )
