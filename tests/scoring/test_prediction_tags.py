"""evaluate reads what predict writes into its products: the model's threshold and the source scene."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from fixtures import affine_grid, tie_points, write_ai4arctic
from inference.helpers import CONFIG, fixed_conv, predict, scene_array, write_test_scene

from icetools.errors import InputFileError, MissingVariableError
from icetools.evaluate import evaluate
from icetools.io.raster import write_raster
from icetools.io.scene import open_scene

from .helpers import run_cli


def test_probability_raster_carries_the_threshold_that_evaluate_uses(tmp_path: Path) -> None:
    data = scene_array(40, 50, seed=9)
    write_test_scene(tmp_path / "s.tif", data)
    predict(tmp_path / "s.tif", fixed_conv(1), {**CONFIG, "task": "binary", "threshold": 0.35}, tmp_path / "gl.tif", tile=32)
    with rasterio.open(tmp_path / "gl.tif") as ds:
        assert ds.tags()["threshold"] == "0.35"
        grid_probability = ds.read(1)
    with open_scene(tmp_path / "gl.tif") as pred:
        grid = pred.grid
    truth = write_raster(tmp_path / "truth.tif", (grid_probability >= 0.35).astype("uint8"), grid, nodata=255,
                         band_names=["line"])
    result = evaluate(tmp_path / "gl.tif", truth)
    assert result["threshold"] == pytest.approx(0.35) and result["metrics"]["dice"] == pytest.approx(1.0)
    assert evaluate(tmp_path / "gl.tif", truth, threshold=0.9)["metrics"]["dice"] < 1.0  # the option still wins


def _scene_and_prediction(tmp_path: Path) -> tuple[Path, Path, Path]:
    """An AI4Arctic scene with a two-polygon chart, its SIC prediction in out/, and a SIC truth raster."""
    data = scene_array(40, 50, seed=13)
    ids = np.zeros((40, 50), dtype="float32")
    ids[:, :20], ids[:, 20:] = 1, 2
    scene = write_ai4arctic(tmp_path / "scene.nc", data=data, band_fill=np.float32(np.nan), chart=ids,
                            points=tie_points(40, 50, points=2))
    (tmp_path / "out").mkdir()
    config = {**CONFIG, "inputs": ["nersc_sar_primary", "nersc_sar_secondary"]}
    predict(scene, fixed_conv(1), config, tmp_path / "out" / "sic.tif", tile=32)
    with open_scene(scene) as opened:
        grid = opened.grid
    truth = write_raster(tmp_path / "truth.tif", np.full((40, 50), 0.6, "float32"), grid, nodata=float("nan"),
                         band_names=["SIC"])
    return scene, tmp_path / "out" / "sic.tif", truth


def test_polygons_scene_means_the_chart_of_the_scene_the_prediction_names(tmp_path: Path) -> None:
    scene, prediction, truth = _scene_and_prediction(tmp_path)
    explicit = evaluate(prediction, truth, polygons=scene)
    result = evaluate(prediction, truth, polygons="scene")
    assert Path(result["polygons_from"]).resolve() == scene.resolve()
    assert result["metrics"]["n_polygons"] == 2 and result["metrics"] == explicit["metrics"]
    cli = run_cli("evaluate", prediction, "--truth", truth, "--polygons", "scene", "--json", "-")
    assert cli.exit_code == 0 and '"n_polygons": 2' in cli.stdout


def test_polygons_scene_finds_a_moved_scene_beside_the_prediction_or_says_where_it_looked(tmp_path: Path) -> None:
    scene, prediction, truth = _scene_and_prediction(tmp_path)
    shutil.move(scene, prediction.parent / "scene.nc")  # scene_path no longer fits: the name beside it does
    assert evaluate(prediction, truth, polygons="scene")["metrics"]["n_polygons"] == 2
    (prediction.parent / "scene.nc").unlink()
    with pytest.raises(InputFileError, match="polygons 'scene' means scene.nc.*give polygons as its path"):
        evaluate(prediction, truth, polygons="scene")
    untagged = write_raster(tmp_path / "u.tif", np.full((4, 4), 0.5, "float32"), affine_grid(4, 4), nodata=float("nan"),
                            band_names=["SIC"])
    with pytest.raises(MissingVariableError, match="does not name the scene"):
        evaluate(untagged, untagged, polygons="scene")
