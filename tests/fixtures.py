"""The test scenes, written one way: tiny georeferenced GeoTIFF scenes and AI4Arctic-layout netCDF files.

Tests build their inputs here (the project's generators live in icetools.synth; these are written by
hand so that a reader bug cannot hide behind a matching writer bug). Every option is keyword-only and
the defaults are the plainest scene, so a call names only what the test is about.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from affine import Affine
from pyproj import CRS
from rasterio.control import GroundControlPoint

from icetools.grid import Grid, gcps_from_tie_points
from icetools.io.raster import write_raster

PIXEL = 40.0
ORIGIN = (100_000.0, -2_000_000.0)
EPSG3413 = CRS.from_epsg(3413)
NAN = float("nan")

AI4ARCTIC_BANDS = ("nersc_sar_primary", "nersc_sar_secondary")
AI4ARCTIC_CODES = (
    "poly_id;CT;CA;SA;FA;CB;SB;FB;CC;SC;FC;CN;CD;CF;POLY_TYPE",
    "1;92;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;I",
    "2;46;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;-9;I",
)
"""A two-polygon chart: polygon 1 at 92 % total concentration (SIC 1.0), polygon 2 at 46 % (SIC 0.5)."""


# --- grids ---------------------------------------------------------------------------------------


def affine_grid(
    height: int = 64,
    width: int = 80,
    *,
    origin: tuple[float, float] = ORIGIN,
    pixel: float = PIXEL,
    crs: CRS = EPSG3413,
) -> Grid:
    """A north-up grid (EPSG:3413, 40 m pixels unless told) with its top-left corner at ``origin``."""
    x0, y0 = origin
    return Grid(height, width, crs=crs, transform=Affine(pixel, 0, x0, 0, -pixel, y0))


def gcp_grid(height: int = 300, width: int = 260) -> Grid:
    """A radar-geometry-like grid: 21 x 21 tie points of a rotated, slightly curved lon/lat frame."""
    lines, samples = np.meshgrid(np.linspace(0, height - 1, 21), np.linspace(0, width - 1, 21), indexing="ij")
    lat = 75.0 + lines * 3.6e-4 + samples * 0.8e-4 + (samples / width) ** 2 * 2e-3
    lon = -20.0 + samples * 1.3e-3 - lines * 2.5e-4
    gcps = gcps_from_tie_points(lines.ravel(), samples.ravel(), lat.ravel(), lon.ravel())
    return Grid(height, width, gcps=gcps, gcp_crs=CRS.from_epsg(4326))


def corner_gcp_grid(height: int, width: int) -> Grid:
    """The sparsest GCP grid: the four corners and the centre of a small lon/lat frame."""
    points = tuple(
        GroundControlPoint(row=r, col=c, x=-40 + c * 0.01, y=75 - r * 0.005, id=f"{r}-{c}")
        for r in (0, height)
        for c in (0, width)
    ) + (GroundControlPoint(row=height / 2, col=width / 2, x=-40 + width * 0.005, y=75 - height * 0.0025, id="mid"),)
    return Grid(height, width, gcps=points, gcp_crs=CRS.from_epsg(4326))


# --- GeoTIFF scenes ------------------------------------------------------------------------------


def sar_like(height: int, width: int, *, seed: int = 0, land: bool = True) -> np.ndarray:
    """Two float32 dB-like bands (HH around -15, HV 10 dB lower) with a NaN 'land' top-left quarter."""
    rng = np.random.default_rng(seed)
    data = rng.normal(-15, 3, size=(2, height, width)).astype("float32")
    data[1] -= 10
    if land:
        data[:, : height // 4, : width // 4] = np.nan
    return data


def write_scene(
    path: Path,
    grid: Grid | None = None,
    *,
    data: np.ndarray | None = None,
    seed: int = 0,
    land: bool = True,
    band_names: Sequence[str] = AI4ARCTIC_BANDS,
    nodata: float | None = NAN,
) -> Path:
    """A GeoTIFF scene.

    Without ``data``: :func:`sar_like` bands on ``grid`` (``seed``, ``land``). With ``data`` (bands,
    H, W): those values, on ``grid`` or, when no grid is given, on ``affine_grid(H, W)``.
    """
    if data is None:
        if grid is None:
            raise ValueError("write_scene needs a grid or data")
        data = sar_like(grid.height, grid.width, seed=seed, land=land)
    elif grid is None:
        grid = affine_grid(*data.shape[-2:])
    return write_raster(path, data, grid, nodata=nodata, band_names=list(band_names))


# --- AI4Arctic netCDF ----------------------------------------------------------------------------


def ai4arctic_bands(height: int, width: int, *, land: int = 6) -> np.ndarray:
    """Flat SAR bands (HH -15 dB, HV -25 dB) with a NaN ``land`` x ``land`` top-left corner."""
    data = np.full((height, width), -15, "f4")
    data[:land, :land] = np.nan
    return np.stack([data, data - 10])


def two_polygon_chart(height: int, width: int, *, land: int = 0, uncharted: int = 0) -> np.ndarray:
    """Polygon ids of :data:`AI4ARCTIC_CODES`: 1 on the left half, 2 on the right; NaN (no polygon) on a
    ``land`` x ``land`` top-left corner and on the ``uncharted`` right-most columns."""
    chart = np.full((height, width), 1, "f4")
    chart[:, width // 2 :] = 2
    chart[:land, :land] = np.nan
    if uncharted:
        chart[:, -uncharted:] = np.nan
    return chart


def tie_points(
    height: int,
    width: int,
    *,
    points: int = 21,
    origin: tuple[float, float] = (75.0, -20.0),
    step: tuple[float, float] = (4e-4, 1e-3),
) -> dict[str, np.ndarray]:
    """A ``points`` x ``points`` tie-point grid: lat = origin[0] + line * step[0], lon = origin[1] +
    sample * step[1] (the AI4Arctic raw files' sar_grid_* variables)."""
    lines, samples = np.meshgrid(np.linspace(0, height - 1, points), np.linspace(0, width - 1, points), indexing="ij")
    return {
        "sar_grid_line": lines.ravel(),
        "sar_grid_sample": samples.ravel(),
        "sar_grid_latitude": (origin[0] + lines * step[0]).ravel(),
        "sar_grid_longitude": (origin[1] + samples * step[1]).ravel(),
    }


# The AI4Arctic "ready-to-train" 2-D grid: dims (samples, lines), two points each way.
GRID2D_LATITUDE = [[75.0, 74.99], [75.0, 74.99]]
GRID2D_LONGITUDE = [[-20.0, -20.0], [-19.97, -19.97]]


def write_ai4arctic(
    path: Path,
    *,
    shape: tuple[int, int] = (64, 64),
    data: np.ndarray | None = None,
    bands: Sequence[str] = AI4ARCTIC_BANDS,
    band_fill: float | None = None,
    chart: np.ndarray | None | Literal[False] = None,
    chart_dtype: str = "f4",
    chart_fill: int | float | None = None,
    codes: Sequence[str] | None = AI4ARCTIC_CODES,
    geolocation: Literal["tie-points", "grid2d"] | None = "tie-points",
    points: Mapping[str, np.ndarray] | None = None,
    coarse: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """An AI4Arctic-layout netCDF written by hand (independent of icetools.synth).

    - ``data`` (bands, H, W): the SAR variables named ``bands``; default :func:`ai4arctic_bands` of
      ``shape``. ``band_fill`` sets their _FillValue.
    - ``chart``: the polygon_icechart ids (written as ``chart_dtype`` with ``chart_fill``); default
      :func:`two_polygon_chart`; False writes no chart. ``codes``: the polygon_codes rows (header
      first), None for none.
    - ``geolocation``: "tie-points" (the raw layout's sar_grid_* variables: ``points`` or, by default,
      :func:`tie_points` of the shape), "grid2d" (the ready layout's 2 x 2 sar_grid2d_latitude/
      longitude) or None (a file the reader must refuse).
    - ``coarse``: name -> (h, w) fields on the 2 km grid (e.g. the AMSR2 btemp_* variables).
    """
    import netCDF4

    if data is None:
        data = ai4arctic_bands(*shape)
    height, width = data.shape[-2:]
    if chart is None:
        chart = two_polygon_chart(height, width)
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("sar_lines", height)
        ds.createDimension("sar_samples", width)
        for name, band in zip(bands, data, strict=True):
            ds.createVariable(name, "f4", ("sar_lines", "sar_samples"), fill_value=band_fill)[:] = band
        if chart is not False:
            dims = ("sar_lines", "sar_samples")
            variable = ds.createVariable("polygon_icechart", chart_dtype, dims, fill_value=chart_fill)
            variable[:] = np.asarray(chart).astype(chart_dtype)
        if codes is not None:
            ds.createDimension("polygon_codes", len(codes))
            table = ds.createVariable("polygon_codes", str, ("polygon_codes",))
            for i, row in enumerate(codes):
                table[i] = row
        for name, values in (coarse or {}).items():
            field = np.asarray(values, "f4")
            if "2km_grid_lines" not in ds.dimensions:
                ds.createDimension("2km_grid_lines", field.shape[0])
                ds.createDimension("2km_grid_samples", field.shape[1])
            ds.createVariable(name, "f4", ("2km_grid_lines", "2km_grid_samples"))[:] = field
        _write_geolocation(ds, geolocation, points or tie_points(height, width))
    return path


def _write_geolocation(ds, geolocation: str | None, points: Mapping[str, np.ndarray]) -> None:
    if geolocation == "tie-points":
        n = len(points["sar_grid_line"])
        ds.createDimension("sar_grid_points", n)
        for name in ("sar_grid_line", "sar_grid_sample", "sar_grid_latitude", "sar_grid_longitude"):
            ds.createVariable(name, "f8", ("sar_grid_points",))[:] = np.asarray(points[name])
    elif geolocation == "grid2d":
        dims = ("sar_sample_2dgrid_points", "sar_line_2dgrid_points")
        for dim in dims:
            ds.createDimension(dim, 2)
        ds.createVariable("sar_grid2d_latitude", "f8", dims)[:] = GRID2D_LATITUDE
        ds.createVariable("sar_grid2d_longitude", "f8", dims)[:] = GRID2D_LONGITUDE
    elif geolocation is not None:
        raise ValueError(f"unknown geolocation {geolocation!r}")


def refuse_file_creation_in(folder: Path, monkeypatch) -> None:
    """Make creating a file under ``folder`` fail with EACCES, as a read-only folder would: tests run
    as root here, and root ignores permission bits."""
    import errno
    import os

    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        if str(path).startswith(str(folder)) and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
