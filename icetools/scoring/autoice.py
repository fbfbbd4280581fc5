"""The AI4Arctic (AutoICE) challenge's scores, streamed: SIC R2 on the 10 % classes, SOD and FLOE
weighted F1, and the combined (2 SIC + 2 SOD + 1 FLOE) / 5.

The challenge flattens the valid pixels of its truth and prediction classes and calls
scikit-learn's ``r2_score`` (SIC) and ``f1_score(average="weighted")`` (SOD, FLOE). Both follow
from running sums: R2 on class values from :class:`SICAccumulator`, weighted F1 from a confusion
matrix, so a scene costs a strip of memory, and the figures equal scikit-learn's on the same pixels.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from rasterio.windows import Window

from icetools.errors import ConfigError
from icetools.io.scene import Scene, open_scene
from icetools.metrics import AUTOICE_CLASSES, ConfusionAccumulator, SICAccumulator, autoice_score, sic_classes
from icetools.scoring.bands import BandReader, find_band, missing_truth_band, only_unnamed_band, prediction_band

GridCheck = Callable[[Scene, Scene, str], None]


AUTOICE_CONVENTIONS = (
    "AutoICE (AI4Arctic challenge): SIC R2 over the classes 0..10 of both maps (class = SIC in tenths, "
    "halves rounded up), as sklearn r2_score on the flattened valid pixels; NaN (null) when the truth is constant",
    "AutoICE SOD / FLOE: F1 per class weighted by its true pixel count (sklearn f1_score average='weighted'); "
    "pixels nodata in either map skipped; score = (2 SIC + 2 SOD + 1 FLOE) / 5, on 0..1 (the challenge prints x 100)",
)


@dataclass(frozen=True)
class AutoIceInputs:
    """Stage-of-development and floe-size maps scored beside SIC: class rasters (SOD 0..5, FLOE
    0..6, 255 or the file's nodata for no data). A truth left out is read from the SIC truth file
    when it holds that chart (an AI4Arctic ready-to-train netCDF holds SIC, SOD and FLOE)."""

    sod: str | Path | None = None
    sod_truth: str | Path | None = None
    floe: str | Path | None = None
    floe_truth: str | Path | None = None

    def charts(self) -> dict[str, tuple[str | Path | None, str | Path | None]]:
        return {"SOD": (self.sod, self.sod_truth), "FLOE": (self.floe, self.floe_truth)}


@dataclass
class _Chart:
    prediction: BandReader
    truth: BandReader
    confusion: ConfusionAccumulator


class AutoIceScorer:
    """Feed it the SIC strips (fractions) with :meth:`update`; it reads the SOD / FLOE strips itself."""

    def __init__(self, charts: dict[str, _Chart]) -> None:
        self.sic = SICAccumulator()
        self.charts = charts

    def update(self, window: Window, predicted_sic: np.ndarray, true_sic: np.ndarray) -> None:
        self.sic.update(sic_classes(predicted_sic), sic_classes(true_sic))
        for chart in self.charts.values():
            predicted, true = chart.prediction(window), chart.truth(window)
            chart.confusion.update(predicted, true, np.isfinite(predicted) & np.isfinite(true))

    def result(self) -> tuple[dict[str, float], dict[str, Any], list[str]]:
        """(metrics, details for the JSON, warnings)."""
        sic = self.sic.result()
        scores = {"SIC": sic["r2"]}
        details: dict[str, Any] = {"n_pixels": {"SIC": int(sic["n"])}, "files": {}, "confusion_matrix": {}}
        warnings: list[str] = []
        for name, chart in self.charts.items():
            scores[name] = float(chart.confusion.result()["f1_weighted"])
            details["n_pixels"][name] = int(chart.confusion.matrix.sum())
            details["files"][name] = {
                "prediction": str(chart.prediction.scene.path), "truth": str(chart.truth.scene.path)
            }
            details["confusion_matrix"][name] = chart.confusion.matrix.tolist()
            warnings += chart.prediction.warnings(f"{name} prediction") + chart.truth.warnings(f"{name} truth")
        metrics = {f"autoice_{name.lower()}_{'r2' if name == 'SIC' else 'f1'}": value for name, value in scores.items()}
        if len(scores) == 3:
            metrics["autoice_score"] = autoice_score(scores)
        details["conventions"] = list(AUTOICE_CONVENTIONS[: 2 if self.charts else 1])
        return metrics, details, warnings


def _truth_band(scene: Scene, chart: str) -> str:
    band = find_band(scene, (chart, "class")) or only_unnamed_band(scene)
    if band is None and len(scene.band_names) == 1:
        band = scene.band_names[0]
    if band is None:
        raise missing_truth_band(scene, chart, names=(chart, "class"))
    return band


def open_autoice(
    pred: Scene, truth: Scene, inputs: AutoIceInputs, stack: contextlib.ExitStack, same_grid: GridCheck
) -> AutoIceScorer:
    """Open the SOD / FLOE rasters named in ``inputs`` (closed with ``stack``), on the prediction's grid."""
    charts: dict[str, _Chart] = {}
    for name, (pred_path, truth_path) in inputs.charts().items():
        lower = name.lower()
        if pred_path is None:
            if truth_path is not None:
                raise ConfigError(f"{lower}_truth is given without a {lower} prediction to score against it")
            continue
        pred_scene = stack.enter_context(open_scene(pred_path))
        same_grid(pred, pred_scene, f"{name} prediction")
        if truth_path is not None:
            truth_scene = stack.enter_context(open_scene(truth_path))
            same_grid(pred, truth_scene, f"{name} truth")
        elif find_band(truth, (name,)) is not None:
            truth_scene = truth
        else:
            raise ConfigError(
                f"the {lower} prediction needs its truth: {truth.path.name} has no {name} band; set {lower}_truth"
            )
        band = prediction_band(pred_scene, "multiclass", names=(name, "class"))
        charts[name] = _Chart(
            BandReader(pred_scene, band),
            BandReader(truth_scene, _truth_band(truth_scene, name)),
            ConfusionAccumulator(AUTOICE_CLASSES[name]),
        )
    return AutoIceScorer(charts)
