"""Tests for icetools.inference.products: how merged probabilities become SIC, masks, classes and polygon maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from fixtures import affine_grid, tie_points, write_ai4arctic

from icetools.inference import sic_of
from icetools.io.raster import write_raster

from .helpers import CONFIG, fixed_conv, predict, read, scene_array, whole_image, write_test_scene


def test_percent_is_uint8_with_255_nodata(tmp_path: Path) -> None:
    data = scene_array(40, 50, seed=8)
    data[:, :5, :5] = np.nan
    conv = fixed_conv(1)
    write_test_scene(tmp_path / "s.tif", data)
    predict(tmp_path / "s.tif", conv, CONFIG, tmp_path / "p.tif", tile=32, percent=True)
    with rasterio.open(tmp_path / "p.tif") as ds:
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255
        values = ds.read(1)
    expected = np.rint(whole_image(conv, data)[0] * 100)
    assert (values[:5, :5] == 255).all()
    np.testing.assert_array_equal(values[5:, :], expected[5:, :])
    assert values[values != 255].max() <= 100


def test_binary_mask_uses_the_stored_threshold(tmp_path: Path) -> None:
    data = scene_array(40, 50, seed=9)
    config = {**CONFIG, "task": "binary", "threshold": 0.35}
    write_test_scene(tmp_path / "s.tif", data)
    predict(tmp_path / "s.tif", fixed_conv(1), config, tmp_path / "gl.tif", tile=32)
    probability = read(tmp_path / "gl.tif")
    with rasterio.open(tmp_path / "gl_mask.tif") as ds:
        assert ds.descriptions == ("line",) and ds.nodata == 255
        mask = ds.read(1)
    np.testing.assert_array_equal(mask, (probability >= 0.35).astype("uint8"))
    assert 0 < mask.mean() < 1


def test_multiclass_classes_and_probabilities(tmp_path: Path) -> None:
    data = scene_array(40, 50, seed=10)
    conv = fixed_conv(1, out_channels=3)
    config = {**CONFIG, "task": "multiclass", "n_classes": 3, "class_names": ["water", "young", "old"]}
    write_test_scene(tmp_path / "s.tif", data)
    predict(tmp_path / "s.tif", conv, config, tmp_path / "c.tif", tile=32, probabilities=True)
    reference = whole_image(conv, data)
    with rasterio.open(tmp_path / "c.tif") as ds:
        assert ds.dtypes[0] == "uint8" and ds.tags()["class_names"] == "water,young,old"
        np.testing.assert_array_equal(ds.read(1), reference.argmax(0))
    with rasterio.open(tmp_path / "c_probs.tif") as ds:
        assert ds.descriptions == ("water", "young", "old")
        np.testing.assert_allclose(ds.read(), reference, atol=2e-6)


def test_polygon_map_equals_hand_computed_polygon_means(tmp_path: Path) -> None:
    data = scene_array(40, 50, seed=11)
    data[:, 30:, 40:] = np.nan  # land inside polygon 3: excluded from its mean, nodata in the map
    ids = np.zeros((40, 50), dtype="float32")
    ids[:20, :25], ids[:20, 25:], ids[20:, :] = 1, 2, 3
    ids[35:, :10] = 0  # no polygon here
    write_test_scene(tmp_path / "s.tif", data)
    write_raster(tmp_path / "labels.tif", np.stack([ids, np.full_like(ids, 0.5)]), affine_grid(40, 50), nodata=None,
                 band_names=["polygon_id", "SIC"])
    conv = fixed_conv(1)
    predict(tmp_path / "s.tif", conv, CONFIG, tmp_path / "o.tif", tile=32, polygons=tmp_path / "labels.tif")
    sic = whole_image(conv, data)[0]
    painted = read(tmp_path / "o_polygon_sic.tif")
    valid = np.isfinite(data).all(0)
    for polygon in (1, 2, 3):
        where = (ids == polygon) & valid
        np.testing.assert_allclose(painted[where], sic[where].astype("float64").mean(), rtol=1e-6)
    assert np.isnan(painted[~valid]).all() and np.isnan(painted[ids == 0]).all()


def test_sic_from_class_channels_is_their_expected_concentration() -> None:
    probs = np.array([[[1.0, 0.0, 0.2]], [[0.0, 0.0, 0.3]], [[0.0, 1.0, 0.5]]], dtype="float32")  # 3 classes: 0, 0.5, 1
    np.testing.assert_allclose(sic_of(probs), [[0.0, 1.0, 0.65]])
    np.testing.assert_array_equal(sic_of(probs[:1]), probs[0])


def write_netcdf_scene(path: Path, data: np.ndarray, ids: np.ndarray) -> Path:
    """A minimal AI4Arctic-style netCDF: HH/HV, four tie points and the chart's polygon ids (no codes table)."""
    return write_ai4arctic(path, data=data, band_fill=np.float32(np.nan), chart=ids, codes=None,
                           points=tie_points(*data.shape[1:], points=2))


def test_polygons_from_the_netcdf_chart_with_percent_output(tmp_path: Path) -> None:
    data = scene_array(40, 50, seed=13)
    ids = np.zeros((40, 50), dtype="float32")
    ids[:, :20], ids[:, 20:] = 7, 9
    scene = write_netcdf_scene(tmp_path / "scene.nc", data, ids)
    config = {**CONFIG, "inputs": ["nersc_sar_primary", "nersc_sar_secondary"]}
    conv = fixed_conv(1)
    predict(scene, conv, config, tmp_path / "o.tif", tile=32, polygons="scene", percent=True)
    sic = whole_image(conv, data)[0]
    with rasterio.open(tmp_path / "o_polygon_sic.tif") as ds:
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255 and len(ds.gcps[0]) == 4
        painted = ds.read(1)
    for polygon in (7, 9):
        assert (painted[ids == polygon] == np.rint(sic[ids == polygon].mean() * 100)).all()
