"""Tests for icetools.training.validate: per-patch Dice, the threshold sweep in one pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from icetools.calibration import SICCalibration
from icetools.training.validate import ValidationResult, patch_dice, pick_threshold


def _fake_batch(prob: np.ndarray, truth: np.ndarray) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    logits = torch.logit(torch.as_tensor(prob, dtype=torch.float32))[:, None]
    batch = {"target": torch.as_tensor(truth, dtype=torch.float32), "valid": torch.ones(truth.shape, dtype=torch.bool)}
    return logits, batch


def mean_dice_of(prob: np.ndarray, truth: np.ndarray, thresholds: list[float]) -> list[float]:
    result = ValidationResult("binary", 1, thresholds=thresholds)
    result.update(*_fake_batch(prob, truth), loss=0.0)
    return result.mean_dice()


def test_threshold_sweep_picks_the_separating_threshold() -> None:
    truth = np.zeros((3, 8, 8))
    truth[0, 2:4, :] = 1
    truth[1, :, 5] = 1  # patch 2 stays empty
    prob = np.where(truth > 0, 0.68, 0.57)  # only thresholds in (0.57, 0.68] separate
    thresholds = [round(0.1 + 0.05 * i, 2) for i in range(17)]
    result = ValidationResult("binary", 1, thresholds=thresholds)
    result.update(*_fake_batch(prob, truth), loss=0.0)
    mean_dice = result.mean_dice()
    best, at_edge = pick_threshold(thresholds, mean_dice)
    assert best == 0.6 and not at_edge  # 0.6 and 0.65 both score 1: the lower wins
    assert mean_dice[thresholds.index(0.6)] == pytest.approx(1.0)
    # at 0.5 every pixel is predicted: Dice 2*16/(64+16) and 2*8/(64+8); the empty patch is left out
    # of the mean (it would reward predicting nothing), its false positives count in the pooled dice
    assert mean_dice[thresholds.index(0.5)] == pytest.approx((32 / 80 + 16 / 72) / 2)
    assert result.metrics(0.6) == {"dice": 1.0, "precision": 1.0, "recall": 1.0, "patch_dice": 1.0}

    edge_prob = np.where(truth > 0, 0.97, 0.88)  # only 0.9, the top of the range, separates
    best, at_edge = pick_threshold(thresholds, mean_dice_of(edge_prob, truth, thresholds))
    assert best == 0.9 and at_edge

    # empty truth and empty prediction: 1 (nothing to find); one empty: 0
    dice = patch_dice(np.array([[[0.1]], [[0.9]]]), np.array([[[0.0]], [[0.0]]]), np.ones((2, 1, 1), bool), [0.5])
    np.testing.assert_array_equal(dice, [[1.0, 0.0]])


def test_without_foreground_patches_the_pooled_dice_picks() -> None:
    truth = np.zeros((2, 4, 4))
    prob = np.where(np.arange(16).reshape(1, 4, 4) < 8, 0.3, 0.7).repeat(2, axis=0)
    # no patch holds a line: every threshold that predicts something scores 0, one that predicts nothing 1
    assert mean_dice_of(prob, truth, [0.2, 0.5, 0.8]) == [0.0, 0.0, 1.0]


def _sic_batch(pixel_sic: list[float], chart: list[float], side: int = 40) -> dict[str, torch.Tensor]:
    """One patch per polygon, every pixel of patch i at output ``pixel_sic[i]`` and chart ``chart[i]``;
    the image is the output's logit, so an identity model gives it back."""
    n = len(chart)
    probability = torch.tensor(pixel_sic, dtype=torch.float32).clamp(1e-6, 1 - 1e-6)
    return {
        "image": torch.logit(probability)[:, None, None, None].expand(n, 1, side, side).contiguous(),
        "target": torch.tensor(chart, dtype=torch.float32)[:, None, None].expand(n, side, side).contiguous(),
        "valid": torch.ones((n, side, side), dtype=torch.bool),
        "polygon_ids": torch.arange(1, n + 1)[:, None, None].expand(n, side, side).contiguous(),
        "scene_index": torch.zeros(n, dtype=torch.int64),
    }


def _calibrated(batches: list[dict[str, torch.Tensor]]) -> tuple[dict, dict, dict]:
    """run._calibrate_sic on an identity model over ``batches``: config, metrics, summary."""
    from types import SimpleNamespace

    from icetools.training.run import _calibrate_sic

    loop = SimpleNamespace(parts=SimpleNamespace(val_loader=batches, loss_fn=lambda logits, batch: torch.zeros(())),
                           device=torch.device("cpu"))
    config: dict = {}
    summary: dict = {"warnings": []}
    metrics = _calibrate_sic(torch.nn.Identity(), loop, config, {"r2": 0.0, "polygon_r2": 0.0}, summary, progress=None)
    return config, metrics, summary


def test_sic_calibration_is_kept_when_it_brings_validation_polygons_to_the_chart() -> None:
    # open water at a floor of 0.04, full ice at 0.97, a half-and-half polygon between them
    water, ice = 0.04, 0.97
    batch = _sic_batch([water, ice, water, ice], [0.0, 1.0, 0.5, 0.5])
    batch["polygon_ids"][3] = 3  # patches 3 and 4 are one 50 % polygon: half its pixels water, half ice
    config, metrics, summary = _calibrated([batch])
    entry = config["sic_calibration"]
    assert entry["floor"] == pytest.approx(water, abs=5e-4) and entry["ceiling"] == pytest.approx(ice, abs=5e-4)
    assert entry["validation"]["score"] == "polygon_r2" and entry["validation"]["calibrated"] == pytest.approx(1.0, abs=1e-3)
    assert entry["validation"]["raw"] < entry["validation"]["calibrated"]
    assert metrics["polygon_r2"] == pytest.approx(1.0, abs=1e-3) and summary["sic_calibration"] == entry
    again = ValidationResult("sic", 1, calibration=SICCalibration(entry["floor"], entry["ceiling"]))
    again.update(batch["image"][:, 0][:, None], batch, 0.0)  # what predict would write scores as recorded
    assert again.metrics()["polygon_r2"] == pytest.approx(metrics["polygon_r2"], rel=1e-6)


def test_sic_calibration_is_refused_when_it_lowers_validation_polygon_r2() -> None:
    # mixed polygons already exact: stretching a floor of 0.08 away pulls all five below their charts
    charts = [0.0, 1.0, 0.3, 0.4, 0.5, 0.6, 0.7]
    config, metrics, summary = _calibrated([_sic_batch([0.08, 1.0, 0.3, 0.4, 0.5, 0.6, 0.7], charts)])
    assert "sic_calibration" not in config and "sic_calibration" not in summary
    assert metrics == {"r2": 0.0, "polygon_r2": 0.0}  # the run's own metrics stand
    assert any("lowered validation polygon_r2" in w and "not applied" in w for w in summary["warnings"])
