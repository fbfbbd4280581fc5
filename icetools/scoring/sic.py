"""SIC scores: pixel R2 / RMSE, polygon-level R2 / RMSE, the ice-edge split and the AutoICE figures."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from rasterio.windows import Window

from icetools.errors import ConfigError, MissingVariableError
from icetools.io.raster import iter_strips
from icetools.io.scene import Scene
from icetools.metrics import BinaryCounts, PolygonAccumulator, SICAccumulator
from icetools.progress import Progress, report
from icetools.scoring.autoice import AutoIceInputs, AutoIceScorer, GridCheck, open_autoice
from icetools.scoring.bands import (
    Reader,
    find_band,
    is_netcdf,
    missing_truth_band,
    prediction_band,
)
from icetools.scoring.units import SICReader, sic_reader

TRUTH_FIX = "set truth_units to fraction, percent or tenths"
TAG_FIX = "tag its band or file units=fraction, percent or tenths"


# --------------------------------------------------------------------------- truth and polygons


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
    band = find_band(scene, ("SIC",))
    if band is None and scene.has_chart:
        others = [name for name in scene.band_names if name != "polygon_id"]
        band = others[0] if len(others) == 1 else None
    return band


def _sic_truth(scene: Scene, *, truth_units: str | None, strip_rows: int) -> tuple[Reader, str, SICReader | None]:
    """Pixel truth: a SIC band (an AI4Arctic ready-to-train file's SIC classes included), or for an
    AI4Arctic netCDF without one its chart's SIC spread over each polygon."""
    if is_netcdf(scene):
        band = find_band(scene, ("SIC",))
    else:  # a one-band file is its own SIC band, whatever its name ("SIC_percent" says its units)
        band = _labels_sic_band(scene) or (scene.band_names[0] if len(scene.band_names) == 1 else None)
    if band is None and is_netcdf(scene):
        if not scene.has_chart:
            raise missing_truth_band(scene, "sic", " and no ice chart (polygon_icechart)")
        if truth_units is not None:
            raise ConfigError(
                f"truth_units applies to a SIC band, but {scene.path.name} gives SIC as ice chart codes "
                "(decoded to fractions): leave truth_units out"
            )
        lookup = _chart_lookup(scene)
        def chart_sic(window: Window) -> np.ndarray:
            return _ids_to_sic(scene.read_polygon_ids(window), lookup)

        return chart_sic, "polygon_icechart (chart SIC)", None
    if band is None:
        raise missing_truth_band(scene, "sic")
    reader = sic_reader(
        scene, band, role="truth", units=truth_units, given_as="truth_units", fix=TRUTH_FIX, strip_rows=strip_rows
    )
    return reader, band, reader


@dataclass
class _Polygons:
    """Where polygon ids come from, and the chart's SIC per polygon (a table, or a band to average)."""

    scene: Scene
    table: dict[int, float] | None  # netCDF chart
    sic: SICReader | None  # labels raster: its SIC band, averaged per polygon

    def ids(self, window: Window) -> np.ndarray:
        return self.scene.read_polygon_ids(window)


def _polygon_source(scene: Scene, *, units: str | None, fix: str, strip_rows: int) -> _Polygons:
    if not scene.has_chart:
        raise MissingVariableError(
            f"polygons {scene.path.name} hold no chart polygons (no 'polygon_id' band or polygon_icechart); "
            f"bands found: {', '.join(scene.band_names)}"
        )
    if is_netcdf(scene):
        return _Polygons(scene, {pid: p.sic for pid, p in scene.polygon_table().items()}, None)
    band = _labels_sic_band(scene)
    if band is None:
        raise MissingVariableError(
            f"polygons {scene.path.name} have a 'polygon_id' band but no 'SIC' band; "
            f"bands found: {', '.join(scene.band_names)}"
        )
    reader = sic_reader(
        scene, band, role="polygons", units=units, given_as="truth_units", fix=fix, strip_rows=strip_rows
    )
    return _Polygons(scene, None, reader)


# --------------------------------------------------------------------------- scoring


@dataclass
class _Scores:
    pixel: SICAccumulator
    per_polygon: PolygonAccumulator
    chart_sic: PolygonAccumulator  # labels raster: mean of its (per-polygon constant) SIC band
    edge: BinaryCounts
    autoice: AutoIceScorer | None


def _score_strips(
    pred: Scene, pred_reader: Reader, truth_reader: Reader, chart: _Polygons | None, *,
    ice_edge: float | None, autoice: AutoIceScorer | None, strip_rows: int, progress: Progress | None,
) -> _Scores:
    scores = _Scores(SICAccumulator(), PolygonAccumulator(), PolygonAccumulator(), BinaryCounts(), autoice)
    for window in iter_strips(pred.height, pred.width, strip_rows):
        predicted, true = pred_reader(window), truth_reader(window)
        scores.pixel.update(predicted, true)
        if chart is not None:
            ids = chart.ids(window)
            scores.per_polygon.update(predicted, ids)
            if chart.sic is not None:
                scores.chart_sic.update(chart.sic(window), ids)
        if ice_edge is not None:
            both = np.isfinite(predicted) & np.isfinite(true)
            scores.edge.update(predicted >= ice_edge, true >= ice_edge, both)
        if autoice is not None:
            autoice.update(window, predicted, true)
        report(progress, "rows", window.row_off + window.height, pred.height)
    return scores


def _units_note(reader: SICReader | None, band: str) -> dict[str, str]:
    if reader is None:
        return {"units": "fraction", "source": f"{band}: chart codes decoded"}
    return {"units": reader.units, "source": reader.source}


def evaluate_sic(
    pred: Scene,
    truth: Scene,
    polygons: Scene | None,
    *,
    ice_edge: float | None,
    truth_units: str | None,
    autoice: AutoIceInputs | None,
    same_grid: GridCheck,
    strip_rows: int,
    progress: Progress | None,
) -> dict[str, Any]:
    band = prediction_band(pred, "sic")
    pred_reader = sic_reader(pred, band, role="prediction", fix=TAG_FIX, strip_rows=strip_rows)
    truth_reader, truth_band, truth_sic = _sic_truth(truth, truth_units=truth_units, strip_rows=strip_rows)
    if polygons is None and truth.has_chart:
        polygons = truth  # a labels raster or a netCDF chart carries its own polygons
    is_truth = polygons is truth
    chart = None
    if polygons is not None:
        chart = _polygon_source(
            polygons, units=truth_units if is_truth else None, fix=TRUTH_FIX if is_truth else TAG_FIX,
            strip_rows=strip_rows,
        )
    with contextlib.ExitStack() as stack:
        scorer = open_autoice(pred, truth, autoice, stack, same_grid) if autoice is not None else None
        scores = _score_strips(
            pred, pred_reader, truth_reader, chart, ice_edge=ice_edge, autoice=scorer, strip_rows=strip_rows,
            progress=progress,
        )
    warnings = pred_reader.finish(fix=TAG_FIX)
    for reader, fix in ((truth_sic, TRUTH_FIX), (chart.sic if chart else None, TRUTH_FIX if is_truth else TAG_FIX)):
        if reader is not None:
            warnings += reader.finish(fix=fix)
    summary = _sic_report(scores, chart, ice_edge=ice_edge)
    if scores.autoice is not None:
        metrics, details, autoice_warnings = scores.autoice.result()
        summary["metrics"].update(metrics)
        summary["conventions"] += details.pop("conventions")
        summary["autoice"] = details
        warnings += autoice_warnings
    return {
        **summary,
        "bands": {"prediction": band, "truth": truth_band},
        "units": {"prediction": _units_note(pred_reader, band), "truth": _units_note(truth_sic, truth_band)},
        "polygons_from": str(polygons.path) if polygons is not None else None,
        "ice_edge": ice_edge,
        "warnings": list(dict.fromkeys(warnings)),  # a labels raster's SIC band is read twice
    }


def _sic_report(scores: _Scores, chart: _Polygons | None, *, ice_edge: float | None) -> dict[str, Any]:
    pixel_scores = scores.pixel.result()
    metrics: dict[str, Any] = {"r2": pixel_scores["r2"], "rmse": pixel_scores["rmse"]}
    conventions = [
        "SIC as a fraction 0..1 (percent and tenths converted, see 'units'); "
        "pixels NaN/nodata in either raster skipped",
        "R2 = 1 - SS_res / SS_tot around the truth's mean; NaN (null) when the truth is constant",
    ]
    if chart is not None:
        table = chart.table if chart.table is not None else scores.chart_sic.means()
        polygon = scores.per_polygon.result(table)
        metrics.update(polygon_r2=polygon["r2"], polygon_rmse=polygon["rmse"], n_polygons=polygon["n_polygons"])
        conventions.append(
            "polygon level: mean prediction over each polygon's valid pixels vs the chart's SIC, "
            "every polygon weighted once; polygons without a valid pixel or a known SIC skipped"
        )
    if ice_edge is not None:
        edge = scores.edge
        total = edge.tp + edge.fp + edge.fn + edge.tn
        metrics["ice_edge_accuracy"] = (edge.tp + edge.tn) / total if total else math.nan
        metrics["ice_edge_f1"] = edge.dice if total else math.nan
        conventions.append(f"ice edge: ice where SIC >= {ice_edge:g}; F1 of the ice class (1 when neither map has ice)")
    return {"n_pixels": int(pixel_scores["n"]), "metrics": metrics, "conventions": conventions}
