"""Where a trained refiner may change the crude mask, chosen on validation, and whether it may at all.

After training, one pass over the refiner's validation windows scores the crude mask alone and the
refiner gated at each candidate confidence threshold (see :func:`icetools.models.refiner.uncertainty_gate`;
None applies the correction everywhere). The best threshold goes into the model (``gate_threshold``),
and the record into config.json under ``refines.gate``. A refiner that does not beat the crude mask
by :data:`MIN_GAIN` gets threshold 0 (it then returns the crude mask exactly) and ``beats_crude``
false, so predict falls back to the averaged mosaic with a warning: it never makes a map worse than
the mosaic it starts from, as far as validation can tell.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from icetools.device import autocast
from icetools.jsonsafe import json_safe
from icetools.models.refiner import GATE_RAMP, Refiner, uncertainty_gate
from icetools.tasks import BINARY, MULTICLASS
from icetools.training.validate import DEFAULT_THRESHOLDS, ValidationResult, to_device

GATE_CANDIDATES: tuple[float | None, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0, None)
"""Confidence thresholds tried, most conservative first (ties go to the earlier); None = everywhere."""
MIN_GAIN = 0.001
"""The refiner must beat the crude mask by this much of the task's score (0.1 mIoU points) to be used."""
NEVER = 0.0
"""The threshold of a refiner that must not change anything: no pixel is less than 0 confident."""
GATE_RULE = (
    "correction weight = clamp((threshold - confidence) / ramp, 0, 1), confidence = the crude mask's largest "
    "class probability (max(p, 1 - p) for one channel); threshold null = everywhere"
)


def task_score(result: ValidationResult, task: str) -> tuple[str, float]:
    """The score a gate is chosen by: mIoU, the best per-patch mean Dice over thresholds, or pixel R2."""
    if task == MULTICLASS:
        return "miou", float(result.metrics()["miou"])
    if task == BINARY:
        return "patch_dice (best threshold)", max(result.mean_dice())
    return "r2", float(result.metrics()["r2"])


@dataclass
class GateChoice:
    """The chosen threshold, its validation metrics and the record for config.json."""

    threshold: float | None
    beats_crude: bool
    metrics: dict[str, float]
    record: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def choose_gate(
    model: Refiner,
    loader: Iterable[dict[str, torch.Tensor]],
    *,
    task: str,
    n_classes: int,
    device: torch.device,
    candidates: Sequence[float | None] = GATE_CANDIDATES,
    min_gain: float = MIN_GAIN,
) -> GateChoice:
    """Score the crude mask and every candidate gate in one pass over ``loader``; pick the best."""
    thresholds = DEFAULT_THRESHOLDS if task == BINARY else (0.5,)
    crude = ValidationResult(task, n_classes, thresholds=thresholds)
    gated = [ValidationResult(task, n_classes, thresholds=thresholds) for _ in candidates]
    model.eval()
    with torch.no_grad():
        for batch in loader:
            batch = to_device(batch, device)
            with autocast(device):
                probs, base, correction = model.forward_parts(batch["image"])
            crude.update(base, batch, 0.0)
            for threshold, result in zip(candidates, gated):
                result.update(base + uncertainty_gate(probs, threshold) * correction.float(), batch, 0.0)
    metric, crude_score = task_score(crude, task)
    scores = [task_score(result, task)[1] for result in gated]
    ranked = [score if math.isfinite(score) else -math.inf for score in scores]
    best = max(range(len(ranked)), key=lambda i: (ranked[i], -i))  # the first of equal scores
    beats = math.isfinite(crude_score) and ranked[best] >= crude_score + min_gain
    record = json_safe({
        "rule": GATE_RULE, "ramp": GATE_RAMP, "threshold": candidates[best] if beats else NEVER,
        "best_candidate": candidates[best], "metric": metric, "crude": crude_score, "refined": scores[best],
        "candidates": list(candidates), "scores": scores, "min_gain": min_gain, "beats_crude": beats,
    })
    warnings = [] if beats else [
        f"the refiner does not beat the crude mosaic on validation ({metric} {scores[best]:.4f} at best vs "
        f"{crude_score:.4f}): it is saved as the identity and predict --merge refine falls back to averaging"
    ]
    chosen = gated[best] if beats else crude
    return GateChoice(candidates[best] if beats else NEVER, beats, chosen.metrics(), record, warnings)


__all__ = ["GATE_CANDIDATES", "GATE_RULE", "MIN_GAIN", "NEVER", "GateChoice", "choose_gate", "task_score"]
