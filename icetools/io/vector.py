"""Vector input and output through pyogrio (GeoPackage, Shapefile, GeoJSON...)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from icetools.errors import CRSError, EmptyInputError, InputFileError
from icetools.io.atomic import atomic_path
from icetools.io.paths import refuse_overwriting_inputs
from icetools.io.style import data_layers, write_layer_style

if TYPE_CHECKING:
    import geopandas as gpd


def read_vectors(path: str | Path, *, layer: str | None = None, vector_crs: str | None = None) -> "gpd.GeoDataFrame":
    """Read a vector layer; refuse empty layers and layers without a CRS (unless one is given)."""
    import pyogrio

    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path} does not exist")
    try:
        if layer is None and path.suffix.lower() == ".gpkg":  # not QGIS's layer_styles table
            layer = next(iter(data_layers(list_layers(path))), None)
        frame = pyogrio.read_dataframe(path, layer=layer)
    except Exception as exc:  # pyogrio raises several GDAL-derived types; all mean the same here
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputFileError(f"cannot read {path} as a vector layer: {message}") from None
    if len(frame) == 0:
        raise EmptyInputError(f"{path} has no features" + (f" in layer '{layer}'" if layer else ""))
    frame = frame[~(frame.geometry.isna() | frame.geometry.is_empty)]
    if len(frame) == 0:
        raise EmptyInputError(f"{path} has features but none with a geometry")
    if vector_crs:
        try:
            frame = frame.set_crs(vector_crs, allow_override=True)
        except Exception as exc:
            raise CRSError(f"--vector-crs '{vector_crs}' is not a CRS pyproj understands: {exc}") from None
    elif frame.crs is None:
        raise CRSError(
            f"{path} has no CRS (older ice-chart archives often lack one): pass --vector-crs, e.g. EPSG:3413"
        )
    return frame


def repair_polygons(frame: "gpd.GeoDataFrame", source: str) -> "gpd.GeoDataFrame":
    """Invalid polygons (self-intersections, bow ties) repaired with make_valid, counted in one warning.

    Burned as they are, an invalid polygon fills a different area in every rasterizer; repaired, its
    area is the one its outline encloses (the "structure" method keeps polygons polygons).
    """
    import warnings

    import shapely

    geometries = np.asarray(frame.geometry.values)
    invalid = ~shapely.is_valid(geometries)
    if not invalid.any():
        return frame
    frame = frame.copy()
    repaired = geometries.copy()
    repaired[invalid] = shapely.make_valid(geometries[invalid], method="structure", keep_collapsed=False)
    frame[frame.geometry.name] = repaired
    warnings.warn(f"{source}: {int(invalid.sum())} invalid polygon(s) (e.g. self-intersecting) were repaired "
                  "with make_valid before burning", UserWarning, stacklevel=2)
    return frame[~frame.geometry.is_empty]


def write_layer(
    frame: "gpd.GeoDataFrame", path: str | Path, *, layer: str, overwrite: bool = False, style: str | None = None
) -> Path:
    """Write one layer to a new vector file, atomically; the driver follows the suffix.

    ``style`` (QGIS QML; default: the frame's ``attrs["qml"]``, set by vectorize) becomes the layer's
    default style in a GeoPackage's ``layer_styles`` table; other formats have no place for it.
    """
    style = style if style is not None else frame.attrs.get("qml")
    import pyogrio

    path = Path(path)
    refuse_overwriting_inputs([path], frame.attrs.get("sources", ()))
    driver = {".gpkg": "GPKG", ".shp": "ESRI Shapefile", ".geojson": "GeoJSON", ".json": "GeoJSON", ".fgb": "FlatGeobuf"}.get(
        path.suffix.lower()
    )
    if driver is None:
        raise InputFileError(f"{path}: unknown vector format; use .gpkg, .shp, .geojson or .fgb")
    if driver == "ESRI Shapefile":
        # A shapefile is several files, so it cannot be renamed into place as one; write directly.
        from icetools.io.atomic import check_output

        check_output(path, overwrite=overwrite)
        pyogrio.write_dataframe(frame, path, layer=layer, driver=driver)
        return path
    with atomic_path(path, overwrite=overwrite) as tmp:
        pyogrio.write_dataframe(frame, tmp, layer=layer, driver=driver)
        if style is not None and driver == "GPKG":
            write_layer_style(tmp, layer, style, description=f"icetools {frame.attrs.get('kind', layer)}")
    return path


def list_layers(path: str | Path) -> list[str]:
    import pyogrio

    try:
        return [str(name) for name, _ in pyogrio.list_layers(path)]
    except Exception as exc:
        raise InputFileError(f"cannot list layers of {path}: {str(exc).splitlines()[0]}") from None
