"""Skill with the README's defaults on scenes the models never saw, beside the baselines.

``python -m bench skill`` runs, through the command line exactly as the README shows it (no tuned
flags: only inputs, outputs and the time budget the README names):

* sea-ice    three 1024 px ``synth sea-ice`` scenes, ``train --time-limit 10``; a held-out scene of
             another seed scored against its true SIC (pixel) and its chart (polygon), beside the
             chart-alone R2 (the chart's own SIC painted on its polygons, vs the same truth)
* recipe     the README's one-scene recipe (rasterize -> sample-patches -> train -> predict), scored
             on six other scenes, each beside its chart-alone R2, and their mean
* lines      three 1024 px ``synth grounding-line`` interferograms, ``train --time-limit 8``; the held
             -out one scored by Dice, mean line distance (m), share of the true line found within
             300 m and HD95, beside the "no line" majority baseline
* landcover  two 2048 px ``synth landcover`` scenes, ``train --model fctl --time-limit 12``,
             ``train --model refiner --from`` it ``--time-limit 6``; the held-out scene predicted three
             ways (montage, overlap averaging, ``--merge refine``), mIoU of each beside the majority class
* bundled    the packaged sea-ice model on a held-out synthetic scene (dark smooth ice included)

The whole bench takes about an hour of 2-core CPU. ``ICETOOLS_SKILL=sea-ice,lines`` picks parts;
``ICETOOLS_SKILL_DIR`` keeps the files (default: a temporary folder removed at the end).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

PARTS = ("sea-ice", "recipe", "lines", "landcover", "bundled")
SEA_ICE_TRAIN_SEEDS = (1, 2, 3)
HELD_OUT_SEED = 101
RECIPE_OTHER_SEEDS = tuple(range(HELD_OUT_SEED, HELD_OUT_SEED + 6))
SCENE_PX = 1024
LANDCOVER_PX = 2048
LINE_FOUND_WITHIN_M = 300.0

Figures = Iterator[tuple[str, str]]


def icetools(*args: object) -> float:
    """Run one icetools command as a user would; its wall time in seconds. Output goes to our stderr."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "icetools", "-q", *map(str, args)]
    proc = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command[2:])} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def metrics_of(path: Path) -> dict:
    return json.loads(path.read_text())["metrics"]


def _fmt(value: object, digits: int = 3) -> str:
    if isinstance(value, (int, float)) and value is not None and np.isfinite(value):
        return f"{value:.{digits}f}"
    return str(value)


def chart_alone_r2(chart_labels: Path, truth: Path) -> float:
    """R2 of the chart's SIC (band "SIC" of a rasterized chart) against the true pixel SIC: what a
    user has without any model. Both are read through the scene reader (scales and nodata applied)."""
    from icetools.io.scene import open_scene
    from icetools.metrics import SICAccumulator

    with open_scene(chart_labels) as labels, open_scene(truth) as true_raster:
        chart = labels.read(["SIC"]).astype("float64")[0]
        true_sic = true_raster.read().astype("float64")[0]
    accumulator = SICAccumulator()
    accumulator.update(chart, true_sic, np.isfinite(chart) & np.isfinite(true_sic))
    return float(accumulator.result()["r2"])


def polygon_truth_r2(prediction: Path, truth: Path, chart_labels: Path) -> tuple[float, float, int]:
    """R2 of the model's and of the chart's polygon SIC against each polygon's *true* mean SIC.

    The target "polygon R2 vs the chart" counts the chart's own generalisation error against the
    model: a model that found every polygon's true mean would not score 1. This says which of the
    two is nearer the truth. Returns (model R2, chart R2, polygons).
    """
    from scipy import ndimage

    from icetools.io.scene import open_scene
    from icetools.metrics import SICAccumulator

    with open_scene(chart_labels) as labels, open_scene(prediction) as pred, open_scene(truth) as true_raster:
        ids, chart = labels.read(["polygon_id", "SIC"]).astype("float64")
        predicted = pred.read().astype("float64")[0]
        true_sic = true_raster.read().astype("float64")[0]
    keep = np.isfinite(ids) & np.isfinite(chart) & np.isfinite(predicted) & np.isfinite(true_sic)
    index = np.unique(ids[keep])
    model_means, true_means, chart_means = (np.asarray(ndimage.mean(values[keep], ids[keep], index))
                                            for values in (predicted, true_sic, chart))

    def r2(found: np.ndarray) -> float:
        accumulator = SICAccumulator()
        accumulator.update(found, true_means)
        return float(accumulator.result()["r2"])

    return r2(model_means), r2(chart_means), len(index)


