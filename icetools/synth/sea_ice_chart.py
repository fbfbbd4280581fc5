"""The analyst's chart of a synthetic sea-ice scene: SIGRID-3 polygons drawn where the concentration changes.

Regions follow the true concentration generalised as an analyst generalises it: smoothed over
several km, quantised into the few classes an analyst separates, small regions absorbed, edges
simplified. The polygons then follow the large-scale concentration (the ice edge, the marginal
zone, the pack) but not the meso-scale structure inside them (floe clusters, bands, polynyas), which
the radar shows. Fast ice gets its own polygons (its edge is sharp and known), and each polygon is
coded from its mean true concentration, gathered strip by strip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from pyproj import CRS
from scipy import ndimage

from icetools.sigrid import CODE_FIELDS, encode_ct, format_polygon_codes
from icetools.synth import fields as F
from icetools.synth.sea_ice_surface import CHART_STREAM, CODES_STREAM, SeaIceFields, Strip, local_scale

if TYPE_CHECKING:
    import geopandas as gpd

# Concentration classes an analyst separates (open water, very open, open, close, very close/compact drift);
# a polygon's generalised concentration stays in one class.
CHART_BINS = (0.1, 0.35, 0.65, 0.9)
# Generalisation, in units of local_scale (90 px = 3.6 km at 1024 px, ~180 px on a 10k scene): the
# smoothing's Gaussian scale, the side of the smallest polygon, and the tolerance of edge simplification.
GENERALISATION_SIGMA = 1.0
MIN_POLYGON_SIDE = 2.0
SIMPLIFY_TOLERANCE = 0.1
HEADER_FIELDS = CODE_FIELDS + ("POLY_TYPE",)


@dataclass
class ChartRegion:
    """One chart polygon in pixel space, before it has codes."""

    poly_id: int
    geometry: shapely.Geometry  # pixel space (x = column, y = row)
    is_land: bool


def _merge_small_regions(
    labels: np.ndarray, region_class: np.ndarray, min_cells: np.ndarray, *, land_class: int
) -> np.ndarray:
    """Absorb regions smaller than ``min_cells`` (per class) into a neighbour, as an analyst would.

    A sea region joins the neighbouring sea region of the nearest concentration class (the
    longest shared boundary breaks ties), so merged polygons stay homogeneous; land specks join
    the neighbour they share most boundary with. Smallest first, each inside its bounding box,
    so thousands of specks cost little. ``region_class`` (class per label) is updated in place.
    """
    cross = ndimage.generate_binary_structure(2, 1)
    areas = np.bincount(labels.ravel())
    boxes = {i + 1: s for i, s in enumerate(ndimage.find_objects(labels)) if s is not None}
    largest_minimum = int(min_cells.max())
    height, width = labels.shape
    while True:
        changed = False
        for region in np.argsort(areas, kind="stable"):
            if areas[region] >= largest_minimum:
                break
            if region == 0 or areas[region] == 0 or areas[region] >= min_cells[region_class[region]]:
                continue
            rows, cols = boxes[region]
            r0, r1 = max(rows.start - 1, 0), min(rows.stop + 1, height)
            c0, c1 = max(cols.start - 1, 0), min(cols.stop + 1, width)
            window = labels[r0:r1, c0:c1]
            mask = window == region
            neighbours = window[ndimage.binary_dilation(mask, structure=cross) & ~mask]
            if neighbours.size == 0:
                continue  # the only region in the scene stays
            values, counts = np.unique(neighbours, return_counts=True)
            own = region_class[region]
            if own != land_class and (region_class[values] != land_class).any():
                sea = region_class[values] != land_class
                values, counts = values[sea], counts[sea]
                gap = np.abs(region_class[values].astype(np.int64) - int(own))
                counts = np.where(gap == gap.min(), counts, -1)
            target = int(values[counts.argmax()])
            region_class[region] = region_class[target]
            window[mask] = target
            areas[target] += areas[region]
            areas[region] = 0
            tr, tc = boxes[target]
            boxes[target] = (slice(min(tr.start, rows.start), max(tr.stop, rows.stop)),
                             slice(min(tc.start, cols.start), max(tc.stop, cols.stop)))
            changed = True
        if not changed:
            return labels


def generalisation_px(size: int) -> float:
    """The chart's smoothing scale (Gaussian sigma, pixels): structure finer than this is not charted."""
    return GENERALISATION_SIGMA * local_scale(size)


def min_polygon_px(size: int) -> float:
    """The side (pixels) of the smallest chart polygon: smaller regions join a neighbour."""
    return max(8.0, MIN_POLYGON_SIDE * local_scale(size))


