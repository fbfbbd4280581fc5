"""A CRS from what a user types: an authority code, WKT or PROJ text, or a file whose CRS to copy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from icetools.errors import CRSError, IcetoolsError

if TYPE_CHECKING:
    from pyproj import CRS

VECTOR_SUFFIXES = {".gpkg", ".shp", ".geojson", ".json", ".fgb", ".gml", ".kml"}


def crs_from_user_input(value: object, *, what: str = "dst_crs") -> CRS:
    """``EPSG:3413``, WKT, PROJ text, a pyproj/rasterio CRS, or the path of a file to copy it from:
    a vector layer (an ice chart), a raster, or an AI4Arctic netCDF (the CRS of its chart, see
    :attr:`icetools.io.scene.Scene.chart_crs`). CRSError naming ``what`` otherwise."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError as ProjCRSError

    if isinstance(value, (str, Path)) and Path(value).is_file():
        return _crs_of_file(Path(value), what=what)
    try:
        return CRS.from_user_input(value)
    except ProjCRSError:
        raise CRSError(
            f"`{what}` {str(value)[:80]!r} is neither a CRS pyproj understands (e.g. EPSG:3413) nor an existing file"
        ) from None


def _crs_of_file(path: Path, *, what: str) -> CRS:
    from pyproj import CRS

    if path.suffix.lower() in VECTOR_SUFFIXES:
        import pyogrio

        try:
            text = pyogrio.read_info(path).get("crs")
        except Exception as exc:  # pyogrio raises several GDAL-derived types; all mean the same here
            raise CRSError(f"`{what}` {path}: cannot read it as a vector layer ({str(exc).splitlines()[0]})") from None
        if not text:
            raise CRSError(f"`{what}` {path} has no CRS to copy: give one, e.g. EPSG:3413")
        return CRS.from_user_input(text)
    from icetools.io.scene import open_scene

    try:
        with open_scene(path) as scene:
            crs = scene.chart_crs
    except IcetoolsError as exc:
        raise CRSError(f"`{what}` {path}: {exc}") from None
    if crs is None:
        raise CRSError(
            f"`{what}` {path} says nothing of its chart's CRS (no CRS, chart_crs or ice_service): give one, e.g. EPSG:3413"
        )
    return crs


__all__ = ["crs_from_user_input"]
