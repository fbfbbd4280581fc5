"""``icetools vectorize``: a predicted raster -> class polygons or grounding lines in a vector file."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from icetools.cli.app import app
from icetools.cli.common import guarded, info, usage_error, warn
from icetools.cli.formats import VECTOR_FORMATS, resolve_output, write_vector
from icetools.cli.options import Format, Layer, Overwrite, Quiet, Verbose

if TYPE_CHECKING:
    from icetools.vectorize import LineCleanup

# The library names its parameters in backticks (`min_area`); a CLI user knows them as flags.
FLAGS = {
    "band": "--band", "threshold": "--threshold", "bins": "--bins", "min_area": "--min-area",
    "min_area_px": "--min-area-px", "simplify": "--simplify", "connectivity": "--connectivity",
    "min_length": "--min-length", "strip_rows": "--strip-rows", "median_size": "--median",
    "spur_length": "--spur", "min_piece_length": "--min-piece", "smooth_sigma": "--smooth", "dst_crs": "--dst-crs",
}
LENGTH_HELP = "pixels (5 or 5px) or metres (300m, on rasters in metres or with tie points)"


def in_flags(message: str) -> str:
    """A library message with its `parameter` names replaced by this command's flags."""
    return re.sub(r"`([a-z_]+)`", lambda m: FLAGS.get(m.group(1), m.group(1)), message)


def _connectivity(value: int) -> int:
    if value not in (4, 8):
        raise typer.BadParameter("must be 4 or 8")
    return value


def _checked(parse: Any) -> Any:
    """A callback running a library parser on the option's text: its ConfigError or CRSError (a bad
    --dst-crs) is a usage error."""

    def check(value: str | None) -> str | None:
        from icetools.errors import ConfigError, CRSError

        if value is not None:
            try:
                parse(value)
            except (ConfigError, CRSError) as exc:
                raise typer.BadParameter(in_flags(str(exc))) from None
        return value

    return check


def _bins(text: str) -> None:
    from icetools.vectorize import parse_bins

    parse_bins(text)


def _length(name: str) -> Any:
    def parse(text: str) -> None:
        from icetools.vectorize import parse_length

        parse_length(text, name=name)

    return _checked(parse)


def _crs_text(value: str) -> None:
    """--dst-crs must name a CRS, or a file that has one."""
    from icetools.io.crs import crs_from_user_input

    crs_from_user_input(value)


_crs = _checked(_crs_text)


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def _median(value: int | None) -> int | None:
    if value is not None and (value < 1 or value % 2 == 0):
        raise typer.BadParameter(f"{value} is not an odd window size (1, 3, 5, ...)")
    return value


def _check_kind(lines: bool, polygon_only: dict[str, bool], line_only: dict[str, bool]) -> None:
    """Options of the other kind of output are usage errors."""
    if lines:
        given = [name for name, used in polygon_only.items() if used]
        if given:
            raise usage_error(f"{', '.join(given)} apply to polygons only, not to --lines")
    else:
        given = [name for name, used in line_only.items() if used]
        if given:
            hint = "; for polygons use --min-area" if "--min-length" in given else ""
            raise usage_error(f"{', '.join(given)} apply to --lines only{hint}")


def _line_cleanup(*, raw: bool, median: int | None, lengths: dict[str, str | None]) -> LineCleanup:
    """The library's default cleanup (or none with --no-cleanup), with the options given on top."""
    from dataclasses import replace

    from icetools.vectorize import DEFAULT_LINE_CLEANUP, RAW_LINES, parse_length

    given: dict[str, Any] = {name: parse_length(text, name=name) for name, text in lengths.items() if text is not None}
    if median is not None:
        given["median_size"] = median
    return replace(RAW_LINES if raw else DEFAULT_LINE_CLEANUP, **given)


