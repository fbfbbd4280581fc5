"""Tests for icetools.inference.run: whole scenes merged against whole-image answers, the job's checks,
outputs that appear whole or not at all, progress."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from icetools.errors import ConfigError, DataError, MissingVariableError, OutputExistsError
from icetools.inference import PredictJob, make_predictor, plan_windows, predict_scene, window_weights
from icetools.models import build_model
from icetools.progress import Event

from .helpers import CONFIG, MEAN, STD, fixed_conv, predict, read, run, scene_array, whole_image, write_test_scene


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
    assert np.abs(out - run(tmp_path, data, conv, "avg.tif", tile=32, overlap=0.5, merge="average")).max() > 1e-5


def test_a_context_model_predicts_a_whole_scene(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("fctl", in_channels=2, width=1 / 32, context_scales=[1.0, 2.0]).eval()
    data = scene_array(50, 70, seed=12)
    data[:, :8, :8] = np.nan
    out = run(tmp_path, data, model, tile=32)
    assert out.shape == (50, 70)
    assert np.isnan(out[:8, :8]).all() and np.isfinite(out[8:]).all()
    assert ((out[8:] > 0) & (out[8:] < 1)).all()


# --- outputs --------------------------------------------------------------------------------------


def test_outputs_keep_crs_transform_nodata_and_band_names(tmp_path: Path) -> None:
    write_test_scene(tmp_path / "s.tif", scene_array(40, 50))
    predict(tmp_path / "s.tif", fixed_conv(1), CONFIG, tmp_path / "o.tif", tile=32, ice_water=True)
    with rasterio.open(tmp_path / "s.tif") as src, rasterio.open(tmp_path / "o.tif") as out:
        assert out.crs == src.crs and out.transform == src.transform
        assert out.descriptions == ("SIC",) and out.dtypes[0] == "float32" and np.isnan(out.nodata)
        assert out.tags()["merge"] == "gaussian" and out.tags()["overlap"] == "0.25"
        assert out.tags()["model"] == "(in memory)" and out.tags()["tile"] == "32" and out.tags()["scene"] == "s.tif"
        sic = out.read(1)
    with rasterio.open(tmp_path / "o_icewater.tif") as ice:
        assert ice.nodata == 255 and ice.descriptions == ("ice",)
        np.testing.assert_array_equal(ice.read(1), (sic >= 0.15).astype("uint8"))


def test_outputs_keep_gcps(tmp_path: Path) -> None:
    write_test_scene(tmp_path / "s.tif", scene_array(40, 50), gcps=True)
    predict(tmp_path / "s.tif", fixed_conv(1), CONFIG, tmp_path / "o.tif", tile=32)
    with rasterio.open(tmp_path / "s.tif") as src, rasterio.open(tmp_path / "o.tif") as out:
        (src_gcps, src_crs), (out_gcps, out_crs) = src.gcps, out.gcps
        assert len(out_gcps) == len(src_gcps) == 5 and out_crs == src_crs
        assert [(g.row, g.col, g.x, g.y) for g in out_gcps] == [(g.row, g.col, g.x, g.y) for g in src_gcps]


def test_existing_output_is_refused_and_left_untouched(tmp_path: Path) -> None:
    write_test_scene(tmp_path / "s.tif", scene_array(40, 50))
    (tmp_path / "o.tif").write_bytes(b"old")
    with pytest.raises(OutputExistsError):
        predict(tmp_path / "s.tif", fixed_conv(1), CONFIG, tmp_path / "o.tif", tile=32)
    assert (tmp_path / "o.tif").read_bytes() == b"old"


def test_all_nan_scene_fails_and_leaves_nothing(tmp_path: Path) -> None:
    write_test_scene(tmp_path / "s.tif", np.full((2, 40, 50), np.nan, dtype="float32"))
    with pytest.raises(DataError, match="no valid pixel"):
        predict(tmp_path / "s.tif", fixed_conv(1), CONFIG, tmp_path / "o.tif", tile=32, ice_water=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]


def test_missing_bands_are_named(tmp_path: Path) -> None:
    write_test_scene(tmp_path / "s.tif", scene_array(40, 50), names=("VV", "VH"))
    with pytest.raises(MissingVariableError, match="HH, HV"):
        predict(tmp_path / "s.tif", fixed_conv(1), CONFIG, tmp_path / "o.tif")


def test_options_that_do_not_fit_the_task_are_refused(tmp_path: Path) -> None:
    write_test_scene(tmp_path / "s.tif", scene_array(40, 50))
    with pytest.raises(ConfigError, match="^probabilities applies to multiclass models"):
        predict(tmp_path / "s.tif", fixed_conv(1), CONFIG, tmp_path / "o.tif", probabilities=True)
    with pytest.raises(ConfigError, match="needs a refiner"):
        predict(tmp_path / "s.tif", fixed_conv(1), CONFIG, tmp_path / "o.tif", merge="refine")
    with pytest.raises(ConfigError, match="^batch 0 must be at least 1"):
        predict(tmp_path / "s.tif", fixed_conv(1), CONFIG, tmp_path / "o.tif", batch=0)
    with pytest.raises(ConfigError, match="patch_size 40 is not a multiple of 16: give a tile"):
        predict(tmp_path / "s.tif", fixed_conv(1), {**CONFIG, "patch_size": 40}, tmp_path / "o.tif")
    assert not (tmp_path / "o.tif").exists()


def test_progress_counts_windows_of_the_scene(tmp_path: Path) -> None:
    write_test_scene(tmp_path / "s.tif", scene_array(70, 60))
    events: list[Event] = []
    summary = predict(tmp_path / "s.tif", fixed_conv(1), CONFIG, tmp_path / "o.tif", tile=32, progress=events.append)
    n = plan_windows(70, 60, tile=32, overlap=0.25).n_windows
    assert summary["windows"] == n and summary["outputs"] == [str(tmp_path / "o.tif")]
    assert all(e.stage == "windows" and e.total == n and e.info == {"scene": "s.tif"} for e in events)
    assert [e.done for e in events] == sorted(e.done for e in events) and events[-1].done == n


def test_a_job_is_one_predictor_and_the_options(tmp_path: Path) -> None:
    write_test_scene(tmp_path / "s.tif", scene_array(40, 50))
    predictor = make_predictor(fixed_conv(1), CONFIG, device="cpu")
    job = PredictJob(tmp_path / "s.tif", tmp_path / "o.tif", predictor, tile=32, percent=True)
    summary = predict_scene(job)
    assert summary["tile"] == 32 and summary["merge"] == "gaussian" and summary["device"] == "cpu"
    assert read(tmp_path / "o.tif").dtype == np.uint8
