"""Scenes and xarray: CF decoding shared by both readers, the xarray window reader, ``Scene.to_xarray``.

xarray is an alternative engine, not the reader: ``python -m bench xarray`` on a raw-size 10000 x
10400 AI4Arctic file (2 cores, best of 3 fresh processes, imports not counted) measured

============================================  ======  ============  ==================
reader                                         open    first window  median window
============================================  ======  ============  ==================
``open_scene`` (netCDF4)                       9 ms    18 ms         13.7 ms
``open_scene(engine="xarray")``, no dask       9 ms    29 ms         13.5-14.2 ms
``Scene.to_xarray()`` with dask chunks         30 ms   26 ms         19 ms
============================================  ======  ============  ==================

(256 x 256, HH and HV), and xarray's imports cost 0.8 s once per process. So windows, what training
and predict read, stay with netCDF4; xarray serves where it wins: whole-scene lazy arrays for
notebooks and dask, whose reductions run on every core (the mean of HH: 0.87-0.99 s against 1.05-1.14 s
strip by strip). Both readers decode values as xarray does (:func:`decode_cf`): they agree bit for bit.

xarray is imported inside the functions that use it: ``icetools --help`` stays fast.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rasterio.windows import Window

from icetools.errors import InputFileError

if TYPE_CHECKING:
    import xarray as xr

    from icetools.grid import Grid

Y, X = "y", "x"
SPATIAL_REF = "spatial_ref"
FILL_ATTRIBUTES = ("_FillValue", "missing_value")
CHUNK_BYTES = 16 * 2**20  # dask chunks of 2048 x 2048 float32: a 256 x 256 window reads little, a
# whole-scene reduction still has tens of tasks per core (dask's own "auto" makes ~100 MB chunks here)
DEFAULT_BLOCK = (512, 512)  # where a file declares no chunking
WindowRead = Callable[[Window], np.ndarray]  # one band's float32 values inside a window of the scene


# --------------------------------------------------------------------------------------------
# CF decoding, as xarray does it (mask_and_scale=True)


def cf_float_dtype(dtype: np.dtype, attrs: Mapping[str, Any]) -> np.dtype:
    """The float type xarray decodes a packed or masked variable into (its ``_choose_float_dtype``):
    computing in the same type is what makes both readers agree bit for bit."""
    scale, offset = attrs.get("scale_factor"), attrs.get("add_offset")
    if scale is not None or offset is not None:
        scale_type = np.dtype(type(scale)) if scale is not None else None
        offset_type = np.dtype(type(offset)) if offset is not None else None
        if scale is not None and offset is not None and scale_type == offset_type and scale_type in (np.float32, np.float64):
            return np.dtype(np.float64) if dtype.itemsize == 4 and dtype.kind in "iu" else scale_type
        if offset is not None:
            return np.dtype(np.float64)
        return scale_type
    if dtype.kind == "f" and dtype.itemsize <= 4:
        return np.dtype(np.float32)
    if dtype.kind in "iu" and dtype.itemsize <= 2:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def decode_cf(raw: np.ndarray, attrs: Mapping[str, Any]) -> np.ndarray:
    """float32 values of a raw netCDF block: ``_FillValue``/``missing_value`` -> NaN, then
    ``* scale_factor + add_offset`` (the CF conventions, in xarray's order and float type)."""
    raw = np.asarray(raw)
    scale, offset = attrs.get("scale_factor"), attrs.get("add_offset")
    fills = [np.asarray(attrs[k]).ravel() for k in FILL_ATTRIBUTES if k in attrs]
    if not fills and scale is None and offset is None:
        return raw.astype("float32", copy=raw.dtype != np.float32)
    out = raw.astype(cf_float_dtype(raw.dtype, attrs), copy=True)
    for values in fills:
        for value in values:
            out[raw == value] = np.nan
    if scale is not None:
        out *= scale
    if offset is not None:
        out += offset
    return out.astype("float32", copy=False)


def cf_attributes(variable) -> dict[str, Any]:
    """The attributes :func:`decode_cf` reads, from a netCDF4 variable."""
    names = variable.ncattrs()
    return {k: variable.getncattr(k) for k in (*FILL_ATTRIBUTES, "scale_factor", "add_offset") if k in names}


def nearest_indices(start: int, stop: int, fine: int, coarse: int) -> np.ndarray:
    """Indices into a ``coarse``-long axis for fine pixels [start, stop) of a ``fine``-long axis:
    how the 2 km AMSR2/ERA5 fields of an AI4Arctic file are upsampled onto its SAR grid."""
    return np.minimum((np.arange(start, stop) * coarse) // fine, coarse - 1)


def has_dask() -> bool:
    return importlib.util.find_spec("dask") is not None


# --------------------------------------------------------------------------------------------
# Window reads through xarray (open_scene(..., engine="xarray"))


class XarrayWindows:
    """An AI4Arctic file opened with xarray (mask and scale, no dask: measured slower for windows),
    re-opened after a fork like the scene's own handle; reads one variable's block at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._dataset: xr.Dataset | None = None
        self._pid: int | None = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "_dataset": None, "_pid": None}

    @property
    def dataset(self) -> xr.Dataset:
        if self._dataset is None or self._pid != os.getpid():
            self._dataset = open_cf_dataset(self.path, chunks=None)
            self._pid = os.getpid()
        return self._dataset

    def read(self, name: str, rows: slice, cols: slice) -> np.ndarray:
        return np.asarray(self.dataset[name].variable[rows, cols].values).astype("float32", copy=False)

    def close(self) -> None:
        if self._dataset is not None and self._pid == os.getpid():
            self._dataset.close()
        self._dataset = None


def open_cf_dataset(path: Path, *, chunks: Any = None) -> xr.Dataset:
    """The file through xarray with CF mask and scale (times left as numbers: AI4Arctic keeps none)."""
    import xarray as xr

    try:
        return xr.open_dataset(
            path, engine="netcdf4", mask_and_scale=True, decode_times=False, decode_timedelta=False,
            chunks=chunks, cache=False,
        )
    except (OSError, ValueError) as exc:
        raise InputFileError(f"cannot read {path} with xarray: {exc}") from None


# --------------------------------------------------------------------------------------------
# Lazy bands: any window reader as an xarray variable


def _lazy_array_type():
    """Defined on first use so that importing this module does not import xarray."""
    from xarray.backends import BackendArray
    from xarray.core import indexing

    class WindowedBand(BackendArray):
        """One band read window by window through ``read`` (xarray's documented backend-array
        pattern); ``lock`` serialises reads of handles that are not thread-safe (netCDF4, GDAL)."""

        def __init__(self, read: WindowRead, shape: tuple[int, int], lock: threading.Lock | None) -> None:
            self.read, self.shape, self.dtype = read, shape, np.dtype("float32")
            self.lock = lock or threading.Lock()

        def __getstate__(self) -> dict:
            return {"read": self.read, "shape": self.shape, "dtype": self.dtype}

        def __setstate__(self, state: dict) -> None:
            self.__dict__.update(state, lock=threading.Lock())

        def __getitem__(self, key):
            return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.BASIC, self._basic)

        def _basic(self, key: tuple) -> np.ndarray:
            (r0, r1, rs, rsq), (c0, c1, cs, csq) = (_axis_range(k, n) for k, n in zip(key, self.shape))
            if r1 <= r0 or c1 <= c0:
                data = np.empty((max(r1 - r0, 0), max(c1 - c0, 0)), dtype="float32")
            else:
                with self.lock:
                    data = self.read(Window(c0, r0, c1 - c0, r1 - r0))
            data = data[::rs, ::cs]
            return data[0 if rsq else slice(None), 0 if csq else slice(None)]

    return WindowedBand, indexing.LazilyIndexedArray


def _axis_range(key: int | slice, length: int) -> tuple[int, int, int, bool]:
    """(start, stop, step, squeezed) of one basic index along an axis (steps are positive here)."""
    if isinstance(key, slice):
        start, stop, step = key.indices(length)
        return start, max(stop, start), step, False
    index = int(key) + (length if int(key) < 0 else 0)
    return index, index + 1, 1, True


def lazy_band(read: WindowRead, shape: tuple[int, int], *, lock: threading.Lock | None = None, attrs=None) -> xr.Variable:
    """A (y, x) float32 variable that reads only the windows asked for, with or without dask."""
    import xarray as xr

    band_type, lazy_type = _lazy_array_type()
    return xr.Variable((Y, X), lazy_type(band_type(read, shape, lock)), attrs=dict(attrs or {}))


def aligned_chunks(chunks: Any, shape: tuple[int, int], block: tuple[int, int]) -> Any:
    """``"auto"``: chunks of about :data:`CHUNK_BYTES` in multiples of the file's blocks; else as given."""
    if chunks != "auto":
        return chunks
    from dask.array.core import normalize_chunks

    return normalize_chunks("auto", shape, dtype="float32", previous_chunks=block, limit=CHUNK_BYTES)


def dask_name(path: Path, band: str) -> str:
    """A dask array name from the file's identity: dask would otherwise hash the reader by pickling it
    (half of ``to_xarray``'s time on a raw-size scene)."""
    stat = Path(path).stat()
    return f"icetools-{Path(path).resolve()}-{stat.st_mtime_ns}-{stat.st_size}-{band}"


# --------------------------------------------------------------------------------------------
# Coordinates and CRS (CF grid mapping, as rioxarray and GDAL write it)


def grid_coordinates(grid: Grid) -> dict[str, xr.Variable]:
    """y/x of pixel centres from the transform (north-up grids), else pixel-centre image coordinates;
    a ``spatial_ref`` grid mapping with ``crs_wkt`` and the GeoTransform or, for a GCP grid, its GCPs
    (a GeoJSON string: attributes must stay writable to netCDF)."""
    import xarray as xr
    from pyproj import CRS

    rows, cols = np.arange(grid.height) + 0.5, np.arange(grid.width) + 0.5
    attrs: dict[str, Any] = {}
    crs = grid.output_crs
    if crs is not None:
        wkt = CRS.from_user_input(crs).to_wkt()
        attrs.update(crs_wkt=wkt, spatial_ref=wkt)
    transform = grid.transform if not grid.has_gcps else None
    if transform is not None and transform.b == 0 and transform.d == 0:
        x = transform.c + cols * transform.a
        y = transform.f + rows * transform.e
        attrs["GeoTransform"] = " ".join(f"{v!r}" for v in transform.to_gdal())
        x_attrs = {"axis": "X", "standard_name": "projection_x_coordinate", "long_name": "x coordinate of projection"}
        y_attrs = {"axis": "Y", "standard_name": "projection_y_coordinate", "long_name": "y coordinate of projection"}
    else:
        x, y = cols, rows
        x_attrs = {"long_name": "pixel centre column (image coordinates)", "units": "pixel"}
        y_attrs = {"long_name": "pixel centre row (image coordinates)", "units": "pixel"}
        if transform is not None:
            attrs["GeoTransform"] = " ".join(f"{v!r}" for v in transform.to_gdal())
    if grid.has_gcps:
        attrs["gcps"] = json.dumps(_gcps_geojson(grid))
    return {
        Y: xr.Variable((Y,), y, attrs=y_attrs),
        X: xr.Variable((X,), x, attrs=x_attrs),
        SPATIAL_REF: xr.Variable((), np.int64(0), attrs=attrs),
    }


def _gcps_geojson(grid: Grid) -> dict:
    """rioxarray's layout of ground control points: one Point feature each, row/col as properties."""
    features = [
        {
            "type": "Feature",
            "properties": {"id": g.id, "info": g.info, "row": g.row, "col": g.col},
            "geometry": {"type": "Point", "coordinates": [g.x, g.y, g.z or 0.0]},
        }
        for g in grid.gcps
    ]
    return {"type": "FeatureCollection", "features": features}


def scene_dataset(
    variables: Mapping[str, xr.Variable | xr.DataArray], grid: Grid, attrs: Mapping[str, Any]
) -> xr.Dataset:
    """The bands with their coordinates, each pointing at the ``spatial_ref`` grid mapping."""
    import xarray as xr

    data_vars = {}
    for name, variable in variables.items():
        variable = variable.variable if isinstance(variable, xr.DataArray) else variable
        variable = variable.copy(deep=False)
        variable.attrs = {**variable.attrs, "grid_mapping": SPATIAL_REF}
        data_vars[name] = variable
    return xr.Dataset(data_vars, coords=grid_coordinates(grid), attrs=dict(attrs))


class XarrayExport:
    """``Scene.to_xarray`` for every format (mixed into :class:`icetools.io.scene.Scene`); a format
    that xarray can read itself overrides ``_xarray_variables``."""

    grid: Grid
    band_names: tuple[str, ...]
    path: Path

    def to_xarray(self, *, chunks: Any = "auto") -> xr.Dataset:
        """The scene as an ``xarray.Dataset`` for notebooks: one lazy (y, x) variable per band (the
        values :meth:`read` gives), y/x coordinates from the transform, the CRS as a ``spatial_ref``
        grid mapping (``crs_wkt``), the file's attributes. ``chunks``: dask chunks ("auto": sized by
        dask in multiples of the file's blocks); None, or dask not installed: lazy without dask
        (windows read when indexed)."""
        return scene_dataset(self._xarray_variables(chunks if has_dask() else None), self.grid, self._attributes())

    def _xarray_variables(self, chunks: Any) -> dict[str, xr.Variable]:
        lock = threading.Lock()  # one per dataset: dask's threads share the scene's handle
        variables = {}
        for name in self.band_names:
            variable = lazy_band(partial(self._band_window, name), self.grid.shape, lock=lock, attrs=self._band_attrs(name))
            block = self._block_shape()
            if chunks is not None:
                variable = variable.chunk(aligned_chunks(chunks, self.grid.shape, block), name=dask_name(self.path, name))
            variables[name] = variable
        return variables

    def _band_window(self, name: str, window: Window) -> np.ndarray:
        return self.read([name], window)[0]  # type: ignore[attr-defined]

    def _band_attrs(self, name: str) -> dict:
        return {}

    def _block_shape(self) -> tuple[int, int]:
        return DEFAULT_BLOCK

    def _attributes(self) -> dict:
        return {}


def ai4arctic_variables(
    path: Path,
    *,
    full: Sequence[str],
    coarse: Sequence[str],
    shape: tuple[int, int],
    windowed: Mapping[str, WindowRead],
    chunks: Any,
    lock: threading.Lock,
) -> dict[str, xr.Variable]:
    """An AI4Arctic file's bands read through xarray (CF mask and scale, dask chunks when given):
    SAR-grid variables as the file stores them, 2 km fields decoded by xarray and upsampled onto the
    SAR grid by nearest neighbour as window reads do, and ``windowed`` bands (derived ones) lazily."""
    dataset = open_cf_dataset(path, chunks=None)  # chunked below: xarray's own "auto" costs 0.2 s here
    height, width = shape
    out: dict[str, xr.Variable] = {}
    if full:
        dataset = dataset.rename_dims(dict(zip(dataset[full[0]].dims, (Y, X))))
    for name in full:
        out[name] = dataset[name].variable
    for name in coarse:
        field = dataset[name].variable
        values = np.asarray(field.values).astype("float32", copy=False)  # a few hundred pixels a side
        out[name] = lazy_band(_upsampler(values, height, width), shape, lock=threading.Lock(), attrs=field.attrs)
    for name, read in windowed.items():
        out[name] = lazy_band(read, shape, lock=lock)
    if chunks is not None:
        block = tuple(dataset[full[0]].encoding.get("chunksizes") or DEFAULT_BLOCK) if full else DEFAULT_BLOCK
        chunking = aligned_chunks(chunks, shape, block)
        out = {name: variable.chunk(chunking, name=dask_name(path, name)) for name, variable in out.items()}
    return out


def _upsampler(values: np.ndarray, height: int, width: int) -> WindowRead:
    ch, cw = values.shape

    def read(window: Window) -> np.ndarray:
        r0, c0 = int(window.row_off), int(window.col_off)
        rows = nearest_indices(r0, r0 + int(window.height), height, ch)
        cols = nearest_indices(c0, c0 + int(window.width), width, cw)
        return values[np.ix_(rows, cols)]

    return read
