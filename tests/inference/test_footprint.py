"""SIC over a footprint: streamed smoothing equals the whole-scene answer, no-data never leaks, predict records it."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from scipy import ndimage

from icetools.errors import ConfigError
from icetools.inference.footprint import (
    COLUMN_CHUNK,
    FootprintRows,
    smooth_block,
    footprint_halo,
    footprint_sink,
    smooth_valid,
    smooth_valid_torch,
)

from .helpers import CONFIG, fixed_conv, predict, read, scene_array, write_test_scene


def streamed(values: np.ndarray, sigma: float, strips: list[int]) -> np.ndarray:
    """``values`` handed to a FootprintRows in strips of the given heights; what came out, in place."""
    height, width = values.shape[1:]
    out = np.full(values.shape, -1.0, dtype="float32")
    seen: list[int] = []

    def sink(window: Window, rows: np.ndarray) -> None:
        seen.append(int(window.row_off))
        out[:, int(window.row_off):int(window.row_off) + int(window.height)] = rows

    rows = FootprintRows(sink, sigma, height=height, width=width)
    start = 0
    for size in strips:
        rows(Window(0, start, width, size), values[:, start:start + size])
        start += size
    assert start == height and seen == sorted(seen)  # every row once, top to bottom
    return out


@pytest.mark.parametrize("sigma,strips", [(2.0, [7, 1, 30, 2, 20]), (3.5, [60]), (1.0, [1] * 60), (5.0, [13, 13, 34])])
def test_streaming_equals_the_whole_scene(sigma: float, strips: list[int]) -> None:
    rng = np.random.default_rng(int(sigma * 10))
    values = rng.random((2, 60, 37)).astype("float32")
    values[:, 10:14, 5:30] = np.nan  # land: a band of no-data across the strips
    values[:, :, :3] = np.nan
    got = streamed(values, sigma, strips)
    np.testing.assert_allclose(got, smooth_valid(values, sigma), rtol=1e-5, atol=1e-6, equal_nan=True)
    assert footprint_halo(sigma) == int(4 * sigma + 0.5)


def test_wide_rows_smoothed_in_column_chunks_equal_one_block() -> None:
    values = np.random.default_rng(4).random((1, 30, 2 * COLUMN_CHUNK + 77)).astype("float32")
    values[0, 5:9, COLUMN_CHUNK - 3:COLUMN_CHUNK + 40] = np.nan  # no-data across a chunk's edge
    np.testing.assert_allclose(smooth_valid(values, 4.0), smooth_block(values, 4.0), rtol=1e-6, atol=1e-7,
                               equal_nan=True)


def test_the_torch_path_equals_scipys() -> None:
    # What a GPU run smooths with, checked here on the CPU device (test_gpu_path runs predict on CUDA).
    values = np.random.default_rng(5).random((1, 50, 90)).astype("float32")
    values[0, 20:30, 40:45] = np.nan
    np.testing.assert_allclose(smooth_valid_torch(values, 3.0, "cpu"), smooth_valid(values, 3.0), rtol=1e-5,
                               atol=1e-6, equal_nan=True)


def test_no_data_stays_and_never_pulls_neighbours_towards_zero() -> None:
    values = np.full((1, 30, 30), 0.8, dtype="float32")
    values[0, 12:18, 12:18] = np.nan
    smoothed = smooth_valid(values, 3.0)
    assert np.isnan(smoothed[0, 12:18, 12:18]).all()
    np.testing.assert_allclose(smoothed[np.isfinite(smoothed)], 0.8, rtol=1e-6)  # the edge of the hole too


def test_smooth_valid_is_scipys_gaussian_where_everything_is_valid() -> None:
    values = np.random.default_rng(1).random((1, 40, 40)).astype("float64")
    reference = ndimage.gaussian_filter(values[0], 2.0, mode="constant") / ndimage.gaussian_filter(np.ones((40, 40)), 2.0, mode="constant")
    np.testing.assert_allclose(smooth_valid(values, 2.0)[0], reference, rtol=1e-5)


def test_no_footprint_hands_rows_on_untouched() -> None:
    def sink(window: Window, rows: np.ndarray) -> None:
        pass

    assert footprint_sink(sink, 0.0, height=5, width=5) is sink


def test_predict_smooths_sic_by_the_footprint_in_metres_and_records_it(tmp_path) -> None:
    data = scene_array(64, 48)
    scene = write_test_scene(tmp_path / "scene.tif", data)
    with rasterio.open(scene) as ds:
        pixel = abs(ds.transform.a)
    conv = fixed_conv(3)
    predict(scene, conv, CONFIG, tmp_path / "raw.tif", footprint_m=0)
    predict(scene, conv, CONFIG, tmp_path / "sic.tif", footprint_m=3 * pixel)
    raw, smoothed = read(tmp_path / "raw.tif"), read(tmp_path / "sic.tif")
    np.testing.assert_allclose(smoothed, smooth_valid(raw[None], 3.0)[0], rtol=1e-5, atol=1e-6)
    assert smoothed.std() < raw.std()
    with rasterio.open(tmp_path / "sic.tif") as ds:
        assert ds.tags()["sic_footprint_sigma_m"] == f"{3 * pixel:g}"
    with rasterio.open(tmp_path / "raw.tif") as ds:
        assert ds.tags()["sic_footprint_sigma_m"] == "0 (per pixel)"


def test_a_footprint_is_refused_for_other_tasks_and_below_zero(tmp_path) -> None:
    scene = write_test_scene(tmp_path / "scene.tif", scene_array(32, 32))
    with pytest.raises(ConfigError, match="footprint applies to sic models"):
        predict(scene, fixed_conv(), {**CONFIG, "task": "binary"}, tmp_path / "a.tif", footprint_m=100)
    with pytest.raises(ConfigError, match="metres >= 0"):
        predict(scene, fixed_conv(), CONFIG, tmp_path / "b.tif", footprint_m=-1)
    assert not list(tmp_path.glob("?.tif"))