def draw_chart(fields: SeaIceFields, seed: int) -> list[ChartRegion]:
    """Analyst-like regions: C smoothed over several km, quantised into classes, small regions absorbed.

    Fast ice is a class of its own, drawn at its edge: the drift ice beside it is judged without it.
    """
    lay = fields.layout
    h, w = lay.height, lay.width
    fc = F.reduction_factor(min(h, w), target=64, most=8)
    rows = (np.arange(math.ceil(h / fc)) + 0.5) * fc - 0.5
    cols = (np.arange(math.ceil(w / fc)) + 0.5) * fc - 0.5
    rows_c, cols_c = np.minimum(rows, h - 1), np.minimum(cols, w - 1)
    conc, land, fast_weight = fields.sea_at(rows_c, cols_c)
    fast = (fast_weight >= 0.5) & ~land
    sigma = max(generalisation_px(min(h, w)) / fc, 1.0)
    drift = (~fast).astype(np.float32)
    smooth = ndimage.gaussian_filter(conc * drift, sigma, mode="nearest") / np.maximum(
        ndimage.gaussian_filter(drift, sigma, mode="nearest"), np.float32(1e-6)
    )
    classes_map = np.digitize(smooth, CHART_BINS).astype(np.int32)
    land_class = len(CHART_BINS) + 1
    classes_map[fast] = len(CHART_BINS) + 2  # after land: merges prefer the 9+/10 class, as fast ice is 10/10
    classes_map[land] = land_class

    labels = np.zeros(classes_map.shape, dtype=np.int32)
    region_class = [0]
    for cls in np.unique(classes_map):
        lab, n = ndimage.label(classes_map == cls)
        labels[lab > 0] = lab[lab > 0] + len(region_class) - 1
        region_class += [int(cls)] * n
    region_class = np.array(region_class, dtype=np.int32)
    # Land and fast ice keep their own, finer edges (islands, a narrow fast-ice band): they are known, not judged.
    min_cells = np.full(len(CHART_BINS) + 3, max(2, int(round(min_polygon_px(min(h, w)) ** 2 / fc**2))))
    min_cells[land_class:] = max(2, int(round(max(64.0, 0.2 * local_scale(min(h, w)) ** 2) / fc**2)))
    labels = _merge_small_regions(labels, region_class, min_cells, land_class=land_class)

    polys, region_ids = [], []
    for geom, value in rasterio.features.shapes(labels, connectivity=4, transform=Affine.scale(fc)):
        polys.append(shapely.geometry.shape(geom))
        region_ids.append(int(value))
    tolerance = max(2.0 * fc, SIMPLIFY_TOLERANCE * local_scale(min(h, w)))
    simplified = shapely.coverage_simplify(np.array(polys, dtype=object), tolerance=tolerance, simplify_boundary=False)
    scene_box = shapely.box(0, 0, w, h)
    rng = F.rng_for(seed, CHART_STREAM)
    pool = rng.choice(np.arange(1, 8 * len(polys) + 16), size=len(polys), replace=False)
    regions = []
    for pid, geom, region in zip(pool, simplified, region_ids):
        geom = shapely.intersection(shapely.make_valid(geom), scene_box)
        geom = _largest_polygonal(geom)
        if geom is None:
            continue
        regions.append(ChartRegion(poly_id=int(pid), geometry=geom, is_land=bool(region_class[region] == land_class)))
    return regions


def _largest_polygonal(geom: shapely.Geometry) -> shapely.Geometry | None:
    """Keep the polygonal part of a geometry (clipping can leave stray lines or points)."""
    if geom.is_empty:
        return None
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [g for g in getattr(geom, "geoms", []) if g.geom_type in ("Polygon", "MultiPolygon") and not g.is_empty]
    return shapely.union_all(parts) if parts else None


class PolygonStats:
    """Per-polygon sums gathered strip by strip (arrays indexed by polygon id)."""

    def __init__(self, size: int):
        self.size = size
        zeros = lambda: np.zeros(size, dtype=np.float64)  # noqa: E731
        self.valid, self.conc_sum, self.conc_sq = zeros(), zeros(), zeros()
        self.all_sum, self.pixels, self.type_sum, self.ice_pixels = zeros(), zeros(), zeros(), zeros()
        self.fast_pixels = zeros()

    def add(self, ids: np.ndarray, strip: Strip) -> None:
        ids = ids.ravel()
        valid = ~strip.land.ravel()
        truth = strip.truth.ravel()
        n = self.size
        self.valid += np.bincount(ids[valid], minlength=n)
        self.conc_sum += np.bincount(ids[valid], weights=truth[valid], minlength=n)
        self.conc_sq += np.bincount(ids[valid], weights=truth[valid].astype(np.float64) ** 2, minlength=n)
        self.all_sum += np.bincount(ids, weights=strip.concentration.ravel(), minlength=n)
        self.pixels += np.bincount(ids, minlength=n)
        ice = strip.ice.ravel() & valid
        self.ice_pixels += np.bincount(ids[ice], minlength=n)
        self.type_sum += np.bincount(ids[ice], weights=strip.ice_type.ravel()[ice], minlength=n)
        self.fast_pixels += np.bincount(ids[strip.fast.ravel() & valid], minlength=n)

    def mean_std(self, pid: int) -> tuple[float, float]:
        if self.valid[pid] > 0:
            mean = self.conc_sum[pid] / self.valid[pid]
            var = max(self.conc_sq[pid] / self.valid[pid] - mean**2, 0.0)
            return float(mean), float(math.sqrt(var))
        return float(self.all_sum[pid] / max(self.pixels[pid], 1)), 0.0

    def mean_type(self, pid: int) -> float:
        return float(self.type_sum[pid] / self.ice_pixels[pid]) if self.ice_pixels[pid] > 0 else -1.0

    def mostly_fast(self, pid: int) -> bool:
        return bool(self.valid[pid] > 0 and self.fast_pixels[pid] > 0.5 * self.valid[pid])


