"""Burn ice-chart polygons and grounding lines onto a scene's grid.

Polygons give two Int32 bands (GeoTIFF bands share one type): ``polygon_id`` (0 = no polygon), exact,
and ``SIC`` (0..1 decoded from SIGRID-3, or any numeric attribute) stored as integers with a GDAL
band scale (1e-4: four decimals; integer attributes as they are), which GDAL, QGIS and icetools
apply on reading; nodata (masked) is -2147483648. Lines give a uint8 ``line`` mask with a colour
table and a raster attribute table.

With ``all_touched`` (the default) every pixel a polygon touches is burned, so neighbouring
polygons claim the same boundary pixels. Rule: polygons are burned from the largest to the
smallest, so **the smaller polygon wins a shared boundary pixel** (a small polygon would
otherwise lose most of its pixels to its neighbours). Without ``all_touched`` a pixel belongs to
the polygon that contains its centre and nothing is shared.

Onto a GCP grid (radar geometry) the geometries are moved into pixel space through the tie
points (after densifying their edges, since the mapping is not affine); the scene is never warped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from rasterio.windows import Window

from icetools.errors import CRSError, DataError, EmptyInputError
from icetools.io.style import LINE_MASK
from icetools.grid import Grid
from icetools.io.paths import refuse_overwriting_inputs
from icetools.io.raster import iter_strips, open_raster_writer
from icetools.io.scene import open_scene
from icetools.io.vector import read_vectors, repair_polygons
from icetools.progress import Progress, report
from icetools.sigrid import decode_ct, undefined_ct_codes, warn_undefined_ct

STRIP_ROWS = 1024
LABELS_NODATA = int(np.iinfo(np.int32).min)
"""Nodata of the Int32 labels raster: never an id, and no attribute value encodes to it."""
VALUE_SCALES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
POLYGON_TYPES = {"Polygon", "MultiPolygon"}
LINE_TYPES = {"LineString", "MultiLineString", "LinearRing"}


@dataclass
class BurnPlan:
    """Geometries in the frame the burner works in, with their values and the transform to pixels."""

    geometries: np.ndarray
    values: np.ndarray
    transform: Affine
    kind: str  # "polygons" or "lines"
    sic_by_id: dict[int, float]


def geometries_on_grid(frame, grid: Grid) -> tuple[np.ndarray, Affine]:
    """Vector geometries in a frame whose affine transform maps them onto the grid's pixels."""
    grid.require_georeference("the scene")
    if grid.has_gcps:
        mapping = grid.tie_points
        local = frame.to_crs(mapping.local_crs).geometry.values
        step = 4 * grid.pixel_size()
        local = shapely.segmentize(np.asarray(local), max_segment_length=step)

        def to_pixels(xy: np.ndarray) -> np.ndarray:
            cols, rows = mapping.local_to_pixel(xy[:, 0], xy[:, 1])
            return np.stack([cols, rows], axis=-1)

        return shapely.transform(local, to_pixels), Affine.identity()
    if grid.crs is None:
        raise CRSError("the scene has an affine transform but no CRS: cannot place the vectors on it")
    return np.asarray(frame.to_crs(grid.crs).geometry.values), grid.transform


def _polygon_ids(frame) -> np.ndarray:
    """Keep the chart's own ``poly_id`` when it is a usable key, so labels and chart stay joinable
    (below 2**24: readers index lookup tables by id)."""
    for column in ("poly_id", "POLY_ID", "polygon_id"):
        if column in frame.columns:
            ids = np.asarray(frame[column])
            if ids.dtype.kind in "iu" and (ids > 0).all() and len(np.unique(ids)) == len(ids) and ids.max() < 2**24:
                return ids.astype("int64")
    return np.arange(1, len(frame) + 1, dtype="int64")


def _polygon_values(frame, attr: str | None, source: Path) -> np.ndarray:
    if attr is not None:
        if attr not in frame.columns:
            raise DataError(f"{source.name} has no attribute '{attr}'; attributes: {', '.join(map(str, frame.columns[:-1]))}")
        column = frame[attr]
        values = np.asarray(column, dtype=object)
        try:
            return np.array([np.nan if v is None else float(v) for v in values], dtype="float64")
        except (TypeError, ValueError):
            raise DataError(f"attribute '{attr}' of {source.name} is not numeric (e.g. {values[0]!r})") from None
    ct_column = next((c for c in frame.columns if c.upper() == "CT"), None)
    if ct_column is None:
        raise DataError(
            f"{source.name} has no SIGRID-3 'CT' attribute: name a numeric attribute to burn instead (attr)"
        )
    type_column = next((c for c in frame.columns if c.upper() == "POLY_TYPE"), None)
    types = list(frame[type_column]) if type_column else [None] * len(frame)
    warn_undefined_ct(undefined_ct_codes(frame[ct_column], types), source.name)
    return np.array([decode_ct(ct, pt) for ct, pt in zip(frame[ct_column], types)], dtype="float64")