@app.command("vectorize")
@guarded
def vectorize_command(
    raster: Annotated[Path, typer.Argument(metavar="RASTER", help="Predicted raster: classes (integers), SIC 0..1, or a line probability/mask (one raster; a Makefile rule per file runs several in parallel).")],
    output: Annotated[str, typer.Option("-o", "--output", metavar="OUT", help="Vector file: .gpkg, .geojson, .fgb or .shp (or -f); '-' writes GeoJSON to stdout.")],
    fmt: Format = None,
    band: Annotated[str, typer.Option("--band", help="Band name (description) or 1-based index.")] = "1",
    threshold: Annotated[Optional[float], typer.Option("--threshold", callback=_finite, help="Polygons: two classes, below / at-or-above T. Lines: the mask is >= T (default 0.5).")] = None,
    bins: Annotated[Optional[str], typer.Option("--bins", callback=_checked(_bins), help="Class edges, e.g. 0.1,0.4,0.7,0.9: class i holds edge[i-1] <= value < edge[i].")] = None,
    min_area: Annotated[float, typer.Option("--min-area", min=0.0, help="Sieve away regions smaller than this, in map units squared (m2 for GCP rasters).")] = 0.0,
    min_area_px: Annotated[int, typer.Option("--min-area-px", min=0, help="Sieve away regions with fewer pixels than this.")] = 0,
    simplify: Annotated[float, typer.Option("--simplify", min=0.0, help="Simplification tolerance in map units (m for GCP rasters); polygons keep their shared edges.")] = 0.0,
    connectivity: Annotated[int, typer.Option("--connectivity", callback=_connectivity, help="4 or 8. 8-connectivity yields invalid polygons (pixels touching at a corner), by GDAL's design.")] = 4,
    lines: Annotated[bool, typer.Option("--lines", help="Skeleton lines of a mask (grounding lines) instead of polygons.")] = False,
    min_length: Annotated[float, typer.Option("--min-length", min=0.0, help="Lines: drop each line (between junctions or ends) shorter than this, in map units (m for GCP rasters), after the cleanup.")] = 0.0,
    median: Annotated[Optional[int], typer.Option("--median", metavar="PIXELS", callback=_median, help="Lines: median filter window in pixels (odd) on the raster before the threshold; 1 = off (default). 5-11 cleans a model's probability map; lines thinner than about half the window vanish.")] = None,
    spur: Annotated[Optional[str], typer.Option("--spur", metavar="LENGTH", callback=_length("spur_length"), help=f"Lines: prune spurs (a branch from a junction to a free end) shorter than this; {LENGTH_HELP}. Default 5px; 0 = off.")] = None,
    min_piece: Annotated[Optional[str], typer.Option("--min-piece", metavar="LENGTH", callback=_length("min_piece_length"), help="Lines: drop connected pieces shorter than this in total (a short link inside a network stays); units as --spur. Default 10px; 0 = off.")] = None,
    smooth: Annotated[Optional[str], typer.Option("--smooth", metavar="LENGTH", callback=_length("smooth_sigma"), help="Lines: sigma of a Gaussian smoothing along each line, whose ends and junctions stay put; units as --spur. Default 1.5px; 0 = off.")] = None,
    no_cleanup: Annotated[bool, typer.Option("--no-cleanup", help="Lines: the raw skeleton, no pruning, piece removal or smoothing (cleanup options given with it still apply).")] = False,
    strip_rows: Annotated[int, typer.Option("--strip-rows", min=1, help="Rows read and vectorized at a time; bounds the memory.")] = 1024,
    layer: Layer = None,
    dst_crs: Annotated[Optional[str], typer.Option("--dst-crs", metavar="CRS", callback=_crs, help="Output CRS: EPSG:3413, WKT or PROJ text, or a file to copy it from (a chart .gpkg, a raster, an AI4Arctic .nc: its chart's CRS). Default: the raster's CRS; for a raster with tie points only, the CRS of its scene's chart (predict records it), else EPSG:4326.")] = None,
    overwrite: Overwrite = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Vectorize RASTER into class polygons (class, value_min, value_max, mean, area, n_pixels) or lines (length).

    Lines are cleaned as the grounding-line literature does: optional median filter, skeleton, spurs
    and short pieces pruned, smoothing. Coordinates are in the raster's CRS; rasters with only tie
    points (radar geometry) are written in EPSG:4326; rasters with neither get pixel coordinates and
    no CRS. Nodata and NaN pixels make no feature.
    """
    from icetools.cli.progress import EventBars
    from icetools.errors import IcetoolsError
    from icetools.io.atomic import check_output
    from icetools.io.paths import refuse_overwriting_inputs
    from icetools.vectorize import describe_georeference, parse_bins, vectorize_lines, vectorize_polygons

    target = resolve_output(output, fmt, VECTOR_FORMATS, stdout=True)
    if target.path is not None:
        check_output(target.path, overwrite=overwrite)  # fail before the work, not after it
        refuse_overwriting_inputs([target.path], [raster])
    start = time.perf_counter()
    kind = "lines" if lines else "polygons"
    lengths = {"spur_length": spur, "min_piece_length": min_piece, "smooth_sigma": smooth}
    _check_kind(
        lines,
        polygon_only={"--bins": bins is not None, "--min-area": min_area > 0, "--min-area-px": min_area_px > 0,
                      "--connectivity 8": connectivity == 8},
        line_only={"--min-length": min_length > 0, "--median": median is not None, "--no-cleanup": no_cleanup,
                   **{FLAGS[name]: text is not None for name, text in lengths.items()}},
    )
    try:
        with EventBars({"rows": f"vectorize {kind}"}) as bars:
            if lines:
                frame = vectorize_lines(
                    raster, band=band, threshold=0.5 if threshold is None else threshold, min_length=min_length,
                    simplify=simplify, cleanup=_line_cleanup(raw=no_cleanup, median=median, lengths=lengths),
                    strip_rows=strip_rows, dst_crs=dst_crs, progress=bars,
                )
            else:
                frame = vectorize_polygons(
                    raster, band=band, threshold=threshold, bins=parse_bins(bins) if bins is not None else None,
                    min_area=min_area, min_area_px=min_area_px, simplify=simplify, connectivity=connectivity,
                    strip_rows=strip_rows, dst_crs=dst_crs, progress=bars,
                )
    except IcetoolsError as exc:
        raise type(exc)(in_flags(str(exc))) from None
    georeference = frame.attrs.get("georeference")
    if georeference == "gcps":
        info(f"{raster} has tie points only: coordinates moved through them")
    elif georeference == "none":
        warn(f"{raster} has neither a CRS nor tie points: writing pixel coordinates (x = column, y = row), no CRS")
    elif frame.crs is None:
        warn(f"{raster} has a transform but no CRS: the layer is written without a CRS")
    layer_name = layer or kind
    write_vector(frame, target, layer=layer_name, overwrite=overwrite)
    info(
        f"wrote {target.path or 'GeoJSON to stdout'}: {len(frame)} {kind if len(frame) != 1 else kind[:-1]} in layer '{layer_name}', {describe_georeference(frame)} "
        f"({time.perf_counter() - start:.1f} s)"
    )
