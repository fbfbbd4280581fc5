"""Score a prediction raster against its truth with the metrics of the methods it reproduces.

Three tasks, told apart by the prediction's band names:

* ``sic``: pixel R2 / RMSE against a truth SIC raster (or the chart rasterised to pixels) and,
  when polygons are known, polygon-level R2 / RMSE of the mean prediction per chart polygon
  against the chart's SIC (the regional-loss paper's Table 1); optionally the ice-edge split.
* ``binary`` (grounding lines): Dice, precision, recall, boundary F, tolerant IoU, HD95 and the
  mean line distance (the grounding-line papers' scores).
* ``multiclass``: mIoU, macro F1, accuracy and per-class IoU.

Every input is read strip by strip, so a 10k x 10k scene costs a strip of memory; only the
binary distance scores need the two whole masks (bool, 100 MB each at 10k x 10k).
Undefined scores stay ``float("nan")`` here; :func:`json_safe` turns them into JSON ``null``.
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from rasterio.windows import Window

from icetools.errors import ConfigError, CRSError, DataError, MissingVariableError
from icetools.io.atomic import atomic_path
from icetools.io.raster import iter_strips
from icetools.io.scene import Scene, open_scene
from icetools.metrics import BinaryCounts, ConfusionAccumulator, PolygonAccumulator, SICAccumulator, binary_line_metrics

STRIP_ROWS = 512
TASKS = ("sic", "binary", "multiclass")
DEFAULT_THRESHOLD = 0.5
# Prediction band names that tell the task, in the order they are looked for.
TASK_BANDS = {"sic": ("SIC",), "binary": ("probability", "line"), "multiclass": ("class",)}
TRUTH_BANDS = {"sic": ("SIC",), "binary": ("line",), "multiclass": ("class",)}
PERCENT_WORDS = ("percent", "%", "pct")

Reader = Callable[[Window], np.ndarray]
Progress = Callable[[float], None]


@dataclass
class _Source:
    """One band of one file, read by window as float with NaN for nodata, scaled to 0..1 for SIC."""

    scene: Scene
    band: str
    scale: float = 1.0

    def __call__(self, window: Window) -> np.ndarray:
        data = self.scene.read([self.band], window)[0]
        return data * np.float32(self.scale) if self.scale != 1.0 else data


# --------------------------------------------------------------------------- finding bands


def _find_band(scene: Scene, names: tuple[str, ...]) -> str | None:
    """The scene's own spelling of the first of ``names`` it holds (case-insensitive)."""
    lowered = {name.lower(): name for name in scene.band_names}
    for name in names:
        if name.lower() in lowered:
            return lowered[name.lower()]
    return None


def _only_unnamed_band(scene: Scene) -> str | None:
    """A single-band GeoTIFF without a band description (GDAL calls it band1) is taken as is."""
    return scene.band_names[0] if scene.band_names == ("band1",) else None


def detect_task(band_names: tuple[str, ...]) -> str | None:
    """The task a prediction's band names imply, or None when they say nothing."""
    lowered = {name.lower() for name in band_names}
    for task, names in TASK_BANDS.items():
        if any(name.lower() in lowered for name in names):
            return task
    return None


def _prediction_band(scene: Scene, task: str) -> str:
    band = _find_band(scene, TASK_BANDS[task]) or _only_unnamed_band(scene)
    if band is None and len(scene.band_names) == 1:
        band = scene.band_names[0]  # --task was given for a one-band file: trust the user
    if band is None:
        wanted = " or ".join(f"'{name}'" for name in TASK_BANDS[task])
        raise MissingVariableError(
            f"prediction {scene.path.name} has no {wanted} band for the {task} task; "
            f"bands found: {', '.join(scene.band_names)}"
        )
    return band


