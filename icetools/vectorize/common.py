"""What polygons and lines share: reading a band by strips, and moving pixel-space geometry to the map.

Error messages name the library's parameters in backticks (`threshold`); the CLI turns them into
its flags (``--threshold``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import shapely
from rasterio.windows import Window

from icetools.errors import ConfigError, CRSError, MissingVariableError
from icetools.grid import WGS84, Grid
from icetools.io.crs import crs_from_user_input
from icetools.io.raster import grid_of
from icetools.io.scene import chart_crs_from_attrs
from icetools.io.style import Legend, categorized_qml, line_qml

if TYPE_CHECKING:
    import geopandas as gpd
    import rasterio
    from pyproj import CRS

STRIP_ROWS = 1024
"""Rows read and vectorized at a time: bounds the memory on a 10k x 10k raster."""


def check_strip_rows(strip_rows: int) -> None:
    if strip_rows < 1:
        raise ConfigError("`strip_rows` must be at least 1")


def band_index(dataset: "rasterio.io.DatasetReader", band: int | str, path: Path) -> int:
    """A 1-based band index from an index or a band description."""
    if isinstance(band, str) and band.strip().isdigit():
        band = int(band)
    if isinstance(band, (int, np.integer)):
        if 1 <= band <= dataset.count:
            return int(band)
        raise MissingVariableError(f"{path} has {dataset.count} band(s): `band` {band} is out of range")
    names = list(dataset.descriptions)
    if band in names:
        return names.index(band) + 1
    listed = ", ".join(name or f"#{i}" for i, name in enumerate(names, start=1))
    raise MissingVariableError(f"{path} has no band named '{band}'; bands: {listed}")


def read_rows(dataset: "rasterio.io.DatasetReader", band: int, row0: int, row1: int) -> tuple[np.ndarray, np.ndarray]:
    """Values of rows [row0, row1) and where they are valid (not nodata, not NaN)."""
    values = dataset.read(band, window=Window(0, row0, dataset.width, row1 - row0))
    nodata = dataset.nodatavals[band - 1]
    valid = np.ones(values.shape, dtype=bool)
    if values.dtype.kind == "f":
        valid &= np.isfinite(values)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        valid &= values != nodata
    return values, valid


class Georef:
    """Pixel space -> measure space (map units, or local metres for GCP grids) -> output CRS.

    GCP scenes are measured (area, length, simplification tolerance) in the tie points' local
    azimuthal equidistant projection, in metres, and written in ``dst_crs``, else the CRS of the chart
    the scene came with (``chart_crs``, from the raster's tags), else EPSG:4326. Rasters with a CRS are
    written in it, or reprojected to ``dst_crs``.
    """

    def __init__(self, grid: Grid, *, dst_crs: CRS | None = None, chart_crs: CRS | None = None):
        self.grid = grid
        self.source_crs: CRS | None = None
        self.crs_from = "dst_crs" if dst_crs is not None else "raster"
        if grid.has_gcps:
            self.kind = "gcps"
            self.source_crs = grid.tie_points.local_crs
            if dst_crs is None:
                self.crs_from = "chart" if chart_crs is not None else "tie points"
            self.output_crs = dst_crs or chart_crs or WGS84
            self.pixel_area = grid.pixel_size() ** 2
        elif grid.transform is not None:
            self.kind = "crs" if grid.crs is not None else "transform"
            self.source_crs = grid.crs
            self.output_crs = dst_crs or grid.crs
            t = grid.transform
            self.pixel_area = abs(t.a * t.e - t.b * t.d)
        else:
            self.kind = "none"
            self.output_crs = None
            self.pixel_area = 1.0
        if dst_crs is not None and self.source_crs is None:
            raise CRSError("the raster has neither a CRS nor tie points: `dst_crs` has nothing to reproject from")

    @property
    def metres_per_pixel(self) -> float | None:
        """The pixel size in metres where the measure space is metric (GCPs, a CRS in metres), else None."""
        if self.kind == "gcps":
            return math.sqrt(self.pixel_area)
        if self.kind != "crs":
            return None
        from pyproj import CRS

        crs = CRS.from_user_input(self.grid.crs)  # rasterio's CRS or pyproj's
        if crs.is_projected and crs.axis_info and crs.axis_info[0].unit_name in ("metre", "meter"):
            return math.sqrt(self.pixel_area)
        return None

    def to_measure(self, geoms: np.ndarray) -> np.ndarray:
        if self.kind == "gcps":
            mapping = self.grid.tie_points
            return shapely.transform(geoms, lambda xy: np.stack(mapping.pixel_to_local(xy[:, 0], xy[:, 1]), axis=-1))
        if self.kind in ("crs", "transform"):
            a, b, c, d, e, f = tuple(self.grid.transform)[:6]
            return shapely.transform(
                geoms, lambda xy: np.stack([a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f], axis=-1)
            )
        return geoms

    def to_output(self, geoms: np.ndarray) -> np.ndarray:
        """Measure space -> the output CRS, vertex by vertex (as the tie points move them)."""
        from pyproj import CRS, Transformer

        if self.source_crs is None or CRS.from_user_input(self.source_crs).equals(CRS.from_user_input(self.output_crs)):
            return geoms
        move = Transformer.from_crs(self.source_crs, self.output_crs, always_xy=True)
        return shapely.transform(geoms, lambda xy: np.stack(move.transform(xy[:, 0], xy[:, 1]), axis=-1))


def georef_of(dataset: "rasterio.io.DatasetReader", dst_crs: object = None) -> Georef:
    """The Georef of an open raster: ``dst_crs`` (see :func:`icetools.io.crs.crs_from_user_input`) or,
    for GCP rasters, the chart CRS its tags name (predict writes ``chart_crs``; synth ``ice_service``)."""
    wanted = crs_from_user_input(dst_crs) if dst_crs is not None else None
    grid = grid_of(dataset)
    chart = chart_crs_from_attrs(dataset.tags()) if grid.has_gcps and wanted is None else None
    return Georef(grid, dst_crs=wanted, chart_crs=chart)


def make_frame(
    columns: dict, geoms: np.ndarray, georef: Georef, *, layer_kind: str, legend: Legend | None = None
) -> "gpd.GeoDataFrame":
    """The layer, with what its writer needs in ``attrs``: the georeference and (polygons) the legend
    of its classes, from which :func:`layer_style` draws the QGIS style."""
    import geopandas as gpd

    frame = gpd.GeoDataFrame(columns, geometry=list(geoms), crs=georef.output_crs)
    frame.attrs["georeference"] = georef.kind
    frame.attrs["crs_from"] = georef.crs_from
    frame.attrs["kind"] = layer_kind
    if legend is not None:
        frame.attrs["legend"] = legend
    style = layer_style(frame)
    if style is not None:
        frame.attrs["qml"] = style  # what icetools.io.vector.write_layer stores as the layer's QGIS style
    return frame


def layer_style(frame: "gpd.GeoDataFrame") -> str | None:
    """The QGIS style (QML) of a vectorized layer: polygons coloured by class, lines in one colour."""
    if frame.attrs.get("kind") == "lines":
        return line_qml()
    legend = frame.attrs.get("legend")
    return categorized_qml(legend, field="class") if legend is not None else None


def describe_georeference(frame: "gpd.GeoDataFrame") -> str:
    """One phrase for the CLI's summary: where the coordinates come from."""
    kind = frame.attrs.get("georeference", "crs")
    if kind == "none":
        return "pixel coordinates, no CRS"
    crs = frame.crs.to_string() if frame.crs is not None else "map coordinates, no CRS"
    if kind == "gcps":
        how = {"chart": "the CRS of the scene's chart", "dst_crs": "as asked",
               "tie points": "no chart CRS known"}.get(frame.attrs.get("crs_from", ""), "")
        return f"{crs} (through the raster's tie points{'; ' + how if how else ''})"
    return crs
