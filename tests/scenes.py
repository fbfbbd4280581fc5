"""Tiny georeferenced rasters for tests (the project's generators live in icetools.synth)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from affine import Affine
from pyproj import CRS

from icetools.grid import Grid, gcps_from_tie_points
from icetools.io.raster import write_raster

PIXEL = 40.0
ORIGIN = (100_000.0, -2_000_000.0)


def affine_grid(height: int = 64, width: int = 80) -> Grid:
    """An EPSG:3413 grid with 40 m pixels."""
    return Grid(height, width, crs=CRS.from_epsg(3413), transform=Affine(PIXEL, 0, ORIGIN[0], 0, -PIXEL, ORIGIN[1]))


def gcp_grid(height: int = 300, width: int = 260) -> Grid:
    """A radar-geometry-like grid: 21 x 21 tie points of a rotated, slightly curved lon/lat frame."""
    lines, samples = np.meshgrid(np.linspace(0, height - 1, 21), np.linspace(0, width - 1, 21), indexing="ij")
    lat = 75.0 + lines * 3.6e-4 + samples * 0.8e-4 + (samples / width) ** 2 * 2e-3
    lon = -20.0 + samples * 1.3e-3 - lines * 2.5e-4
    gcps = gcps_from_tie_points(lines.ravel(), samples.ravel(), lat.ravel(), lon.ravel())
    return Grid(height, width, gcps=gcps, gcp_crs=CRS.from_epsg(4326))


def write_scene(path: Path, grid: Grid, *, seed: int = 0, land: bool = True) -> Path:
    """A 2-band float32 SAR-like scene with a NaN 'land' corner."""
    rng = np.random.default_rng(seed)
    data = rng.normal(-15, 3, size=(2, grid.height, grid.width)).astype("float32")
    data[1] -= 10
    if land:
        data[:, : grid.height // 4, : grid.width // 4] = np.nan
    write_raster(path, data, grid, nodata=float("nan"), band_names=["nersc_sar_primary", "nersc_sar_secondary"])
    return path
