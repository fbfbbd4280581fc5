"""Tests for icetools.evaluate and ``icetools evaluate``: tiny rasters, scores computed by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from fixtures import write_ai4arctic
from scoring.helpers import HAND_R2, HAND_RMSE, NAN, OFFSET, PIXEL_M, TRUTH, run_cli, sic_pair_files, write

from icetools.errors import CRSError, DataError, MissingVariableError
from icetools.evaluate import evaluate, json_safe, parse_class_names
from icetools.io.raster import write_raster
from icetools.io.scene import open_scene


# --------------------------------------------------------------------------- SIC


@pytest.fixture
def sic_pair(tmp_path: Path) -> tuple[Path, Path]:
    return sic_pair_files(tmp_path)


def test_sic_pixel_r2_rmse_by_hand_skipping_nan(sic_pair: tuple[Path, Path]) -> None:
    pred, truth = sic_pair
    seen = []
    result = evaluate(pred, truth, strip_rows=1, progress=seen.append)  # one row per strip
    assert result["task"] == "sic"
    assert result["n_pixels"] == 6
    assert result["metrics"]["r2"] == pytest.approx(HAND_R2, abs=1e-6)
    assert result["metrics"]["rmse"] == pytest.approx(HAND_RMSE, abs=1e-6)
    assert "polygon_r2" not in result["metrics"]  # a plain SIC truth has no polygons
    assert [(event.stage, event.fraction) for event in seen] == [("rows", 0.5), ("rows", 1.0)]
    assert result["warnings"] == []  # float 0..1 without units: icetools' own convention, no guess
    assert result["units"]["truth"]["units"] == "fraction"
    whole = evaluate(pred, truth)
    assert whole["metrics"]["r2"] == pytest.approx(result["metrics"]["r2"], rel=1e-12)


def test_sic_uint8_percent_prediction_is_divided_by_100(tmp_path: Path, sic_pair: tuple[Path, Path]) -> None:
    _, truth = sic_pair
    percent = np.round((TRUTH + OFFSET) * 100)
    percent[0, 3] = 255  # nodata
    percent[1, 3] = 70
    pred = write(tmp_path / "pred_pct.tif", {"SIC": percent.astype("uint8")}, nodata=255)
    with pytest.warns(UserWarning, match="taken as percent"):  # no units tag: a guess, said in one line
        result = evaluate(pred, truth)
    assert result["n_pixels"] == 6
    assert result["metrics"]["r2"] == pytest.approx(HAND_R2, abs=1e-6)
    assert result["metrics"]["rmse"] == pytest.approx(HAND_RMSE, abs=1e-6)
    assert len(result["warnings"]) == 1 and "up to 100" not in result["warnings"][0]
    # predict's own output says units=percent: no guess, no warning
    tagged = write(tmp_path / "pred_tagged.tif", {"SIC": percent.astype("uint8")}, nodata=255, tags={"units": "percent"})
    result = evaluate(tagged, truth)
    assert result["warnings"] == [] and result["units"]["prediction"]["source"] == "file tag units=percent"
    assert result["metrics"]["r2"] == pytest.approx(HAND_R2, abs=1e-6)


def test_sic_ice_edge_accuracy_and_f1(tmp_path: Path) -> None:
    truth = write(tmp_path / "t.tif", {"SIC": np.array([[0.2, 0.2], [0.1, 0.0]], "float32")}, nodata=NAN)
    pred = write(tmp_path / "p.tif", {"SIC": np.array([[0.1, 0.2], [0.5, 0.0]], "float32")}, nodata=NAN)
    # ice (>= 0.15): truth T T F F, prediction F T T F -> tp 1, fp 1, fn 1, tn 1
    metrics = evaluate(pred, truth, ice_edge=0.15)["metrics"]
    assert metrics["ice_edge_accuracy"] == pytest.approx(0.5)
    assert metrics["ice_edge_f1"] == pytest.approx(0.5)


# Three chart polygons, one per row, chart SIC 0.2 / 0.5 / 0.8; the last row is outside the chart.
POLYGON_IDS = np.array([[1] * 4, [2] * 4, [3] * 4, [0] * 4], dtype="float32")
CHART_SIC = np.array([[0.2] * 4, [0.5] * 4, [0.8] * 4, [NAN] * 4], dtype="float32")
# Polygon means of the prediction: 0.3, 0.5, 0.6 (the NaN pixel skipped); row 3 has no polygon.
POLYGON_PRED = np.array(
    [[0.2, 0.4, 0.3, 0.3], [0.5, 0.5, 0.5, 0.5], [0.6, 0.6, NAN, 0.6], [0.9, 0.9, 0.9, 0.9]], dtype="float32"
)
# residuals .1, 0, -.2 -> SS_res = .05; chart mean .5 -> SS_tot = .18
POLYGON_R2 = 1 - 0.05 / 0.18
POLYGON_RMSE = math.sqrt(0.05 / 3)


def test_polygon_level_r2_from_the_labels_truth_itself(tmp_path: Path) -> None:
    labels = write(tmp_path / "labels.tif", {"polygon_id": POLYGON_IDS, "SIC": CHART_SIC}, nodata=NAN)
    pred = write(tmp_path / "pred.tif", {"SIC": POLYGON_PRED}, nodata=NAN)
    result = evaluate(pred, labels, strip_rows=3)
    assert result["metrics"]["n_polygons"] == 3
    assert result["metrics"]["polygon_r2"] == pytest.approx(POLYGON_R2, abs=1e-6)
    assert result["metrics"]["polygon_rmse"] == pytest.approx(POLYGON_RMSE, abs=1e-6)
    assert result["n_pixels"] == 11  # 12 chart pixels minus the NaN prediction
    assert result["polygons_from"] == str(labels)


def test_polygon_level_from_polygons_option_with_pixel_truth(tmp_path: Path) -> None:
    labels = write(tmp_path / "labels.tif", {"polygon_id": POLYGON_IDS, "SIC": CHART_SIC}, nodata=NAN)
    pixel_truth = write(tmp_path / "truth.tif", {"SIC": np.full((4, 4), 0.5, "float32")}, nodata=NAN)
    pred = write(tmp_path / "pred.tif", {"SIC": POLYGON_PRED}, nodata=NAN)
    result = evaluate(pred, pixel_truth, polygons=labels)
    assert result["metrics"]["polygon_r2"] == pytest.approx(POLYGON_R2, abs=1e-6)
    assert result["n_pixels"] == 15
    assert math.isnan(result["metrics"]["r2"])  # a constant truth leaves R2 undefined
    assert json_safe(result)["metrics"]["r2"] is None


def _netcdf_scene(path: Path, ids: np.ndarray, codes: list[str]) -> Path:
    return write_ai4arctic(
        path, shape=ids.shape, chart=ids, chart_dtype="u1", chart_fill=255, codes=codes, geolocation="grid2d"
    )


def test_netcdf_chart_as_truth_gives_pixel_and_polygon_scores(tmp_path: Path) -> None:
    ids = np.where(POLYGON_IDS > 0, POLYGON_IDS, 0)
    scene = _netcdf_scene(tmp_path / "scene.nc", ids, ["poly_id;CT;POLY_TYPE", "1;20;I", "2;50;I", "3;80;I"])
    with open_scene(scene) as opened:
        scene_grid = opened.grid
    pred = write_raster(tmp_path / "pred.tif", POLYGON_PRED[None], scene_grid, nodata=NAN, band_names=["SIC"])
    result = evaluate(pred, scene)
    assert result["bands"]["truth"].startswith("polygon_icechart")
    assert result["metrics"]["polygon_r2"] == pytest.approx(POLYGON_R2, abs=1e-6)
    # pixel level against the chart spread over its polygons, by hand: residuals per chart pixel
    residuals = (POLYGON_PRED - CHART_SIC)[:3].ravel()
    residuals = residuals[np.isfinite(residuals)]
    truth = CHART_SIC[:3].ravel()[np.isfinite(POLYGON_PRED[:3].ravel())]
    assert result["n_pixels"] == 11
    assert result["metrics"]["rmse"] == pytest.approx(math.sqrt(np.mean(residuals**2)), abs=1e-6)
    assert result["metrics"]["r2"] == pytest.approx(
        1 - np.sum(residuals**2) / np.sum((truth - truth.mean()) ** 2), abs=1e-6
    )


# --------------------------------------------------------------------------- binary


def line_mask(shape: tuple[int, int], row: int, cols: slice) -> np.ndarray:
    mask = np.zeros(shape, dtype="uint8")
    mask[row, cols] = 1
    return mask


def test_binary_counts_exact_and_threshold_from_tag(tmp_path: Path) -> None:
    shape = (10, 12)
    truth = write(tmp_path / "truth.tif", {"line": line_mask(shape, 4, slice(2, 8))}, nodata=255)  # 6 px
    probability = np.where(line_mask(shape, 4, slice(4, 12)) == 1, 0.7, 0.0).astype("float32")  # 8 px
    probability[7, 1:4] = 0.55  # below the model's threshold 0.6, above the default 0.5
    pred = write(tmp_path / "prob.tif", {"probability": probability}, nodata=NAN, tags={"threshold": 0.6})
    result = evaluate(pred, truth, strip_rows=3)
    # tp = cols 4..7 = 4, fp = 4, fn = 2
    assert result["threshold"] == 0.6
    assert result["metrics"]["dice"] == pytest.approx(8 / 14)
    assert result["metrics"]["precision"] == pytest.approx(0.5)
    assert result["metrics"]["recall"] == pytest.approx(4 / 6)
    assert result["metrics"]["iou"] == pytest.approx(4 / 10)
    assert result["n_pixels"] == 120
    lower = evaluate(pred, truth, threshold=0.5)  # the three 0.55 pixels become false positives
    assert lower["threshold"] == 0.5
    assert lower["metrics"]["precision"] == pytest.approx(4 / 11)


def test_binary_line_shifted_two_pixels(tmp_path: Path) -> None:
    shape = (12, 14)
    truth = write(tmp_path / "truth.tif", {"line": line_mask(shape, 3, slice(1, 12))}, nodata=255)
    pred = write(tmp_path / "pred.tif", {"line": line_mask(shape, 5, slice(1, 12))}, nodata=255)
    result = evaluate(pred, truth, tolerance=2)
    metrics = result["metrics"]
    assert result["task"] == "binary" and result["threshold"] is None
    assert result["pixel_size_m"] == pytest.approx(PIXEL_M)
    assert metrics["dice"] == 0.0
    assert metrics["hd95_px"] == pytest.approx(2.0)
    assert metrics["hd95_m"] == pytest.approx(2 * PIXEL_M)
    assert metrics["line_distance_m"] == pytest.approx(2 * PIXEL_M)
    assert metrics["boundary_f"] == pytest.approx(1.0)  # every pixel within 2 px
    assert metrics["iou_tol"] == pytest.approx(1.0)
    assert evaluate(pred, truth, tolerance=1)["metrics"]["boundary_f"] == 0.0


def test_binary_nodata_in_truth_is_not_counted(tmp_path: Path) -> None:
    truth_mask = line_mask((4, 5), 1, slice(0, 5))
    truth_mask[3, :] = 255
    truth = write(tmp_path / "truth.tif", {"line": truth_mask}, nodata=255)
    pred = write(tmp_path / "pred.tif", {"line": line_mask((4, 5), 3, slice(0, 5)) | line_mask((4, 5), 1, slice(0, 5))}, nodata=255)
    result = evaluate(pred, truth)
    assert result["n_pixels"] == 15  # the nodata row is skipped, so its predicted line does not count
    assert result["metrics"]["dice"] == pytest.approx(1.0)


def test_binary_empty_mask_conventions_in_json(tmp_path: Path) -> None:
    shape = (6, 8)
    empty = write(tmp_path / "empty.tif", {"line": np.zeros(shape, "uint8")}, nodata=255)
    empty_truth = write(tmp_path / "empty_truth.tif", {"line": np.zeros(shape, "uint8")}, nodata=255)
    line = write(tmp_path / "line.tif", {"line": line_mask(shape, 2, slice(1, 7))}, nodata=255)

    out = tmp_path / "both.json"
    assert run_cli("evaluate", empty, "--truth", empty_truth, "--json", out).exit_code == 0
    both = json.loads(out.read_text())
    assert both["empty_masks"] == "both"
    assert both["metrics"]["hd95_px"] == 0.0 and both["metrics"]["line_distance_m"] == 0.0
    assert both["metrics"]["dice"] == 1.0
    assert any("both masks empty" in text for text in both["conventions"])
    assert both["line_cases"]["n_both_empty"] == 1 and both["line_cases"]["n_found"] == 0

    out = tmp_path / "one.json"
    assert run_cli("evaluate", empty, "--truth", line, "--json", out).exit_code == 0
    one = json.loads(out.read_text())
    assert one["empty_masks"] == "prediction"
    # a missed line has no distance (null, as MONAI), never the image diagonal; it is counted instead
    assert one["metrics"]["hd95_px"] is None and one["metrics"]["hd95_m"] is None
    assert one["metrics"]["line_distance_m"] is None
    assert one["metrics"]["dice"] == 0.0 and one["metrics"]["recall"] == 0.0
    cases = one["line_cases"]
    assert (cases["n"], cases["n_missed"], cases["n_empty_prediction"], cases["n_empty_truth"]) == (1, 1, 1, 0)
    assert cases["hd95_px_mean"] is None
    assert any("undefined" in text and "n_missed" in text for text in one["conventions"])

    false_alarm = evaluate(line, empty_truth)
    assert false_alarm["line_cases"]["n_false_alarm"] == 1 and false_alarm["line_cases"]["n_empty_truth"] == 1
    assert math.isnan(false_alarm["metrics"]["hd95_px"])


def test_binary_patches_average_distances_over_found_lines(tmp_path: Path) -> None:
    # four 8 x 8 patches: a line found 2 px off, a missed line, a false alarm, nothing at all
    truth, pred = np.zeros((16, 16), "uint8"), np.zeros((16, 16), "uint8")
    truth[2, 1:7], pred[4, 1:7] = 1, 1
    truth[3, 9:15] = 1
    pred[12, 1:7] = 1
    truth_path = write(tmp_path / "truth.tif", {"line": truth}, nodata=255)
    pred_path = write(tmp_path / "pred.tif", {"line": pred}, nodata=255)
    seen = []
    result = evaluate(pred_path, truth_path, patch_size=8, progress=seen.append)
    patches = result["patch_cases"]
    assert patches["size"] == 8
    counts = ("n", "n_found", "n_missed", "n_false_alarm", "n_both_empty", "n_empty_prediction", "n_empty_truth")
    assert [patches[key] for key in counts] == [4, 1, 1, 1, 1, 2, 2]
    assert patches["hd95_px_mean"] == pytest.approx(2.0)
    assert patches["line_distance_m_mean"] == pytest.approx(2 * PIXEL_M)
    assert patches["dice_mean"] == pytest.approx(0.25)  # 0, 0, 0 and 1 (nothing to find)
    assert result["metrics"]["patch_hd95_px_mean"] == pytest.approx(2.0)
    assert result["metrics"]["patches_missed"] == 1
    assert result["line_cases"]["n_found"] == 1  # the scene as a whole: both hold lines
    assert [event.done for event in seen if event.stage == "patches"] == [1, 2, 3, 4]
    table = run_cli("evaluate", pred_path, "--truth", truth_path, "--patch-size", 8).stderr
    assert "patches_missed" in table and "over patches with a found line" in table


# --------------------------------------------------------------------------- multiclass

CLASS_TRUTH = np.array([[0, 0, 1, 1], [2, 2, 1, 0]], dtype="uint8")
CLASS_PRED = np.array([[0, 1, 1, 1], [2, 0, 1, 0]], dtype="uint8")
# pairs (truth, pred): IoU class 0 = 2 / (2 + 1 + 1), class 1 = 3 / (3 + 1), class 2 = 1 / (1 + 1)
CLASS_IOU = [0.5, 0.75, 0.5]


def test_multiclass_confusion_by_hand_with_names_and_nodata(tmp_path: Path) -> None:
    truth = np.concatenate([CLASS_TRUTH, [[3, 1, 255, 0]]]).astype("uint8")
    pred = np.concatenate([CLASS_PRED, [[255, 2, 0, 255]]]).astype("uint8")
    # row 3: truth 3 vs nodata (skipped), truth 1 vs pred 2 (counted), nodata truth, skipped
    names = ["water", "young", "old", "fast", "shelf"]
    pred_path = write(tmp_path / "pred.tif", {"class": pred}, nodata=255, tags={"class_names": json.dumps(names)})
    truth_path = write(tmp_path / "truth.tif", {"class": truth}, nodata=255)
    result = evaluate(pred_path, truth_path)
    # extra pair (1, 2): class 1 gains a miss, class 2 a false positive
    iou = {"water": 2 / 4, "young": 3 / 5, "old": 1 / 3}
    assert result["task"] == "multiclass"
    assert result["n_pixels"] == 9
    assert result["metrics"]["accuracy"] == pytest.approx(6 / 9)
    for name, value in iou.items():
        assert result["metrics"]["per_class_iou"][name] == pytest.approx(value)
    assert math.isnan(result["metrics"]["per_class_iou"]["fast"])  # absent from both maps
    assert result["metrics"]["miou"] == pytest.approx(sum(iou.values()) / 3)
    assert json_safe(result)["metrics"]["per_class_iou"]["shelf"] is None


def test_multiclass_without_names_counts_classes_from_the_data(tmp_path: Path) -> None:
    pred = write(tmp_path / "pred.tif", {"class": CLASS_PRED}, nodata=255)
    truth = write(tmp_path / "truth.tif", {"class": CLASS_TRUTH}, nodata=255)
    result = evaluate(pred, truth)
    assert result["class_names"] == ["0", "1", "2"]
    assert result["metrics"]["miou"] == pytest.approx(np.mean(CLASS_IOU))
    assert result["metrics"]["accuracy"] == pytest.approx(6 / 8)
    f1 = [2 * 2 / (4 + 1 + 1), 2 * 3 / (6 + 1), 2 * 1 / (2 + 1)]
    assert result["metrics"]["f1"] == pytest.approx(np.mean(f1))
    assert result["confusion_matrix"] == [[2, 1, 0], [0, 3, 0], [1, 0, 1]]
    table = run_cli("evaluate", pred, "--truth", truth).stderr
    assert "iou (1)" in table and "0.75" in table  # per-class rows in the table


@pytest.mark.parametrize(
    ("text", "names"),
    [('["a", "b"]', ["a", "b"]), ("['a', 'b']", ["a", "b"]), ("a, b ,c", ["a", "b", "c"]), ("", None)],
)
def test_parse_class_names(text: str, names: list[str] | None) -> None:
    assert parse_class_names(text) == names


# --------------------------------------------------------------------------- refusals


def test_grid_mismatch_is_one_line_exit_1(tmp_path: Path, sic_pair: tuple[Path, Path]) -> None:
    pred, _ = sic_pair
    other = write(tmp_path / "other.tif", {"SIC": np.zeros((3, 4), "float32")}, nodata=NAN)
    result = run_cli("evaluate", pred, "--truth", other)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "other.tif" in lines[0] and "pred.tif" in lines[0] and "rasterize" in lines[0] and "--like" in lines[0]
    with pytest.raises(CRSError):
        evaluate(pred, other)


def test_truth_without_a_usable_band_names_the_bands(tmp_path: Path, sic_pair: tuple[Path, Path]) -> None:
    pred, _ = sic_pair
    wrong = write(tmp_path / "wrong.tif", {"HH": np.zeros((2, 4), "float32"), "HV": np.zeros((2, 4), "float32")}, nodata=NAN)
    with pytest.raises(MissingVariableError, match="bands found: HH, HV"):
        evaluate(pred, wrong)


def test_no_overlapping_valid_pixel_is_a_data_error(tmp_path: Path) -> None:
    pred = write(tmp_path / "p.tif", {"SIC": np.array([[0.5, NAN]], "float32")}, nodata=NAN)
    truth = write(tmp_path / "t.tif", {"SIC": np.array([[NAN, 0.5]], "float32")}, nodata=NAN)
    with pytest.raises(DataError, match="share no pixel"):
        evaluate(pred, truth)
    result = run_cli("evaluate", pred, "--truth", truth)
    assert result.exit_code == 1 and "share no pixel" in result.stderr


def test_missing_truth_file_exit_1(sic_pair: tuple[Path, Path], tmp_path: Path) -> None:
    pred, _ = sic_pair
    result = run_cli("evaluate", pred, "--truth", tmp_path / "nope.tif")
    assert result.exit_code == 1
    assert "nope.tif does not exist" in result.stderr and result.stdout == ""


# --------------------------------------------------------------------------- JSON output


def test_json_file_round_trips_with_null_and_refuses_to_overwrite(tmp_path: Path) -> None:
    pred = write(tmp_path / "p.tif", {"SIC": np.array([[0.4, 0.6]], "float32")}, nodata=NAN)
    truth = write(tmp_path / "t.tif", {"SIC": np.array([[0.5, 0.5]], "float32")}, nodata=NAN)
    out = tmp_path / "metrics.json"
    result = run_cli("evaluate", pred, "--truth", truth, "--json", out)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    with open(out) as f:
        data = json.load(f)
    assert data["metrics"]["r2"] is None  # constant truth
    assert data["metrics"]["rmse"] == pytest.approx(0.1, abs=1e-6)
    assert data["task"] == "sic" and data["n_pixels"] == 2
    assert data["files"] == {"prediction": str(pred), "truth": str(truth), "polygons": None}
    assert {"tolerance", "threshold", "conventions"} <= set(data)

    out.write_text("keep")
    again = run_cli("evaluate", pred, "--truth", truth, "--json", out)
    assert again.exit_code == 1 and "--overwrite" in again.stderr
    assert out.read_text() == "keep"
    assert run_cli("evaluate", pred, "--truth", truth, "--json", out, "--overwrite").exit_code == 0
    assert json.loads(out.read_text())["n_pixels"] == 2


def test_json_dash_prints_only_json_on_stdout(sic_pair: tuple[Path, Path]) -> None:
    pred, truth = sic_pair
    result = run_cli("evaluate", pred, "--truth", truth, "--json", "-")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["metrics"]["r2"] == pytest.approx(HAND_R2, abs=1e-6)
    assert "metric" in result.stderr and "r2" in result.stderr  # the table went to stderr
    quiet = run_cli("-q", "evaluate", pred, "--truth", truth, "--json", "-")
    assert quiet.stderr == "" and json.loads(quiet.stdout) == data


def test_task_override_and_bad_task_is_a_usage_error(tmp_path: Path) -> None:
    pred = write(tmp_path / "p.tif", {"band1": np.array([[1, 0, 1]], "uint8")}, nodata=255)
    truth = write(tmp_path / "t.tif", {"line": np.array([[1, 1, 0]], "uint8")}, nodata=255)
    result = evaluate(pred, truth, task="binary")
    assert result["metrics"]["dice"] == pytest.approx(0.5)
    assert run_cli("evaluate", pred, "--truth", truth, "--task", "nonsense").exit_code == 2
