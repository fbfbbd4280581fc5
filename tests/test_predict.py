"""Tests for icetools.predict: window layout, merging against whole-image answers, streaming, outputs, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from pyproj import CRS
from rasterio.control import GroundControlPoint
from typer.testing import CliRunner

from icetools.checkpoint import save_model_dir
from icetools.cli.app import app
from icetools.errors import ConfigError, DataError, MissingVariableError, OutputExistsError
from icetools.grid import Grid
from icetools.io.raster import write_raster
from icetools.models import build_model
from icetools.predict import (
    RowAccumulator,
    array_strip_reader,
    make_predictor,
    plan_windows,
    predict_scene,
    sic_of,
    sliding_window_merge,
    window_starts,
    window_weights,
)

MEAN = np.array([0.1, 0.2], dtype="float32")
STD = np.array([2.0, 3.0], dtype="float32")
CONFIG = {"task": "sic", "inputs": ["HH", "HV"], "normalization": {"mean": MEAN.tolist(), "std": STD.tolist()}, "patch_size": 32}
GRID_CRS = CRS.from_epsg(3413)


def fixed_conv(kernel: int = 1, *, out_channels: int = 1, padding_mode: str = "zeros") -> torch.nn.Conv2d:
    """A convolution with set weights: the engine sees its output as logits."""
    conv = torch.nn.Conv2d(2, out_channels, kernel, padding=kernel // 2, padding_mode=padding_mode)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * 0.5)
        conv.bias.copy_(torch.linspace(-0.2, 0.2, out_channels))
    return conv.eval()


def whole_image(conv: torch.nn.Conv2d, data: np.ndarray) -> np.ndarray:
    """The reference: the model on the whole normalised scene at once, NaN -> 0, sigmoid/softmax."""
    x = (data - MEAN[:, None, None]) / STD[:, None, None]
    x = np.where(np.isfinite(x), x, 0).astype("float32")
    with torch.no_grad():
        logits = conv(torch.from_numpy(x)[None])[0]
    probs = torch.sigmoid(logits) if logits.shape[0] == 1 else torch.softmax(logits, 0)
    return probs.numpy()


def scene_array(height: int, width: int, *, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(2, height, width)).astype("float32")


def write_scene(path: Path, data: np.ndarray, *, gcps: bool = False, names=("HH", "HV")) -> Path:
    height, width = data.shape[1:]
    if gcps:
        points = tuple(
            GroundControlPoint(row=r, col=c, x=-40 + c * 0.01, y=75 - r * 0.005, id=f"{r}-{c}")
            for r in (0, height) for c in (0, width)
        ) + (GroundControlPoint(row=height / 2, col=width / 2, x=-40 + width * 0.005, y=75 - height * 0.0025, id="mid"),)
        grid = Grid(height, width, gcps=points, gcp_crs=CRS.from_epsg(4326))
    else:
        grid = Grid(height, width, crs=GRID_CRS, transform=Affine(40, 0, 1000, 0, -40, 5000))
    return write_raster(path, data, grid, nodata=None, band_names=list(names))


def read(path: Path, band: int = 1) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(band)


def run(tmp_path: Path, data: np.ndarray, conv: torch.nn.Module, name: str = "out.tif", config=CONFIG, **options):
    scene = tmp_path / f"scene_{name}"
    if not scene.exists():
        write_scene(scene, data)
    predict_scene(scene, conv, config, tmp_path / name, **options)
    return read(tmp_path / name)


def border_mask(plan, shape: tuple[int, int]) -> np.ndarray:
    """Pixels on a window's inner border (not a scene edge): there a 3x3 conv sees window padding."""
    mask = np.zeros(shape, dtype=bool)
    height, width = shape
    for r in plan.row_starts:
        for c in plan.col_starts:
            r1, c1 = min(r + plan.tile, height), min(c + plan.tile, width)
            if r > 0:
                mask[r, c:c1] = True
            if r1 < height:
                mask[r1 - 1, c:c1] = True
            if c > 0:
                mask[r:r1, c] = True
            if c1 < width:
                mask[r:r1, c1 - 1] = True
    return mask