def _missing_truth_band(scene: Scene, task: str, extra: str = "") -> MissingVariableError:
    wanted = " or ".join(f"'{name}'" for name in TRUTH_BANDS[task])
    return MissingVariableError(
        f"truth {scene.path.name} has no {wanted} band for the {task} task{extra}; "
        f"bands found: {', '.join(scene.band_names)}"
    )


def _tags(scene: Scene) -> dict[str, str]:
    return dict(getattr(scene, "tags", {}) or {})


def _is_netcdf(scene: Scene) -> bool:
    return scene.kind.startswith("ai4arctic")


# --------------------------------------------------------------------------- SIC scale


def _says_percent(scene: Scene, band: str) -> bool:
    """A tag (units=percent, scale=%, SIC_units=...) or the band's own name says percent."""
    if any(word in band.lower() for word in PERCENT_WORDS):
        return True
    for key, value in _tags(scene).items():
        if any(word in key.lower() for word in ("unit", "scale")) and any(
            word in str(value).lower() for word in PERCENT_WORDS
        ):
            return True
    return False


def _sic_scale(scene: Scene, band: str, *, strip_rows: int) -> float:
    """0.01 for SIC stored in percent, else 1.

    Predict writes either float 0..1 or uint8 percent. An integer band with no tag is read once
    for its maximum: anything above 1 can only be percent (a 0/1 integer band stays as is).
    """
    if _says_percent(scene, band):
        return 0.01
    dtypes = getattr(scene, "dtypes", None)
    if not dtypes or np.dtype(dtypes[scene.band_names.index(band)]).kind not in "iu":
        return 1.0
    largest = -math.inf
    for window in iter_strips(scene.height, scene.width, strip_rows):
        strip = scene.read([band], window)[0]
        if np.isfinite(strip).any():
            largest = max(largest, float(np.nanmax(strip)))
    return 0.01 if largest > 1 else 1.0


# --------------------------------------------------------------------------- SIC truth and polygons


def _chart_lookup(scene: Scene) -> np.ndarray:
    """Polygon id -> the chart's SIC (NaN for unknown, land, or ids missing from the table)."""
    table = scene.polygon_table()
    lookup = np.full(max(table, default=0) + 1, np.nan, dtype="float32")
    for pid, polygon in table.items():
        if pid >= 0:
            lookup[pid] = polygon.sic
    return lookup


def _ids_to_sic(ids: np.ndarray, lookup: np.ndarray) -> np.ndarray:
    inside = (ids > 0) & (ids < lookup.size)
    return np.where(inside, lookup[np.where(inside, ids, 0)], np.float32(np.nan))


def _labels_sic_band(scene: Scene) -> str | None:
    """The SIC band of a labels raster; rasterize --attr names it after the attribute instead."""
    band = _find_band(scene, ("SIC",))
    if band is None and scene.has_chart:
        others = [name for name in scene.band_names if name != "polygon_id"]
        band = others[0] if len(others) == 1 else None
    return band


def _sic_truth(scene: Scene, *, strip_rows: int) -> tuple[Reader, str]:
    """Pixel truth: a SIC band, or for an AI4Arctic netCDF its chart's SIC spread over each polygon."""
    if _is_netcdf(scene):
        if not scene.has_chart:
            raise _missing_truth_band(scene, "sic", " and no ice chart (polygon_icechart)")
        lookup = _chart_lookup(scene)
        return (lambda window: _ids_to_sic(scene.read_polygon_ids(window), lookup)), "polygon_icechart (chart SIC)"
    band = _labels_sic_band(scene) or _only_unnamed_band(scene)
    if band is None:
        raise _missing_truth_band(scene, "sic")
    return _Source(scene, band, _sic_scale(scene, band, strip_rows=strip_rows)), band


@dataclass
class _Polygons:
    """Where polygon ids come from, and the chart's SIC per polygon (a table, or a band to average)."""

    scene: Scene
    table: dict[int, float] | None  # netCDF chart
    sic: Reader | None  # labels raster: its SIC band, averaged per polygon

    def ids(self, window: Window) -> np.ndarray:
        return self.scene.read_polygon_ids(window)