def line_found_share(prediction_mask: Path, truth_mask: Path, within_m: float) -> float:
    """Share of the true line's pixels that lie within ``within_m`` metres of a predicted line pixel."""
    import rasterio
    from scipy.ndimage import distance_transform_edt

    with rasterio.open(prediction_mask) as src:
        pred = src.read(1)
        pred = (pred > 0) & (pred != (src.nodata if src.nodata is not None else -1))
        pixel = abs(src.transform.a)
    with rasterio.open(truth_mask) as src:
        truth = src.read(1) > 0
    if not truth.any():
        return float("nan")
    if not pred.any():
        return 0.0
    distance_m = distance_transform_edt(~pred) * pixel
    return float((distance_m[truth] <= within_m).mean())


def sea_ice(work: Path) -> Figures:
    folder = work / "sea-ice"
    folder.mkdir(parents=True, exist_ok=True)
    scenes = []
    for seed in SEA_ICE_TRAIN_SEEDS:
        scenes.append(folder / f"train_{seed}.nc")
        icetools("synth", "sea-ice", scenes[-1], "--size", SCENE_PX, "--seed", seed, "--overwrite")
    test = folder / "test.nc"
    icetools("synth", "sea-ice", test, "--size", SCENE_PX, "--seed", HELD_OUT_SEED, "--overwrite")
    # The README's recipe for AI4Arctic scenes, which carry their chart.
    icetools("sample-patches", *scenes, "-o", folder / "patches.gpkg")
    seconds = icetools("train", "--patches", folder / "patches.gpkg", "-o", folder / "model", "--time-limit", 10)
    icetools("predict", test, "-m", folder / "model", "-o", folder / "sic.tif", "--polygons", "scene")
    icetools("evaluate", folder / "sic.tif", "--truth", folder / "test.nc.truth.tif", "--polygons", test,
             "--json", folder / "metrics.json")
    icetools("rasterize", folder / "test.nc.chart.gpkg", "--like", test, "-o", folder / "test_chart_labels.tif")
    found = metrics_of(folder / "metrics.json")
    chart = chart_alone_r2(folder / "test_chart_labels.tif", folder / "test.nc.truth.tif")
    yield "sea-ice: training wall time (min)", _fmt(seconds / 60, 1)
    yield "sea-ice: held-out pixel R2 vs truth (chart alone)", f"{_fmt(found['r2'])} ({_fmt(chart)})"
    yield "sea-ice: held-out pixel RMSE", _fmt(found["rmse"])
    yield "sea-ice: held-out polygon R2 vs chart", _fmt(found["polygon_r2"], 4)
    model_r2, chart_r2, n = polygon_truth_r2(folder / "sic.tif", folder / "test.nc.truth.tif", folder / "test_chart_labels.tif")
    yield f"sea-ice: polygon R2 vs the true polygon means, {n} polygons (chart alone)", f"{_fmt(model_r2, 4)} ({_fmt(chart_r2, 4)})"


