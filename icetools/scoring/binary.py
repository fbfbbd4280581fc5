"""Binary / line scores (grounding lines): pixel counts, boundary F, tolerant IoU, HD95, line distance.

The pixel counts stream; the distance scores need the two whole masks (bool, 100 MB each at
10k x 10k). With ``patch_size`` the scene is also cut into patches scored one by one, as the
grounding-line papers report: distance means over the patches whose line was found, the
patches with a missed line, a false alarm or no line at all counted apart.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from icetools.errors import ConfigError
from icetools.io.raster import iter_strips
from icetools.io.scene import Scene
from icetools.metrics import BinaryCounts, LineAccumulator
from icetools.progress import Progress, report
from icetools.scoring.bands import (
    TRUTH_BANDS,
    BandReader,
    file_tags,
    find_band,
    missing_truth_band,
    only_unnamed_band,
    prediction_band,
)

DEFAULT_THRESHOLD = 0.5

CONVENTIONS = (
    "pixels NaN/nodata in either raster count as background",
    "HD95: larger of the two directed 95th percentiles of boundary-to-boundary distances",
    "line distance: symmetric mean distance between the skeletonised masks (PoLiS-like)",
    "both masks empty: dice/precision/recall/iou/boundary F/iou_tol = 1, distances = 0",
    "one mask empty: overlap scores = 0, distances undefined (null, as MONAI), never averaged; "
    "the case is counted in line_cases (n_missed: no line predicted where the truth has one; "
    "n_false_alarm: a line predicted where the truth has none)",
    "distances computed on the bounding box of both masks",
)


def resolve_threshold(pred: Scene, band: str, threshold: float | None) -> float | None:
    """None for a 0/1 'line' mask; else ``threshold``, the raster's ``threshold`` tag, or 0.5."""
    if band.lower() == "line":
        if threshold is not None:
            raise ConfigError(
                f"threshold applies to a 'probability' band, but {pred.path.name} holds the 0/1 mask "
                f"'{band}': leave threshold out or pass the probability raster"
            )
        return None
    if threshold is not None:
        return threshold
    tagged = file_tags(pred).get("threshold")
    if tagged is not None:
        try:
            return float(tagged)
        except ValueError:
            raise ConfigError(
                f"{pred.path.name} has a non-numeric 'threshold' tag ({tagged!r}): set threshold"
            ) from None
    return DEFAULT_THRESHOLD


def _empty_case(pred_any: bool, truth_any: bool) -> str:
    if pred_any and truth_any:
        return "neither"
    if not pred_any and not truth_any:
        return "both"
    return "truth" if pred_any else "prediction"


def _read_masks(
    pred: Scene, pred_reader: BandReader, truth_reader: BandReader, *, threshold: float | None, keep_valid: bool,
    strip_rows: int, progress: Progress | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, BinaryCounts]:
    """Whole masks (invalid pixels as background), the valid mask when asked, and the pixel counts."""
    pred_mask = np.zeros(pred.grid.shape, dtype=bool)
    truth_mask = np.zeros(pred.grid.shape, dtype=bool)
    valid_mask = np.zeros(pred.grid.shape, dtype=bool) if keep_valid else None
    counts = BinaryCounts()
    for window in iter_strips(pred.height, pred.width, strip_rows):
        predicted, true = pred_reader(window), truth_reader(window)
        valid = np.isfinite(predicted) & np.isfinite(true)
        foreground = predicted >= threshold if threshold is not None else predicted != 0
        rows = slice(window.row_off, window.row_off + window.height)
        pred_mask[rows] = foreground & valid
        truth_mask[rows] = (true != 0) & valid
        if valid_mask is not None:
            valid_mask[rows] = valid
        counts.update(pred_mask[rows], truth_mask[rows], valid)
        report(progress, "rows", window.row_off + window.height, pred.height)
    return pred_mask, truth_mask, valid_mask, counts


