"""The AI4Arctic challenge's scores, checked against scikit-learn's figures on the same pixels."""

from __future__ import annotations

import json
from pathlib import Path

import netCDF4
import numpy as np
import pytest
from fixtures import write_ai4arctic

from icetools.evaluate import AutoIceInputs, evaluate
from icetools.io.scene import open_scene

from .helpers import NAN, TENTHS, run_cli, write


def challenge_scene(seed: int = 5, shape: tuple[int, int] = (8, 10)) -> tuple[np.ndarray, ...]:
    """SIC tenths / SOD / FLOE truths (255 = masked) and predictions, as an AI4Arctic test scene."""
    rng = np.random.default_rng(seed)
    sic_truth = rng.integers(0, 11, shape).astype("uint8")
    sic_pred = np.clip(sic_truth / 10 + rng.normal(0, 0.12, shape), 0, 1).astype("float32")
    sod_truth = rng.integers(0, 6, shape).astype("uint8")
    sod_pred = np.where(rng.random(shape) < 0.75, sod_truth, rng.integers(0, 6, shape)).astype("uint8")
    floe_truth = rng.integers(0, 7, shape).astype("uint8")
    floe_pred = np.where(rng.random(shape) < 0.6, floe_truth, rng.integers(0, 7, shape)).astype("uint8")
    sic_truth[0, :3] = 255
    sic_pred[7, 9] = np.nan
    sod_truth[1, :2] = 255
    sod_pred[3, 0] = 255
    floe_truth[2, 5:] = 255
    return sic_truth, sic_pred, sod_truth, sod_pred, floe_truth, floe_pred


# scikit-learn 1.9.1 on the valid pixels of challenge_scene(), flattened (the challenge's functions.py):
# r2_score(truth / 10, pred), r2_score(truth, classes(pred)), f1_score(..., average="weighted")
CHALLENGE = {"n": (76, 77, 75), "r2": 0.899073044939718, "rmse": 0.10209367979179472,
             "sic": 0.8955256408107156, "sod": 0.8579766015579459, "floe": 0.7025942205942205,
             "score": 0.8419197410663086}


def ready_to_train(path: Path, sic: np.ndarray, sod: np.ndarray, floe: np.ndarray) -> Path:
    """An AI4Arctic ready-to-train file: SIC / SOD / FLOE uint8 with the dataset's own attributes."""
    write_ai4arctic(path, shape=sic.shape, chart=False, codes=None, geolocation="grid2d")
    names = {"SIC": "Sea Ice Concentration [%]", "SOD": "Stage of Development", "FLOE": "Floe Size"}
    with netCDF4.Dataset(path, "a") as ds:
        for name, values in (("SIC", sic), ("SOD", sod), ("FLOE", floe)):
            variable = ds.createVariable(name, "u1", ("sar_lines", "sar_samples"))
            variable.setncatts({"polygon": names[name], "chart_fill_value": np.uint8(255)})
            variable[:] = values
    return path


@pytest.fixture
def challenge(tmp_path: Path) -> dict[str, Path]:
    sic_truth, sic_pred, sod_truth, sod_pred, floe_truth, floe_pred = challenge_scene()
    scene = ready_to_train(tmp_path / "scene.nc", sic_truth, sod_truth, floe_truth)
    with open_scene(scene) as opened:
        scene_grid = opened.grid
    pred = write(tmp_path / "sic.tif", {"SIC": sic_pred}, nodata=NAN, tags={"units": "fraction 0-1"}, grid=scene_grid)
    sod = write(tmp_path / "sod.tif", {"class": sod_pred}, nodata=255, grid=scene_grid)
    floe = write(tmp_path / "floe.tif", {"class": floe_pred}, nodata=255, grid=scene_grid)
    return {"scene": scene, "sic": pred, "sod": sod, "floe": floe}