_STAGES = ("87", "91", "93", "95")  # thin, medium, thick first-year, old ice
_FORMS = ("02", "03", "04", "05", "06", "07")  # ice cakes, small, medium, big, vast, giant floes
FAST_ICE_FORM = "08"


def sigrid_codes(
    mean: float, std: float, ice_type: float, rng: np.random.Generator, *, fast_ice: bool = False
) -> dict[str, str]:
    """SIGRID-3 codes an analyst would write for a polygon of mean concentration ``mean``."""
    codes = {k: "-9" for k in HEADER_FIELDS}
    if mean < 0.05:
        codes.update(CT="01", SA="98", POLY_TYPE="W")
        return codes
    interval = 0.15 < mean < 0.9 and (std > 0.07 or rng.random() < 0.3)
    ct = encode_ct(mean, spread=2.0 if interval else 0.0)
    stage = int(np.clip(np.digitize(ice_type, (-0.7, 0.0, 0.7)), 0, 3))
    form = int(np.clip(np.digitize(mean, (0.25, 0.45, 0.7, 0.9, 0.97)), 0, 5))
    if fast_ice:
        codes.update(CT=ct, SA=_STAGES[stage], FA=FAST_ICE_FORM, CF=f"{FAST_ICE_FORM}-9", POLY_TYPE="I")
        return codes
    codes.update(CT=ct, SA=_STAGES[stage], FA=_FORMS[form], CF=f"{_FORMS[form]}-9", POLY_TYPE="I")
    tenths = int(round(mean * 10))
    if tenths >= 5 and stage > 0 and rng.random() < 0.5:
        older = max(1, int(round(tenths * rng.uniform(0.3, 0.7))))
        younger = max(1, tenths - older)
        fb = _FORMS[max(form - 1, 0)]
        codes.update(
            CA=f"{older * 10:02d}", CB=f"{younger * 10:02d}", SB=_STAGES[stage - 1], FB=fb, CF=f"{_FORMS[form]}{fb}"
        )
    return codes


def chart_codes(regions: list[ChartRegion], stats: PolygonStats, seed: int) -> dict[int, dict[str, str | None]]:
    """Codes per polygon id; land polygons get None (NULL in the GeoPackage, -9 in polygon_codes)."""
    rng = F.rng_for(seed, CODES_STREAM)
    out: dict[int, dict[str, str | None]] = {}
    for region in regions:
        if region.is_land:
            out[region.poly_id] = {k: None for k in CODE_FIELDS} | {"POLY_TYPE": "L"}
            continue
        mean, std = stats.mean_std(region.poly_id)
        out[region.poly_id] = sigrid_codes(
            mean, std, stats.mean_type(region.poly_id), rng, fast_ice=stats.mostly_fast(region.poly_id)
        )
    return out


def polygon_code_rows(codes: dict[int, dict[str, str | None]]) -> list[str]:
    """AI4Arctic ``polygon_codes`` rows (header first); NULL is written as -9 there."""
    rows = [{"poly_id": pid, **{k: ("-9" if v is None else v) for k, v in c.items()}} for pid, c in sorted(codes.items())]
    return format_polygon_codes(rows)


def chart_frame(
    regions: list[ChartRegion],
    codes: dict[int, dict[str, str | None]],
    to_map: Callable[[np.ndarray], np.ndarray],
    crs: CRS,
    *,
    step: float,
) -> "gpd.GeoDataFrame":
    """The chart as a CIS-style GeoDataFrame: poly_id, text codes (NULL on land), AREA, PERIMETER.

    Edges are densified to ``step`` pixels first, so they stay where they were drawn after the
    nonlinear move from pixel space to the chart's CRS.
    """
    import geopandas as gpd

    geoms = shapely.segmentize(np.array([r.geometry for r in regions], dtype=object), step)
    geoms = shapely.transform(geoms, to_map)
    geoms = shapely.make_valid(geoms)
    records = {"poly_id": np.array([r.poly_id for r in regions], dtype=np.int64)}
    for key in HEADER_FIELDS:
        records[key] = [codes[r.poly_id][key] for r in regions]
    records["AREA"] = shapely.area(geoms)
    records["PERIMETER"] = shapely.length(shapely.boundary(geoms))
    return gpd.GeoDataFrame(records, geometry=list(geoms), crs=crs)
