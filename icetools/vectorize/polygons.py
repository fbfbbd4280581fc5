"""Class polygons of a predicted raster, streamed in full-width strips.

Each strip is classified (integer classes, ``threshold`` or ``bins``), sieved, labelled into
connected components and polygonized by GDAL (rasterio.features.shapes). Pieces that touch a strip
seam are kept aside with their pixel count and value sum, grouped with their same-class neighbours
across the seams by connected component, and joined at the end. Geometry work runs in pixel space,
where every vertex is an integer and every edge horizontal or vertical; coordinates move to map
units (or through the tie points to EPSG:4326) last.

The sieve sees each strip with a halo of rows above and below: the sieve size in pixels, clamped
to 64..512 rows. A component with fewer pixels than the sieve size spans fewer rows, so it lies
whole in the window and is removed exactly as by a whole-raster sieve; a larger one that runs out
of the window shows more pixels than the halo has rows, so it is kept. Only when the sieve size
exceeds 512 pixels can a component that crosses a seam and reaches beyond the halo look small and
be sieved away wrongly. The neighbour that absorbs a sieved speck is chosen by GDAL from the
neighbour sizes seen inside the window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import shapely
from affine import Affine

from icetools.errors import ConfigError, DataError, EmptyInputError
from icetools.io.raster import open_raster
from icetools.io.style import ICE, RGBA, WATER, Category, Legend, class_color, read_rat
from icetools.progress import Progress, report
from icetools.vectorize.common import STRIP_ROWS, band_index, check_strip_rows, georef_of, make_frame, read_rows

if TYPE_CHECKING:
    import geopandas as gpd
    import rasterio

SIEVE_HALO_MIN = 64
SIEVE_HALO_MAX = 512
NODATA_CLASS = int(np.iinfo(np.int32).min)


# --------------------------------------------------------------------------- options


def parse_bins(text: str) -> list[float]:
    """``"0.1,0.4,0.7"`` -> [0.1, 0.4, 0.7]; the edges of the class intervals, strictly increasing."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise ConfigError(f"`bins` '{text}' has no values: give increasing edges, e.g. 0.1,0.4,0.7,0.9")
    try:
        edges = [float(p) for p in parts]
    except ValueError:
        raise ConfigError(f"`bins` '{text}' is not a comma-separated list of numbers, e.g. 0.1,0.4,0.7,0.9") from None
    _check_edges(edges, f"`bins` '{text}'")
    return edges


def _check_edges(edges: Sequence[float], what: str) -> None:
    if not all(math.isfinite(e) for e in edges):
        raise ConfigError(f"{what} contains a non-finite edge: give finite numbers")
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise ConfigError(f"{what} must be strictly increasing, e.g. 0.1,0.4,0.7,0.9")


