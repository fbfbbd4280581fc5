"""Score a prediction raster against its truth with the metrics of the methods it reproduces.

Three tasks, told apart by the prediction's band names:

* ``sic``: pixel R2 / RMSE against a truth SIC raster (or the chart rasterised to pixels) and,
  when polygons are known, polygon-level R2 / RMSE of the mean prediction per chart polygon
  against the chart's SIC (the regional-loss paper's Table 1); optionally the ice-edge split and
  the AI4Arctic challenge's figures (``autoice``). SIC units: see :mod:`icetools.scoring.units`.
* ``binary`` (grounding lines): Dice, precision, recall, boundary F, tolerant IoU, HD95 and the
  mean line distance (the grounding-line papers' scores), per scene and optionally per patch.
* ``multiclass``: mIoU, macro and weighted F1, accuracy and per-class IoU.

Every input is read strip by strip, so a 10k x 10k scene costs a strip of memory; only the
binary distance scores need the two whole masks (bool, 100 MB each at 10k x 10k).
Undefined scores stay ``float("nan")`` here; :func:`json_safe` turns them into JSON ``null``.
The task modules live in :mod:`icetools.scoring`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

from icetools.errors import ConfigError, CRSError, DataError, InputFileError, MissingVariableError
from icetools.io.atomic import atomic_path
from icetools.io.paths import refuse_overwriting_inputs
from icetools.io.scene import Scene, open_scene
from icetools.jsonsafe import dumps, json_safe
from icetools.progress import Progress
from icetools.scoring.autoice import AutoIceInputs
from icetools.scoring.bands import detect_task, file_tags
from icetools.scoring.binary import DEFAULT_THRESHOLD, evaluate_binary
from icetools.scoring.multiclass import evaluate_multiclass, parse_class_names
from icetools.scoring.sic import evaluate_sic
from icetools.scoring.units import SIC_UNITS, check_units
from icetools.tasks import BINARY, SIC, TASKS, check_task

__all__ = [
    "DEFAULT_THRESHOLD", "SIC_UNITS", "STRIP_ROWS", "AutoIceInputs", "detect_task", "evaluate", "json_safe",
    "metric_notes", "parse_class_names", "write_json",
]

STRIP_ROWS = 512
SCENE_POLYGONS = "scene"
"""``polygons="scene"``: the chart of the scene the prediction was made from (see :func:`prediction_scene`)."""


def _require_same_grid(pred: Scene, other: Scene, role: str) -> None:
    if not pred.grid.same_pixels_as(other.grid):
        raise CRSError(
            f"{role} {other.path} ({other.height} x {other.width}) is not on the grid of the prediction "
            f"{pred.path} ({pred.height} x {pred.width}): put it on that grid with "
            f"`icetools rasterize VECTOR --like {pred.path}` (or predict on the {role}'s scene)"
        )


def _check_options(
    *, task: str | None, tolerance: float, threshold: float | None, ice_edge: float | None, patch_size: int | None,
    truth_units: str | None,
) -> None:
    if task is not None:
        check_task(task)
    if tolerance < 0:
        raise ConfigError(f"tolerance must be >= 0 pixels, got {tolerance:g}")
    for name, value in (("threshold", threshold), ("ice_edge", ice_edge)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name} must lie in 0..1, got {value:g}")
    if patch_size is not None and patch_size < 1:
        raise ConfigError(f"patch_size must be a positive number of pixels, got {patch_size}")
    check_units(truth_units)


def _check_task_options(chosen: str, name: str, **options: Any) -> None:
    """Options that only one task reads are refused for the others, rather than silently ignored."""
    owners = {"polygons": SIC, "truth_units": SIC, "autoice": SIC, "ice_edge": SIC, "patch_size": BINARY}
    for option, value in options.items():
        if value is not None and owners[option] != chosen:
            raise ConfigError(f"{option} applies to {owners[option]} predictions; {name} is a {chosen} prediction")


def evaluate(
    pred_path: str | Path,
    truth_path: str | Path,
    *,
    polygons: str | Path | None = None,
    task: str | None = None,
    threshold: float | None = None,
    tolerance: float = 2,
    ice_edge: float | None = None,
    truth_units: str | None = None,
    autoice: AutoIceInputs | None = None,
    patch_size: int | None = None,
    progress: Progress | None = None,
    strip_rows: int = STRIP_ROWS,
) -> dict[str, Any]:
    """Scores of ``pred_path`` against ``truth_path``: a dict, NaN where undefined (see :func:`json_safe`).

    ``polygons``: a labels raster, an AI4Arctic netCDF, or ``"scene"`` for the chart of the scene the
    prediction names in its tags. ``task`` overrides what the prediction's band names say; ``threshold`` applies to a
    probability band (default: the raster's ``threshold`` tag, else 0.5); ``tolerance`` (pixels)
    to the boundary F and tolerant IoU; ``patch_size`` adds per-patch line scores; ``ice_edge``
    adds the ice/water split scores for SIC; ``truth_units`` (fraction, percent, tenths) says what
    a SIC truth band holds when the file does not; ``autoice`` adds the AI4Arctic challenge's
    scores (``AutoIceInputs()`` for SIC alone, with SOD / FLOE maps for the combined score).
    Warnings (units guessed, undeclared nodata) are in ``result["warnings"]`` and also raised as
    ``UserWarning``.
    """
    _check_options(
        task=task, tolerance=tolerance, threshold=threshold, ice_edge=ice_edge, patch_size=patch_size,
        truth_units=truth_units,
    )
    with open_scene(pred_path) as pred, open_scene(truth_path) as truth:
        _require_same_grid(pred, truth, "truth")
        chosen = task or detect_task(pred.band_names)
        if chosen is None:
            raise MissingVariableError(
                f"cannot tell the task from the bands of {pred.path.name} ({', '.join(pred.band_names)}): "
                f"expected SIC, probability, line or class, or set task to one of {', '.join(TASKS)}"
            )
        _check_task_options(
            chosen, pred.path.name, polygons=polygons, truth_units=truth_units, autoice=autoice, ice_edge=ice_edge,
            patch_size=patch_size,
        )
        report = _evaluate_task(
            chosen, pred, truth, polygons=polygons, threshold=threshold, tolerance=tolerance, ice_edge=ice_edge,
            truth_units=truth_units, autoice=autoice, patch_size=patch_size, strip_rows=strip_rows, progress=progress,
        )
    if report["n_pixels"] == 0:
        raise DataError(
            f"{pred.path.name} and {truth.path.name} share no pixel where both hold a value "
            "(all nodata/NaN where they overlap): check that they cover the same scene"
        )
    for message in report.get("warnings", []):
        warnings.warn(message, UserWarning, stacklevel=2)
    return {  # the keys every task shares first, then the task's own (bands, pixel size, ...)
        "task": chosen,
        "files": {
            "prediction": str(pred_path),
            "truth": str(truth_path),
            "polygons": str(polygons) if polygons is not None else None,
        },
        "n_pixels": report.pop("n_pixels"),
        "metrics": report.pop("metrics"),
        "tolerance": tolerance if chosen == BINARY else None,
        "threshold": report.pop("threshold", None),
        "warnings": report.pop("warnings", []),
        **report,
    }


def prediction_scene(pred: Scene, truth: Scene) -> Path:
    """The scene ``pred`` was predicted from, for ``polygons="scene"`` (its own chart, as predict's).

    Predict tags its products with the scene's file name (``scene``) and its path relative to the
    product's folder (``scene_path``); the truth is taken when it is that file, else the scene is
    looked for there, beside the prediction, then in the working folder.
    """
    tags = file_tags(pred)
    name = tags.get("scene")
    if not name:
        raise MissingVariableError(
            f"{pred.path.name} does not name the scene it was predicted from (no 'scene' tag): "
            "give polygons as the scene's path"
        )
    if truth.path.name == name:
        return truth.path
    candidates = [pred.path.parent / tags["scene_path"]] if tags.get("scene_path") else []
    candidates += [pred.path.parent / name, Path(name)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InputFileError(
        f"polygons 'scene' means {name}, the scene {pred.path.name} was predicted from, but it is not at "
        f"{', '.join(map(str, dict.fromkeys(candidates)))}: give polygons as its path"
    )


def _evaluate_task(
    chosen: str, pred: Scene, truth: Scene, *, polygons: str | Path | None, **options: Any
) -> dict[str, Any]:
    """The task's own scoring; ``options`` are :func:`evaluate`'s keyword arguments."""
    strip_rows, progress = options["strip_rows"], options["progress"]
    if chosen == BINARY:
        return evaluate_binary(
            pred, truth, threshold=options["threshold"], tolerance=options["tolerance"],
            patch_size=options["patch_size"], strip_rows=strip_rows, progress=progress,
        )
    if chosen != SIC:
        return evaluate_multiclass(pred, truth, strip_rows=strip_rows, progress=progress)
    if polygons is not None and str(polygons) == SCENE_POLYGONS:
        polygons = prediction_scene(pred, truth)
    polygon_scene = open_scene(polygons) if polygons is not None else None
    try:
        if polygon_scene is not None:
            _require_same_grid(pred, polygon_scene, "polygons")
        return evaluate_sic(
            pred, truth, polygon_scene, ice_edge=options["ice_edge"], truth_units=options["truth_units"],
            autoice=options["autoice"], same_grid=_require_same_grid, strip_rows=strip_rows, progress=progress,
        )
    finally:
        if polygon_scene is not None:
            polygon_scene.close()


# --------------------------------------------------------------------------- presenting results


def metric_notes(result: Mapping[str, Any]) -> dict[str, str]:
    """One short note per metric, for the table's note column."""
    tolerance = result.get("tolerance") or 0
    patch = (result.get("patch_cases") or {}).get("size", 0)
    return {
        "r2": "pixel level vs the truth",
        "rmse": "pixel level, SIC fraction",
        "polygon_r2": "mean prediction per polygon vs chart SIC",
        "polygon_rmse": "per polygon, SIC fraction",
        "n_polygons": "polygons with a valid pixel and a known SIC",
        "ice_edge_accuracy": f"ice where SIC >= {result.get('ice_edge') or 0:g}",
        "ice_edge_f1": "F1 of the ice class",
        "autoice_sic_r2": "AutoICE: R2 on SIC classes 0..10",
        "autoice_sod_f1": "AutoICE: SOD weighted F1",
        "autoice_floe_f1": "AutoICE: FLOE weighted F1",
        "autoice_score": "AutoICE: (2 SIC + 2 SOD + FLOE) / 5",
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
        "patch_dice_mean": f"mean over {patch} px patches",
        "patch_hd95_px_mean": "over patches with a found line",
        "patch_line_distance_m_mean": "over patches with a found line",
        "patches_found": "both masks hold a line",
        "patches_missed": "truth line, none predicted",
        "patches_false_alarm": "predicted line, none true",
        "patches_both_empty": "no line in either mask",
        "miou": "mean over present classes",
        "f1": "macro mean",
        "f1_weighted": "weighted by true pixel count",
        "accuracy": "share of pixels",
    }


def write_json(
    result: Mapping[str, Any], path: str | Path, *, overwrite: bool = False, inputs: Iterable[str | Path] = ()
) -> Path:
    """Write the metrics JSON whole or not at all (NaN as null); never over a file it scored.

    The files named in ``result["files"]`` and ``inputs`` are refused as ``path``, even with ``overwrite``.
    """
    named = [p for p in dict(result.get("files") or {}).values() if p is not None and p != "scene"]
    refuse_overwriting_inputs([path], [*named, *inputs])
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(dumps(dict(result)))
    return Path(path)