# --- layout --------------------------------------------------------------------------------------


def test_window_starts_cover_the_axis_and_the_last_ends_at_the_edge() -> None:
    assert window_starts(100, 32, 24) == (0, 24, 48, 68)
    assert window_starts(77, 32, 24) == (0, 24, 45)
    assert window_starts(96, 32, 32) == (0, 32, 64)
    assert window_starts(20, 32, 24) == (0,)


@pytest.mark.parametrize("tile, overlap", [(33, 0.25), (0, 0.25), (32, -0.1), (32, 0.95)])
def test_bad_tiling_is_refused(tile: int, overlap: float) -> None:
    with pytest.raises(ConfigError):
        plan_windows(100, 100, tile=tile, overlap=overlap)


# --- merging against the whole-image answer -------------------------------------------------------


def test_average_of_a_per_pixel_model_equals_the_whole_image(tmp_path: Path) -> None:
    data = scene_array(100, 77)
    conv = fixed_conv(1)
    out = run(tmp_path, data, conv, tile=32, overlap=0.25)
    assert out.shape == (100, 77)
    np.testing.assert_allclose(out, whole_image(conv, data)[0], rtol=0, atol=2e-6)


def test_average_of_a_3x3_model_matches_away_from_window_borders(tmp_path: Path) -> None:
    data = scene_array(100, 77, seed=1)
    conv = fixed_conv(3, padding_mode="reflect")
    out = run(tmp_path, data, conv, tile=32, overlap=0.25)
    reference = whole_image(conv, data)[0]
    away = ~border_mask(plan_windows(100, 77, tile=32, overlap=0.25), (100, 77))
    np.testing.assert_allclose(out[away], reference[away], atol=2e-6)
    assert np.abs(out[~away] - reference[~away]).max() > 1e-4  # the borders do differ: the mask is needed


def test_a_scene_smaller_than_the_window_is_reflected_and_cropped_back(tmp_path: Path) -> None:
    data = scene_array(20, 18, seed=2)
    conv = fixed_conv(3, padding_mode="reflect")
    out = run(tmp_path, data, conv, tile=32)
    assert out.shape == (20, 18)
    reference = whole_image(conv, data)[0]
    # Rows/columns reflected in beyond the far edge are what the whole image's reflect padding shows
    # the edge pixels, so the tiny scene matches everywhere, edges included.
    np.testing.assert_allclose(out, reference, atol=2e-6)


def test_invalid_pixels_are_nodata_and_do_not_reach_their_neighbours(tmp_path: Path) -> None:
    data = scene_array(64, 70, seed=4)
    block = (slice(20, 30), slice(30, 45))
    with_nan = data.copy()
    with_nan[(slice(None), *block)] = np.nan
    as_mean = data.copy()
    as_mean[(slice(None), *block)] = MEAN[:, None, None]  # normalises to 0, what NaN becomes
    conv = fixed_conv(3)
    out_nan = run(tmp_path, with_nan, conv, "nan.tif", tile=32, overlap=0.5)
    out_mean = run(tmp_path, as_mean, conv, "mean.tif", tile=32, overlap=0.5)
    out_other = run(tmp_path, data, conv, "other.tif", tile=32, overlap=0.5)
    inside = np.zeros((64, 70), dtype=bool)
    inside[block] = True
    assert np.isnan(out_nan[inside]).all()
    assert np.isfinite(out_nan[~inside]).all()
    np.testing.assert_array_equal(out_nan[~inside], out_mean[~inside])
    # Beyond the 3x3 reach of the block the values there do not matter at all.
    far = np.ones_like(inside)
    far[19:31, 29:46] = False
    np.testing.assert_allclose(out_nan[far], out_other[far], atol=2e-6)