@dataclass(frozen=True)
class _Classifier:
    """Turns raster values into int32 classes; ``edges`` None means the integers are the classes."""

    edges: np.ndarray | None

    def classify(self, values: np.ndarray, valid: np.ndarray, *, path: Path) -> np.ndarray:
        if self.edges is None:
            if valid.any():
                lo, hi = int(values[valid].min()), int(values[valid].max())
                if lo <= NODATA_CLASS or hi > np.iinfo(np.int32).max:
                    raise DataError(
                        f"{path}: class values {lo}..{hi} do not fit in 32 bits: use `bins` or `threshold`"
                    )
            classes = values.astype(np.int32)
        else:
            # Class i holds edges[i-1] <= value < edges[i], like np.digitize.
            classes = np.searchsorted(self.edges, values, side="right").astype(np.int32)
        classes[~valid] = NODATA_CLASS
        return classes

    def intervals(self, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """value_min / value_max of each class's interval; open ends are NaN (empty in the file)."""
        edges = np.concatenate([[np.nan], self.edges, [np.nan]])
        return edges[classes], edges[classes + 1]


def _classifier(dtype: str, *, threshold: float | None, bins: Sequence[float] | None, path: Path) -> _Classifier:
    if threshold is not None and bins is not None:
        raise ConfigError("pass either `threshold` or `bins`, not both")
    if threshold is not None:
        if not math.isfinite(threshold):
            raise ConfigError(f"`threshold` {threshold} is not a finite number")
        return _Classifier(np.array([float(threshold)]))
    if bins is not None:
        edges = [float(b) for b in bins]
        if not edges:
            raise ConfigError("`bins` is empty: give increasing edges, e.g. 0.1,0.4,0.7,0.9")
        _check_edges(edges, "`bins`")
        return _Classifier(np.array(edges))
    if np.dtype(dtype).kind not in "iub":
        raise DataError(
            f"{path} is a {dtype} raster, not classes: pass `threshold` T (two classes) or `bins` a,b,c (intervals)"
        )
    return _Classifier(None)


def _check_connectivity(connectivity: int) -> None:
    if connectivity not in (4, 8):
        raise ConfigError(f"`connectivity` must be 4 or 8, not {connectivity}")


# --------------------------------------------------------------------------- polygons


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique by sorting: numpy 2.4's hash-based np.unique is ~70x slower on millions of int64."""
    ordered = np.sort(values, kind="stable")
    if len(ordered) == 0:
        return ordered
    return ordered[np.concatenate([[True], ordered[1:] != ordered[:-1]])]


def _shapes_to_polygons(labels: np.ndarray, *, connectivity: int, row0: int) -> tuple[np.ndarray, np.ndarray]:
    """GDAL's polygons of a label strip, in pixel space, with the label each one carries.

    Building the geometries from one flat coordinate array is several times faster than
    shapely.geometry.shape per polygon, which converts every vertex in Python.
    """
    from itertools import chain

    from rasterio.features import shapes

    values, ring_counts, vertex_counts, rings = [], [], [], []
    for geojson, value in shapes(labels, mask=labels > 0, connectivity=connectivity,
                                 transform=Affine.translation(0, row0)):
        polygon_rings = geojson["coordinates"]
        values.append(value)
        ring_counts.append(len(polygon_rings))
        vertex_counts.extend(len(ring) for ring in polygon_rings)
        rings.extend(polygon_rings)
    if not values:
        return np.zeros(0, dtype=object), np.zeros(0, dtype=np.int64)
    coords = np.fromiter(chain.from_iterable(chain.from_iterable(rings)), dtype="float64",
                         count=2 * sum(vertex_counts)).reshape(-1, 2)
    offsets = (np.concatenate([[0], np.cumsum(vertex_counts)]), np.concatenate([[0], np.cumsum(ring_counts)]))
    geoms = shapely.from_ragged_array(shapely.GeometryType.POLYGON, coords, offsets)
    return geoms, np.asarray(values).astype(np.int64)


def _union_groups(geoms: np.ndarray, group: np.ndarray, n_groups: int, *, exact: bool) -> np.ndarray:
    """One geometry per group: the union of its members (pixel space, integer vertices).

    ``exact`` uses the overlay (shapely.union_all): robust for any input, but slow on an
    open-water polygon with thousands of holes. Otherwise the members must be the 4-connected
    seam pieces of one component: a hole of a piece lies inside its strip, away from the seams,
    so it is a hole of the union as it stands. Only the hole-free shells are joined, by a
    coverage union (after add_shared_vertices, shared edges simply cancel: no overlay), and the
    pieces' holes are put back.
    """
    order = np.argsort(group, kind="stable")
    starts = np.searchsorted(group[order], np.arange(n_groups + 1))
    sizes = np.diff(starts)
    out = np.empty(n_groups, dtype=object)
    single = sizes == 1
    out[single] = geoms[order[starts[:-1][single]]]
    multi = np.flatnonzero(~single)
    if len(multi) == 0:
        return out
    members = np.concatenate([order[starts[k] : starts[k + 1]] for k in multi])
    bounds = np.concatenate([[0], np.cumsum(sizes[multi])])
    if exact:
        for i, k in enumerate(multi):
            out[k] = shapely.union_all(geoms[members[bounds[i] : bounds[i + 1]]])
        return out
    rings, owner = shapely.get_rings(geoms[members], return_index=True)
    is_shell = np.concatenate([[True], owner[1:] != owner[:-1]])
    shells = add_shared_vertices(shapely.polygons(rings[is_shell]))
    hole_owner = owner[~is_shell]
    holes = rings[~is_shell]
    hole_bounds = np.searchsorted(hole_owner, bounds)
    for i, k in enumerate(multi):
        joined = shapely.coverage_union_all(shells[bounds[i] : bounds[i + 1]])
        kept = holes[hole_bounds[i] : hole_bounds[i + 1]]
        if joined.geom_type != "Polygon":  # not expected for 4-connected pieces; stay correct anyway
            out[k] = shapely.union_all(geoms[members[bounds[i] : bounds[i + 1]]])
        elif len(kept):
            out[k] = shapely.Polygon(joined.exterior, [*joined.interiors, *kept])
        else:
            out[k] = joined
    return out


class _PolygonPieces:
    """Polygons found strip by strip; pieces on a seam wait to be joined with their neighbours."""

    def __init__(self, connectivity: int):
        self.connectivity = connectivity
        self.done: dict[str, list[np.ndarray]] = {"geom": [], "cls": [], "sum": [], "count": []}
        self.open: dict[str, list[np.ndarray]] = {"geom": [], "cls": [], "sum": [], "count": [], "gid": []}
        self.pairs: list[np.ndarray] = []
        self.offset = 0
        self.last_row: tuple[np.ndarray, np.ndarray] | None = None

    def add_strip(self, classes: np.ndarray, values: np.ndarray, *, row0: int, last: bool) -> None:
        from skimage.measure import label

        labels = label(classes, background=NODATA_CLASS, connectivity=1 if self.connectivity == 4 else 2)
        n_labels = int(labels.max())
        if n_labels >= np.iinfo(np.int32).max:
            raise DataError("a strip has more than 2^31 regions: lower `strip_rows`")
        # rasterio.features.shapes takes int32 at most; label gives int64.
        labels = labels.astype(np.int32)
        flat = labels.ravel()
        counts = np.bincount(flat, minlength=n_labels + 1)
        weights = np.where(labels > 0, values, 0).astype("float64", copy=False).ravel()
        sums = np.bincount(flat, weights=weights, minlength=n_labels + 1)
        label_class = np.zeros(n_labels + 1, dtype=np.int64)
        label_class[flat] = classes.ravel()
        on_seam = np.zeros(n_labels + 1, dtype=bool)
        if row0 > 0:
            on_seam[labels[0]] = True
        if not last:
            on_seam[labels[-1]] = True
        on_seam[0] = False
        self._pair_across_seam(labels, classes, row0=row0)

        geoms, geom_labels = _shapes_to_polygons(labels, connectivity=self.connectivity, row0=row0)
        order = np.argsort(geom_labels, kind="stable")
        geoms, geom_labels = geoms[order], geom_labels[order]
        unique_labels = _sorted_unique(geom_labels)
        if len(unique_labels) < len(geom_labels):  # a label in several polygons (8-connectivity oddities)
            group = np.searchsorted(unique_labels, geom_labels)
            geoms = _union_groups(geoms, group, len(unique_labels), exact=True)
        for target, chosen in ((self.done, ~on_seam[unique_labels]), (self.open, on_seam[unique_labels])):
            lab = unique_labels[chosen]
            target["geom"].append(geoms[chosen])
            target["cls"].append(label_class[lab])
            target["sum"].append(sums[lab])
            target["count"].append(counts[lab])
            if target is self.open:
                target["gid"].append(lab + self.offset)
        self.last_row = (np.where(labels[-1] > 0, labels[-1].astype(np.int64) + self.offset, 0), classes[-1].copy())
        self.offset += n_labels

    def _pair_across_seam(self, labels: np.ndarray, classes: np.ndarray, *, row0: int) -> None:
        """Global ids of same-class pieces that touch across the seam above this strip."""
        if row0 == 0 or self.last_row is None:
            return
        above_gid, above_cls = self.last_row
        below_gid = np.where(labels[0] > 0, labels[0].astype(np.int64) + self.offset, 0)
        below_cls = classes[0]
        width = labels.shape[1]
        shifts = (0,) if self.connectivity == 4 else (-1, 0, 1)
        for shift in shifts:
            a = slice(max(0, -shift), width - max(0, shift))
            b = slice(max(0, shift), width - max(0, -shift))
            ok = (above_gid[a] > 0) & (below_gid[b] > 0) & (above_cls[a] == below_cls[b])
            if ok.any():
                self.pairs.append(np.unique(np.stack([above_gid[a][ok], below_gid[b][ok]], axis=1), axis=0))

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """All polygons (pixel space), classes, value sums and pixel counts, seam pieces joined."""
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        def joined(parts: dict[str, list[np.ndarray]], key: str, dtype: str) -> np.ndarray:
            return np.concatenate(parts[key]).astype(dtype) if parts[key] else np.zeros(0, dtype=dtype)

        geoms, cls = joined(self.done, "geom", "object"), joined(self.done, "cls", "int64")
        sums, counts = joined(self.done, "sum", "float64"), joined(self.done, "count", "int64")
        gids = joined(self.open, "gid", "int64")
        if len(gids):
            order = np.argsort(gids)
            pairs = np.concatenate(self.pairs) if self.pairs else np.zeros((0, 2), dtype=np.int64)
            # Every seam pixel belongs to an open piece, so each id in a pair has a piece.
            i = order[np.searchsorted(gids, pairs[:, 0], sorter=order)]
            j = order[np.searchsorted(gids, pairs[:, 1], sorter=order)]
            graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(len(gids), len(gids)))
            n_comp, comp = connected_components(graph, directed=False)
            open_cls = joined(self.open, "cls", "int64")
            first = np.full(n_comp, len(gids))
            np.minimum.at(first, comp, np.arange(len(gids)))
            exact = self.connectivity == 8  # 8-connected pieces may be invalid: keep the robust overlay
            geoms = np.concatenate([geoms, _union_groups(joined(self.open, "geom", "object"), comp, n_comp, exact=exact)])
            cls = np.concatenate([cls, open_cls[first]])
            sums = np.concatenate([sums, np.bincount(comp, weights=joined(self.open, "sum", "float64"), minlength=n_comp)])
            counts = np.concatenate([counts, np.bincount(comp, weights=joined(self.open, "count", "int64"),
                                                         minlength=n_comp).round().astype(np.int64)])
        return geoms, cls, sums, counts