def _patch_cases(
    pred_mask: np.ndarray, truth_mask: np.ndarray, valid: np.ndarray, *, size: int, pixel_size: float,
    tolerance: float, progress: Progress | None,
) -> dict[str, Any]:
    """Every patch with a valid pixel scored on its own (edge patches are smaller)."""
    height, width = pred_mask.shape
    lines = LineAccumulator(pixel_size=pixel_size, tolerance=tolerance)
    starts = [(r, c) for r in range(0, height, size) for c in range(0, width, size)]
    for done, (r, c) in enumerate(starts, start=1):
        window = (slice(r, r + size), slice(c, c + size))
        if valid[window].any():
            lines.update(pred_mask[window], truth_mask[window])
        report(progress, "patches", done, len(starts))
    return {"size": size, **lines.result()}


def evaluate_binary(
    pred: Scene,
    truth: Scene,
    *,
    threshold: float | None,
    tolerance: float,
    patch_size: int | None,
    strip_rows: int,
    progress: Progress | None,
) -> dict[str, Any]:
    band = prediction_band(pred, "binary")
    threshold = resolve_threshold(pred, band, threshold)
    truth_band = find_band(truth, TRUTH_BANDS["binary"]) or only_unnamed_band(truth)
    if truth_band is None:
        raise missing_truth_band(truth, "binary")
    pred_reader, truth_reader = BandReader(pred, band), BandReader(truth, truth_band)
    pred_mask, truth_mask, valid, counts = _read_masks(
        pred, pred_reader, truth_reader, threshold=threshold, keep_valid=patch_size is not None,
        strip_rows=strip_rows, progress=progress,
    )
    n_pixels = counts.tp + counts.fp + counts.fn + counts.tn
    if n_pixels == 0:
        return {"n_pixels": 0}

    pixel_size = pred.grid.pixel_size()
    scene_lines = LineAccumulator(pixel_size=pixel_size, tolerance=tolerance)
    lines = scene_lines.update(pred_mask, truth_mask)
    metrics = {
        **counts.result(),
        "boundary_f": lines["boundary_f"],
        "iou_tol": lines["iou_tol"],
        "hd95_px": lines["hd95_px"],
        "hd95_m": lines["hd95_m"],
        "line_distance_px": lines["line_distance_m"] / pixel_size,
        "line_distance_m": lines["line_distance_m"],
    }
    out: dict[str, Any] = {"line_cases": {"unit": "scene", **scene_lines.result()}}
    if patch_size is not None:
        patches = _patch_cases(
            pred_mask, truth_mask, valid, size=patch_size, pixel_size=pixel_size, tolerance=tolerance, progress=progress
        )
        out["patch_cases"] = patches
        metrics.update({f"patch_{key}": patches[key] for key in ("dice_mean", "hd95_px_mean", "line_distance_m_mean")})
        cases = ("n_found", "n_missed", "n_false_alarm", "n_both_empty")
        metrics.update({f"patches_{key[2:]}": patches[key] for key in cases})
    conventions = [
        (f"prediction foreground where probability >= {threshold:g}" if threshold is not None
         else f"prediction foreground where '{band}' != 0"),
        f"boundary F: boundary pixels (mask minus its erosion) matched within {tolerance:g} px",
        f"iou_tol: predicted pixels within {tolerance:g} px of the truth count as hits (truth dilated by a disk)",
        *CONVENTIONS,
    ]
    if patch_size is not None:
        conventions.append(
            f"patches of {patch_size} px scored one by one (patches without a valid pixel skipped): overlap means over "
            "every patch, distance means over the patches where both masks hold a line"
        )
    if not pred.grid.is_georeferenced:
        conventions.append("the grid has no georeferencing: 1 m per pixel assumed")
    return {
        "n_pixels": int(n_pixels),
        "bands": {"prediction": band, "truth": truth_band},
        "threshold": threshold,
        "pixel_size_m": pixel_size,
        "empty_masks": _empty_case(bool(counts.tp + counts.fp), bool(counts.tp + counts.fn)),
        "metrics": metrics,
        **out,
        "conventions": conventions,
        "warnings": pred_reader.warnings("prediction") + truth_reader.warnings("truth"),
    }