def recipe(work: Path) -> Figures:
    """The README's 'Training your own model' lines on one scene, then other scenes scored.

    One training scene holds one wind, one share of dark ice, one coast: how far its model carries
    depends on how alike the other scene is. So the model is scored on ``RECIPE_OTHER_SEEDS`` (six
    scenes of consecutive seeds, none chosen), each beside its chart, and on their mean.
    """
    folder = work / "recipe"
    folder.mkdir(parents=True, exist_ok=True)
    scene = folder / "scene.nc"
    icetools("synth", "sea-ice", scene, "--size", SCENE_PX, "--seed", 5, "--overwrite")
    icetools("rasterize", folder / "scene.nc.chart.gpkg", "--like", scene, "-o", folder / "labels.tif")
    icetools("sample-patches", scene, "--labels", folder / "labels.tif", "-o", folder / "patches.gpkg")
    icetools("train", "--patches", folder / "patches.gpkg", "-o", folder / "runs_sic", "--time-limit", 10)
    scores = []
    for seed in RECIPE_OTHER_SEEDS:
        other = folder / f"other_{seed}.nc"
        labels = folder / f"other_{seed}_labels.tif"
        icetools("synth", "sea-ice", other, "--size", SCENE_PX, "--seed", seed, "--overwrite")
        icetools("rasterize", folder / f"{other.name}.chart.gpkg", "--like", other, "-o", labels, "--overwrite")
        icetools("predict", other, "-m", folder / "runs_sic", "-o", folder / f"sic_{seed}.tif", "--polygons", labels,
                 "--overwrite")
        icetools("evaluate", folder / f"sic_{seed}.tif", "--truth", folder / f"{other.name}.truth.tif",
                 "--polygons", labels, "--json", folder / f"metrics_{seed}.json", "--overwrite")
        found = metrics_of(folder / f"metrics_{seed}.json")
        scores.append((found["r2"], chart_alone_r2(labels, folder / f"{other.name}.truth.tif"), found["polygon_r2"]))
    model, chart, polygon = (np.array(column) for column in zip(*scores))
    each = ", ".join(f"{seed}: {_fmt(m)} ({_fmt(c)})" for seed, m, c in zip(RECIPE_OTHER_SEEDS, model, chart))
    yield "recipe (one scene): other scenes' pixel R2 (chart alone), by seed", each
    yield "recipe (one scene): mean pixel R2 of the other scenes (chart alone)", f"{_fmt(model.mean())} ({_fmt(chart.mean())})"
    yield "recipe (one scene): scenes where the model beats the chart", f"{int((model > chart).sum())} of {len(model)}"
    yield "recipe (one scene): mean polygon R2 of the other scenes", _fmt(polygon.mean(), 4)


def lines(work: Path) -> Figures:
    folder = work / "lines"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"train_{seed}" for seed in (1, 2, 3)] + ["test"]
    for name, seed in zip(names, (1, 2, 3, HELD_OUT_SEED)):
        icetools("synth", "grounding-line", folder / f"{name}.tif", "--size", SCENE_PX, "--seed", seed, "--overwrite")
        icetools("rasterize", folder / f"{name}.tif.lines.gpkg", "--like", folder / f"{name}.tif",
                 "-o", folder / f"{name}_labels.tif")
    train = [folder / f"{name}.tif" for name in names[:3]]
    labels = [arg for name in names[:3] for arg in ("--labels", folder / f"{name}_labels.tif")]
    icetools("sample-patches", *train, *labels, "-o", folder / "patches.gpkg")
    seconds = icetools("train", "--patches", folder / "patches.gpkg", "-o", folder / "model", "--time-limit", 8)
    icetools("predict", folder / "test.tif", "-m", folder / "model", "-o", folder / "prob.tif")
    icetools("evaluate", folder / "prob_mask.tif", "--truth", folder / "test_labels.tif",
             "--json", folder / "metrics.json")
    vectorized = "yes"
    try:
        icetools("vectorize", folder / "prob_mask.tif", "--lines", "-o", folder / "lines.gpkg")
    except RuntimeError:
        vectorized = "no line found"
    found = metrics_of(folder / "metrics.json")
    share = line_found_share(folder / "prob_mask.tif", folder / "test_labels.tif", LINE_FOUND_WITHIN_M)
    yield "lines: training wall time (min)", _fmt(seconds / 60, 1)
    yield "lines: held-out Dice (no-line baseline 0)", _fmt(found.get("dice"))
    yield "lines: mean line distance (m)", _fmt(found.get("mean_line_distance_m", found.get("line_distance_m")), 0)
    yield f"lines: share of the true line found within {LINE_FOUND_WITHIN_M:.0f} m", _fmt(share)
    yield "lines: HD95 (m)", _fmt(found.get("hd95_m", found.get("hd95")), 0)
    yield "lines: vectorize --lines wrote lines", vectorized