def _sieve_size(min_area: float, min_area_px: int, pixel_area: float) -> int:
    """Components with fewer pixels than this are sieved (0 or 1: no sieve)."""
    if min_area < 0 or min_area_px < 0:
        raise ConfigError("`min_area` and `min_area_px` must not be negative")
    if min_area > 0 and min_area_px > 0:
        raise ConfigError("pass either `min_area` (map units squared) or `min_area_px` (pixels), not both")
    if min_area_px > 0:
        return int(min_area_px)
    if min_area > 0:
        # Keep components whose area is at least min_area: n * pixel_area >= min_area.
        return int(math.ceil(min_area / pixel_area - 1e-9))
    return 0


def add_shared_vertices(geoms: np.ndarray) -> np.ndarray:
    """Make a pixel-space polygon coverage edge-matched, as coverage_simplify needs.

    GDAL writes a vertex only where a ring turns, so where a third polygon meets a straight edge
    (a T-junction) the edge lacks the vertex its neighbours have. Every edge here is horizontal
    or vertical with integer vertices, so the missing vertices are found by binary search among
    all vertices of the coverage, in one vectorised pass instead of a costly noding overlay.
    """
    if len(geoms) == 0:
        return geoms
    geom_type, coords, offsets = shapely.to_ragged_array(geoms)
    ring_offsets = np.asarray(offsets[0])
    x0, y0 = np.floor(coords.min(axis=0))
    xi = np.rint(coords[:, 0] - x0).astype(np.int64)
    yi = np.rint(coords[:, 1] - y0).astype(np.int64)
    x_span, y_span = int(xi.max()) + 1, int(yi.max()) + 1
    h_nodes = _sorted_unique(yi * x_span + xi)  # sorted along rows
    v_nodes = _sorted_unique(xi * y_span + yi)  # sorted along columns
    n = len(coords)
    starts = np.ones(n, dtype=bool)
    starts[ring_offsets[1:] - 1] = False  # the closing vertex of each ring starts no edge
    nxt = np.minimum(np.arange(n) + 1, n - 1)
    # Edges one pixel long (most of a staircase) cannot hold a vertex inside: skip their searches.
    horizontal = starts & (yi == yi[nxt]) & (np.abs(xi - xi[nxt]) > 1)
    vertical = starts & (xi == xi[nxt]) & (np.abs(yi - yi[nxt]) > 1)
    lo = np.zeros(n, dtype=np.int64)
    hi = np.zeros(n, dtype=np.int64)
    h_key_lo = yi * x_span + np.minimum(xi, xi[nxt])
    h_key_hi = yi * x_span + np.maximum(xi, xi[nxt])
    v_key_lo = xi * y_span + np.minimum(yi, yi[nxt])
    v_key_hi = xi * y_span + np.maximum(yi, yi[nxt])
    lo[horizontal] = np.searchsorted(h_nodes, h_key_lo[horizontal], side="right")
    hi[horizontal] = np.searchsorted(h_nodes, h_key_hi[horizontal], side="left")
    lo[vertical] = np.searchsorted(v_nodes, v_key_lo[vertical], side="right")
    hi[vertical] = np.searchsorted(v_nodes, v_key_hi[vertical], side="left")
    inserted = np.maximum(hi - lo, 0)
    if inserted.sum() == 0:
        return geoms
    out_pos = np.concatenate([[0], np.cumsum(1 + inserted)])
    new_coords = np.empty((int(out_pos[-1]), 2), dtype="float64")
    new_coords[out_pos[:-1]] = coords
    edge = np.repeat(np.arange(n), inserted)
    step = np.arange(len(edge)) - np.repeat(np.cumsum(inserted) - inserted, inserted)
    increasing = np.where(horizontal, xi[nxt] > xi, yi[nxt] > yi)[edge]
    rank = np.where(increasing, lo[edge] + step, hi[edge] - 1 - step)
    is_h = horizontal[edge]
    node_x = np.empty(len(edge), dtype=np.int64)
    node_y = np.empty(len(edge), dtype=np.int64)
    key = h_nodes[rank[is_h]]
    node_y[is_h], node_x[is_h] = key // x_span, key % x_span
    key = v_nodes[rank[~is_h]]
    node_x[~is_h], node_y[~is_h] = key // y_span, key % y_span
    dest = out_pos[edge] + 1 + step
    new_coords[dest, 0] = node_x + x0
    new_coords[dest, 1] = node_y + y0
    new_offsets = (out_pos[ring_offsets],) + tuple(offsets[1:])
    result = shapely.from_ragged_array(geom_type, new_coords, new_offsets)
    if geom_type == shapely.GeometryType.MULTIPOLYGON:
        single = shapely.get_num_geometries(result) == 1
        result[single] = shapely.get_geometry(result[single], 0)
    return result


