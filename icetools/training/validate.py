"""Validation: the loss and the task's metrics over the val patches, and the binary threshold sweep.

Metrics accumulate on :mod:`icetools.metrics`' counters batch by batch, so validation never holds
more than a batch of predictions. Binary masks are scored at every threshold of the sweep in the
same pass, so choosing the threshold costs one pass over the validation patches.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from icetools.calibration import EndHistograms, SICCalibration
from icetools.device import autocast
from icetools.jsonsafe import json_safe
from icetools.metrics import (
    BinaryCounts,
    ConfusionAccumulator,
    PolygonAccumulator,
    SICAccumulator,
    dice_from_counts,
)

# 0.10, 0.15, ... 0.90, then finer steps to 0.99: the positively weighted BCE of the line task shifts
# probabilities up (the odds by about the weight), so its best threshold often lies above 0.9; measured
# on a held-out interferogram, Dice 0.291 at 0.90 and 0.310 at 0.95.
DEFAULT_THRESHOLDS = tuple(round(0.1 + 0.05 * i, 2) for i in range(17)) + (0.93, 0.95, 0.97, 0.99)


def to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch on ``device`` without waiting for the copy (the loader pins host memory on CUDA);
    images of a CUDA batch in channels_last, the layout tensor cores read fastest."""
    moved = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
    image = moved.get("image")
    if device.type == "cuda" and image is not None and image.dim() == 4:
        moved["image"] = image.contiguous(memory_format=torch.channels_last)
    return moved


