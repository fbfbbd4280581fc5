"""Tests for icetools.metrics: hand-computed values on tiny masks and block-wise accumulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from icetools.errors import DataError
from icetools.metrics import (
    AUTOICE_CLASSES,
    BinaryCounts,
    ConfusionAccumulator,
    LineAccumulator,
    PolygonAccumulator,
    SICAccumulator,
    autoice_score,
    binary_line_metrics,
    boundary_f_score,
    hd95,
    mean_line_distance,
    sic_classes,
    tolerant_iou,
)


def horizontal_line(shape: tuple[int, int], row: int, cols: slice) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[row, cols] = True
    return mask


# --------------------------------------------------------------------------- SIC


def test_sic_r2_and_rmse_hand_value_skip_nan_and_invalid() -> None:
    truth = np.array([0.0, 0.5, 1.0, 0.5, np.nan, 0.3, 0.9])
    pred = np.array([0.1, 0.5, 0.8, 0.5, 0.2, np.nan, 0.0])
    valid = np.array([True] * 6 + [False])
    accumulator = SICAccumulator()
    accumulator.update(pred, truth, valid)
    result = accumulator.result()
    # SSres = 0.01 + 0 + 0.04 + 0 = 0.05 ; mean truth 0.5 ; SStot = 0.25 + 0 + 0.25 + 0 = 0.5
    assert result["n"] == 4
    assert result["r2"] == pytest.approx(0.9)
    assert result["rmse"] == pytest.approx(math.sqrt(0.05 / 4))


def test_sic_accumulated_in_two_blocks_equals_one_block() -> None:
    rng = np.random.default_rng(0)
    truth = rng.random((20, 30))
    pred = np.clip(truth + rng.normal(0, 0.1, truth.shape), 0, 1)
    pred[rng.random(truth.shape) < 0.1] = np.nan
    whole = SICAccumulator()
    whole.update(pred, truth)
    blocks = SICAccumulator()
    blocks.update(pred[:7], truth[:7])
    blocks.update(pred[7:], truth[7:])
    for key in ("r2", "rmse", "n"):
        assert blocks.result()[key] == pytest.approx(whole.result()[key], rel=1e-12)


def test_sic_empty_and_shape_mismatch() -> None:
    accumulator = SICAccumulator()
    assert math.isnan(accumulator.result()["r2"]) and accumulator.result()["n"] == 0
    with pytest.raises(DataError, match="shape"):
        accumulator.update(np.zeros((2, 2)), np.zeros((2, 3)))


def test_polygon_accumulator_hand_value_over_blocks_with_growing_ids() -> None:
    accumulator = PolygonAccumulator()
    accumulator.update(np.array([[0.2, 0.4, 0.9]]), np.array([[1, 1, 2]]))
    accumulator.update(
        np.array([[0.6, 1.0, 0.5, np.nan, 0.3]]),
        np.array([[3, 2, 0, 3, 100_000]]),
        valid=np.array([[True, True, True, True, False]]),
    )
    assert accumulator.means() == pytest.approx({1: 0.3, 2: 0.95, 3: 0.6})
    accumulator.update(np.array([0.25]), np.array([100_000]))
    assert accumulator.means()[100_000] == pytest.approx(0.25)
    # polygon 100000 has no chart SIC, polygon 4 has no pixel: both skipped.
    # errors 0.1, 0.05, -0.1 -> SSres 0.0225 ; chart mean 0.6 -> SStot 0.26
    result = accumulator.result({1: 0.2, 2: 0.9, 3: 0.7, 4: 0.5})
    assert result["n_polygons"] == 3
    assert result["r2"] == pytest.approx(1 - 0.0225 / 0.26)
    assert result["rmse"] == pytest.approx(math.sqrt(0.0225 / 3))


# --------------------------------------------------------------------------- binary


def test_binary_counts_hand_values_on_four_by_four() -> None:
    pred = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    truth = np.array([[0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
    # TP 2 ; FP 2 ; FN 4 ; TN 8
    counts = BinaryCounts()
    counts.update(pred[:2], truth[:2])
    counts.update(pred[2:], truth[2:])
    assert (counts.tp, counts.fp, counts.fn, counts.tn) == (2, 2, 4, 8)
    assert counts.result() == pytest.approx(
        {"dice": 0.4, "precision": 0.5, "recall": 1 / 3, "iou": 0.25}
    )
    valid = np.ones((4, 4), dtype=bool)
    valid[0, 1] = valid[3, 3] = False  # drop one TP and one TN
    masked = BinaryCounts()
    masked.update(pred, truth, valid)
    assert (masked.tp, masked.fp, masked.fn, masked.tn) == (1, 2, 4, 7)


def test_binary_counts_empty_conventions() -> None:
    empty = np.zeros((3, 3))
    both = BinaryCounts()
    both.update(empty, empty)
    assert both.result() == {"dice": 1.0, "precision": 1.0, "recall": 1.0, "iou": 1.0}
    missed = BinaryCounts()
    missed.update(empty, np.eye(3))
    assert missed.result() == {"dice": 0.0, "precision": 0.0, "recall": 0.0, "iou": 0.0}
    false_alarm = BinaryCounts()
    false_alarm.update(np.eye(3), empty)
    assert false_alarm.result() == {"dice": 0.0, "precision": 0.0, "recall": 0.0, "iou": 0.0}


def test_hd95_of_parallel_lines_three_pixels_apart() -> None:
    pred = horizontal_line((10, 10), 2, slice(1, 9))
    truth = horizontal_line((10, 10), 5, slice(1, 9))
    assert hd95(pred, truth) == pytest.approx(3.0)
    assert hd95(pred, truth, pixel_size=40.0) == pytest.approx(120.0)


def test_hd95_takes_the_larger_directed_percentile() -> None:
    # Every predicted pixel lies on the truth (forward 0), but half the truth is 10 px away.
    pred = horizontal_line((20, 20), 1, slice(0, 20))
    truth = pred | horizontal_line((20, 20), 11, slice(0, 20))
    assert hd95(pred, truth) == pytest.approx(10.0)
    assert hd95(truth, pred) == pytest.approx(10.0)


def test_hd95_empty_conventions() -> None:
    # One mask empty: no distance (NaN, as MONAI), never a size-dependent stand-in like the diagonal.
    empty = np.zeros((6, 8), dtype=bool)
    line = horizontal_line((6, 8), 3, slice(0, 4))
    assert hd95(empty, empty) == 0.0
    assert math.isnan(hd95(empty, line, pixel_size=2.0))
    assert math.isnan(hd95(line, empty))
    assert math.isnan(mean_line_distance(empty, line))
    assert math.isnan(mean_line_distance(line, empty))
    assert mean_line_distance(empty, empty) == 0.0


def reference_hd95(pred: np.ndarray, truth: np.ndarray) -> float:
    """All-pairs distances between boundary pixels of the full (uncropped) masks."""

    def edge(mask: np.ndarray) -> np.ndarray:
        return np.argwhere(mask & ~ndimage.binary_erosion(mask, border_value=0))

    distances = cdist(edge(pred), edge(truth))
    return max(np.percentile(distances.min(axis=1), 95), np.percentile(distances.min(axis=0), 95))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_on_the_cropped_box_equals_the_brute_force_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.random((2, 40, 50)), (0, 3, 3))
    pred = noise[0] > np.quantile(noise[0], 0.8)
    truth = noise[1] > np.quantile(noise[1], 0.85)
    pred[:5], truth[:5] = False, False  # leave space so the crop is smaller than the image
    assert hd95(pred, truth) == pytest.approx(reference_hd95(pred, truth), abs=1e-9)


def test_boundary_f_score_with_a_one_pixel_shift() -> None:
    truth = np.zeros((12, 12), dtype=bool)
    truth[3:7, 3:7] = True
    pred = np.roll(truth, 1, axis=1)
    assert boundary_f_score(pred, truth, tolerance=2) == pytest.approx(1.0)
    # Rings of 12 pixels each; they share the top and bottom rows at columns 4..6: 6 of 12.
    assert boundary_f_score(pred, truth, tolerance=0) == pytest.approx(0.5)
    assert boundary_f_score(truth, truth, tolerance=0) == pytest.approx(1.0)


def test_boundary_f_score_empty_conventions() -> None:
    empty = np.zeros((5, 5), dtype=bool)
    assert boundary_f_score(empty, empty) == 1.0
    assert boundary_f_score(empty, np.eye(5)) == 0.0


def test_tolerant_iou_hand_values() -> None:
    truth = horizontal_line((8, 8), 2, slice(0, 6))
    pred = horizontal_line((8, 8), 3, slice(2, 8))
    # tol 1: predicted cols 2..5 hit, 6 and 7 are sqrt(2) / sqrt(5) away -> 2 false positives;
    # true cols 0, 1 are farther than 1 from any prediction -> 2 misses: 4 / (4 + 2 + 2)
    assert tolerant_iou(pred, truth, tolerance=1) == pytest.approx(0.5)
    # tol 2: only predicted col 7 (sqrt 5) and true col 0 (sqrt 5) fail: 5 / (5 + 1 + 1)
    assert tolerant_iou(pred, truth, tolerance=2) == pytest.approx(5 / 7)
    assert tolerant_iou(truth, truth, tolerance=2) == 1.0
    assert tolerant_iou(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0


def test_mean_line_distance_of_parallel_lines() -> None:
    pred = horizontal_line((12, 20), 2, slice(1, 19))
    truth = horizontal_line((12, 20), 6, slice(1, 19))
    assert mean_line_distance(pred, truth, pixel_size=10.0) == pytest.approx(40.0)


def test_mean_line_distance_measures_thick_lines_by_their_centre_line() -> None:
    thick = np.zeros((12, 20), dtype=bool)
    thick[4:7, 2:18] = True
    centre = horizontal_line((12, 20), 5, slice(2, 18))
    assert mean_line_distance(thick, centre) < 0.25  # only the skeleton's end pixels stray


def test_distance_scores_do_not_depend_on_the_raster_around_the_lines() -> None:
    pred = horizontal_line((10, 10), 2, slice(1, 9)) | horizontal_line((10, 10), 3, slice(4, 6))
    truth = horizontal_line((10, 10), 5, slice(2, 9))
    big_pred, big_truth = (np.pad(mask, ((30, 45), (60, 7))) for mask in (pred, truth))
    for score in (hd95, mean_line_distance, boundary_f_score, tolerant_iou):
        assert score(big_pred, big_truth) == pytest.approx(score(pred, truth), abs=1e-12)


def test_binary_line_metrics_gathers_all_scores() -> None:
    pred = horizontal_line((10, 10), 2, slice(1, 9))
    truth = horizontal_line((10, 10), 5, slice(1, 9))
    result = binary_line_metrics(pred, truth, pixel_size=25.0, tolerance=3)
    assert result["dice"] == 0.0 and result["precision"] == 0.0 and result["recall"] == 0.0
    assert result["boundary_f"] == pytest.approx(1.0)
    assert result["iou_tol"] == pytest.approx(1.0)
    assert result["hd95_px"] == pytest.approx(3.0)
    assert result["hd95_m"] == pytest.approx(75.0)
    assert result["line_distance_m"] == pytest.approx(75.0)
    # Pixels outside `valid` are background in both masks: here that removes the whole truth.
    valid = np.ones((10, 10), dtype=bool)
    valid[4:] = False
    masked = binary_line_metrics(pred, truth, valid=valid)
    assert math.isnan(masked["hd95_px"]) and math.isnan(masked["line_distance_m"])
    assert masked["dice"] == 0.0 and masked["recall"] == 0.0  # a false alarm: one empty = worst


def test_line_accumulator_averages_distances_over_found_lines_only() -> None:
    lines = LineAccumulator(pixel_size=10.0, tolerance=1)
    truth = horizontal_line((10, 10), 2, slice(1, 9))
    empty = np.zeros((10, 10), dtype=bool)
    found_near = lines.update(horizontal_line((10, 10), 4, slice(1, 9)), truth)  # 2 px off
    lines.update(horizontal_line((10, 10), 8, slice(1, 9)), truth)  # 6 px off
    missed = lines.update(empty, truth)
    lines.update(truth, empty)  # false alarm
    lines.update(empty, empty)
    valid = np.ones((10, 10), dtype=bool)
    valid[2] = False  # removes the truth's row: what is left is a false alarm
    lines.update(horizontal_line((10, 10), 5, slice(1, 9)), truth, valid=valid)
    assert found_near["hd95_px"] == pytest.approx(2.0) and math.isnan(missed["hd95_px"])
    result = lines.result()
    assert (result["n"], result["n_found"], result["n_missed"], result["n_false_alarm"], result["n_both_empty"]) == (
        6, 2, 1, 2, 1)
    assert result["n_empty_prediction"] == 2 and result["n_empty_truth"] == 3
    assert result["hd95_px_mean"] == pytest.approx((2 + 6) / 2)  # the misses stay out
    assert result["hd95_m_mean"] == pytest.approx(40.0)
    assert result["line_distance_m_mean"] == pytest.approx(40.0)
    assert result["dice_mean"] == pytest.approx(1 / 6)  # only the both-empty case scores 1
    assert math.isnan(LineAccumulator().result()["hd95_px_mean"])


# --------------------------------------------------------------------------- classes


def test_confusion_hand_values_with_ignore_index_and_an_absent_class() -> None:
    truth = np.array([0, 0, 1, 1, 2, 255, 2, 1])
    pred = np.array([0, 1, 1, 1, 2, 0, 0, 2])
    accumulator = ConfusionAccumulator(4, ignore_index=255)
    accumulator.update(pred[:3], truth[:3])
    accumulator.update(pred[3:], truth[3:])
    # TP (1, 2, 1), FP (1, 1, 1), FN (1, 1, 1); class 3 absent from both
    result = accumulator.result()
    assert result["per_class_iou"][:3] == pytest.approx([1 / 3, 0.5, 1 / 3])
    assert math.isnan(result["per_class_iou"][3])
    assert result["miou"] == pytest.approx((1 / 3 + 0.5 + 1 / 3) / 3)
    assert result["f1"] == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    assert result["accuracy"] == pytest.approx(4 / 7)


def test_confusion_valid_mask_and_out_of_range_labels() -> None:
    accumulator = ConfusionAccumulator(2)
    accumulator.update(np.array([1, 0, 7]), np.array([1, 1, 9]), valid=np.array([1, 1, 0]))
    assert accumulator.matrix.tolist() == [[0, 0], [1, 1]]
    with pytest.raises(DataError, match="ignore_index"):
        accumulator.update(np.array([0]), np.array([255]))


def test_confusion_weighted_f1_by_hand() -> None:
    # Same pixels as above: F1 per class 0.5, 2/3, 0.5 with true counts 2, 3, 2.
    truth = np.array([0, 0, 1, 1, 2, 2, 1])
    pred = np.array([0, 1, 1, 1, 2, 0, 2])
    accumulator = ConfusionAccumulator(4)
    accumulator.update(pred, truth)
    assert accumulator.result()["f1_weighted"] == pytest.approx((0.5 * 2 + 2 / 3 * 3 + 0.5 * 2) / 7)
    # A class only predicted weighs 0 (scikit-learn's 'weighted'): F1 of class 0 = 2/3, weight 2 of 2.
    only_predicted = ConfusionAccumulator(2)
    only_predicted.update(np.array([0, 1]), np.array([0, 0]))
    assert only_predicted.result()["f1_weighted"] == pytest.approx(2 / 3)
    assert math.isnan(ConfusionAccumulator(2).result()["f1_weighted"])


# --------------------------------------------------------------------------- AI4Arctic challenge

# Reference figures computed with scikit-learn 1.9.1 (r2_score, f1_score(average="weighted")) on
# these very arrays; scikit-learn is not a dependency, so the test that calls it is skipped without it.
SKLEARN_SEED = 13


def challenge_arrays() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(SKLEARN_SEED)
    sic_truth = rng.integers(0, 11, 5000)
    sic_pred = np.clip(sic_truth + rng.integers(-2, 3, 5000), 0, 10)
    sod_truth = rng.integers(0, 6, 5000)
    sod_pred = np.where(rng.random(5000) < 0.7, sod_truth, rng.integers(0, 6, 5000))
    return sic_truth, sic_pred, sod_truth, sod_pred


SKLEARN_SIC_R2 = 0.8318003566192739
SKLEARN_SOD_F1 = 0.7624355263777716


def test_sic_classes_round_halves_up_and_keep_nan() -> None:
    sic = np.array([0.0, 0.04, 0.05, 0.149, 0.35, 0.45, 0.95, 1.0, 1.02, np.nan], dtype="float32")
    classes = sic_classes(sic)
    assert classes[:-1].tolist() == [0, 0, 1, 1, 4, 5, 10, 10, 10]
    assert math.isnan(classes[-1])
    tenths = np.arange(11, dtype="float32") * np.float32(0.1)  # a tenths truth read as fractions
    assert sic_classes(tenths).tolist() == list(range(11))
    assert sic_classes(np.arange(101) / 100).tolist() == [int(p // 10 + (p % 10 >= 5)) for p in range(101)]


def test_class_r2_and_weighted_f1_equal_scikit_learn_figures_streamed() -> None:
    sic_truth, sic_pred, sod_truth, sod_pred = challenge_arrays()
    r2 = SICAccumulator()
    confusion = ConfusionAccumulator(AUTOICE_CLASSES["SOD"])
    for block in np.array_split(np.arange(5000), 7):  # the answer does not depend on the blocks
        r2.update(sic_classes(sic_pred[block] / 10), sic_classes(sic_truth[block] / 10))
        confusion.update(sod_pred[block], sod_truth[block])
    assert r2.result()["r2"] == pytest.approx(SKLEARN_SIC_R2, abs=1e-12)
    assert confusion.result()["f1_weighted"] == pytest.approx(SKLEARN_SOD_F1, abs=1e-12)
    # and by hand with numpy, the same formulas scikit-learn documents
    residual = float(((sic_pred - sic_truth) ** 2).sum())
    assert r2.result()["r2"] == pytest.approx(1 - residual / float(((sic_truth - sic_truth.mean()) ** 2).sum()))


def test_class_scores_against_scikit_learn_itself() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    sic_truth, sic_pred, sod_truth, sod_pred = challenge_arrays()
    assert metrics.r2_score(sic_truth, sic_pred) == pytest.approx(SKLEARN_SIC_R2, abs=1e-12)
    assert metrics.f1_score(sod_truth, sod_pred, average="weighted") == pytest.approx(SKLEARN_SOD_F1, abs=1e-12)


def test_autoice_combined_score() -> None:
    assert autoice_score({"SIC": 0.9, "SOD": 0.8, "FLOE": 0.5}) == pytest.approx((1.8 + 1.6 + 0.5) / 5)
    assert math.isnan(autoice_score({"SIC": 0.9, "SOD": 0.8}))