def _interval_label(low: float, high: float) -> str:
    if math.isnan(low):
        return f"value < {high:g}"
    if math.isnan(high):
        return f"value >= {low:g}"
    return f"{low:g} <= value < {high:g}"


def _raster_labels(dataset: "rasterio.io.DatasetReader", index: int, path: Path) -> dict[int, tuple[str, RGBA | None]]:
    """Class labels (and colours) the raster states: its RAT (``.aux.xml``), else the ``class_names`` tag
    predict writes (or a ``classes`` tag such as ``0 water, 1 ice``), with its colour table's colours."""
    rat = read_rat(path, index)
    if rat is not None:
        return {c.value: (c.label, c.color) for c in rat.categories}
    try:
        colors = dataset.colormap(index)
    except ValueError:  # no colour table
        colors = {}
    tags = dataset.tags()
    names: dict[int, str] = {}
    if tags.get("class_names"):
        names = dict(enumerate(tags["class_names"].split(",")))
    elif tags.get("classes"):
        pairs = (part.strip().split(" ", 1) for part in tags["classes"].split(","))
        names = {int(p[0]): p[1] for p in pairs if len(p) == 2 and p[0].lstrip("-").isdigit()}
    return {value: (name, colors.get(value)) for value, name in names.items()}


def class_labels(
    classifier: _Classifier, classes: np.ndarray, stated: dict[int, tuple[str, RGBA | None]]
) -> tuple[np.ndarray, Legend]:
    """The ``label`` of each polygon and the legend of the classes present: intervals for a threshold or
    bins (coloured water blue to ice white), else the raster's own labels (or the class number)."""
    present = np.unique(classes)
    categories = []
    for rank, value in enumerate(present.tolist()):
        if classifier.edges is not None:
            low, high = classifier.intervals(np.array([value]))
            label = _interval_label(float(low[0]), float(high[0]))
            share = value / max(len(classifier.edges), 1)
            color = tuple(round(w + (i - w) * share) for w, i in zip(WATER, ICE))
        else:
            label, color = stated.get(value, (str(value), None))
            color = color or class_color(rank)
        categories.append(Category(int(value), label, color))  # type: ignore[arg-type]
    legend = Legend(tuple(categories))
    lookup = {c.value: c.label for c in categories}
    return np.array([lookup[int(v)] for v in classes], dtype=object), legend


