"""Class-map scores: mIoU, macro and weighted F1, accuracy and per-class IoU from one confusion matrix."""

from __future__ import annotations

import ast
import json
from typing import Any

import numpy as np

from icetools.io.raster import iter_strips
from icetools.io.scene import Scene
from icetools.metrics import ConfusionAccumulator
from icetools.progress import Progress, report
from icetools.scoring.bands import (
    TRUTH_BANDS,
    BandReader,
    Reader,
    file_tags,
    find_band,
    missing_truth_band,
    only_unnamed_band,
    prediction_band,
)


def parse_class_names(text: str | None) -> list[str] | None:
    """``class_names`` tags arrive as JSON, a Python list's repr, or comma-separated text."""
    if not text or not text.strip():
        return None
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(text)
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, (list, tuple)):
            return [str(name) for name in value]
    return [name.strip() for name in text.split(",") if name.strip()]


def _largest_class(readers: tuple[Reader, ...], height: int, width: int, strip_rows: int) -> int:
    """Without class names, the number of classes is whatever the largest label says."""
    largest = -1
    for window in iter_strips(height, width, strip_rows):
        for reader in readers:
            strip = reader(window)
            if np.isfinite(strip).any():
                largest = max(largest, int(np.nanmax(strip)))
    return largest


def evaluate_multiclass(pred: Scene, truth: Scene, *, strip_rows: int, progress: Progress | None) -> dict[str, Any]:
    band = prediction_band(pred, "multiclass")
    truth_band = find_band(truth, TRUTH_BANDS["multiclass"]) or only_unnamed_band(truth)
    if truth_band is None:
        raise missing_truth_band(truth, "multiclass")
    pred_reader, truth_reader = BandReader(pred, band), BandReader(truth, truth_band)
    names = parse_class_names(file_tags(pred).get("class_names")) or parse_class_names(
        file_tags(truth).get("class_names")
    )
    if names is None:
        largest = _largest_class((pred_reader, truth_reader), pred.height, pred.width, strip_rows)
        pred_reader.masked_255 = truth_reader.masked_255 = 0  # counted again below
        if largest < 0:
            return {"n_pixels": 0}
        names = [str(label) for label in range(max(largest + 1, 2))]
    confusion = ConfusionAccumulator(len(names))
    for window in iter_strips(pred.height, pred.width, strip_rows):
        predicted, true = pred_reader(window), truth_reader(window)
        both = np.isfinite(predicted) & np.isfinite(true)
        confusion.update(predicted, true, both)
        report(progress, "rows", window.row_off + window.height, pred.height)
    scores = confusion.result()
    return {
        "n_pixels": int(confusion.matrix.sum()),
        "bands": {"prediction": band, "truth": truth_band},
        "class_names": names,
        "metrics": {
            "miou": scores["miou"],
            "f1": scores["f1"],
            "f1_weighted": scores["f1_weighted"],
            "accuracy": scores["accuracy"],
            "per_class_iou": dict(zip(names, scores["per_class_iou"])),
        },
        "confusion_matrix": confusion.matrix.tolist(),
        "conventions": [
            "confusion rows = truth, columns = prediction; pixels nodata in either raster skipped",
            "mIoU and macro F1 average the classes present in the prediction or the truth; "
            "absent classes get a null IoU",
            "f1_weighted: each class's F1 weighted by its true pixel count (sklearn average='weighted')",
        ],
        "warnings": pred_reader.warnings("prediction") + truth_reader.warnings("truth"),
    }
