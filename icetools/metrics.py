"""Evaluation metrics for SIC maps, binary masks / lines (grounding lines) and class maps.

Scenes are up to ~10k x 10k pixels, so the pixel-wise scores are *accumulators*: feed them one
block (window) at a time with ``update`` and read ``result()`` at the end; the answer does not
depend on how the raster was cut. The distance-based line scores (boundary F, tolerant IoU,
HD95, mean line distance) need the whole mask, but only the bounding box of the union of both
masks (plus a small margin) goes through ``scipy.ndimage.distance_transform_edt``, so a
large raster with a short line stays cheap. A line across the whole scene still costs a few
bytes x the scene's pixels (roughly 2 GB for 10k x 10k).

Undefined scores (no valid pixel, constant truth for R2, a class absent from both maps, a
distance to a missing line) are ``float("nan")``; the empty-mask conventions of each line score
are stated in its docstring. :class:`LineAccumulator` averages distances over the found lines
only and counts the empty cases apart, so a miss never enters a mean as a made-up distance.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from icetools.errors import DataError

_CROP_MARGIN = 2  # pixels around the union's bounding box; >= 1 keeps erosion at the crop exact

NAN = float("nan")


# --------------------------------------------------------------------------- input checks


def _same_shape(name_a: str, a: NDArray, name_b: str, b: NDArray) -> None:
    if a.shape != b.shape:
        raise DataError(
            f"{name_a} has shape {a.shape} but {name_b} has shape {b.shape}; "
            "bring both onto the same grid first"
        )


def _valid_mask(valid: ArrayLike | None, like: NDArray) -> NDArray[np.bool_]:
    if valid is None:
        return np.ones(like.shape, dtype=bool)
    valid = np.asarray(valid, dtype=bool)
    _same_shape("the valid mask", valid, "the prediction", like)
    return valid


def _two_masks(pred: ArrayLike, truth: ArrayLike) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Masks as bool (nonzero = foreground); thresholding probabilities is the caller's job."""
    pred_mask = np.asarray(pred) != 0
    truth_mask = np.asarray(truth) != 0
    _same_shape("the prediction", pred_mask, "the truth", truth_mask)
    if pred_mask.ndim != 2:
        raise DataError(f"line metrics need 2-D masks, got shape {pred_mask.shape}")
    return pred_mask, truth_mask


# --------------------------------------------------------------------------- SIC


class SICAccumulator:
    """Pixel-wise R2 and RMSE of a SIC map, accumulated block by block in float64.

    The truth's spread is merged per block with Chan et al.'s parallel-variance formula rather
    than as sum(t**2) - n*mean**2, which cancels catastrophically over 1e8 pixels.
    """

    def __init__(self) -> None:
        self.n = 0
        self._truth_mean = 0.0
        self._truth_m2 = 0.0  # sum of squared deviations from the running mean
        self._ss_res = 0.0

    def update(self, pred: ArrayLike, truth: ArrayLike, valid: ArrayLike | None = None) -> None:
        """Add one block; NaN in ``pred`` or ``truth`` and False in ``valid`` are skipped."""
        pred = np.asarray(pred, dtype=np.float64)
        truth = np.asarray(truth, dtype=np.float64)
        _same_shape("the prediction", pred, "the truth", truth)
        keep = _valid_mask(valid, pred) & np.isfinite(pred) & np.isfinite(truth)
        p, t = pred[keep], truth[keep]
        n_block = t.size
        if n_block == 0:
            return
        block_mean = float(t.mean())
        block_m2 = float(((t - block_mean) ** 2).sum())
        n_total = self.n + n_block
        delta = block_mean - self._truth_mean
        self._truth_m2 += block_m2 + delta * delta * self.n * n_block / n_total
        self._truth_mean += delta * n_block / n_total
        self.n = n_total
        self._ss_res += float(((p - t) ** 2).sum())

    def merge(self, other: SICAccumulator) -> None:
        """Add another accumulator's pixels (Chan et al.'s pairwise update of the truth's spread)."""
        if other.n == 0:
            return
        n_total = self.n + other.n
        delta = other._truth_mean - self._truth_mean
        self._truth_m2 += other._truth_m2 + delta * delta * self.n * other.n / n_total
        self._truth_mean += delta * other.n / n_total
        self.n = n_total
        self._ss_res += other._ss_res

    def result(self) -> dict[str, float | int]:
        """``{"r2", "rmse", "n"}``; r2 is NaN for a constant truth, both are NaN when n = 0."""
        if self.n == 0:
            return {"r2": NAN, "rmse": NAN, "n": 0}
        r2 = 1.0 - self._ss_res / self._truth_m2 if self._truth_m2 > 0 else NAN
        return {"r2": r2, "rmse": float(np.sqrt(self._ss_res / self.n)), "n": self.n}


