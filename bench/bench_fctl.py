"""FCtL on synthetic ultra-high-resolution land cover: does context help, and which merge is best?

One run, one table. Two 1024 px ``synth landcover`` scenes (6 classes) give the patches (128 px,
train/val/test 70/15/15 by spatial block); a third scene, another seed, is held out and scored as a
whole (``evaluate``: mIoU, macro F1, pixel accuracy) for:

(a) the local model: ``fctl`` with context_scales [1] (the patch only), overlap averaging;
(b) ``fctl`` with contexts 1, 2, 3 (the patch and windows 2x and 3x its size), overlap averaging;
    then merges of (b): (c) a montage without overlap, (d) overlap averaging at 0.5,
    (e) ``--merge refine`` with a refiner trained ``--from`` (b) itself. The refiner learns on the
    crude masks of (b) over the val blocks (where (b) did not learn) and picks its confidence gate
    on the test blocks; the paper's trick of a 40 % checkpoint is not needed with held-out blocks,
    and a gate chosen on (b)'s own confidence only transfers to (b).

The merges are printed side by side (montage / averaging / refine, and refine minus averaging in
mIoU points), with the refiner's gate as its validation chose it.

Plus the majority-class baseline (the commonest training class everywhere) that any model must
beat, and the time and peak memory of one forward pass per patch of fctl and of the refiner at 128
and 256 px on this CPU (a fresh process each, VmHWM).

The recipe is FCtL's (focal loss gamma 3, Adam with poly decay), except the learning rate: 1e-3
instead of 5e-5, since these small models learn from scratch in a few CPU minutes (fctl width 0.125,
refiner widths 8-16-32). Every training runs a fixed number of steps (EPOCHS x STEPS), with a time
limit as a safety net; about 12 minutes on 2 idle cores in all.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.util import run_child

SIZE = 1024
N_CLASSES = 6
TRAIN_SEEDS = (11, 12)
HELD_OUT_SEED = 13
PATCH = 128
N_PATCHES = 300
BATCH = 8
EPOCHS = 20
STEPS = 30  # per epoch: 600 steps of 8 patches for each fctl
LR = 1e-3
TIME_LIMIT_MIN = 6.0  # a safety net: the step budgets take 1 to 3 minutes per model on 2 idle cores
FCTL_WIDTH = 0.125
REFINER_WIDTHS = [8, 16, 32]
REFINER_EPOCHS = 12
IMAGE_CHANNELS = 3  # the refiner also reads the scene's RGB as the segmentation model reads it
OVERLAP = 0.25
TIMING_SIZES = (128, 256)
TIMING_REPEATS = 10


def _scores(report: dict[str, Any]) -> tuple[float, float, float]:
    metrics = report["metrics"]
    return metrics["miou"], metrics["f1"], metrics["accuracy"]


def _fmt(scores: tuple[float, float, float]) -> str:
    return " / ".join(f"{value:.3f}" for value in scores)


def _make_scenes(folder: Path) -> tuple[list[Path], Path]:
    from icetools.synth import make_landcover_scene

    train = []
    for seed in TRAIN_SEEDS:
        outputs = make_landcover_scene(folder / f"train_{seed}.tif", size=SIZE, seed=seed, n_classes=N_CLASSES)
        train.append(outputs["image"])
    make_landcover_scene(folder / "heldout.tif", size=SIZE, seed=HELD_OUT_SEED, n_classes=N_CLASSES)
    return train, folder / "heldout.tif"


def _labels(image: Path) -> Path:
    return image.with_name(image.name + ".classes.tif")


def _majority_baseline(train: list[Path], held_out: Path, folder: Path) -> tuple[float, float, float]:
    """The commonest class of the training labels, painted over the held-out scene and scored."""
    from icetools.evaluate import evaluate
    from icetools.io.raster import open_raster, write_raster
    from icetools.io.scene import open_scene

    counts = np.zeros(256, dtype="int64")
    for image in train:
        with open_raster(_labels(image)) as ds:
            counts += np.bincount(ds.read(1).ravel(), minlength=256)
    counts[255] = 0
    with open_scene(_labels(held_out)) as truth:
        grid, tags = truth.grid, truth.tags
        truth_classes = truth.read(["class"])[0]
    constant = np.where(np.isfinite(truth_classes), int(counts.argmax()), 255).astype("uint8")
    path = write_raster(folder / "majority.tif", constant, grid, nodata=255, band_names=["class"],
                        tags={"class_names": tags["class_names"]}, categorical=True)
    return _scores(evaluate(path, _labels(held_out)))


def _train(frame, out_dir: Path, **options: Any) -> dict[str, Any]:
    from icetools.training import TrainOptions, train_model

    values = {"epochs": EPOCHS, "steps_per_epoch": STEPS, "batch_size": BATCH, "lr": LR, "patience": 1000,
              "time_limit": TIME_LIMIT_MIN, "workers": 1, "device": "cpu", **options}
    return train_model(frame, out_dir, TrainOptions.from_mapping(values))


def _predict(scene: Path, model_dir: Path, output: Path, **options: Any) -> tuple[tuple[float, float, float], float]:
    from icetools.evaluate import evaluate
    from icetools.inference import PredictJob, predict_scene

    start = time.perf_counter()
    predict_scene(PredictJob(scene, output, _predictor(model_dir), **{"merge": "average", **options}))  # the averaging it names
    seconds = time.perf_counter() - start
    return _scores(evaluate(output, _labels(scene))), seconds


_PREDICTORS: dict[str, Any] = {}


def _predictor(model_dir: Path) -> Any:
    from icetools.inference import load_predictor

    key = str(model_dir)
    if key not in _PREDICTORS:
        _PREDICTORS[key] = load_predictor(model_dir, "cpu")
    return _PREDICTORS[key]


def _training_note(summary: dict[str, Any], steps: int) -> str:
    metrics = summary.get("val_metrics") or {}
    return (f"{summary['epochs_run']} epochs x {steps} steps, {summary['seconds'] / 60:.1f} min, "
            f"best val mIoU {metrics.get('miou', float('nan')):.3f} ({summary['stopped_because']})")


def _gate_note(summary: dict[str, Any]) -> str:
    gate = summary.get("refine_gate")
    if not gate:
        return "none (training did not finish): predict falls back to averaging"
    threshold = "everywhere" if gate["threshold"] is None else f"{gate['threshold']:g}"
    applied = "yes" if gate["beats_crude"] else "no: predict falls back to averaging"
    return f"{threshold}; {gate['crude']:.4f} -> {gate['refined']:.4f}; {applied}"


def _forward_timing(model: str, args: dict[str, Any], windows: int, channels: int, size: int) -> dict[str, float]:
    """ms per patch and peak RSS of a fresh process running the model on one patch at a time."""
    code = f"""
    import statistics, time, torch
    from icetools.models import build_model
    torch.set_num_threads(2)
    model = build_model({model!r}, **{args!r}).eval()
    x = torch.rand(1, {windows}, {channels}, {size}, {size})
    times = []
    with torch.inference_mode():
        for i in range({TIMING_REPEATS} + 2):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    result = {{"ms": statistics.median(times[2:]) * 1000}}
    """
    return run_child(code)


def _timing_rows() -> list[tuple[str, str]]:
    rows = []
    fctl = {"in_channels": 3, "out_channels": N_CLASSES, "width": FCTL_WIDTH, "context_scales": [1.0, 2.0, 3.0]}
    refiner = {"in_channels": N_CLASSES + IMAGE_CHANNELS, "out_channels": N_CLASSES, "widths": REFINER_WIDTHS}
    for size in TIMING_SIZES:
        for label, name, args, windows, channels in (
            (f"fctl width {FCTL_WIDTH:g}, contexts 1,2,3", "fctl", fctl, 3, 3),
            (f"refiner widths {','.join(map(str, REFINER_WIDTHS))}", "refiner", refiner, 2, N_CLASSES + IMAGE_CHANNELS),
        ):
            result = _forward_timing(name, args, windows, channels, size)
            rows.append((f"{label}: forward per {size} px patch (batch 1, 2 threads) / process peak RSS",
                         f"{result['ms']:.0f} ms / {result['peak_rss_mb']:.0f} MB"))
    return rows


def run() -> list[tuple[str, str]]:
    from icetools.io.raster import open_raster
    from icetools.sampling import sample_patches

    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="icetools-bench-fctl-") as tmp:
        folder = Path(tmp)
        train, held_out = _make_scenes(folder)
        frame = sample_patches(train, [_labels(p) for p in train], size=PATCH, n=N_PATCHES, seed=0,
                               min_unseen=0.3)
        counts = frame["split"].value_counts()
        rows.append((f"data: {len(train)} train scenes + 1 held-out, {SIZE} px, {N_CLASSES} classes; "
                     f"{PATCH} px patches train / val / test",
                     f"{counts.get('train', 0)} / {counts.get('val', 0)} / {counts.get('test', 0)}"))
        rows.append(("held-out mIoU / F1 / acc: majority class everywhere (the floor)",
                     _fmt(_majority_baseline(train, held_out, folder))))

        local = _train(frame, folder / "local", model="fctl",
                       model_args={"width": FCTL_WIDTH, "context_scales": [1.0]})
        contexts = _train(frame, folder / "fctl", model="fctl",
                          model_args={"width": FCTL_WIDTH, "context_scales": [1.0, 2.0, 3.0]})
        refiner = _train(frame, folder / "refiner", from_model=str(folder / "fctl"), epochs=REFINER_EPOCHS,
                         model_args={"widths": REFINER_WIDTHS})

        scores_a, _ = _predict(held_out, folder / "local", folder / "a.tif", overlap=OVERLAP)
        scores_c, seconds_c = _predict(held_out, folder / "fctl", folder / "c.tif", overlap=0.0)
        scores_b, seconds_b = _predict(held_out, folder / "fctl", folder / "b.tif", overlap=OVERLAP)
        scores_d, seconds_d = _predict(held_out, folder / "fctl", folder / "d.tif", overlap=0.5)
        scores_e, seconds_e = _predict(held_out, folder / "fctl", folder / "e.tif", overlap=OVERLAP,
                                       merge="refine", refiner=_predictor(folder / "refiner"), probabilities=True)
        with open_raster(folder / "e.tif") as classes, open_raster(folder / "e_probs.tif") as probs:
            class_map, probabilities = classes.read(1), probs.read()
            has_value = class_map != 255
            consistent = bool((class_map[has_value] == probabilities.argmax(axis=0)[has_value]).all()
                              and np.isnan(probabilities[:, ~has_value]).all())

        rows += [
            (f"held-out mIoU / F1 / acc: (a) fctl local only (contexts 1), overlap averaging {OVERLAP:g}",
             _fmt(scores_a)),
            (f"held-out mIoU / F1 / acc: (b) fctl contexts 1,2,3, overlap averaging {OVERLAP:g}", _fmt(scores_b)),
            ("held-out mIoU / F1 / acc: (c) = (b) montage, no overlap", _fmt(scores_c)),
            ("held-out mIoU / F1 / acc: (d) = (b) overlap averaging 0.5", _fmt(scores_d)),
            (f"held-out mIoU / F1 / acc: (e) = (b) + refine (refiner --from (b)), overlap {OVERLAP:g}",
             _fmt(scores_e)),
            ("held-out mIoU side by side: montage (c) / averaging (b) / refine (e); refine - averaging",
             f"{scores_c[0]:.4f} / {scores_b[0]:.4f} / {scores_e[0]:.4f}; "
             f"{100 * (scores_e[0] - scores_b[0]):+.2f} points"),
            ("refiner gate chosen on the test blocks (threshold; val mIoU crude -> refined; applied)",
             _gate_note(refiner)),
            ("predict time on the held-out scene: (c) / (b) / (d) / (e) refine (both passes)",
             f"{seconds_c:.1f} / {seconds_b:.1f} / {seconds_d:.1f} / {seconds_e:.1f} s"),
            ("(e) class map equals the argmax of its --probabilities", "yes" if consistent else "NO"),
            ("training (a) fctl local only", _training_note(local, STEPS)),
            ("training (b) fctl contexts 1,2,3", _training_note(contexts, STEPS)),
            ("training (e) refiner on the crude masks of (b) over its val blocks", _training_note(refiner, STEPS)),
        ]
    rows += _timing_rows()
    return rows


if __name__ == "__main__":
    for figure, value in run():
        print(f"{figure}: {value}")
