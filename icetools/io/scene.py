"""One way to open the scenes users hold: AI4Arctic netCDF (raw and ready-to-train) and GeoTIFF.

:func:`open_scene` returns a :class:`Scene`: named bands read lazily by window, a grid, a validity
mask and, for AI4Arctic files, the embedded ice chart. Nothing reads a whole scene unless asked.
Band names are matched in one place, :meth:`Scene.resolve` (aliases of the usual Sentinel-1 names,
band indices, the HH-then-HV order of undescribed two-band files), and :meth:`Scene.band_unit` says
whether backscatter is in dB or linear (see :mod:`icetools.io.bands`).
Handles are opened lazily and re-opened after a fork, so a Scene can travel to DataLoader workers.

AI4Arctic files carry the incidence angle on their tie points (``sar_grid_incidenceangle``, or
``sar_grid2d_incidenceangle`` in the ready-to-train files); it is offered as the band
:data:`INCIDENCE_BAND`, in degrees, interpolated bilinearly onto each window's pixels (not a default
input: name it to train on it).
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np
from rasterio.windows import Window

from icetools.errors import ConfigError, CRSError, InputFileError, MissingVariableError
from icetools.grid import Grid, gcps_from_tie_points
from icetools.io.bands import (
    AI4ARCTIC_SAR,
    DB,
    POSITIONAL_SAR,
    sar_polarisation,
    units_from_name,
    units_from_text,
    units_from_values,
)
from icetools.io.tiepoints import TiePointField
from icetools.io.xarray_scene import XarrayExport, XarrayWindows, ai4arctic_variables, cf_attributes, decode_cf, nearest_indices
from icetools.sigrid import ChartPolygon, parse_polygon_codes

if TYPE_CHECKING:
    import xarray as xr
    from pyproj import CRS

CIS_LCC_PROJ = "+proj=lcc +lat_0=40 +lon_0=-100 +lat_1=49 +lat_2=77 +x_0=0 +y_0=0 +datum=WGS84 +units=m +no_defs"
"""The Canadian Ice Service's chart projection (Lambert Conformal Conic on WGS84, no EPSG code)."""
CHART_CRS_BY_SERVICE = {"cis": CIS_LCC_PROJ, "dmi": "EPSG:3413"}
"""The CRS of an AI4Arctic scene's chart by its ``ice_service``: CIS's LCC; DMI's Greenland charts in the
NSIDC polar stereographic north projection (EPSG:3413), the projection icetools' synthetic charts use too."""
CHART_CRS_TAG = "chart_crs"
"""The tag that carries a chart CRS on a raster made from a scene (predict's products)."""
INCIDENCE_BAND = "sar_incidence_angle"
"""The incidence angle (degrees) interpolated from an AI4Arctic file's tie points onto its pixels."""
NETCDF_SUFFIXES = {".nc", ".nc4", ".netcdf", ".cdf"}
NETCDF_ENGINES = ("netcdf4", "xarray")  # what reads a netCDF scene's windows (see icetools.io.xarray_scene)
CLASS_VARIABLES = {"SIC", "SOD", "FLOE"}  # ready-to-train uint8 labels: 255 = no label
GEOTIFF_SUFFIXES = {".tif", ".tiff", ".gtiff", ".vrt"}


def clamp_window(window: Window, height: int, width: int) -> tuple[Window, tuple[tuple[int, int], tuple[int, int]]]:
    """The part of ``window`` inside the scene, and the padding that restores its full size."""
    r0, c0 = int(window.row_off), int(window.col_off)
    r1, c1 = r0 + int(window.height), c0 + int(window.width)
    rr0, cc0, rr1, cc1 = max(r0, 0), max(c0, 0), min(r1, height), min(c1, width)
    if rr1 <= rr0 or cc1 <= cc0:
        raise ValueError(f"window {window} lies outside the {height} x {width} scene")
    pad = ((rr0 - r0, r1 - rr1), (cc0 - c0, c1 - cc1))
    return Window(cc0, rr0, cc1 - cc0, rr1 - rr0), pad


def pad_array(data: np.ndarray, pad: tuple[tuple[int, int], tuple[int, int]], mode: str) -> np.ndarray:
    """Pad the last two axes in memory: measured 13x faster here than rasterio boundless reads."""
    if not any(sum(p) for p in pad):
        return data
    widths = [(0, 0)] * (data.ndim - 2) + list(pad)
    if mode in ("reflect", "edge"):
        return np.pad(data, widths, mode=mode)  # numpy chains reflections for pads wider than the data
    fill = np.nan if data.dtype.kind == "f" else 0
    return np.pad(data, widths, mode="constant", constant_values=fill)


