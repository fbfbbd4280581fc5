"""Predicted rasters -> vectors an analyst opens in QGIS: class polygons, or cleaned centre lines.

Both stream the raster in full-width strips, so a 10k x 10k scene is never vectorized in one piece
nor held whole in memory:

* :mod:`~icetools.vectorize.polygons`: classes (integers, a threshold or bins), sieved, polygonized
  by GDAL, pieces joined across strip seams.
* :mod:`~icetools.vectorize.lines`: the skeleton of a mask traced into lines split at junctions,
  joined across seams, then cleaned as the grounding-line literature does
  (:mod:`~icetools.vectorize.cleanup`: median filter, spur pruning, short pieces, smoothing).
* :mod:`~icetools.vectorize.common`: band lookup, strip reads and georeferencing.

Errors name the parameters in backticks (`threshold`); the CLI maps them to its flags.
"""

from icetools.vectorize.cleanup import (
    RAW_LINES,
    Length,
    LineCleanup,
    clean_lines,
    drop_short_pieces,
    majority_mask,
    parse_length,
    prune_spurs,
    smooth_lines,
)
from icetools.vectorize.common import STRIP_ROWS, describe_georeference, layer_style
from icetools.vectorize.lines import DEFAULT_LINE_CLEANUP, LINE_HALO, lines_from_array, vectorize_lines
from icetools.vectorize.polygons import add_shared_vertices, parse_bins, vectorize_polygons

__all__ = [
    "DEFAULT_LINE_CLEANUP",
    "LINE_HALO",
    "RAW_LINES",
    "STRIP_ROWS",
    "Length",
    "LineCleanup",
    "add_shared_vertices",
    "clean_lines",
    "describe_georeference",
    "drop_short_pieces",
    "layer_style",
    "lines_from_array",
    "majority_mask",
    "parse_bins",
    "parse_length",
    "prune_spurs",
    "smooth_lines",
    "vectorize_lines",
    "vectorize_polygons",
]
