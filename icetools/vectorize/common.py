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

from icetools.errors import ConfigError, MissingVariableError
from icetools.grid import WGS84, Grid

if TYPE_CHECKING:
    import geopandas as gpd
    import rasterio

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
    azimuthal equidistant projection, in metres, and written in EPSG:4326.
    """

    def __init__(self, grid: Grid):
        self.grid = grid
        if grid.has_gcps:
            self.kind = "gcps"
            self.output_crs = WGS84
            self.pixel_area = grid.pixel_size() ** 2
        elif grid.transform is not None:
            self.kind = "crs" if grid.crs is not None else "transform"
            self.output_crs = grid.crs
            t = grid.transform
            self.pixel_area = abs(t.a * t.e - t.b * t.d)
        else:
            self.kind = "none"
            self.output_crs = None
            self.pixel_area = 1.0

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
        if self.kind != "gcps":
            return geoms
        from pyproj import Transformer

        to_lonlat = Transformer.from_crs(self.grid.tie_points.local_crs, WGS84, always_xy=True)
        return shapely.transform(geoms, lambda xy: np.stack(to_lonlat.transform(xy[:, 0], xy[:, 1]), axis=-1))


def make_frame(columns: dict, geoms: np.ndarray, georef: Georef, *, layer_kind: str) -> "gpd.GeoDataFrame":
    import geopandas as gpd

    frame = gpd.GeoDataFrame(columns, geometry=list(geoms), crs=georef.output_crs)
    frame.attrs["georeference"] = georef.kind
    frame.attrs["kind"] = layer_kind
    return frame


def describe_georeference(frame: "gpd.GeoDataFrame") -> str:
    """One phrase for the CLI's summary: where the coordinates come from."""
    kind = frame.attrs.get("georeference", "crs")
    if kind == "gcps":
        return "EPSG:4326 (moved through the raster's tie points)"
    if kind == "none":
        return "pixel coordinates, no CRS"
    return frame.crs.to_string() if frame.crs is not None else "map coordinates, no CRS"