def threshold_counts(
    prob: np.ndarray, truth: np.ndarray, valid: np.ndarray, thresholds: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives and predicted pixels (T, B) at every threshold, true pixels (B,), valid pixels only."""
    thresholds = np.asarray(thresholds, dtype="float32").reshape(-1, 1, 1, 1)
    truth = (truth > 0.5) & valid
    pred = (prob[None] >= thresholds) & valid[None]
    true_pos = (pred & truth[None]).sum(axis=(2, 3))
    return true_pos, pred.sum(axis=(2, 3)), truth.sum(axis=(1, 2))


def patch_dice(
    prob: np.ndarray, truth: np.ndarray, valid: np.ndarray, thresholds: Sequence[float]
) -> np.ndarray:
    """Dice of every patch at every threshold, (T, B); a patch with no true and no predicted
    foreground scores 1 (see metrics.dice_from_counts)."""
    true_pos, n_pred, n_truth = threshold_counts(prob, truth, valid, thresholds)
    return dice_from_counts(true_pos, n_pred, n_truth[None])


def pick_threshold(thresholds: Sequence[float], mean_dice: Sequence[float]) -> tuple[float, bool]:
    """The threshold of best mean Dice (the lowest of equals), and whether it is at the range's edge."""
    scores = np.asarray(mean_dice, dtype="float64")
    if scores.size != len(thresholds) or scores.size == 0:
        raise ValueError("one mean Dice per threshold is needed")
    scores = np.where(np.isfinite(scores), scores, -np.inf)
    order = np.argsort(thresholds, kind="stable")
    best = order[int(np.argmax(scores[order]))]
    at_edge = len(thresholds) > 1 and best in (order[0], order[-1])
    return float(thresholds[best]), bool(at_edge)


class ValidationResult:
    """Loss and task metrics over the validation loader, accumulated batch by batch.

    Binary masks are scored at every threshold of ``thresholds`` in the same pass (pooled
    TP/FP/FN and the per-patch Dice), so the threshold sweep costs one pass over the data.
    """

    def __init__(
        self, task: str, n_classes: int, *, thresholds: Sequence[float] = (0.5,),
        calibration: SICCalibration | None = None,
    ) -> None:
        self.task = task
        self.calibration = calibration  # SIC: scored as predict writes it (the ends are measured raw)
        self.thresholds = [float(t) for t in thresholds]
        self.loss_sum = 0.0
        self.n = 0
        if task == "sic":
            self.pixels = SICAccumulator()
            self.polygons = PolygonAccumulator()
            self.polygon_key: dict[tuple[int, int], int] = {}
            self.polygon_sic: dict[int, float] = {}
            self.ends = EndHistograms()  # for the SIC calibration train chooses at the end
        elif task == "binary":
            count = len(self.thresholds)
            self.true_pos = np.zeros(count, dtype="int64")
            self.n_pred = np.zeros(count, dtype="int64")
            self.n_truth = 0
            self.n_valid = 0
            self.dice_sum = np.zeros(count)
            self.n_foreground_patches = 0
        else:
            self.confusion = ConfusionAccumulator(n_classes)

    def update(self, logits: torch.Tensor, batch: Mapping[str, torch.Tensor], loss: float) -> None:
        size = int(batch["target"].shape[0])
        self.loss_sum += loss * size
        self.n += size
        valid = batch["valid"].cpu().numpy()
        target = batch["target"].cpu().numpy()
        logits = logits.float()
        if self.task == "multiclass":
            self.confusion.update(logits.argmax(dim=1).cpu().numpy(), target, valid)
            return
        prob = torch.sigmoid(logits[:, 0]).cpu().numpy()
        if self.task == "sic":
            self.ends.update(prob, target, valid)
            if self.calibration is not None:
                prob = self.calibration.apply(prob)
            self.pixels.update(prob, target, valid)
            self._update_polygons(prob, batch["polygon_ids"].cpu().numpy(), batch["scene_index"].cpu().numpy(),
                                  target, valid)
            return
        true_pos, n_pred, n_truth = threshold_counts(prob, target, valid, self.thresholds)
        self.true_pos += true_pos.sum(axis=1)
        self.n_pred += n_pred.sum(axis=1)
        self.n_truth += int(n_truth.sum())
        self.n_valid += int(valid.sum())
        # Mean Dice over the patches that hold a line: empty patches would score 1 for predicting
        # nothing and pull the chosen threshold up (their false positives still count in 'dice').
        has_line = n_truth > 0
        self.n_foreground_patches += int(has_line.sum())
        dice = dice_from_counts(true_pos, n_pred, n_truth[None])
        self.dice_sum += dice[:, has_line].sum(axis=1)

    def _update_polygons(self, prob, ids, scenes, target, valid) -> None:
        """Polygon ids repeat across scenes: number each (scene, id) pair once, compactly."""
        compact = np.zeros(ids.shape, dtype="int64")
        for b in range(ids.shape[0]):
            keep = valid[b] & (ids[b] > 0)
            present, first = np.unique(ids[b][keep], return_index=True)
            if present.size == 0:
                continue
            chart = target[b][keep][first]
            numbers = np.empty(present.size, dtype="int64")
            for i, pid in enumerate(present):
                key = (int(scenes[b]), int(pid))
                if key not in self.polygon_key:
                    self.polygon_key[key] = len(self.polygon_key) + 1
                    self.polygon_sic[self.polygon_key[key]] = float(chart[i])
                numbers[i] = self.polygon_key[key]
            compact[b][keep] = numbers[np.searchsorted(present, ids[b][keep])]
        self.polygons.update(prob, compact, valid)

    def merge(self, other: ValidationResult) -> None:
        """Add another process's share of the validation set: the sums of one pass over all of it.

        Merged in the same order on every process, the processes hold equal results, so they take
        the same early-stopping decisions."""
        self.loss_sum += other.loss_sum
        self.n += other.n
        if self.task == "sic":
            self.pixels.merge(other.pixels)
            self.ends.merge(other.ends)
            renumber = np.zeros(len(other.polygon_key) + 1, dtype="int64")
            for key, theirs in other.polygon_key.items():
                if key not in self.polygon_key:
                    self.polygon_key[key] = len(self.polygon_key) + 1
                    self.polygon_sic[self.polygon_key[key]] = other.polygon_sic[theirs]
                renumber[theirs] = self.polygon_key[key]
            self.polygons.merge(other.polygons, renumber=renumber)
        elif self.task == "binary":
            self.true_pos += other.true_pos
            self.n_pred += other.n_pred
            self.n_truth += other.n_truth
            self.n_valid += other.n_valid
            self.dice_sum += other.dice_sum
            self.n_foreground_patches += other.n_foreground_patches
        else:
            self.confusion.merge(other.confusion)

    @property
    def loss(self) -> float:
        return self.loss_sum / self.n if self.n else float("nan")

    def mean_dice(self) -> list[float]:
        """Mean Dice at every threshold over the patches with foreground (binary tasks); the pooled
        Dice when no validation patch has any."""
        if self.n_foreground_patches == 0:
            return [float(v) for v in dice_from_counts(self.true_pos, self.n_pred, self.n_truth)]
        return [float(v) for v in self.dice_sum / self.n_foreground_patches]

    def metrics(self, threshold: float | None = None) -> dict[str, float]:
        """The task's metrics; binary ones at ``threshold`` (default: the first of the sweep)."""
        if self.task == "sic":
            pixels = self.pixels.result()
            polygons = self.polygons.result(self.polygon_sic)
            return {"r2": pixels["r2"], "rmse": pixels["rmse"], "polygon_r2": polygons["r2"]}
        if self.task == "binary":
            index = self.thresholds.index(float(threshold)) if threshold is not None else 0
            counts = BinaryCounts()
            counts.tp = int(self.true_pos[index])
            counts.fp = int(self.n_pred[index]) - counts.tp
            counts.fn = self.n_truth - counts.tp
            counts.tn = self.n_valid - counts.tp - counts.fp - counts.fn
            result = counts.result()
            return {
                "dice": result["dice"],
                "precision": result["precision"],
                "recall": result["recall"],
                "patch_dice": self.mean_dice()[index] if self.n else float("nan"),
            }
        result = self.confusion.result()
        return {"miou": float(result["miou"]), "accuracy": float(result["accuracy"])}


def validate(
    model: nn.Module,
    loader: Any,
    loss_fn: Callable,
    *,
    task: str,
    n_classes: int,
    device: torch.device,
    thresholds: Sequence[float] = (0.5,),
    calibration: SICCalibration | None = None,
) -> ValidationResult:
    """Validation loss and metrics on ``model(x)`` (for UNet++ the last head)."""
    model.eval()
    result = ValidationResult(task, n_classes, thresholds=thresholds, calibration=calibration)
    with torch.no_grad():
        for batch in loader:
            batch = to_device(batch, device)
            with autocast(device):
                logits = model(batch["image"])
                loss = loss_fn(logits, batch)
            result.update(logits, batch, float(loss))
    return result


@dataclass
class ThresholdChoice:
    """The outcome of the binary threshold sweep, as config.json and the summary record it."""

    threshold: float
    metrics: dict[str, float]  # the validation metrics at that threshold
    sweep: dict[str, Any]  # {"thresholds", "mean_dice"} (config.json's threshold_sweep)
    best_mean_dice: float
    warning: str | None


def sweep_threshold(
    model: nn.Module, loader: Any, loss_fn: Callable, *, thresholds: Sequence[float], device: torch.device
) -> ThresholdChoice:
    """Best per-patch mean Dice over the thresholds, on the validation patches, in one pass."""
    thresholds = list(thresholds)
    swept = validate(model, loader, loss_fn, task="binary", n_classes=1, device=device, thresholds=thresholds)
    mean_dice = swept.mean_dice()
    threshold, at_edge = pick_threshold(thresholds, mean_dice)
    warning = None
    if at_edge:
        warning = (
            f"the best threshold {threshold:g} lies at the edge of the sweep "
            f"({min(thresholds):g}..{max(thresholds):g}): widen the thresholds"
        )
    return ThresholdChoice(
        threshold=threshold,
        metrics=swept.metrics(threshold),
        sweep=json_safe({"thresholds": thresholds, "mean_dice": mean_dice}),
        best_mean_dice=max(mean_dice),
        warning=warning,
    )


__all__ = [
    "DEFAULT_THRESHOLDS", "ThresholdChoice", "ValidationResult", "patch_dice", "pick_threshold",
    "sweep_threshold", "threshold_counts", "to_device", "validate",
]
