"""Grids: tie-point geolocation closes on itself and honours the tie points."""

from __future__ import annotations

import numpy as np
import pytest
from scenes import affine_grid, gcp_grid

from icetools.errors import CRSError
from icetools.grid import Grid, TiePointMapping


def test_pixel_lonlat_pixel_round_trip_within_half_a_pixel():
    grid = gcp_grid()
    rng = np.random.default_rng(1)
    cols = rng.uniform(-20, grid.width + 20, 2000)  # a little beyond the swath too
    rows = rng.uniform(-20, grid.height + 20, 2000)
    lon, lat = grid.tie_points.pixel_to_lonlat(cols, rows)
    back_c, back_r = grid.tie_points.lonlat_to_pixel(lon, lat)
    assert np.max(np.hypot(back_c - cols, back_r - rows)) < 0.5
    assert np.max(np.hypot(back_c - cols, back_r - rows)) < 1e-3  # in practice far below


def test_mapping_is_exact_at_the_tie_points():
    grid = gcp_grid()
    cols = np.array([g.col for g in grid.gcps])
    rows = np.array([g.row for g in grid.gcps])
    lon, lat = grid.tie_points.pixel_to_lonlat(cols, rows)
    assert np.allclose(lon, [g.x for g in grid.gcps], atol=1e-9)
    assert np.allclose(lat, [g.y for g in grid.gcps], atol=1e-9)


def test_scattered_gcps_work_too():
    rng = np.random.default_rng(0)
    cols, rows = rng.uniform(0, 500, 60), rng.uniform(0, 400, 60)
    lon, lat = -30 + cols * 1e-3, 70 + rows * 4e-4
    mapping = TiePointMapping(cols, rows, lon, lat)
    c, r = mapping.lonlat_to_pixel(lon, lat)
    assert np.allclose(c, cols, atol=0.05) and np.allclose(r, rows, atol=0.05)


def test_pixel_size_and_bounds():
    grid = affine_grid()
    assert grid.pixel_size() == pytest.approx(40.0)
    west, south, east, north = grid.lonlat_bounds()
    assert west < east and south < north
    g = gcp_grid()
    assert 30 < g.pixel_size() < 60  # about 40 m per pixel by construction


def test_same_pixels_as():
    assert affine_grid().same_pixels_as(affine_grid())
    assert not affine_grid().same_pixels_as(affine_grid(64, 81))
    assert gcp_grid().same_pixels_as(gcp_grid())
    assert not gcp_grid().same_pixels_as(affine_grid(300, 260))


def test_ungeoreferenced_grid_refuses_clearly():
    with pytest.raises(CRSError, match="neither"):
        Grid(10, 10).require_georeference("scene.tif")
