"""Patches the training tests learn from: an easy SIC scene and an easy line mask (both 96 px)."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures import affine_grid
from test_data import grid_windows, patch_frame, write_sic_scene

from icetools.io.raster import write_raster
from icetools.patches_io import write_patches
from icetools.training import train_model

from .helpers import split_by_column, tiny


@pytest.fixture(scope="session")
def sic_frame(tmp_path_factory):
    scene, labels, _ = write_sic_scene(tmp_path_factory.mktemp("sic"))
    return patch_frame(scene, labels, grid_windows(96, 32, 16, split_by_column))


@pytest.fixture(scope="session")
def binary_frame(tmp_path_factory):
    """A line mask the HH band shows plainly: an easy binary task."""
    folder = tmp_path_factory.mktemp("binary")
    rng = np.random.default_rng(2)
    line = np.zeros((96, 96), "uint8")
    line[20:23, :] = 1
    line[:, 50:53] = 1
    line[70:73, 10:90] = 1
    image = np.stack([line * 2.0 + rng.normal(0, 0.3, line.shape), rng.normal(0, 1, line.shape)]).astype("float32")
    grid = affine_grid(96, 96)
    scene = write_raster(folder / "scene.tif", image, grid, nodata=float("nan"), band_names=["phase", "magnitude"])
    labels = write_raster(folder / "lines.tif", line, grid, nodata=None, band_names=["line"], categorical=True)
    return patch_frame(scene, labels, grid_windows(96, 32, 16, split_by_column), task="binary")


@pytest.fixture(scope="session")
def trained_sic(sic_frame, tmp_path_factory):
    """8 epochs of a tiny U-Net with the regional loss (shared by several tests)."""
    run_dir = tmp_path_factory.mktemp("runs") / "sic"
    summary = train_model(sic_frame, run_dir, tiny(epochs=8, seed=1))
    return run_dir, summary


@pytest.fixture
def patches_file(sic_frame, tmp_path):
    """The SIC patches as the GeoPackage the commands read."""
    return write_patches(sic_frame, tmp_path / "patches.gpkg")