def plan_burn(vector: str | Path, grid: Grid, *, attr: str | None = None, layer: str | None = None,
              vector_crs: str | None = None) -> BurnPlan:
    """Read the vectors, check them, and move them onto the grid."""
    vector = Path(vector)
    frame = read_vectors(vector, layer=layer, vector_crs=vector_crs)
    kinds = set(frame.geometry.geom_type)
    if kinds <= POLYGON_TYPES:
        kind = "polygons"
    elif kinds <= LINE_TYPES:
        kind = "lines"
    else:
        raise DataError(f"{vector.name} mixes or holds unsupported geometry types ({', '.join(sorted(kinds))}): "
                        "expected polygons (ice charts) or lines (grounding lines)")
    if kind == "polygons":
        frame = repair_polygons(frame, vector.name)
    geometries, transform = geometries_on_grid(frame, grid)
    inverse = ~transform
    bounds = shapely.bounds(geometries)
    cols = np.array([bounds[:, 0], bounds[:, 2]])
    rows = np.array([bounds[:, 1], bounds[:, 3]])
    pc, pr = inverse @ (cols, rows)
    inside = (np.maximum(pc[0], pc[1]) >= 0) & (np.minimum(pc[0], pc[1]) <= grid.width) & \
             (np.maximum(pr[0], pr[1]) >= 0) & (np.minimum(pr[0], pr[1]) <= grid.height)
    if not inside.any():
        raise EmptyInputError(f"no feature of {vector.name} overlaps the scene: check the CRS (or set vector_crs)")
    if kind == "lines":
        return BurnPlan(geometries, np.ones(len(geometries), dtype="int64"), transform, kind, {})
    ids = _polygon_ids(frame)
    sic = _polygon_values(frame, attr, vector)
    # Largest first, so that smaller polygons are burned last and win shared boundary pixels.
    order = np.argsort(-shapely.area(geometries), kind="stable")
    return BurnPlan(geometries[order], ids[order], transform, kind, dict(zip(ids.tolist(), sic.tolist())))


def burn_strip(plan: BurnPlan, tree: shapely.STRtree, window: Window, width: int, *, all_touched: bool) -> np.ndarray:
    """Burn the geometries that meet one strip; the strip's own transform keeps pixels exact."""
    transform = plan.transform @ Affine.translation(window.col_off, window.row_off)
    x0, y0 = transform @ (0, 0)
    x1, y1 = transform @ (width, window.height)
    hits = np.sort(tree.query(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))))
    dtype = "int32" if plan.kind == "polygons" else "uint8"
    if hits.size == 0:
        return np.zeros((window.height, width), dtype=dtype)
    return rasterio.features.rasterize(
        zip(plan.geometries[hits], plan.values[hits]), out_shape=(window.height, width), transform=transform,
        fill=0, all_touched=all_touched, dtype=dtype,
    )


def encoded_values(values_by_id: dict[int, float]) -> tuple[np.ndarray, float]:
    """(id -> stored Int32 value, GDAL band scale): integers as they are, else the finest of
    :data:`VALUE_SCALES` that holds the largest value; masked (NaN) -> :data:`LABELS_NODATA`."""
    values = np.array(list(values_by_id.values()), dtype="float64")
    finite = values[np.isfinite(values)]
    limit = np.iinfo(np.int32).max - 1
    largest = float(np.abs(finite).max()) if finite.size else 0.0
    if np.all(finite == np.round(finite)) and largest <= limit:
        scale = 1.0
    else:
        scale = next((s for s in VALUE_SCALES if largest / s <= limit), None)
        if scale is None:
            raise DataError(f"attribute values up to {largest:g} do not fit the labels raster (Int32): rescale them")
    lookup = np.full(max(values_by_id) + 1, LABELS_NODATA, dtype="int32")
    ids = np.array(list(values_by_id), dtype="int64")
    keep = np.isfinite(values)
    lookup[ids[keep]] = np.round(values[keep] / scale).astype("int32")
    return lookup, scale


def rasterize_to_file(
    vector: str | Path,
    like: str | Path,
    output: str | Path,
    *,
    attr: str | None = None,
    all_touched: bool = True,
    layer: str | None = None,
    vector_crs: str | None = None,
    overwrite: bool = False,
    strip_rows: int = STRIP_ROWS,
    progress: Progress | None = None,
) -> dict:
    """Rasterize ``vector`` onto the grid of ``like`` and write the labels GeoTIFF strip by strip.

    ``progress`` gets "rows" events: scene rows written of the scene's height.
    """
    refuse_overwriting_inputs([output], [vector, like])
    with open_scene(like) as scene:
        grid = scene.grid
    plan = plan_burn(vector, grid, attr=attr, layer=layer, vector_crs=vector_crs)
    tree = shapely.STRtree(plan.geometries)
    tags = {"source": Path(vector).name, "like": Path(like).name, "all_touched": all_touched,
            "kind": plan.kind, "boundary_rule": "smaller polygon wins shared pixels" if all_touched else "pixel centre"}
    if plan.kind == "polygons":
        tags["attribute"] = attr or "CT (SIGRID-3, decoded)"
        lookup, scale = encoded_values(plan.sic_by_id)
        band_names = ["polygon_id", attr or "SIC"]
        value_tags = {"units": "fraction"} if attr is None else {}
        spec = dict(count=2, dtype="int32", nodata=LABELS_NODATA, categorical=True, scales=(1.0, scale),
                    band_tags=({"role": "chart polygon id, 0 = none"}, value_tags))
    else:
        band_names = ["line"]
        spec = dict(count=1, dtype="uint8", nodata=255, categorical=True, legend=LINE_MASK)
    burned = 0
    with open_raster_writer(output, grid, band_names=band_names, tags=tags, overwrite=overwrite, **spec) as writer:
        for window in iter_strips(grid.height, grid.width, strip_rows):
            strip = burn_strip(plan, tree, window, grid.width, all_touched=all_touched)
            burned += int(np.count_nonzero(strip))
            if plan.kind == "polygons":
                writer.write(np.stack([strip, lookup[strip]]), window)
            else:
                writer.write(strip, window)
            report(progress, "rows", int(window.row_off + window.height), grid.height)
    if burned == 0:
        # The bounding boxes met the scene but no pixel was burned: treat like "outside".
        Path(output).unlink()
        raise EmptyInputError(f"no feature of {Path(vector).name} covers a pixel of the scene; nothing written")
    return {"output": str(output), "kind": plan.kind, "features": len(plan.geometries), "pixels": burned,
            "bands": band_names}