class AmbiguousBandError(MissingVariableError):
    """A name matches several bands of a scene (``Sigma0_HH`` and ``Sigma0_HH_db``): the caller must choose."""


class Scene(XarrayExport, ABC):
    """A scene: named bands, a grid, a validity mask, and (optionally) an ice chart."""

    kind: str
    path: Path

    def __init__(self, path: Path):
        self.path = path
        self._pid: int | None = None
        self._handle = None

    # --- lazy handles that survive fork/pickle ---------------------------------------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handle"] = None
        state["_pid"] = None
        return state

    @property
    def handle(self):
        if self._handle is None or self._pid != os.getpid():
            self._handle = self._open()
            self._pid = os.getpid()
        return self._handle

    @abstractmethod
    def _open(self): ...

    def close(self) -> None:
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle = None

    def __enter__(self) -> "Scene":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- what every scene offers ---------------------------------------------------------
    grid: Grid

    @property
    def height(self) -> int:
        return self.grid.height

    @property
    def width(self) -> int:
        return self.grid.width

    @property
    @abstractmethod
    def band_names(self) -> tuple[str, ...]:
        """Every band that :meth:`read` accepts."""

    @property
    @abstractmethod
    def default_inputs(self) -> tuple[str, ...]:
        """The bands a model reads when none are named (SAR HH/HV for AI4Arctic, all for GeoTIFF)."""

    def resolve(self, names: Sequence[str]) -> list[str]:
        """The scene's own band for each name: as spelled, in another case, by index (``band2``, ``2``
        in a GeoTIFF), by Sentinel-1 polarisation (``HH`` = ``sigma0_HH`` = ``nersc_sar_primary``), or by
        position in a two-band file that describes no band (HH first). The one place names are matched."""
        return [self._resolve_one(name) for name in names]

    def _resolve_one(self, name: str) -> str:
        if name in self.band_names:
            return name
        same = [b for b in self.band_names if b.lower() == name.strip().lower()]
        if len(same) == 1:
            return same[0]
        indexed = self._band_by_index(name)
        if indexed is not None:
            return indexed
        polarisation = sar_polarisation(name)
        if polarisation is not None:
            matches = [b for b in self.band_names if sar_polarisation(b) == polarisation]
            if len(matches) > 1:
                raise AmbiguousBandError(
                    f"{self.path.name} has several {polarisation} bands ({', '.join(matches)}) for '{name}': "
                    f"name the one to read with bands, e.g. {name}={matches[0]}"
                )
            if matches:
                return matches[0]
            positional = self._positional_sar(polarisation)
            if positional is not None:
                return positional
        raise MissingVariableError(
            f"{self.path.name} has no band '{name}'; bands found: {', '.join(self.band_names)}"
        )

    def _band_by_index(self, name: str) -> str | None:
        """``bandN`` or ``N`` (1-based) where a format numbers its bands; none by default."""
        return None

    def _positional_sar(self, polarisation: str) -> str | None:
        """The band a file without descriptions holds ``polarisation`` in; none by default."""
        return None

    def band_unit(self, name: str) -> str | None:
        """Backscatter units of band ``name`` (``dB``, ``linear``) when the file, the name or the values
        say so (see :mod:`icetools.io.bands`); None when unknown. Values are sampled once, in 16 windows."""
        real = self.resolve([name])[0]
        cache = self.__dict__.setdefault("_units", {})
        if real not in cache:
            cache[real] = self._declared_unit(real) or units_from_name(real) or units_from_values(self._sample(real))
        return cache[real]

    def _declared_unit(self, name: str) -> str | None:
        return None

    def _sample(self, name: str, windows: int = 4, side: int = 64) -> np.ndarray:
        """Values of ``name`` in a ``windows`` x ``windows`` grid of small windows spread over the scene."""
        rows = np.linspace(0, max(self.height - side, 0), windows).astype(int)
        cols = np.linspace(0, max(self.width - side, 0), windows).astype(int)
        h, w = min(side, self.height), min(side, self.width)
        parts = [self._read_band(name, Window(int(c), int(r), w, h)).ravel() for r in np.unique(rows) for c in np.unique(cols)]
        return np.concatenate(parts)

    @property
    def chart_crs(self) -> CRS | None:
        """The CRS of the ice chart that goes with the scene (where vectors of a GCP scene belong); None
        when unknown. See :func:`chart_crs_of_service`."""
        return None

    def read(
        self, names: Sequence[str] | None = None, window: Window | None = None, *, pad_mode: str = "constant"
    ) -> np.ndarray:
        """Bands as float32 (n, h, w) with NaN where invalid; windows beyond the edge are padded in memory."""
        names = self.resolve(names or self.default_inputs)
        window = window or self.grid.full_window()
        inner, pad = clamp_window(window, self.height, self.width)
        data = np.stack([self._read_band(n, inner) for n in names]).astype("float32", copy=False)
        return pad_array(data, pad, pad_mode)

    @abstractmethod
    def _read_band(self, name: str, window: Window) -> np.ndarray:
        """One band inside the scene, float32 with NaN for nodata."""

    def valid_mask(self, window: Window | None = None, names: Sequence[str] | None = None) -> np.ndarray:
        """True where every input band holds a value (not land, not outside the swath)."""
        return np.isfinite(self.read(names, window)).all(axis=0)

    # --- ice chart ----------------------------------------------------------------------------
    @property
    def has_chart(self) -> bool:
        return False

    CHART_BAND: str | None = None  # the band holding chart polygon ids, where a format has one

    def read_polygon_ids(self, window: Window | None = None) -> np.ndarray:
        """Chart polygon ids as int32 (0 = no polygon), padded with 0 beyond the edge."""
        if not self.has_chart or self.CHART_BAND is None:
            raise MissingVariableError(f"{self.path.name} carries no ice chart polygons: pass --labels")
        window = window or self.grid.full_window()
        inner, pad = clamp_window(window, self.height, self.width)
        ids = self._read_band(self.CHART_BAND, inner)
        return pad_array(np.where(np.isfinite(ids), ids, 0).astype("int32"), pad, "constant")

    def polygon_table(self) -> dict[int, ChartPolygon]:
        return {}

    def describe(self) -> dict:
        return {"path": str(self.path), "format": self.kind, "height": self.height, "width": self.width}


