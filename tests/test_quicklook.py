"""Tests for icetools.quicklook: decimated reads of a netCDF scene and the side-by-side PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures import tie_points, write_ai4arctic
from inference.helpers import CONFIG, fixed_conv, predict, scene_array

from icetools.errors import OutputExistsError
from icetools.io.scene import open_scene
from icetools.quicklook import decimated_shape, read_scene_band, write_quicklook


def test_quicklook_reads_a_netcdf_scene_decimated(tmp_path: Path) -> None:
    data = scene_array(40, 50, seed=14)
    scene = write_ai4arctic(tmp_path / "scene.nc", data=data, band_fill=np.float32(np.nan),
                            chart=np.ones((40, 50), dtype="float32"), codes=None, points=tie_points(40, 50, points=2))
    assert decimated_shape(40, 50, 25) == (20, 25)
    with open_scene(scene) as opened:
        small = read_scene_band(opened, "HH", (20, 25))
    np.testing.assert_array_equal(small, data[0, ::2, ::2])
    config = {**CONFIG, "inputs": ["nersc_sar_primary", "nersc_sar_secondary"]}
    predict(scene, fixed_conv(1), config, tmp_path / "o.tif", tile=32)
    png = write_quicklook(scene, tmp_path / "o.tif", tmp_path / "q.png", max_side=25)
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(OutputExistsError):
        write_quicklook(scene, tmp_path / "o.tif", tmp_path / "q.png")