def _polygon_source(scene: Scene, *, strip_rows: int) -> _Polygons:
    if not scene.has_chart:
        raise MissingVariableError(
            f"polygons {scene.path.name} hold no chart polygons (no 'polygon_id' band or polygon_icechart); "
            f"bands found: {', '.join(scene.band_names)}"
        )
    if _is_netcdf(scene):
        return _Polygons(scene, {pid: p.sic for pid, p in scene.polygon_table().items()}, None)
    band = _labels_sic_band(scene)
    if band is None:
        raise MissingVariableError(
            f"polygons {scene.path.name} have a 'polygon_id' band but no 'SIC' band; "
            f"bands found: {', '.join(scene.band_names)}"
        )
    return _Polygons(scene, None, _Source(scene, band, _sic_scale(scene, band, strip_rows=strip_rows)))


# --------------------------------------------------------------------------- the three tasks


def _report_progress(progress: Progress | None, window: Window, height: int) -> None:
    if progress is not None:
        progress((window.row_off + window.height) / height)


def _evaluate_sic(
    pred: Scene,
    truth: Scene,
    polygons: Scene | None,
    *,
    ice_edge: float | None,
    strip_rows: int,
    progress: Progress | None,
) -> dict[str, Any]:
    band = _prediction_band(pred, "sic")
    pred_reader = _Source(pred, band, _sic_scale(pred, band, strip_rows=strip_rows))
    truth_reader, truth_band = _sic_truth(truth, strip_rows=strip_rows)
    if polygons is None and truth.has_chart:
        polygons = truth  # a labels raster or a netCDF chart carries its own polygons
    chart = _polygon_source(polygons, strip_rows=strip_rows) if polygons is not None else None

    pixel = SICAccumulator()
    per_polygon = PolygonAccumulator()
    chart_sic = PolygonAccumulator()  # labels raster: mean of its (per-polygon constant) SIC band
    edge = BinaryCounts()
    for window in iter_strips(pred.height, pred.width, strip_rows):
        predicted, true = pred_reader(window), truth_reader(window)
        pixel.update(predicted, true)
        if chart is not None:
            ids = chart.ids(window)
            per_polygon.update(predicted, ids)
            if chart.sic is not None:
                chart_sic.update(chart.sic(window), ids)
        if ice_edge is not None:
            both = np.isfinite(predicted) & np.isfinite(true)
            edge.update(predicted >= ice_edge, true >= ice_edge, both)
        _report_progress(progress, window, pred.height)

    pixel_scores = pixel.result()
    metrics: dict[str, Any] = {"r2": pixel_scores["r2"], "rmse": pixel_scores["rmse"]}
    conventions = [
        "SIC as a fraction 0..1 (percent inputs divided by 100); pixels NaN/nodata in either raster skipped",
        "R2 = 1 - SS_res / SS_tot around the truth's mean; NaN (null) when the truth is constant",
    ]
    if chart is not None:
        table = chart.table if chart.table is not None else chart_sic.means()
        scores = per_polygon.result(table)
        metrics.update(polygon_r2=scores["r2"], polygon_rmse=scores["rmse"], n_polygons=scores["n_polygons"])
        conventions.append(
            "polygon level: mean prediction over each polygon's valid pixels vs the chart's SIC, "
            "every polygon weighted once; polygons without a valid pixel or a known SIC skipped"
        )
    if ice_edge is not None:
        total = edge.tp + edge.fp + edge.fn + edge.tn
        metrics["ice_edge_accuracy"] = (edge.tp + edge.tn) / total if total else math.nan
        metrics["ice_edge_f1"] = edge.dice if total else math.nan
        conventions.append(f"ice edge: ice where SIC >= {ice_edge:g}; F1 of the ice class (1 when neither map has ice)")
    return {
        "n_pixels": int(pixel_scores["n"]),
        "bands": {"prediction": band, "truth": truth_band},
        "polygons_from": str(polygons.path) if polygons is not None else None,
        "ice_edge": ice_edge,
        "metrics": metrics,
        "conventions": conventions,
    }