def test_gaussian_merge_stays_within_the_window_predictions(tmp_path: Path) -> None:
    data = scene_array(70, 60, seed=5)
    conv = fixed_conv(3)
    out = run(tmp_path, data, conv, tile=32, overlap=0.5, merge="gaussian")
    assert np.isfinite(out).all()  # sum(w) > 0 everywhere, corners included
    weights = window_weights(32, "gaussian")
    assert weights.min() > 0 and weights[16, 16] > weights[0, 0]
    x = (data - MEAN[:, None, None]) / STD[:, None, None]
    plan = plan_windows(70, 60, tile=32, overlap=0.5)
    low = np.full((70, 60), np.inf)
    high = np.full((70, 60), -np.inf)
    for r in plan.row_starts:
        for c in plan.col_starts:
            with torch.no_grad():
                p = torch.sigmoid(conv(torch.from_numpy(np.ascontiguousarray(x[:, r : r + 32, c : c + 32]))[None]))[0, 0].numpy()
            low[r : r + 32, c : c + 32] = np.minimum(low[r : r + 32, c : c + 32], p)
            high[r : r + 32, c : c + 32] = np.maximum(high[r : r + 32, c : c + 32], p)
    assert (out >= low - 1e-6).all() and (out <= high + 1e-6).all()
    assert np.abs(out - run(tmp_path, data, conv, "avg.tif", tile=32, overlap=0.5)).max() > 1e-5


# --- streaming ------------------------------------------------------------------------------------


def test_a_tall_scene_streams_through_a_tile_high_accumulator() -> None:
    height, width, tile = 1000, 40, 32
    data = scene_array(height, width, seed=6)
    reader = array_strip_reader(data)
    strips: list[tuple[int, int]] = []
    written: list[tuple[int, int]] = []
    out = np.full((1, height, width), -1.0, dtype="float32")

    def read_strip(row0: int, row1: int):
        strips.append((row0, row1))
        return reader(row0, row1)

    def write_rows(window, probs) -> None:
        written.append((int(window.row_off), int(window.height)))
        out[:, window.row_off : window.row_off + window.height] = probs

    conv = fixed_conv(1)
    predictor = make_predictor(conv, {"task": "sic"}, device="cpu")
    plan = plan_windows(height, width, tile=tile, overlap=0.25)
    stats = sliding_window_merge(read_strip, predictor, plan, channels=1, weights=window_weights(tile, "average"), write_rows=write_rows, batch=3)
    assert stats.accumulator_shape == (1, tile, width)  # O(tile) rows, not O(scene)
    assert max(r1 - r0 for r0, r1 in strips) <= tile
    rows = [r for r0, n in written for r in range(r0, r0 + n)]
    assert rows == list(range(height))  # every row written once, in order
    x = np.where(np.isfinite(data), data, 0)
    np.testing.assert_allclose(out[0], whole_image_raw(conv, x), atol=2e-6)
    assert stats.windows == stats.windows_predicted == plan.n_windows


