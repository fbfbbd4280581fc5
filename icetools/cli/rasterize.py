"""``icetools rasterize``: ice-chart polygons and grounding lines onto a scene's grid."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from icetools.cli.app import app
from icetools.cli.common import guarded, info
from icetools.cli.formats import RASTER_FORMATS, resolve_output
from icetools.cli.options import Format, Layer, Overwrite, Quiet, VectorCRS, Verbose


@app.command("rasterize")
@guarded
def rasterize_command(
    vector: Annotated[Path, typer.Argument(help="Ice chart (SIGRID-3 polygons) or grounding lines: .gpkg, .shp, ...")],
    like: Annotated[Path, typer.Option("--like", help="Scene whose grid the labels take (netCDF or GeoTIFF).")],
    output: Annotated[str, typer.Option("-o", "--output", metavar="OUT.tif", help="Labels GeoTIFF to write.")],
    fmt: Format = None,
    attr: Annotated[Optional[str], typer.Option("--attr", help="Numeric attribute to burn instead of the decoded SIGRID-3 CT.")] = None,
    all_touched: Annotated[bool, typer.Option("--all-touched/--no-all-touched", help="Burn every pixel a shape touches (default), or only pixels whose centre it covers.")] = True,
    layer: Layer = None,
    vector_crs: VectorCRS = None,
    overwrite: Overwrite = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Burn VECTOR onto the grid of --like: polygons -> bands polygon_id + SIC; lines -> a uint8 'line' mask.

    With --all-touched, a boundary pixel touched by several polygons goes to the smaller polygon.
    """
    from icetools.cli.progress import EventBars
    from icetools.rasterize import rasterize_to_file

    target = resolve_output(output, fmt, RASTER_FORMATS).path
    start = time.perf_counter()
    with EventBars({"rows": "rasterize"}) as bars:
        result = rasterize_to_file(
            vector, like, target, attr=attr, all_touched=all_touched, layer=layer, vector_crs=vector_crs,
            overwrite=overwrite, progress=bars,
        )
    info(
        f"wrote {target}: {result['features']} {result['kind']}, {result['pixels']} pixels burned, "
        f"bands {', '.join(result['bands'])} ({time.perf_counter() - start:.1f} s)"
    )