class PolygonAccumulator:
    """Mean predicted SIC per chart polygon, for comparing with the chart's own SIC.

    This is the score the chart can actually vouch for: an analyst's 70 % polygon says nothing
    about any single pixel. Ids <= 0 (and non-finite ids) mean "no polygon".
    """

    def __init__(self) -> None:
        self._sum = np.zeros(0, dtype=np.float64)
        self._count = np.zeros(0, dtype=np.int64)

    def update(
        self, pred: ArrayLike, polygon_ids: ArrayLike, valid: ArrayLike | None = None
    ) -> None:
        """Add one block; NaN predictions and pixels outside ``valid`` are skipped."""
        pred = np.asarray(pred, dtype=np.float64)
        ids = np.asarray(polygon_ids)
        _same_shape("the prediction", pred, "the polygon ids", ids)
        keep = _valid_mask(valid, pred) & np.isfinite(pred) & (ids > 0)
        if np.issubdtype(ids.dtype, np.floating):
            keep &= np.isfinite(ids)
        ids = ids[keep].astype(np.int64)
        if ids.size == 0:
            return
        size = max(int(ids.max()) + 1, self._sum.size)
        if size > self._sum.size:
            # Ids reach ~1e5: grow to at least double so that many blocks do not reallocate often.
            size = max(size, 2 * self._sum.size)
            self._sum = np.concatenate([self._sum, np.zeros(size - self._sum.size)])
            self._count = np.concatenate(
                [self._count, np.zeros(size - self._count.size, dtype=np.int64)]
            )
        self._sum += np.bincount(ids, weights=pred[keep], minlength=size)
        self._count += np.bincount(ids, minlength=size)

    def merge(self, other: PolygonAccumulator, *, renumber: NDArray[np.int64] | None = None) -> None:
        """Add another accumulator's sums; ``renumber[i]`` is this accumulator's id for its id ``i``."""
        ids = np.flatnonzero(other._count)
        if ids.size == 0:
            return
        target = ids if renumber is None else np.asarray(renumber, dtype=np.int64)[ids]
        size = int(target.max()) + 1
        if size > self._sum.size:
            self._sum = np.concatenate([self._sum, np.zeros(size - self._sum.size)])
            self._count = np.concatenate([self._count, np.zeros(size - self._count.size, dtype=np.int64)])
        np.add.at(self._sum, target, other._sum[ids])
        np.add.at(self._count, target, other._count[ids])

    def means(self) -> dict[int, float]:
        """Mean prediction of every polygon that had at least one valid pixel."""
        seen = np.flatnonzero(self._count)
        return {int(i): float(self._sum[i] / self._count[i]) for i in seen}

    def mean_array(self) -> NDArray[np.float64]:
        """Mean prediction indexed by polygon id; NaN for ids never seen on a valid pixel (and for 0)."""
        out = np.full(max(self._sum.size, 1), np.nan)
        np.divide(self._sum, self._count, out=out[: self._sum.size], where=self._count > 0)
        return out

    def paint(self, polygon_ids: ArrayLike, means: NDArray[np.float64] | None = None) -> NDArray[np.float32]:
        """Each pixel's polygon mean (NaN outside polygons); pass ``mean_array()`` once when painting
        many strips, so the means are not recomputed for each."""
        means = self.mean_array() if means is None else means
        ids = np.asarray(polygon_ids)
        inside = (ids > 0) & (ids < means.size)
        if np.issubdtype(ids.dtype, np.floating):
            inside &= np.isfinite(ids)
        out = np.full(ids.shape, np.nan, dtype="float32")
        out[inside] = means[ids[inside].astype(np.int64)]
        return out

    def result(self, polygon_sic: Mapping[int, float]) -> dict[str, float | int]:
        """``{"r2", "rmse", "n_polygons"}`` over polygons with a valid pixel and a finite SIC.

        Every polygon counts once, whatever its area (the chart's unit of information).
        """
        means = self.means()
        pairs = [
            (mean, float(polygon_sic[pid]))
            for pid, mean in means.items()
            if pid in polygon_sic and np.isfinite(polygon_sic[pid])
        ]
        if not pairs:
            return {"r2": NAN, "rmse": NAN, "n_polygons": 0}
        predicted, chart = np.array(pairs, dtype=np.float64).T
        ss_res = float(((predicted - chart) ** 2).sum())
        ss_tot = float(((chart - chart.mean()) ** 2).sum())
        return {
            "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else NAN,
            "rmse": float(np.sqrt(ss_res / chart.size)),
            "n_polygons": int(chart.size),
        }