def whole_image_raw(conv: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(conv(torch.from_numpy(x.astype("float32"))[None]))[0, 0].numpy()


def test_context_models_read_strips_with_their_margins() -> None:
    class TwoScales(torch.nn.Module):
        """A context model: the local window plus the context window twice as large, averaged."""

        context_scales = (1.0, 2.0)
        in_channels = 2

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            assert x.ndim == 5 and x.shape[1] == 2
            return (x[:, 0, :1] + x[:, 1, :1]) / 2

    data = scene_array(200, 50, seed=7)
    strips: list[tuple[int, int]] = []
    reader = array_strip_reader(data)
    predictor = make_predictor(TwoScales(), {"task": "sic"}, device="cpu")
    plan = plan_windows(200, 50, tile=32, overlap=0.25)
    out = np.zeros((200, 50), dtype="float32")

    def write_rows(window, probs) -> None:
        out[window.row_off : window.row_off + window.height] = probs[0]

    stats = sliding_window_merge(
        lambda a, b: strips.append((a, b)) or reader(a, b), predictor, plan, channels=1,
        weights=window_weights(32, "average"), write_rows=write_rows, context_scales=(1.0, 2.0),
    )
    assert max(b - a for a, b in strips) <= 32 + 2 * 16
    assert stats.accumulator_shape == (1, 32, 50)
    assert np.isfinite(out).all() and (out > 0).all() and (out < 1).all()


def test_a_context_model_predicts_a_whole_scene(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("fctl", in_channels=2, width=1 / 32, context_scales=[1.0, 2.0]).eval()
    data = scene_array(50, 70, seed=12)
    data[:, :8, :8] = np.nan
    out = run(tmp_path, data, model, tile=32)
    assert out.shape == (50, 70)
    assert np.isnan(out[:8, :8]).all() and np.isfinite(out[8:]).all()
    assert ((out[8:] > 0) & (out[8:] < 1)).all()


def test_row_accumulator_divides_and_rolls() -> None:
    acc = RowAccumulator(1, 4, 3)
    acc.add(np.full((1, 4, 3), 2.0), np.ones((4, 3)), row=0, col=0)
    acc.add(np.full((1, 2, 3), 5.0), np.full((2, 3), 2.0), row=2, col=0)
    top = acc.pop(2, np.ones((2, 3), dtype=bool))
    np.testing.assert_array_equal(top, np.full((1, 2, 3), 2.0))
    assert acc.top == 2
    bottom = acc.pop(4, np.array([[True, False, True], [True, True, True]]))
    np.testing.assert_allclose(bottom[0, 0], [4.0, np.nan, 4.0])  # (2*1 + 5*2) / 3


# --- outputs --------------------------------------------------------------------------------------


def test_outputs_keep_crs_transform_nodata_and_band_names(tmp_path: Path) -> None:
    write_scene(tmp_path / "s.tif", scene_array(40, 50))
    predict_scene(tmp_path / "s.tif", fixed_conv(1), CONFIG, tmp_path / "o.tif", tile=32, ice_water=True)
    with rasterio.open(tmp_path / "s.tif") as src, rasterio.open(tmp_path / "o.tif") as out:
        assert out.crs == src.crs and out.transform == src.transform
        assert out.descriptions == ("SIC",) and out.dtypes[0] == "float32" and np.isnan(out.nodata)
        assert out.tags()["merge"] == "average" and out.tags()["overlap"] == "0.25"
        sic = out.read(1)
    with rasterio.open(tmp_path / "o_icewater.tif") as ice:
        assert ice.nodata == 255 and ice.descriptions == ("ice",)
        np.testing.assert_array_equal(ice.read(1), (sic >= 0.15).astype("uint8"))


def test_outputs_keep_gcps(tmp_path: Path) -> None:
    write_scene(tmp_path / "s.tif", scene_array(40, 50), gcps=True)
    predict_scene(tmp_path / "s.tif", fixed_conv(1), CONFIG, tmp_path / "o.tif", tile=32)
    with rasterio.open(tmp_path / "s.tif") as src, rasterio.open(tmp_path / "o.tif") as out:
        (src_gcps, src_crs), (out_gcps, out_crs) = src.gcps, out.gcps
        assert len(out_gcps) == len(src_gcps) == 5 and out_crs == src_crs
        assert [(g.row, g.col, g.x, g.y) for g in out_gcps] == [(g.row, g.col, g.x, g.y) for g in src_gcps]


def test_percent_is_uint8_with_255_nodata(tmp_path: Path) -> None:
    data = scene_array(40, 50, seed=8)
    data[:, :5, :5] = np.nan
    conv = fixed_conv(1)
    write_scene(tmp_path / "s.tif", data)
    predict_scene(tmp_path / "s.tif", conv, CONFIG, tmp_path / "p.tif", tile=32, percent=True)
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
    write_scene(tmp_path / "s.tif", data)
    predict_scene(tmp_path / "s.tif", fixed_conv(1), config, tmp_path / "gl.tif", tile=32)
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
    write_scene(tmp_path / "s.tif", data)
    predict_scene(tmp_path / "s.tif", conv, config, tmp_path / "c.tif", tile=32, probabilities=True)
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
    grid = Grid(40, 50, crs=GRID_CRS, transform=Affine(40, 0, 1000, 0, -40, 5000))
    write_scene(tmp_path / "s.tif", data)
    write_raster(tmp_path / "labels.tif", np.stack([ids, np.full_like(ids, 0.5)]), grid, nodata=None, band_names=["polygon_id", "SIC"])
    conv = fixed_conv(1)
    predict_scene(tmp_path / "s.tif", conv, CONFIG, tmp_path / "o.tif", tile=32, polygons=tmp_path / "labels.tif")
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
    """A minimal AI4Arctic-style netCDF: HH/HV, tie points and the chart's polygon ids."""
    import netCDF4

    height, width = data.shape[1:]
    with netCDF4.Dataset(path, "w") as ds:
        ds.createDimension("sar_lines", height)
        ds.createDimension("sar_samples", width)
        ds.createDimension("sar_grid_points", 4)
        for name, band in zip(("nersc_sar_primary", "nersc_sar_secondary"), data):
            var = ds.createVariable(name, "f4", ("sar_lines", "sar_samples"), fill_value=np.float32(np.nan))
            var[:] = band
        ds.createVariable("polygon_icechart", "f4", ("sar_lines", "sar_samples"))[:] = ids
        for name, values in (
            ("sar_grid_line", [0, 0, height - 1, height - 1]), ("sar_grid_sample", [0, width - 1, 0, width - 1]),
            ("sar_grid_latitude", [75.0, 75.0, 74.8, 74.8]), ("sar_grid_longitude", [-40.0, -39.6, -40.0, -39.6]),
        ):
            ds.createVariable(name, "f8", ("sar_grid_points",))[:] = values
    return path


def test_polygons_from_the_netcdf_chart_with_percent_output(tmp_path: Path) -> None:
    data = scene_array(40, 50, seed=13)
    ids = np.zeros((40, 50), dtype="float32")
    ids[:, :20], ids[:, 20:] = 7, 9
    scene = write_netcdf_scene(tmp_path / "scene.nc", data, ids)
    config = {**CONFIG, "inputs": ["nersc_sar_primary", "nersc_sar_secondary"]}
    conv = fixed_conv(1)
    predict_scene(scene, conv, config, tmp_path / "o.tif", tile=32, polygons="scene", percent=True)
    sic = whole_image(conv, data)[0]
    with rasterio.open(tmp_path / "o_polygon_sic.tif") as ds:
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255 and len(ds.gcps[0]) == 4
        painted = ds.read(1)
    for polygon in (7, 9):
        assert (painted[ids == polygon] == np.rint(sic[ids == polygon].mean() * 100)).all()


def test_quicklook_reads_a_netcdf_scene_decimated(tmp_path: Path) -> None:
    from icetools.io.scene import open_scene
    from icetools.quicklook import decimated_shape, read_scene_band, write_quicklook

    data = scene_array(40, 50, seed=14)
    scene = write_netcdf_scene(tmp_path / "scene.nc", data, np.ones((40, 50), dtype="float32"))
    assert decimated_shape(40, 50, 25) == (20, 25)
    with open_scene(scene) as opened:
        small = read_scene_band(opened, "HH", (20, 25))
    np.testing.assert_array_equal(small, data[0, ::2, ::2])
    config = {**CONFIG, "inputs": ["nersc_sar_primary", "nersc_sar_secondary"]}
    predict_scene(scene, fixed_conv(1), config, tmp_path / "o.tif", tile=32)
    png = write_quicklook(scene, tmp_path / "o.tif", tmp_path / "q.png", max_side=25)
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(OutputExistsError):
        write_quicklook(scene, tmp_path / "o.tif", tmp_path / "q.png")


def test_existing_output_is_refused_and_left_untouched(tmp_path: Path) -> None:
    write_scene(tmp_path / "s.tif", scene_array(40, 50))
    (tmp_path / "o.tif").write_bytes(b"old")
    with pytest.raises(OutputExistsError):
        predict_scene(tmp_path / "s.tif", fixed_conv(1), CONFIG, tmp_path / "o.tif", tile=32)
    assert (tmp_path / "o.tif").read_bytes() == b"old"


def test_all_nan_scene_fails_and_leaves_nothing(tmp_path: Path) -> None:
    write_scene(tmp_path / "s.tif", np.full((2, 40, 50), np.nan, dtype="float32"))
    with pytest.raises(DataError, match="no valid pixel"):
        predict_scene(tmp_path / "s.tif", fixed_conv(1), CONFIG, tmp_path / "o.tif", tile=32, ice_water=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]


def test_missing_bands_are_named(tmp_path: Path) -> None:
    write_scene(tmp_path / "s.tif", scene_array(40, 50), names=("VV", "VH"))
    with pytest.raises(MissingVariableError, match="HH, HV"):
        predict_scene(tmp_path / "s.tif", fixed_conv(1), CONFIG, tmp_path / "o.tif")


def test_options_that_do_not_fit_the_task_are_refused(tmp_path: Path) -> None:
    write_scene(tmp_path / "s.tif", scene_array(40, 50))
    with pytest.raises(ConfigError, match="--probabilities"):
        predict_scene(tmp_path / "s.tif", fixed_conv(1), CONFIG, tmp_path / "o.tif", probabilities=True)
    with pytest.raises(ConfigError, match="--refiner"):
        predict_scene(tmp_path / "s.tif", fixed_conv(1), CONFIG, tmp_path / "o.tif", merge="refine")
    assert not (tmp_path / "o.tif").exists()


# --- CLI ------------------------------------------------------------------------------------------


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = build_model("unet", in_channels=2, widths=[4, 8, 8, 8])
    save_model_dir(tmp_path / "model", model, CONFIG)
    return tmp_path / "model"


def test_cli_predicts_one_scene_with_a_quicklook(tmp_path: Path, model_dir: Path) -> None:
    write_scene(tmp_path / "s.tif", scene_array(40, 70))
    result = CliRunner().invoke(
        app, ["predict", str(tmp_path / "s.tif"), "-m", str(model_dir), "-o", str(tmp_path / "o.tif"),
              "--tile", "32", "--device", "cpu", "--percent", "--quicklook", str(tmp_path / "q.png")],
    )
    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "o.tif") as ds:
        assert ds.shape == (40, 70) and ds.dtypes[0] == "uint8" and ds.tags()["model"] == str(model_dir)
        assert ds.read(1).max() <= 100
    assert (tmp_path / "q.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_refuses_an_existing_output(tmp_path: Path, model_dir: Path) -> None:
    write_scene(tmp_path / "s.tif", scene_array(40, 70))
    (tmp_path / "o.tif").write_bytes(b"old")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "s.tif"), "-m", str(model_dir), "-o", str(tmp_path / "o.tif")])
    assert result.exit_code == 1
    assert "--overwrite" in result.output
    assert (tmp_path / "o.tif").read_bytes() == b"old"