def landcover(work: Path) -> Figures:
    folder = work / "landcover"
    folder.mkdir(parents=True, exist_ok=True)
    train = [folder / f"train_{seed}.tif" for seed in (11, 12)]
    for path, seed in zip(train, (11, 12)):
        icetools("synth", "landcover", path, "--size", LANDCOVER_PX, "--seed", seed, "--overwrite")
    test = folder / "test.tif"
    icetools("synth", "landcover", test, "--size", LANDCOVER_PX, "--seed", 13, "--overwrite")
    labels = [arg for path in train for arg in ("--labels", path.with_name(path.name + ".classes.tif"))]
    icetools("sample-patches", *train, *labels, "-o", folder / "patches.gpkg")
    icetools("train", "--patches", folder / "patches.gpkg", "--model", "fctl", "-o", folder / "fctl", "--time-limit", 12)
    icetools("train", "--patches", folder / "patches.gpkg", "--model", "refiner", "--from", folder / "fctl",
             "-o", folder / "refiner", "--time-limit", 6)
    truth = folder / "test.tif.classes.tif"
    ways = {
        "montage": ("--merge", "average", "--overlap", "0"),
        "overlap averaging": ("--merge", "average"),
        "refine": ("--merge", "refine", "--refiner", folder / "refiner"),
    }
    scores = {}
    for name, flags in ways.items():
        out = folder / f"classes_{name.replace(' ', '_')}.tif"
        icetools("predict", test, "-m", folder / "fctl", "-o", out, *flags)
        icetools("evaluate", out, "--truth", truth, "--json", out.with_suffix(".json"))
        scores[name] = metrics_of(out.with_suffix(".json"))["miou"]
    yield "landcover: held-out mIoU montage / averaging / refine", " / ".join(_fmt(s, 4) for s in scores.values())
    yield "landcover: refine - averaging (mIoU points)", _fmt(100 * (scores["refine"] - scores["overlap averaging"]), 2)
    yield "landcover: majority-class pixel share", _fmt(_majority_share(truth))


def _majority_share(classes: Path) -> float:
    import rasterio

    with rasterio.open(classes) as src:
        values = src.read(1)
        keep = values != src.nodata if src.nodata is not None else np.ones(values.shape, bool)
    counts = np.bincount(values[keep].ravel().astype("int64"))
    return float(counts.max() / counts.sum())


def bundled(work: Path) -> Figures:
    folder = work / "bundled"
    folder.mkdir(parents=True, exist_ok=True)
    scene = folder / "scene.nc"
    icetools("synth", "sea-ice", scene, "--size", SCENE_PX, "--seed", HELD_OUT_SEED + 2, "--overwrite")
    icetools("predict", scene, "-o", folder / "sic.tif", "--polygons", "scene")
    icetools("evaluate", folder / "sic.tif", "--truth", folder / "scene.nc.truth.tif", "--polygons", scene,
             "--json", folder / "metrics.json")
    icetools("rasterize", folder / "scene.nc.chart.gpkg", "--like", scene, "-o", folder / "chart_labels.tif")
    found = metrics_of(folder / "metrics.json")
    chart = chart_alone_r2(folder / "chart_labels.tif", folder / "scene.nc.truth.tif")
    yield "bundled model: held-out pixel R2 vs truth (chart alone)", f"{_fmt(found['r2'])} ({_fmt(chart)})"


RUNNERS: dict[str, Callable[[Path], Figures]] = {
    "sea-ice": sea_ice, "recipe": recipe, "lines": lines, "landcover": landcover, "bundled": bundled,
}


def run() -> Figures:
    wanted = [p.strip() for p in os.environ.get("ICETOOLS_SKILL", ",".join(PARTS)).split(",") if p.strip()]
    unknown = sorted(set(wanted) - set(PARTS))
    if unknown:
        raise SystemExit(f"ICETOOLS_SKILL: unknown part(s) {', '.join(unknown)}; parts: {', '.join(PARTS)}")
    keep = os.environ.get("ICETOOLS_SKILL_DIR")
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="icetools-skill-"))
    try:
        for part in wanted:
            start = time.perf_counter()
            yield from RUNNERS[part](work)
            yield f"{part}: whole part (min)", _fmt((time.perf_counter() - start) / 60, 1)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    for figure, value in run():
        print(f"{figure}: {value}", flush=True)