# --------------------------------------------------------------------------- binary masks


def dice_from_counts(true_pos: ArrayLike, n_pred: ArrayLike, n_truth: ArrayLike) -> NDArray[np.float64]:
    """Dice = 2 TP / (predicted + true), element-wise; 1.0 where both masks are empty (nothing to
    find, nothing wrongly found). The one home of that convention, for whole scenes and patches alike."""
    true_pos, n_pred, n_truth = (np.asarray(a, dtype=np.float64) for a in (true_pos, n_pred, n_truth))
    denominator = n_pred + n_truth
    return np.where(denominator > 0, 2 * true_pos / np.maximum(denominator, 1), 1.0)


class BinaryCounts:
    """TP / FP / FN / TN of a binary mask, accumulated block by block.

    Empty cases, so that a scene without any line scores sensibly: when neither prediction nor
    truth has a foreground pixel, dice, iou, precision and recall are all 1.0 (nothing to find,
    nothing wrongly found). Precision with no predicted pixel is 0.0 if the truth has some;
    recall with no true pixel is 0.0 if the prediction has some (one empty = worst score).
    """

    def __init__(self) -> None:
        self.tp = self.fp = self.fn = self.tn = 0

    def update(self, pred: ArrayLike, truth: ArrayLike, valid: ArrayLike | None = None) -> None:
        """Add one block of masks (nonzero = foreground); pixels outside ``valid`` are skipped."""
        pred_mask = np.asarray(pred) != 0
        truth_mask = np.asarray(truth) != 0
        _same_shape("the prediction", pred_mask, "the truth", truth_mask)
        if valid is not None:
            keep = _valid_mask(valid, pred_mask)
            pred_mask, truth_mask = pred_mask & keep, truth_mask & keep
            n_valid = int(np.count_nonzero(keep))
        else:
            n_valid = pred_mask.size
        # Four full-block passes would dominate on 1e8-pixel blocks; derive FP/FN/TN from sums.
        true_pos = int(np.count_nonzero(pred_mask & truth_mask))
        n_pred, n_truth = int(np.count_nonzero(pred_mask)), int(np.count_nonzero(truth_mask))
        self.tp += true_pos
        self.fp += n_pred - true_pos
        self.fn += n_truth - true_pos
        self.tn += n_valid - n_pred - n_truth + true_pos

    @property
    def dice(self) -> float:
        return float(dice_from_counts(self.tp, self.tp + self.fp, self.tp + self.fn))

    @property
    def iou(self) -> float:
        denominator = self.tp + self.fp + self.fn
        return self.tp / denominator if denominator else 1.0

    @property
    def precision(self) -> float:
        if self.tp + self.fp:
            return self.tp / (self.tp + self.fp)
        return 1.0 if self.fn == 0 else 0.0

    @property
    def recall(self) -> float:
        if self.tp + self.fn:
            return self.tp / (self.tp + self.fn)
        return 1.0 if self.fp == 0 else 0.0

    def result(self) -> dict[str, float]:
        return {
            "dice": self.dice,
            "precision": self.precision,
            "recall": self.recall,
            "iou": self.iou,
        }