def _resolve_threshold(pred: Scene, band: str, threshold: float | None) -> float | None:
    """None for a 0/1 'line' mask; else --threshold, the raster's ``threshold`` tag, or 0.5."""
    if band.lower() == "line":
        if threshold is not None:
            raise ConfigError(
                f"--threshold applies to a 'probability' band, but {pred.path.name} holds the 0/1 mask "
                f"'{band}': drop --threshold or pass the probability raster"
            )
        return None
    if threshold is not None:
        return threshold
    tagged = _tags(pred).get("threshold")
    if tagged is not None:
        try:
            return float(tagged)
        except ValueError:
            raise ConfigError(
                f"{pred.path.name} has a non-numeric 'threshold' tag ({tagged!r}): pass --threshold"
            ) from None
    return DEFAULT_THRESHOLD


def _empty_case(pred_any: bool, truth_any: bool) -> str:
    if pred_any and truth_any:
        return "neither"
    if not pred_any and not truth_any:
        return "both"
    return "truth" if pred_any else "prediction"


def _evaluate_binary(
    pred: Scene,
    truth: Scene,
    *,
    threshold: float | None,
    tolerance: float,
    strip_rows: int,
    progress: Progress | None,
) -> dict[str, Any]:
    band = _prediction_band(pred, "binary")
    threshold = _resolve_threshold(pred, band, threshold)
    truth_band = _find_band(truth, TRUTH_BANDS["binary"]) or _only_unnamed_band(truth)
    if truth_band is None:
        raise _missing_truth_band(truth, "binary")
    pred_reader, truth_reader = _Source(pred, band), _Source(truth, truth_band)

    # The distance scores need whole masks; pixels invalid in either raster become background.
    pred_mask = np.zeros(pred.grid.shape, dtype=bool)
    truth_mask = np.zeros(pred.grid.shape, dtype=bool)
    counts = BinaryCounts()
    for window in iter_strips(pred.height, pred.width, strip_rows):
        predicted, true = pred_reader(window), truth_reader(window)
        valid = np.isfinite(predicted) & np.isfinite(true)
        foreground = predicted >= threshold if threshold is not None else predicted != 0
        rows = slice(window.row_off, window.row_off + window.height)
        pred_mask[rows] = foreground & valid
        truth_mask[rows] = (true != 0) & valid
        counts.update(pred_mask[rows], truth_mask[rows], valid)
        _report_progress(progress, window, pred.height)
    n_pixels = counts.tp + counts.fp + counts.fn + counts.tn
    if n_pixels == 0:
        return {"n_pixels": 0}

    pixel_size = pred.grid.pixel_size()
    lines = binary_line_metrics(pred_mask, truth_mask, pixel_size=pixel_size, tolerance=tolerance)
    empty = _empty_case(bool(counts.tp + counts.fp), bool(counts.tp + counts.fn))
    metrics = {
        **counts.result(),
        "boundary_f": lines["boundary_f"],
        "iou_tol": lines["iou_tol"],
        "hd95_px": lines["hd95_px"],
        "hd95_m": lines["hd95_m"],
        "line_distance_px": lines["line_distance_m"] / pixel_size,
        "line_distance_m": lines["line_distance_m"],
    }
    conventions = [
        (f"prediction foreground where probability >= {threshold:g}" if threshold is not None
         else f"prediction foreground where '{band}' != 0"),
        "pixels NaN/nodata in either raster count as background",
        f"boundary F: boundary pixels (mask minus its erosion) matched within {tolerance:g} px",
        f"iou_tol: predicted pixels within {tolerance:g} px of the truth count as hits (truth dilated by a disk)",
        "HD95: larger of the two directed 95th percentiles of boundary-to-boundary distances",
        "line distance: symmetric mean distance between the skeletonised masks (PoLiS-like)",
        "both masks empty: dice/precision/recall/iou/boundary F/iou_tol = 1, distances = 0",
        "one mask empty: overlap scores = 0, distances = the image diagonal (a finite worst value)",
        "distances computed on the bounding box of both masks",
    ]
    if not pred.grid.is_georeferenced:
        conventions.append("the grid has no georeferencing: 1 m per pixel assumed")
    return {
        "n_pixels": int(n_pixels),
        "bands": {"prediction": band, "truth": truth_band},
        "threshold": threshold,
        "pixel_size_m": pixel_size,
        "empty_masks": empty,
        "metrics": metrics,
        "conventions": conventions,
    }


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