def vectorize_polygons(
    path: str | Path,
    *,
    band: int | str = 1,
    threshold: float | None = None,
    bins: Sequence[float] | None = None,
    min_area: float = 0.0,
    min_area_px: int = 0,
    simplify: float = 0.0,
    connectivity: int = 4,
    strip_rows: int = STRIP_ROWS,
    dst_crs: object = None,
    progress: Progress | None = None,
) -> "gpd.GeoDataFrame":
    """Class polygons of a raster with class, label, interval, mean value, area and pixel count.

    ``min_area`` is in map units squared (square metres for GCP scenes); ``simplify`` in map
    units (metres for GCP scenes), applied by coverage simplification so neighbours keep
    their shared edges. 8-connectivity yields invalid polygons (GDAL's design). ``dst_crs``: the
    output CRS (see :class:`Georef` for the default). The frame's ``attrs["legend"]`` holds the
    classes' labels and colours for :func:`layer_style`.
    """
    from rasterio.features import sieve

    path = Path(path)
    _check_connectivity(connectivity)
    if simplify < 0:
        raise ConfigError("`simplify` must not be negative")
    check_strip_rows(strip_rows)
    with open_raster(path) as dataset:
        index = band_index(dataset, band, path)
        classifier = _classifier(dataset.dtypes[index - 1], threshold=threshold, bins=bins, path=path)
        georef = georef_of(dataset, dst_crs)
        stated = _raster_labels(dataset, index, path) if classifier.edges is None else {}
        sieve_px = _sieve_size(min_area, min_area_px, georef.pixel_area)
        halo = min(max(sieve_px, SIEVE_HALO_MIN), SIEVE_HALO_MAX) if sieve_px > 1 else 0
        height = dataset.height
        pieces = _PolygonPieces(connectivity)
        for row0 in range(0, height, strip_rows):
            row1 = min(height, row0 + strip_rows)
            top, bottom = max(0, row0 - halo), min(height, row1 + halo)
            values, valid = read_rows(dataset, index, top, bottom)
            classes = classifier.classify(values, valid, path=path)
            if sieve_px > 1:
                classes = sieve(classes, size=sieve_px, connectivity=connectivity, mask=valid)
            centre = slice(row0 - top, row1 - top)
            pieces.add_strip(classes[centre], values[centre], row0=row0, last=row1 == height)
            report(progress, "rows", row1, height)
    geoms, classes, sums, counts = pieces.finish()
    if len(geoms) == 0:
        raise EmptyInputError(f"{path}: band {index} has no valid pixel (all nodata or NaN); nothing written")
    if simplify > 0:
        geoms = georef.to_measure(add_shared_vertices(geoms))
        geoms = shapely.coverage_simplify(geoms, simplify, simplify_boundary=True)
    else:
        geoms = georef.to_measure(geoms)
    labels, legend = class_labels(classifier, classes, stated)
    columns: dict[str, np.ndarray] = {"class": classes.astype(np.int32), "label": labels}
    if classifier.edges is not None:
        columns["value_min"], columns["value_max"] = classifier.intervals(classes)
    columns["mean"] = sums / counts
    columns["area"] = shapely.area(geoms)
    columns["n_pixels"] = counts
    frame = make_frame(columns, georef.to_output(geoms), georef, layer_kind="polygons", legend=legend)
    frame.attrs["sources"] = [str(path)]  # write_layer never writes over them
    return frame