def _union_crop(pred: NDArray[np.bool_], truth: NDArray[np.bool_]) -> tuple[slice, slice]:
    """Bounding box of both masks plus a margin: distances never need pixels outside it."""
    union = pred | truth
    rows = np.flatnonzero(union.any(axis=1))
    cols = np.flatnonzero(union.any(axis=0))
    height, width = union.shape
    return (
        slice(max(rows[0] - _CROP_MARGIN, 0), min(rows[-1] + 1 + _CROP_MARGIN, height)),
        slice(max(cols[0] - _CROP_MARGIN, 0), min(cols[-1] + 1 + _CROP_MARGIN, width)),
    )


def _boundary(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Mask minus its (4-neighbour) erosion; pixels on the image edge count as boundary
    (as in MONAI), so every non-empty mask has a boundary."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _distance_to(mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Euclidean distance (pixels) from every pixel to the nearest pixel of a non-empty mask."""
    return ndimage.distance_transform_edt(~mask)


def boundary_f_score(pred: ArrayLike, truth: ArrayLike, *, tolerance: float = 2) -> float:
    """F-score of boundary pixels matched within ``tolerance`` pixels (Euclidean).

    Boundary = mask minus its erosion (image-edge pixels included). Precision = share of
    predicted boundary pixels within ``tolerance`` of a true boundary pixel, recall likewise the
    other way round, F = harmonic mean. Both masks empty -> 1.0; exactly one empty -> 0.0.
    """
    pred_mask, truth_mask = _two_masks(pred, truth)
    pred_any, truth_any = pred_mask.any(), truth_mask.any()
    if not pred_any or not truth_any:
        return 1.0 if pred_any == truth_any else 0.0
    window = _union_crop(pred_mask, truth_mask)
    pred_edge, truth_edge = _boundary(pred_mask[window]), _boundary(truth_mask[window])
    precision = float(np.mean(_distance_to(truth_edge)[pred_edge] <= tolerance))
    recall = float(np.mean(_distance_to(pred_edge)[truth_edge] <= tolerance))
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def tolerant_iou(pred: ArrayLike, truth: ArrayLike, *, tolerance: float = 2) -> float:
    """IoU that forgives misplacement up to ``tolerance`` pixels (a disk; Euclidean).

    A predicted pixel counts as a hit if it lies within ``tolerance`` of the truth (i.e. inside
    the truth dilated by a disk of that radius), else as a false positive; a true pixel farther
    than ``tolerance`` from every predicted pixel counts as a miss. IoU_tol = hits / (hits +
    false positives + misses). A perfect prediction scores 1 (the plain |P & D(T)| / |P | D(T)|
    would not, since the dilated truth is wider than any line). Both empty -> 1.0, one -> 0.0.
    """
    pred_mask, truth_mask = _two_masks(pred, truth)
    pred_any, truth_any = pred_mask.any(), truth_mask.any()
    if not pred_any or not truth_any:
        return 1.0 if pred_any == truth_any else 0.0
    window = _union_crop(pred_mask, truth_mask)
    pred_mask, truth_mask = pred_mask[window], truth_mask[window]
    near_truth = _distance_to(truth_mask)[pred_mask] <= tolerance
    near_pred = _distance_to(pred_mask)[truth_mask] <= tolerance
    hits = int(near_truth.sum())
    false_pos = int(near_truth.size - hits)
    misses = int(near_pred.size - near_pred.sum())
    return hits / (hits + false_pos + misses)


def _empty_distance(pred_any: bool, truth_any: bool) -> float:
    """0 when both are empty; NaN when one is (as MONAI): no distance to a line that is not
    there. A finite stand-in such as the image diagonal would depend on the raster's size and
    would mix misses into a mean of distances; :class:`LineAccumulator` counts them apart."""
    return 0.0 if pred_any == truth_any else NAN


def hd95(pred: ArrayLike, truth: ArrayLike, *, pixel_size: float = 1.0) -> float:
    """95th-percentile Hausdorff distance between the masks' boundaries, in pixel_size units.

    The larger of the two directed 95th percentiles (MONAI / DeepMind surface-distance
    convention), percentiles interpolated linearly. Both masks empty -> 0.0; exactly one empty
    -> NaN (MONAI's convention; a missed line has no distance).
    """
    pred_mask, truth_mask = _two_masks(pred, truth)
    pred_any, truth_any = bool(pred_mask.any()), bool(truth_mask.any())
    if not pred_any or not truth_any:
        return _empty_distance(pred_any, truth_any)
    window = _union_crop(pred_mask, truth_mask)
    pred_edge, truth_edge = _boundary(pred_mask[window]), _boundary(truth_mask[window])
    forward = np.percentile(_distance_to(truth_edge)[pred_edge], 95)
    backward = np.percentile(_distance_to(pred_edge)[truth_edge], 95)
    return float(max(forward, backward)) * pixel_size


def mean_line_distance(pred: ArrayLike, truth: ArrayLike, *, pixel_size: float = 1.0) -> float:
    """Symmetric mean distance between the masks' centre lines (PoLiS-like), in pixel_size units.

    Both masks are skeletonised (a 3-pixel-wide line becomes its centre line); the mean
    distance from predicted skeleton pixels to the true skeleton and the mean the other way
    round are averaged. Empty masks as in :func:`hd95`.
    """
    from skimage.morphology import skeletonize  # heavy import, only needed here

    pred_mask, truth_mask = _two_masks(pred, truth)
    pred_any, truth_any = bool(pred_mask.any()), bool(truth_mask.any())
    if not pred_any or not truth_any:
        return _empty_distance(pred_any, truth_any)
    window = _union_crop(pred_mask, truth_mask)
    pred_line = skeletonize(pred_mask[window])
    truth_line = skeletonize(truth_mask[window])
    # skeletonize keeps at least a pixel of any blob in practice; fall back to the mask if not.
    pred_line = pred_line if pred_line.any() else pred_mask[window]
    truth_line = truth_line if truth_line.any() else truth_mask[window]
    forward = _distance_to(truth_line)[pred_line].mean()
    backward = _distance_to(pred_line)[truth_line].mean()
    return float((forward + backward) / 2) * pixel_size


def binary_line_metrics(
    pred: ArrayLike,
    truth: ArrayLike,
    *,
    pixel_size: float = 1.0,
    tolerance: float = 2,
    valid: ArrayLike | None = None,
) -> dict[str, float]:
    """All binary / line scores of one scene; pixels outside ``valid`` count as background.

    Keys: dice, precision, recall, iou, boundary_f and iou_tol (at ``tolerance`` pixels),
    hd95_px, hd95_m and line_distance_m (pixel_size = metres per pixel; NaN when exactly one
    mask is empty).
    """
    pred_mask, truth_mask = _two_masks(pred, truth)
    if valid is not None:
        keep = _valid_mask(valid, pred_mask)
        pred_mask, truth_mask = pred_mask & keep, truth_mask & keep
    counts = BinaryCounts()
    counts.update(pred_mask, truth_mask)
    if pred_mask.any() and truth_mask.any():
        # Crop once instead of in every score.
        window = _union_crop(pred_mask, truth_mask)
        pred_mask, truth_mask = pred_mask[window], truth_mask[window]
    hd95_px = hd95(pred_mask, truth_mask)
    return {
        **counts.result(),
        "boundary_f": boundary_f_score(pred_mask, truth_mask, tolerance=tolerance),
        "iou_tol": tolerant_iou(pred_mask, truth_mask, tolerance=tolerance),
        "hd95_px": hd95_px,
        "hd95_m": hd95_px * pixel_size,
        "line_distance_m": mean_line_distance(pred_mask, truth_mask, pixel_size=pixel_size),
    }


class LineAccumulator:
    """Line scores over many scenes or patches, one :func:`binary_line_metrics` case at a time.

    Each case is one of: *found* (both masks hold a line), *missed* (the truth holds one, the
    prediction none), *false alarm* (the prediction holds one, the truth none) or *both empty*.
    Distance means (HD95, line distance) run over the found cases only, since a missing line
    has no distance; the other cases are counted apart. Overlap means (dice, boundary F, tolerant
    IoU) run over every case with each score's empty-mask convention.
    """

    MEAN_KEYS = ("dice", "boundary_f", "iou_tol")
    DISTANCE_KEYS = ("hd95_px", "hd95_m", "line_distance_m")

    def __init__(self, *, pixel_size: float = 1.0, tolerance: float = 2) -> None:
        self.pixel_size = pixel_size
        self.tolerance = tolerance
        self.n_found = self.n_missed = self.n_false_alarm = self.n_both_empty = 0
        self._sums = dict.fromkeys(self.MEAN_KEYS + self.DISTANCE_KEYS, 0.0)

    @property
    def n(self) -> int:
        return self.n_found + self.n_missed + self.n_false_alarm + self.n_both_empty

    def update(self, pred: ArrayLike, truth: ArrayLike, valid: ArrayLike | None = None) -> dict[str, float]:
        """Score one scene or patch, count its case, and return its own scores."""
        scores = binary_line_metrics(pred, truth, pixel_size=self.pixel_size, tolerance=self.tolerance, valid=valid)
        pred_mask, truth_mask = _two_masks(pred, truth)
        if valid is not None:
            keep = _valid_mask(valid, pred_mask)
            pred_mask, truth_mask = pred_mask & keep, truth_mask & keep
        pred_any, truth_any = bool(pred_mask.any()), bool(truth_mask.any())
        if pred_any and truth_any:
            self.n_found += 1
            for key in self.DISTANCE_KEYS:
                self._sums[key] += scores[key]
        elif truth_any:
            self.n_missed += 1
        elif pred_any:
            self.n_false_alarm += 1
        else:
            self.n_both_empty += 1
        for key in self.MEAN_KEYS:
            self._sums[key] += scores[key]
        return scores

    def result(self) -> dict[str, float | int]:
        """Counts (``n``, ``n_found``, ``n_missed``, ``n_false_alarm``, ``n_both_empty``,
        ``n_empty_prediction`` = missed + both empty, ``n_empty_truth`` = false alarms + both
        empty) and means (``<score>_mean``; distances over the found cases, NaN when none)."""
        out: dict[str, float | int] = {
            "n": self.n,
            "n_found": self.n_found,
            "n_missed": self.n_missed,
            "n_false_alarm": self.n_false_alarm,
            "n_both_empty": self.n_both_empty,
            "n_empty_prediction": self.n_missed + self.n_both_empty,
            "n_empty_truth": self.n_false_alarm + self.n_both_empty,
        }
        for key in self.MEAN_KEYS:
            out[f"{key}_mean"] = self._sums[key] / self.n if self.n else NAN
        for key in self.DISTANCE_KEYS:
            out[f"{key}_mean"] = self._sums[key] / self.n_found if self.n_found else NAN
        return out


# --------------------------------------------------------------------------- class maps


class ConfusionAccumulator:
    """Confusion matrix of a K-class map (rows = truth, columns = prediction), block by block.

    Pixels whose truth is ``ignore_index``, that are False in ``valid``, or that are NaN in a
    float map are skipped; any other label outside 0..K-1 is an error.
    """

    def __init__(self, n_classes: int, ignore_index: int | None = None) -> None:
        if n_classes < 2:
            raise DataError(f"a class map needs at least 2 classes, got n_classes={n_classes}")
        self.n_classes = n_classes
        self.ignore_index = ignore_index
        self._matrix = np.zeros((n_classes, n_classes), dtype=np.int64)

    @property
    def matrix(self) -> NDArray[np.int64]:
        return self._matrix.copy()

    def update(self, pred: ArrayLike, truth: ArrayLike, valid: ArrayLike | None = None) -> None:
        pred = np.asarray(pred)
        truth = np.asarray(truth)
        _same_shape("the prediction", pred, "the truth", truth)
        keep = _valid_mask(valid, pred)
        for labels in (pred, truth):
            if np.issubdtype(labels.dtype, np.floating):
                keep &= np.isfinite(labels)
        if self.ignore_index is not None:
            keep &= truth != self.ignore_index
        pred_labels = pred[keep].astype(np.int64)
        truth_labels = truth[keep].astype(np.int64)
        for name, labels in (("prediction", pred_labels), ("truth", truth_labels)):
            if labels.size and (labels.min() < 0 or labels.max() >= self.n_classes):
                raise DataError(
                    f"the {name} holds class {labels.min() if labels.min() < 0 else labels.max()} "
                    f"outside 0..{self.n_classes - 1}; set ignore_index (or valid) for nodata"
                )
        flat = np.bincount(
            truth_labels * self.n_classes + pred_labels, minlength=self.n_classes**2
        )
        self._matrix += flat.reshape(self.n_classes, self.n_classes)

    def merge(self, other: ConfusionAccumulator) -> None:
        """Add another accumulator's counts (one process's share of the same classes)."""
        if other.n_classes != self.n_classes:
            raise ValueError(f"cannot merge {other.n_classes}-class counts into {self.n_classes}-class ones")
        self._matrix += other._matrix

    def result(self) -> dict[str, float | list[float]]:
        """``{"miou", "f1", "f1_weighted", "accuracy", "per_class_iou"}``; f1 is the macro mean.

        Classes absent from both prediction and truth are left out of the means and get NaN in
        ``per_class_iou``. ``f1_weighted`` weighs each class's F1 by its true pixel count, as
        scikit-learn's ``f1_score(average="weighted")`` (the AI4Arctic challenge's SOD / FLOE score).
        """
        matrix = self._matrix.astype(np.float64)
        true_pos = np.diag(matrix)
        false_pos = matrix.sum(axis=0) - true_pos
        false_neg = matrix.sum(axis=1) - true_pos
        present = (true_pos + false_pos + false_neg) > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(present, true_pos / (true_pos + false_pos + false_neg), np.nan)
            f1 = np.where(present, 2 * true_pos / (2 * true_pos + false_pos + false_neg), np.nan)
        total = matrix.sum()
        if total == 0:
            return {"miou": NAN, "f1": NAN, "f1_weighted": NAN, "accuracy": NAN, "per_class_iou": iou.tolist()}
        support = matrix.sum(axis=1)  # a class only predicted has support 0: weight 0, as sklearn
        return {
            "miou": float(iou[present].mean()),
            "f1": float(f1[present].mean()),
            "f1_weighted": float(np.sum(np.where(support > 0, f1, 0.0) * support) / total),
            "accuracy": float(true_pos.sum() / total),
            "per_class_iou": [float(value) for value in iou],
        }


# --------------------------------------------------------------------------- AI4Arctic challenge

AUTOICE_WEIGHTS = {"SIC": 2, "SOD": 2, "FLOE": 1}
"""The AutoICE challenge's combined score: (2 SIC R2 + 2 SOD F1 + 1 FLOE F1) / 5."""
AUTOICE_CLASSES = {"SIC": 11, "SOD": 6, "FLOE": 7}
"""Classes per chart: SIC 0..10 (10 % bins), SOD 0..5 (water .. old ice), FLOE 0..6 (water .. bergs)."""


def sic_classes(sic: ArrayLike) -> NDArray[np.float64]:
    """SIC fraction 0..1 -> the challenge's classes 0..10 (10 % bins), halves rounded up (0.35 -> 4);
    NaN stays NaN.

    The 1e-6 keeps halves stored inexactly (0.35 in float32 is 0.3499999940) on the upper class.
    """
    values = np.asarray(sic, dtype=np.float64)
    return np.clip(np.floor(values * 10 + 0.5 + 1e-6), 0, 10)


def autoice_score(scores: Mapping[str, float]) -> float:
    """(2 SIC + 2 SOD + 1 FLOE) / 5 from the per-chart scores; NaN unless all three are given."""
    if any(chart not in scores for chart in AUTOICE_WEIGHTS):
        return NAN
    total = sum(AUTOICE_WEIGHTS.values())
    return float(sum(weight * scores[chart] for chart, weight in AUTOICE_WEIGHTS.items()) / total)
