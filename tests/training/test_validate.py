"""Tests for icetools.training.validate: per-patch Dice, the threshold sweep in one pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

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