def _evaluate_multiclass(pred: Scene, truth: Scene, *, strip_rows: int, progress: Progress | None) -> dict[str, Any]:
    band = _prediction_band(pred, "multiclass")
    truth_band = _find_band(truth, TRUTH_BANDS["multiclass"]) or _only_unnamed_band(truth)
    if truth_band is None:
        raise _missing_truth_band(truth, "multiclass")
    pred_reader, truth_reader = _Source(pred, band), _Source(truth, truth_band)
    names = parse_class_names(_tags(pred).get("class_names")) or parse_class_names(_tags(truth).get("class_names"))
    if names is None:
        largest = _largest_class((pred_reader, truth_reader), pred.height, pred.width, strip_rows)
        if largest < 0:
            return {"n_pixels": 0}
        names = [str(label) for label in range(max(largest + 1, 2))]
    confusion = ConfusionAccumulator(len(names))
    for window in iter_strips(pred.height, pred.width, strip_rows):
        predicted, true = pred_reader(window), truth_reader(window)
        both = np.isfinite(predicted) & np.isfinite(true)
        confusion.update(predicted, true, both)
        _report_progress(progress, window, pred.height)
    scores = confusion.result()
    return {
        "n_pixels": int(confusion.matrix.sum()),
        "bands": {"prediction": band, "truth": truth_band},
        "class_names": names,
        "metrics": {
            "miou": scores["miou"],
            "f1": scores["f1"],
            "accuracy": scores["accuracy"],
            "per_class_iou": dict(zip(names, scores["per_class_iou"])),
        },
        "confusion_matrix": confusion.matrix.tolist(),
        "conventions": [
            "confusion rows = truth, columns = prediction; pixels nodata in either raster skipped",
            "mIoU and macro F1 average the classes present in the prediction or the truth; "
            "absent classes get a null IoU",
        ],
    }


# --------------------------------------------------------------------------- entry point


def _require_same_grid(pred: Scene, other: Scene, role: str) -> None:
    if not pred.grid.same_pixels_as(other.grid):
        raise CRSError(
            f"{role} {other.path} ({other.height} x {other.width}) is not on the grid of the prediction "
            f"{pred.path} ({pred.height} x {pred.width}): put it on that grid with "
            f"`icetools rasterize VECTOR --like {pred.path}` (or predict on the {role}'s scene)"
        )