class NetCDFScene(Scene):
    """AI4Arctic netCDF, raw (40 m, dB with NaN) or ready-to-train (80 m, standard-scaled, NaN -> 0)."""

    TWO_KM_DIMS = ("2km_grid_lines", "2km_grid_samples")

    def __init__(self, path: Path, *, engine: Literal["netcdf4", "xarray"] = "netcdf4"):
        super().__init__(path)
        if engine not in NETCDF_ENGINES:
            raise ConfigError(f"unknown netCDF engine {engine!r}: use {' or '.join(NETCDF_ENGINES)}")
        self.engine = engine
        self._xarray = XarrayWindows(path) if engine == "xarray" else None
        ds = self.handle
        variables = ds.variables
        if "nersc_sar_primary" not in variables:
            raise MissingVariableError(
                f"{path.name} has no 'nersc_sar_primary' (HH): is it an AI4Arctic scene? "
                f"variables found: {', '.join(list(variables)[:20]) or 'none'}"
            )
        self._dims = variables["nersc_sar_primary"].dimensions
        height, width = variables["nersc_sar_primary"].shape
        self.kind = "ai4arctic-ready" if "SIC" in variables or "sar_grid2d_latitude" in variables else "ai4arctic-raw"
        self.grid = Grid(height, width, gcps=self._read_gcps(ds, height, width), gcp_crs=_wgs84())
        full = [n for n, v in variables.items() if v.dimensions == self._dims]
        coarse = [n for n, v in variables.items() if tuple(v.dimensions) == self.TWO_KM_DIMS]
        has_ties = {"sar_grid_incidenceangle", "sar_grid_line", "sar_grid_sample"} <= set(variables) or (
            "sar_grid2d_incidenceangle" in variables)
        derived = [INCIDENCE_BAND] if has_ties and INCIDENCE_BAND not in variables else []
        self._bands = tuple(full + coarse + derived)
        self._coarse = set(coarse)
        self.attrs = {k: ds.getncattr(k) for k in ds.ncattrs()}

    def _open(self):
        import netCDF4

        try:
            ds = netCDF4.Dataset(self.path, "r")
        except OSError as exc:
            raise InputFileError(f"cannot read {self.path} as netCDF: {exc}") from None
        ds.set_auto_maskandscale(False)
        return ds

    def _read_gcps(self, ds, height: int, width: int):
        v = ds.variables
        if all(k in v for k in ("sar_grid_line", "sar_grid_sample", "sar_grid_latitude", "sar_grid_longitude")):
            return gcps_from_tie_points(
                v["sar_grid_line"][:], v["sar_grid_sample"][:], v["sar_grid_latitude"][:], v["sar_grid_longitude"][:]
            )
        if "sar_grid2d_latitude" in v and "sar_grid2d_longitude" in v:
            lines, samples, lat = _grid2d(v["sar_grid2d_latitude"], height, width)
            _, _, lon = _grid2d(v["sar_grid2d_longitude"], height, width)
            return gcps_from_tie_points(lines, samples, lat, lon)
        raise CRSError(
            f"{self.path.name} has no geolocation: expected the tie points sar_grid_line/sample/latitude/longitude "
            "or sar_grid2d_latitude/longitude"
        )

    def _incidence_ties(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lines, samples, degrees) of the incidence angle tie points (fill values as NaN)."""
        v = self.handle.variables
        if "sar_grid_incidenceangle" in v and "sar_grid_line" in v and "sar_grid_sample" in v:
            var = v["sar_grid_incidenceangle"]
            lines, samples = np.asarray(v["sar_grid_line"][:]), np.asarray(v["sar_grid_sample"][:])
            values = np.asarray(var[:], dtype="float64")
        else:
            var = v["sar_grid2d_incidenceangle"]
            lines, samples, values = _grid2d(var, self.height, self.width)
        fill = getattr(var, "_FillValue", None)
        if fill is not None:
            values = np.where(values == fill, np.nan, values)
        return lines, samples, values

    @cached_property
    def _incidence(self) -> TiePointField:
        """Built on first read, from arrays only: it pickles into DataLoader workers with the scene."""
        return TiePointField(*self._incidence_ties())

    @property
    def band_names(self) -> tuple[str, ...]:
        return self._bands

    @property
    def default_inputs(self) -> tuple[str, ...]:
        """HH and HV: an AI4Arctic scene holds both, so a missing one is named, never silently dropped."""
        if "nersc_sar_secondary" not in self._bands:
            raise MissingVariableError(
                f"{self.path.name} has no 'nersc_sar_secondary' (HV), which every AI4Arctic scene holds: "
                "add it, or choose the inputs by name"
            )
        return ("nersc_sar_primary", "nersc_sar_secondary")

    def band_unit(self, name: str) -> str | None:
        real = self.resolve([name])[0]
        if self.kind == "ai4arctic-ready" and real in AI4ARCTIC_SAR:
            return None  # standard-scaled: neither dB nor linear
        return super().band_unit(real)

    def _declared_unit(self, name: str) -> str | None:
        if name in self.handle.variables:
            declared = units_from_text(getattr(self.handle.variables[name], "units", None))
            if declared:
                return declared
        return DB if name in AI4ARCTIC_SAR else None  # the AI4Arctic raw files hold SAR in dB

    @property
    def chart_crs(self) -> CRS | None:
        return chart_crs_from_attrs(self.attrs)

    def _read_band(self, name: str, window: Window) -> np.ndarray:
        if name == INCIDENCE_BAND and name not in self.handle.variables:
            return self._incidence.read(window)
        r0, c0 = int(window.row_off), int(window.col_off)
        r1, c1 = r0 + int(window.height), c0 + int(window.width)
        if name in self._coarse:
            return self._read_coarse(name, r0, r1, c0, c1)
        return self._read_block(name, slice(r0, r1), slice(c0, c1))

    def _read_block(self, name: str, rows: slice, cols: slice) -> np.ndarray:
        """float32 values of one variable's block, CF-decoded (fill -> NaN, scale and offset) by the
        scene's engine; both decode as xarray does, so they agree bit for bit."""
        var = self.handle.variables[name]
        if self._xarray is not None:
            out = self._xarray.read(name, rows, cols)
        else:
            out = decode_cf(np.asarray(var[rows, cols]), cf_attributes(var))
        if var.dtype == np.uint8 and name in CLASS_VARIABLES:
            out[out == 255] = np.nan
        return out

    def _read_coarse(self, name: str, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        """2 km AMSR2/ERA5 fields, upsampled to the SAR grid by nearest neighbour."""
        ch, cw = self.handle.variables[name].shape
        rows, cols = nearest_indices(r0, r1, self.height, ch), nearest_indices(c0, c1, self.width, cw)
        block = self._read_block(name, slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        return block[np.ix_(rows - rows.min(), cols - cols.min())]

    def close(self) -> None:
        super().close()
        if self._xarray is not None:
            self._xarray.close()

    def _xarray_variables(self, chunks: Any) -> dict[str, xr.Variable]:
        """Read through xarray: SAR-grid variables as xarray decodes them (CF mask and scale; the file's
        own dtype where it declares neither), 2 km fields upsampled onto the SAR grid as :meth:`read`
        does; the incidence angle and the uint8 labels (255 = none) window by window."""
        full = [n for n in self._bands if n not in self._coarse and n in self.handle.variables]
        labels = [n for n in full if n in CLASS_VARIABLES and self.handle.variables[n].dtype == np.uint8]
        windowed = {n: partial(self._band_window, n) for n in self._bands if n not in self.handle.variables or n in labels}
        variables = ai4arctic_variables(
            self.path, full=[n for n in full if n not in labels], coarse=sorted(self._coarse), shape=self.grid.shape,
            windowed=windowed, chunks=chunks, lock=threading.Lock(),
        )
        return {n: variables[n] for n in self._bands}

    def _attributes(self) -> dict:
        return dict(self.attrs)

    def valid_mask(self, window: Window | None = None, names: Sequence[str] | None = None) -> np.ndarray:
        data = self.read(names, window)
        valid = np.isfinite(data).all(axis=0)
        if self.kind == "ai4arctic-ready":
            # Ready-to-train files set NaN to 0 after scaling: all-zero SAR marks land / no data. The
            # incidence angle from the tie points is never 0 and knows no land: it does not vote.
            scaled = [i for i, n in enumerate(self.resolve(names or self.default_inputs)) if n != INCIDENCE_BAND]
            if scaled:
                valid &= ~(data[scaled] == 0).all(axis=0)
        return valid

    @property
    def has_chart(self) -> bool:
        return "polygon_icechart" in self.handle.variables

    CHART_BAND = "polygon_icechart"

    @cached_property
    def _polygon_table(self) -> dict[int, ChartPolygon]:
        v = self.handle.variables
        if "polygon_codes" not in v:
            raise MissingVariableError(f"{self.path.name} has polygon_icechart but no 'polygon_codes' table")
        rows = v["polygon_codes"][:]
        rows = [r if isinstance(r, (str, bytes)) else bytes(np.asarray(r).tobytes()).rstrip(b"\0") for r in rows]
        return parse_polygon_codes(rows, source=f"{self.path.name} polygon_codes")

    def polygon_table(self) -> dict[int, ChartPolygon]:
        return self._polygon_table if self.has_chart else {}


class GeoTiffScene(Scene):
    """Any GDAL raster whose band descriptions name its channels (band1.. when they don't)."""

    kind = "geotiff"

    def __init__(self, path: Path):
        super().__init__(path)
        from icetools.io.raster import grid_of

        ds = self.handle
        self.grid = grid_of(ds)
        self._names = tuple(d or f"band{i}" for i, d in enumerate(ds.descriptions, start=1))
        if len(set(self._names)) != len(self._names):
            self._names = tuple(f"band{i}" for i in range(1, ds.count + 1))
        self.described = any(ds.descriptions)
        self.nodata = ds.nodata
        self.tags = ds.tags()
        self.dtypes = ds.dtypes
        self.units = tuple(ds.units)
        self.scales = tuple(float(v) for v in ds.scales)  # GDAL band scale/offset: value = raw * scale + offset
        self.offsets = tuple(float(v) for v in ds.offsets)

    def _open(self):
        from icetools.io.raster import open_raster

        return open_raster(self.path)

    @property
    def band_names(self) -> tuple[str, ...]:
        return self._names

    @property
    def default_inputs(self) -> tuple[str, ...]:
        return self._names

    def _read_band(self, name: str, window: Window) -> np.ndarray:
        index = self._names.index(name) + 1
        data = self.handle.read(index, window=window)
        scale, offset = self.scales[index - 1], self.offsets[index - 1]
        if scale != 1.0 or offset != 0.0:  # e.g. SIC stored as integers (labels.tif): float values
            out = (data * np.float64(scale) + offset).astype("float32")
        else:
            out = data.astype("float32", copy=False)
        if self.nodata is not None and not np.isnan(self.nodata):
            out = np.where(data == self.nodata, np.float32(np.nan), out)
        return out

    def _band_attrs(self, name: str) -> dict:
        index = self._names.index(name)
        return {"long_name": name, **({"units": self.units[index]} if self.units[index] else {})}

    def _block_shape(self) -> tuple[int, int]:
        return tuple(self.handle.block_shapes[0])

    def _attributes(self) -> dict:
        return dict(self.tags)

    def _band_by_index(self, name: str) -> str | None:
        text = name.strip().lower()
        text = text[4:] if text.startswith("band") else text
        if text.isdigit() and 1 <= int(text) <= len(self._names):
            return self._names[int(text) - 1]
        return None

    def _positional_sar(self, polarisation: str) -> str | None:
        if self.described or len(self._names) != len(POSITIONAL_SAR):
            return None
        return self._names[POSITIONAL_SAR.index(polarisation)]

    def _declared_unit(self, name: str) -> str | None:
        return units_from_text(self.units[self._names.index(name)])

    @property
    def chart_crs(self) -> CRS | None:
        tagged = chart_crs_from_attrs(self.tags)
        if tagged is not None or self.grid.has_gcps or self.grid.crs is None:
            return tagged
        from pyproj import CRS

        return CRS.from_user_input(self.grid.crs)

    @property
    def has_chart(self) -> bool:
        return "polygon_id" in self._names

    CHART_BAND = "polygon_id"

    def read_polygon_ids(self, window: Window | None = None) -> np.ndarray:
        """Integer ids read as they are (labels.tif stores them as Int32); float ids (older files) by value."""
        if not self.has_chart:
            return super().read_polygon_ids(window)
        index = self._names.index(self.CHART_BAND) + 1
        if np.dtype(self.dtypes[index - 1]).kind not in "iu":
            return super().read_polygon_ids(window)
        window = window or self.grid.full_window()
        inner, pad = clamp_window(window, self.height, self.width)
        ids = self.handle.read(index, window=inner).astype("int32", copy=False)
        if self.nodata is not None and not np.isnan(self.nodata):
            ids = np.where(ids == self.nodata, 0, ids).astype("int32", copy=False)
        return pad_array(ids, pad, "constant")


def _grid2d(var, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lines, samples, values) of a ready-to-train ``sar_grid2d_*`` variable: dims (sample points,
    line points) in the files (the other order is accepted too), spread evenly over the scene."""
    values = np.asarray(var[:], dtype="float64")
    if var.dimensions and var.dimensions[0].startswith("sar_line"):
        values = values.T
    n_samp, n_line = values.shape
    samples, lines = np.meshgrid(np.linspace(0, width - 1, n_samp), np.linspace(0, height - 1, n_line), indexing="ij")
    return lines.ravel(), samples.ravel(), values.ravel()


def chart_crs_from_attrs(attrs: dict) -> CRS | None:
    """A chart CRS from a file's attributes or tags: ``chart_crs`` (any CRS text), else ``ice_service``
    (:data:`CHART_CRS_BY_SERVICE`); None when neither says."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError as ProjCRSError

    text = attrs.get(CHART_CRS_TAG)
    if text:
        try:
            return CRS.from_user_input(str(text))
        except ProjCRSError:
            raise CRSError(f"the '{CHART_CRS_TAG}' attribute {str(text)[:60]!r} is not a CRS pyproj understands") from None
    service = str(attrs.get("ice_service", "")).strip().lower()
    return CRS.from_user_input(CHART_CRS_BY_SERVICE[service]) if service in CHART_CRS_BY_SERVICE else None


def _wgs84():
    from pyproj import CRS

    return CRS.from_epsg(4326)


def open_scene(path: str | Path, *, engine: Literal["netcdf4", "xarray"] = "netcdf4") -> Scene:
    """Open an AI4Arctic netCDF or a GeoTIFF scene, by content as much as by suffix.

    ``engine``: what reads a netCDF scene's windows, netCDF4 (the default, the fastest) or xarray;
    both give the same values. GeoTIFFs are read by rasterio either way.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path} does not exist")
    if path.is_dir():
        raise InputFileError(f"{path} is a folder, not a scene file")
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic[:3] == b"CDF" or magic[:8] == b"\x89HDF\r\n\x1a\n" or path.suffix.lower() in NETCDF_SUFFIXES:
        if magic[:3] != b"CDF" and magic[:8] != b"\x89HDF\r\n\x1a\n":
            raise InputFileError(f"{path} is not a readable netCDF file (corrupt or truncated?)")
        return NetCDFScene(path, engine=engine)
    if magic[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+") or path.suffix.lower() in GEOTIFF_SUFFIXES:
        return GeoTiffScene(path)
    raise InputFileError(f"{path}: unknown scene format (expected an AI4Arctic netCDF or a GeoTIFF)")