def test_autoice_scores_equal_scikit_learn_on_a_ready_to_train_scene(challenge: dict[str, Path]) -> None:
    result = evaluate(challenge["sic"], challenge["scene"], autoice=AutoIceInputs(sod=challenge["sod"], floe=challenge["floe"]))
    metrics = result["metrics"]
    # the SIC variable is read as tenths (the dataset's classes), not as its attribute's "[%]"
    assert result["units"]["truth"] == {"units": "tenths", "source": "AI4Arctic SIC classes 0..10"}
    assert result["warnings"] == []
    assert tuple(result["autoice"]["n_pixels"].values()) == CHALLENGE["n"]
    assert metrics["r2"] == pytest.approx(CHALLENGE["r2"], abs=1e-6)  # float32 reading: 1e-6, not 1e-12
    assert metrics["rmse"] == pytest.approx(CHALLENGE["rmse"], abs=1e-6)
    assert metrics["autoice_sic_r2"] == pytest.approx(CHALLENGE["sic"], abs=1e-12)
    assert metrics["autoice_sod_f1"] == pytest.approx(CHALLENGE["sod"], abs=1e-12)
    assert metrics["autoice_floe_f1"] == pytest.approx(CHALLENGE["floe"], abs=1e-12)
    assert metrics["autoice_score"] == pytest.approx(CHALLENGE["score"], abs=1e-12)
    assert result["autoice"]["confusion_matrix"]["SOD"] and len(result["autoice"]["confusion_matrix"]["FLOE"]) == 7


def test_autoice_figures_against_scikit_learn_itself() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    sic_truth, sic_pred, sod_truth, sod_pred, floe_truth, floe_pred = challenge_scene()
    ok = (sic_truth != 255) & np.isfinite(sic_pred)
    classes = np.floor(sic_pred.astype("float64") * 10 + 0.5 + 1e-6)
    assert metrics.r2_score(sic_truth[ok], classes[ok]) == pytest.approx(CHALLENGE["sic"], abs=1e-12)
    both = (sod_truth != 255) & (sod_pred != 255)
    assert metrics.f1_score(sod_truth[both], sod_pred[both], average="weighted") == pytest.approx(CHALLENGE["sod"])
    valid = floe_truth != 255
    assert metrics.f1_score(floe_truth[valid], floe_pred[valid], average="weighted") == pytest.approx(CHALLENGE["floe"])


def test_autoice_sic_alone_on_a_tenths_geotiff(tmp_path: Path, sic_pair: tuple[Path, Path]) -> None:
    pred, _ = sic_pair
    truth = write(tmp_path / "tenths.tif", {"SIC": TENTHS}, nodata=255)
    result = evaluate(pred, truth, truth_units="tenths", autoice=AutoIceInputs(), strip_rows=1)
    # classes (pred, truth): (1, 0) (1, 2) (4, 4) (6, 6) (10, 8) (8, 10): SS_res 10, SS_tot 70
    assert result["metrics"]["autoice_sic_r2"] == pytest.approx(1 - 10 / 70, abs=1e-12)
    assert "autoice_score" not in result["metrics"] and "autoice_sod_f1" not in result["metrics"]
    assert any("AutoICE" in text for text in result["conventions"])


def test_autoice_cli_options(challenge: dict[str, Path], tmp_path: Path) -> None:
    base = ("evaluate", challenge["sic"], "--truth", challenge["scene"])
    result = run_cli(*base, "--sod", challenge["sod"], "--floe", challenge["floe"], "--json", "-")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["metrics"]["autoice_score"] == pytest.approx(CHALLENGE["score"], abs=1e-12)
    assert "autoice_score" in result.stderr and "(2 SIC + 2 SOD + FLOE) / 5" in result.stderr
    only_sic = json.loads(run_cli(*base, "--autoice", "--json", "-").stdout)
    assert only_sic["metrics"]["autoice_sic_r2"] == pytest.approx(CHALLENGE["sic"], abs=1e-12)
    orphan = run_cli(*base, "--sod-truth", challenge["scene"])
    assert orphan.exit_code == 2 and "--sod-truth" in orphan.stderr
    # a truth without SOD: say which option gives it
    plain = write(tmp_path / "plain.tif", {"SIC": np.zeros((8, 10), "float32")}, nodata=NAN, grid=open_scene(challenge["sic"]).grid)
    missing = run_cli("evaluate", challenge["sic"], "--truth", plain, "--sod", challenge["sod"])
    assert missing.exit_code == 1 and "--sod-truth" in missing.stderr and "plain.tif has no SOD band" in missing.stderr
    explicit = run_cli("evaluate", challenge["sic"], "--truth", plain, "--sod", challenge["sod"], "--sod-truth",
                       challenge["scene"], "--json", "-")
    assert json.loads(explicit.stdout)["metrics"]["autoice_sod_f1"] == pytest.approx(CHALLENGE["sod"], abs=1e-12)
