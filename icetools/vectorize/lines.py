"""Centre lines of a mask (grounding lines): skeletonized, traced, split at junctions, cleaned.

The raster is read in full-width strips; each is thresholded (after an optional median filter) and
skeletonized (scikit-image), the skeleton traced into lines split at junctions and ends, and pieces
cut by a seam joined with shapely.line_merge. Pruning, short-piece removal and smoothing
(:mod:`icetools.vectorize.cleanup`) then run on the whole set of lines, in pixel space.

The skeleton of a strip is computed with LINE_HALO rows of context (plus the median filter's reach,
so the filtered mask is exact there), enough for lines a few tens of pixels thick; thicker blobs
may get a slightly different skeleton near a seam.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import shapely

from icetools.errors import ConfigError, EmptyInputError
from icetools.io.raster import open_raster
from icetools.progress import Progress, report
from icetools.vectorize.cleanup import RAW_LINES, LineCleanup, clean_lines, majority_mask, merge_lines
from icetools.vectorize.common import STRIP_ROWS, band_index, check_strip_rows, georef_of, make_frame, read_rows

if TYPE_CHECKING:
    import geopandas as gpd
    import rasterio

LINE_HALO = 64

DEFAULT_LINE_CLEANUP = LineCleanup()
"""What ``vectorize --lines`` does unless told otherwise: spurs under 5 px pruned, pieces under 10 px
dropped, a Gaussian of sigma 1.5 px along the lines; no median filter."""


def _skeleton_graph(skeleton: np.ndarray) -> tuple[np.ndarray, dict[tuple[int, int], np.ndarray]]:
    """Node degrees and the neighbour presence per direction, for an 8-connected skeleton.

    A diagonal step is dropped where the two pixels share a 4-neighbour on the skeleton: the
    path through that neighbour already connects them, and keeping both would turn every
    staircase corner into a false junction.
    """
    padded = np.pad(skeleton, 1)
    rows, cols = skeleton.shape

    def shifted(dr: int, dc: int) -> np.ndarray:
        return padded[1 + dr : 1 + dr + rows, 1 + dc : 1 + dc + cols]

    step = {(dr, dc): shifted(dr, dc) for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))}
    for dr, dc in ((-1, -1), (-1, 1), (1, -1), (1, 1)):
        step[(dr, dc)] = shifted(dr, dc) & ~shifted(dr, 0) & ~shifted(0, dc)
    degree = np.zeros(skeleton.shape, dtype=np.uint8)
    for present in step.values():
        degree += present
    degree[~skeleton] = 0
    return degree, step


def _trace_strip(skeleton: np.ndarray, *, top: int, row0: int, row1: int) -> tuple[np.ndarray, np.ndarray]:
    """Trace the skeleton edges owned by rows [row0, row1) into pixel paths.

    An edge belongs to the strip of its upper pixel (the left one when level), so pieces of
    neighbouring strips meet in a shared pixel of the seam row, where line_merge joins them.
    Lines split at junctions (more than two neighbours) and ends. Returns vertex coordinates
    (pixel centres, pixel space) and the path index of each vertex.
    """
    degree, step = _skeleton_graph(skeleton)
    width = skeleton.shape[1]
    first, stop_row = row0 - top, min(row1 + 1, top + skeleton.shape[0]) - top
    node_rows, node_cols = np.nonzero(skeleton[first:stop_row])
    node_rows += first
    linear = node_rows.astype(np.int64) * width + node_cols
    owned = node_rows < row1 - top
    u_parts, v_parts = [], []
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
        has = owned & step[(dr, dc)][node_rows, node_cols]
        source = np.flatnonzero(has)
        u_parts.append(source)
        v_parts.append(np.searchsorted(linear, linear[source] + dr * width + dc))
    u, v = np.concatenate(u_parts), np.concatenate(v_parts)
    if len(u) == 0:
        return np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
    n_nodes = len(linear)
    owned_degree = np.bincount(u, minlength=n_nodes) + np.bincount(v, minlength=n_nodes)
    stop = (owned_degree != 2) | (degree[node_rows, node_cols] != 2)
    # Adjacency lists over owned edges (CSR).
    ends = np.concatenate([u, v])
    others = np.concatenate([v, u])
    edge_ids = np.concatenate([np.arange(len(u)), np.arange(len(u))])
    order = np.argsort(ends, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(ends, minlength=n_nodes))]).tolist()
    nbr, eid = others[order].tolist(), edge_ids[order].tolist()
    is_stop = stop.tolist()
    used = bytearray(len(u))
    paths: list[list[int]] = []

    def walk(start: int, k: int) -> list[int]:
        # Follow degree-2 nodes from `start` along adjacency slot k until a stop node (or back to start).
        used[eid[k]] = 1
        path, cur = [start], nbr[k]
        while not is_stop[cur] and cur != start:
            path.append(cur)
            a = indptr[cur]
            k = a if not used[eid[a]] else a + 1
            used[eid[k]] = 1
            cur = nbr[k]
        path.append(cur)
        return path

    # Python loop: tracing is sequential by nature; it costs about a microsecond per skeleton pixel.
    for s in np.flatnonzero(stop & (owned_degree > 0)).tolist():
        for k in range(indptr[s], indptr[s + 1]):
            if not used[eid[k]]:
                paths.append(walk(s, k))
    for e in range(len(u)):  # closed loops with no stop node
        if not used[e]:
            start = int(u[e])
            k = indptr[start] if eid[indptr[start]] == e else indptr[start] + 1
            paths.append(walk(start, k))
    flat = np.fromiter((i for p in paths for i in p), dtype=np.int64)
    index = np.repeat(np.arange(len(paths)), [len(p) for p in paths])
    xy = np.stack([node_cols[flat] + 0.5, node_rows[flat] + top + 0.5], axis=-1).astype("float64")
    return xy, index


def _pieces(xy: np.ndarray, index: np.ndarray) -> np.ndarray:
    if len(index) == 0:
        return np.zeros(0, dtype=object)
    return shapely.linestrings(xy, indices=index)


@dataclass
class _Traced:
    """What the strips gave: pixel-space pieces, and whether any pixel passed the threshold (and the filter)."""

    pieces: list[np.ndarray]
    above_threshold: bool = False
    after_filter: bool = False


def _strip_mask(
    dataset: "rasterio.io.DatasetReader", index: int, *, row0: int, row1: int, threshold: float, median_size: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """The raw and the filtered mask of rows [top, bottom) around strip [row0, row1), and ``top``.

    The filter's reach is read beyond the halo, so the filtered mask is exact on every row it returns.
    """
    height = dataset.height
    top, bottom = max(0, row0 - LINE_HALO), min(height, row1 + LINE_HALO)
    reach = median_size // 2
    read_top, read_bottom = max(0, top - reach), min(height, bottom + reach)
    values, valid = read_rows(dataset, index, read_top, read_bottom)
    raw = valid & (values >= threshold)
    rows = slice(top - read_top, bottom - read_top)
    return raw[rows], majority_mask(raw, median_size)[rows], top


def _trace_raster(
    dataset: "rasterio.io.DatasetReader",
    index: int,
    *,
    threshold: float,
    median_size: int,
    strip_rows: int,
    progress: Progress | None,
) -> _Traced:
    from skimage.morphology import skeletonize

    traced = _Traced(pieces=[])
    height = dataset.height
    for row0 in range(0, height, strip_rows):
        row1 = min(height, row0 + strip_rows)
        raw, mask, top = _strip_mask(dataset, index, row0=row0, row1=row1, threshold=threshold, median_size=median_size)
        centre = slice(row0 - top, row1 - top)
        traced.above_threshold = traced.above_threshold or bool(raw[centre].any())
        traced.after_filter = traced.after_filter or bool(mask[centre].any())
        traced.pieces.append(_pieces(*_trace_strip(skeletonize(mask), top=top, row0=row0, row1=row1)))
        report(progress, "rows", row1, height)
    return traced


def _check_line_options(threshold: float, min_length: float, simplify: float) -> None:
    if not math.isfinite(threshold):
        raise ConfigError(f"`threshold` {threshold} is not a finite number")
    if min_length < 0 or simplify < 0:
        raise ConfigError("`min_length` and `simplify` must not be negative")


def _clean_or_explain(traced: _Traced, cleanup: LineCleanup, *, path: Path, threshold: float, band: int) -> np.ndarray:
    """The cleaned pixel-space lines, or an EmptyInputError that says which step left none."""
    if not traced.above_threshold:
        raise EmptyInputError(f"{path}: no pixel at or above threshold {threshold} in band {band}; nothing written")
    if not traced.after_filter:
        raise EmptyInputError(
            f"{path}: the median filter (`median_size` {cleanup.median_size}) left no pixel at or above threshold "
            f"{threshold}: lower `median_size` (lines thinner than about half its window vanish); nothing written"
        )
    lines = merge_lines(np.concatenate(traced.pieces))
    if len(lines) == 0:
        raise EmptyInputError(f"{path}: the mask has only isolated pixels, no line to trace; nothing written")
    cleaned = clean_lines(lines, cleanup)
    if len(cleaned) == 0:
        raise EmptyInputError(
            f"{path}: all {len(lines)} lines are spurs or pieces shorter than `min_piece_length` "
            f"{cleanup.min_piece_length:g} px; lower it; nothing written"
        )
    return cleaned


def vectorize_lines(
    path: str | Path,
    *,
    band: int | str = 1,
    threshold: float = 0.5,
    min_length: float = 0.0,
    simplify: float = 0.0,
    cleanup: LineCleanup | None = DEFAULT_LINE_CLEANUP,
    strip_rows: int = STRIP_ROWS,
    dst_crs: object = None,
    progress: Progress | None = None,
) -> "gpd.GeoDataFrame":
    """Centre lines of a mask (pixels >= threshold): skeletonized, traced, split at junctions, cleaned.

    ``cleanup`` (see :class:`LineCleanup`; None = the raw skeleton) runs in pixel space; its lengths
    may be :class:`Length` values in metres where the raster's pixels have a size in metres. Then
    ``simplify`` and ``min_length`` (each line on its own) are in map units (metres for GCP scenes).
    Vertices of raw lines sit at pixel centres; the skeleton cuts the corner pixel of a 1-pixel L.
    Progress events: stage ``"rows"``, done/total in raster rows.
    """
    path = Path(path)
    _check_line_options(threshold, min_length, simplify)
    check_strip_rows(strip_rows)
    with open_raster(path) as dataset:
        index = band_index(dataset, band, path)
        georef = georef_of(dataset, dst_crs)
        pixels = (cleanup or RAW_LINES).in_pixels(georef.metres_per_pixel)
        traced = _trace_raster(
            dataset, index, threshold=threshold, median_size=pixels.median_size, strip_rows=strip_rows,
            progress=progress,
        )
    lines = georef.to_measure(_clean_or_explain(traced, pixels, path=path, threshold=threshold, band=index))
    if simplify > 0:
        lines = shapely.simplify(lines, simplify, preserve_topology=True)
    lengths = shapely.length(lines)
    keep = lengths >= min_length
    if not keep.any():
        raise EmptyInputError(
            f"{path}: all {len(lines)} lines are shorter than `min_length` {min_length}; nothing written"
        )
    frame = make_frame({"length": lengths[keep]}, georef.to_output(lines[keep]), georef, layer_kind="lines")
    frame.attrs["sources"] = [str(path)]  # write_layer never writes over them
    return frame


def lines_from_array(
    values: np.ndarray,
    *,
    valid: np.ndarray | None = None,
    threshold: float = 0.5,
    cleanup: LineCleanup | None = DEFAULT_LINE_CLEANUP,
    metres_per_pixel: float | None = None,
) -> np.ndarray:
    """Cleaned centre lines of an in-memory probability or mask array, in pixel coordinates.

    The same steps as :func:`vectorize_lines` on one strip, for a caller that holds the array
    (predict, say); x is the column, y the row, pixel centres at +0.5. ``valid`` defaults to the
    finite values. Returns an array of LineStrings, empty when nothing is left.
    """
    from skimage.morphology import skeletonize

    _check_line_options(threshold, 0.0, 0.0)
    values = np.asarray(values)
    if values.ndim != 2:
        raise ConfigError(f"`values` must be a 2-D array, got shape {values.shape}")
    if valid is None:
        valid = np.isfinite(values) if values.dtype.kind == "f" else np.ones(values.shape, dtype=bool)
    pixels = (cleanup or RAW_LINES).in_pixels(metres_per_pixel)
    with np.errstate(invalid="ignore"):
        mask = majority_mask(valid & (values >= threshold), pixels.median_size)
    pieces = _pieces(*_trace_strip(skeletonize(mask), top=0, row0=0, row1=values.shape[0]))
    return clean_lines(merge_lines(pieces), pixels)