def evaluate(
    pred_path: str | Path,
    truth_path: str | Path,
    *,
    polygons: str | Path | None = None,
    task: str | None = None,
    threshold: float | None = None,
    tolerance: float = 2,
    ice_edge: float | None = None,
    progress: Progress | None = None,
    strip_rows: int = STRIP_ROWS,
) -> dict[str, Any]:
    """Scores of ``pred_path`` against ``truth_path``: a dict, NaN where undefined (see :func:`json_safe`).

    ``task`` overrides what the prediction's band names say; ``threshold`` applies to a
    probability band (default: the raster's ``threshold`` tag, else 0.5); ``tolerance`` (pixels)
    to the boundary F and tolerant IoU; ``ice_edge`` adds the ice/water split scores for SIC.
    """
    if task is not None and task not in TASKS:
        raise ConfigError(f"unknown task '{task}': use one of {', '.join(TASKS)}")
    if tolerance < 0:
        raise ConfigError(f"--tolerance must be >= 0 pixels, got {tolerance:g}")
    for name, value in (("--threshold", threshold), ("--ice-edge", ice_edge)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name} must lie in 0..1, got {value:g}")
    with open_scene(pred_path) as pred, open_scene(truth_path) as truth:
        _require_same_grid(pred, truth, "truth")
        chosen = task or detect_task(pred.band_names)
        if chosen is None:
            raise MissingVariableError(
                f"cannot tell the task from the bands of {pred.path.name} ({', '.join(pred.band_names)}): "
                f"expected SIC, probability, line or class, or pass --task {'|'.join(TASKS)}"
            )
        polygon_scene = open_scene(polygons) if polygons is not None else None
        try:
            if polygon_scene is not None:
                if chosen != "sic":
                    raise ConfigError(f"--polygons scores SIC predictions; {pred.path.name} is a {chosen} prediction")
                _require_same_grid(pred, polygon_scene, "polygons")
            if chosen == "sic":
                report = _evaluate_sic(
                    pred, truth, polygon_scene, ice_edge=ice_edge, strip_rows=strip_rows, progress=progress
                )
            elif chosen == "binary":
                report = _evaluate_binary(
                    pred, truth, threshold=threshold, tolerance=tolerance, strip_rows=strip_rows, progress=progress
                )
            else:
                report = _evaluate_multiclass(pred, truth, strip_rows=strip_rows, progress=progress)
        finally:
            if polygon_scene is not None:
                polygon_scene.close()
    if report["n_pixels"] == 0:
        raise DataError(
            f"{pred.path.name} and {truth.path.name} share no pixel where both hold a value "
            "(all nodata/NaN where they overlap): check that they cover the same scene"
        )
    binary = chosen == "binary"
    return {  # the keys every task shares first, then the task's own (bands, pixel size, ...)
        "task": chosen,
        "files": {
            "prediction": str(pred_path),
            "truth": str(truth_path),
            "polygons": str(polygons) if polygons is not None else None,
        },
        "n_pixels": report.pop("n_pixels"),
        "metrics": report.pop("metrics"),
        "tolerance": tolerance if binary else None,
        "threshold": report.pop("threshold", None),
        **report,
    }


# --------------------------------------------------------------------------- presenting results


def metric_notes(result: Mapping[str, Any]) -> dict[str, str]:
    """One short note per metric, for the table's note column."""
    tolerance = result.get("tolerance") or 0
    notes = {
        "r2": "pixel level vs the truth",
        "rmse": "pixel level, SIC fraction",
        "polygon_r2": "mean prediction per polygon vs chart SIC",
        "polygon_rmse": "per polygon, SIC fraction",
        "n_polygons": "polygons with a valid pixel and a known SIC",
        "ice_edge_accuracy": f"ice where SIC >= {result.get('ice_edge') or 0:g}",
        "ice_edge_f1": "F1 of the ice class",
        "dice": "pixel overlap",
        "precision": "pixel level",
        "recall": "pixel level",
        "iou": "pixel level",
        "boundary_f": f"boundary pixels matched within {tolerance:g} px",
        "iou_tol": f"truth dilated by {tolerance:g} px",
        "hd95_px": "95th pct boundary distance",
        "hd95_m": f"pixel size {result.get('pixel_size_m') or 1:.4g} m",
        "line_distance_px": "symmetric mean skeleton distance",
        "line_distance_m": "PoLiS-like",
        "miou": "mean over present classes",
        "f1": "macro mean",
        "accuracy": "share of pixels",
    }
    return notes


def json_safe(value: Any) -> Any:
    """NaN and infinities -> None (JSON null), numpy scalars -> Python, recursively."""
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(result: Mapping[str, Any], path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the metrics JSON whole or not at all (NaN as null)."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(json_safe(result), indent=2, allow_nan=False) + "\n")
    return Path(path)
