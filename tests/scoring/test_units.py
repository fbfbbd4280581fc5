"""SIC units: read from the caller, the file's tags or the AI4Arctic convention; guesses said or refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import netCDF4
import numpy as np
import pytest
from fixtures import write_ai4arctic

from icetools.errors import ConfigError, DataError
from icetools.evaluate import evaluate
from icetools.io.scene import open_scene
from icetools.scoring.units import units_from_text

from .helpers import HAND_R2, HAND_RMSE, NAN, OFFSET, PERCENT, TENTHS, TRUTH, run_cli, write


def test_tenths_truth_scored_right_when_the_caller_says_so(tmp_path: Path, sic_pair: tuple[Path, Path]) -> None:
    pred, _ = sic_pair
    truth = write(tmp_path / "tenths.tif", {"SIC": TENTHS}, nodata=255)
    result = evaluate(pred, truth, truth_units="tenths")
    # the same pixels and figures as the fraction truth (read as percent they gave R2 -252.4 here)
    assert result["n_pixels"] == 6
    assert result["metrics"]["r2"] == pytest.approx(HAND_R2, abs=1e-6)
    assert result["metrics"]["rmse"] == pytest.approx(HAND_RMSE, abs=1e-6)
    assert result["units"]["truth"] == {"units": "tenths", "source": "truth_units"}
    assert result["warnings"] == []
    cli = run_cli("evaluate", pred, "--truth", truth, "--truth-units", "tenths", "--json", "-")
    assert cli.exit_code == 0, cli.stderr
    assert json.loads(cli.stdout)["metrics"]["r2"] == pytest.approx(HAND_R2, abs=1e-6)
    assert "truth SIC read as tenths" in cli.stderr


def test_undeclared_integers_0_to_10_are_refused_naming_the_parameter(tmp_path: Path, sic_pair: tuple[Path, Path]) -> None:
    pred, _ = sic_pair
    truth = write(tmp_path / "tenths.tif", {"SIC": TENTHS}, nodata=255)
    with pytest.raises(DataError, match="tenths or percent; set truth_units"):
        evaluate(pred, truth)
    cli = run_cli("evaluate", pred, "--truth", truth)
    assert cli.exit_code == 1
    lines = cli.stderr.strip().splitlines()
    assert len(lines) == 1 and "tenths.tif" in lines[0] and "--truth-units" in lines[0]


def test_units_tag_on_the_truth_file_is_read(tmp_path: Path, sic_pair: tuple[Path, Path]) -> None:
    pred, _ = sic_pair
    truth = write(tmp_path / "tenths.tif", {"SIC": TENTHS}, nodata=255, tags={"SIC_units": "tenths (0-10)"})
    result = evaluate(pred, truth)
    assert result["metrics"]["r2"] == pytest.approx(HAND_R2, abs=1e-6)
    assert result["units"]["truth"] == {"units": "tenths", "source": "file tag SIC_units=tenths (0-10)"}
    wrong = write(tmp_path / "wrong.tif", {"SIC": PERCENT}, nodata=255, tags={"units": "tenths"})
    with pytest.raises(DataError, match="outside 0..10 tenths"):  # a tag that the values contradict
        evaluate(pred, wrong)


def test_undeclared_255_in_uint8_percent_is_nodata_with_a_warning(tmp_path: Path) -> None:
    values = TRUTH + OFFSET
    values[0, 3], values[1, 3] = NAN, 0.7  # a prediction where the truth holds 255
    pred = write(tmp_path / "pred.tif", {"SIC": values}, nodata=NAN)
    truth = write(tmp_path / "percent.tif", {"SIC": PERCENT}, nodata=None)  # 255 not declared
    with pytest.warns(UserWarning) as caught:
        result = evaluate(pred, truth)
    # scored as if nodata were declared: 6 pixels, the hand figures (255 as SIC 2.55: 7 pixels, R2 0.181)
    assert result["n_pixels"] == 6
    assert result["metrics"]["r2"] == pytest.approx(HAND_R2, abs=1e-6)
    assert result["metrics"]["rmse"] == pytest.approx(HAND_RMSE, abs=1e-6)
    messages = [str(warning.message) for warning in caught]
    assert any("1 pixels of 'SIC' hold 255" in text and "taken as nodata" in text for text in messages)
    assert any("taken as percent" in text for text in messages)
    assert result["warnings"] == messages
    cli = run_cli("evaluate", pred, "--truth", truth)
    assert cli.exit_code == 0 and cli.stderr.count("warning:") == 2
    quiet = run_cli("-q", "evaluate", pred, "--truth", truth)  # -q silences warnings too (issue 11)
    assert quiet.exit_code == 0 and quiet.stderr == ""
    declared = write(tmp_path / "declared.tif", {"SIC": PERCENT}, nodata=255, tags={"units": "percent"})
    assert evaluate(pred, declared)["warnings"] == []


def test_float_truth_beyond_one_without_units_is_refused(tmp_path: Path, sic_pair: tuple[Path, Path]) -> None:
    pred, _ = sic_pair
    truth = write(tmp_path / "pct.tif", {"SIC": TRUTH * 100}, nodata=NAN)
    with pytest.raises(DataError, match=r"declares no SIC units .* not a fraction 0..1 \(percent, by their range\?\); set truth_units"):
        evaluate(pred, truth)
    assert evaluate(pred, truth, truth_units="percent")["metrics"]["r2"] == pytest.approx(HAND_R2, abs=1e-6)


@pytest.mark.parametrize(
    ("text", "units"),
    [("percent", "percent"), ("%", "percent"), ("0-100", "percent"), ("tenths (0-10)", "tenths"), ("1/10", "tenths"),
     ("fraction 0-1", "fraction"), ("1", "fraction"), ("dB", None), ("SIC", None), ("band1", None)],
)
def test_units_from_text(text: str, units: str | None) -> None:
    assert units_from_text(text) == units


def test_band_name_that_says_percent(tmp_path: Path, sic_pair: tuple[Path, Path]) -> None:
    pred, _ = sic_pair
    truth = write(tmp_path / "named.tif", {"SIC_percent": PERCENT}, nodata=255)
    result = evaluate(pred, truth, task="sic")
    assert result["units"]["truth"] == {"units": "percent", "source": "band name 'SIC_percent'"}
    assert result["metrics"]["r2"] == pytest.approx(HAND_R2, abs=1e-6) and result["warnings"] == []


def test_bad_truth_units_and_options_for_another_task(tmp_path: Path, sic_pair: tuple[Path, Path]) -> None:
    pred, truth = sic_pair
    with pytest.raises(ConfigError, match="truth_units must be one of fraction, percent, tenths"):
        evaluate(pred, truth, truth_units="octas")
    bad = run_cli("evaluate", pred, "--truth", truth, "--truth-units", "octas")
    assert bad.exit_code == 2 and "--truth-units" in bad.stderr
    assert run_cli("evaluate", pred, "--truth", truth, "--patch-size", 0).exit_code == 2
    with pytest.raises(ConfigError, match="patch_size applies to binary"):
        evaluate(pred, truth, patch_size=8)
    refused = run_cli("evaluate", pred, "--truth", truth, "--patch-size", 8)
    assert refused.exit_code == 1 and "--patch-size applies to binary" in refused.stderr


def test_chart_fill_value_of_a_netcdf_variable_is_nodata(tmp_path: Path) -> None:
    # an int16 SIC in percent whose fill is named only by the AI4Arctic attribute chart_fill_value
    path = write_ai4arctic(tmp_path / "scene.nc", shape=(2, 4), chart=False, codes=None, geolocation="grid2d")
    with netCDF4.Dataset(path, "a") as ds:
        variable = ds.createVariable("SIC", "i2", ("sar_lines", "sar_samples"))
        variable.setncatts({"units": "%", "chart_fill_value": np.int16(-9)})
        variable[:] = np.where(PERCENT == 255, -9, PERCENT.astype("int16"))
    with open_scene(path) as opened:
        pred = TRUTH + OFFSET
        pred[0, 3] = NAN
        pred_path = write(tmp_path / "pred.tif", {"SIC": pred}, nodata=NAN, grid=opened.grid)
    result = evaluate(pred_path, path)
    assert result["n_pixels"] == 6 and result["units"]["truth"]["units"] == "percent"
    assert result["metrics"]["r2"] == pytest.approx(HAND_R2, abs=1e-6)


def test_a_prediction_overshooting_a_little_is_scored_with_a_warning(tmp_path: Path, sic_pair: tuple[Path, Path]) -> None:
    _, truth = sic_pair
    pred = np.clip(TRUTH + OFFSET, 0, None)
    pred[1, 2] = 1.05  # a regression model's overshoot; the hand figures change only there
    pred[0, 3] = NAN
    path = write(tmp_path / "over.tif", {"SIC": pred.astype("float32")}, nodata=NAN)
    with pytest.warns(UserWarning, match="a little outside 0..1 fraction: scored as they are"):
        result = evaluate(path, truth)
    residuals = np.array([0.1, -0.1, 0, 0, 0.2, 0.05])
    assert result["metrics"]["rmse"] == pytest.approx(math.sqrt(np.mean(residuals**2)), abs=1e-6)