def test_cli_several_scenes_go_to_a_folder_and_reruns_skip(tmp_path: Path, model_dir: Path) -> None:
    for name in ("a", "b"):
        write_scene(tmp_path / f"{name}.tif", scene_array(40, 40))
    args = ["predict", str(tmp_path / "*.tif"), "-m", str(model_dir), "-o", str(tmp_path / "out"), "--tile", "32"]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.tif", "b.tif"]
    stamp = (tmp_path / "out" / "a.tif").stat().st_mtime_ns
    (tmp_path / "out" / "b.tif").unlink()
    result = CliRunner().invoke(app, [*args, "--skip-existing"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "a.tif").stat().st_mtime_ns == stamp and (tmp_path / "out" / "b.tif").exists()


def test_cli_without_a_model_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import icetools

    monkeypatch.setattr(icetools, "__file__", str(tmp_path / "pkg" / "__init__.py"))
    write_scene(tmp_path / "s.tif", scene_array(40, 40))
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "s.tif"), "-o", str(tmp_path / "o.tif")])
    assert result.exit_code == 1 and "no default model is installed: pass -m MODEL_DIR" in result.output


def test_cli_refuses_a_bad_model_dir(tmp_path: Path, model_dir: Path) -> None:
    write_scene(tmp_path / "s.tif", scene_array(40, 40))
    (model_dir / "config.json").write_text("{not json")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "s.tif"), "-m", str(model_dir), "-o", str(tmp_path / "o.tif")])
    assert result.exit_code == 1 and "not valid JSON" in result.output
