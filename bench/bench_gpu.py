"""The GPU path of predict: a full 10,000 x 10,000 scene end to end with the packaged sea-ice model.

Figures, when CUDA is present (one row saying it is absent otherwise, and nothing is run):
- ``predict_scene`` on a 10,000 x 10,000 two-band float32 GeoTIFF (tiled, uncompressed) and on an
  AI4Arctic-layout netCDF of the same size (zlib level 1, 512 x 512 chunks, as ``synth sea-ice``
  writes them): seconds from opening the scene to the committed SIC GeoTIFF (read, input checks,
  predict, merge, write), and Mpx/s; the first run pays cuDNN autotuning and the CUDA context, the
  second is the steady figure (goal <= 10 s on one H100/H200);
- the model alone on the same number of windows in the same batches, so the share of the wall time
  that the GPU computes says whether reading and writing keep up with it;
- the GPU's map (bf16, channels_last) against the CPU's (float32) on a 1024 x 1024 scene: the largest
  difference in SIC and the share of pixels that differ by more than 0.02;
- training the default sea-ice U-Net on 128 px windows of a 2048 px GeoTIFF scene on the GPU: samples/s
  and the share of a step spent waiting for the DataLoader (goal < 10 %), at train's defaults (batch 8,
  one loader worker) and at a GPU-sized setting (batch 64, 8 workers).

The defaults of ``icetools predict`` apply (the model's patch size as tile, overlap 0.25, average
merge, the batch chosen to fit the GPU's memory, reads prefetched two rows ahead).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

SIZE = int(os.environ.get("ICETOOLS_BENCH_GPU_SIZE", 10_000))
AGREEMENT_SIZE = 1024


def run() -> list[tuple[str, str]]:
    import torch

    if not torch.cuda.is_available():
        return [("10k scene end to end on CUDA", f"skipped: CUDA is absent (torch {torch.__version__})")]
    from bench.bench_predict import write_bench_scene
    from bench.bench_xarray import write_raw_scene
    from icetools.inference import PredictJob, default_model_dir, load_predictor, predict_scene
    from icetools.inference.predictor import choose_batch

    predictor = load_predictor(default_model_dir(), "cuda")
    tile = predictor.patch_size
    device = torch.cuda.get_device_name(predictor.device)
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="icetools-bench-gpu-") as tmp:
        folder = Path(tmp)
        scenes = {"GeoTIFF": write_bench_scene(folder / "scene.tif", SIZE),
                  "AI4Arctic netCDF": write_raw_scene(folder / "scene.nc", height=SIZE, width=SIZE)}
        for kind, scene in scenes.items():
            seconds = []
            for attempt in range(2):
                start = time.perf_counter()
                output = folder / f"sic-{scene.suffix[1:]}-{attempt}.tif"
                summary = predict_scene(PredictJob(scene, output, predictor, batch=None))
                seconds.append(time.perf_counter() - start)
            where = f"{kind} {SIZE} x {SIZE}, default model, tile {tile}, {device}"
            rows.append((f"end to end s, first / second run [{where}]", f"{seconds[0]:.2f} / {seconds[1]:.2f} (goal <= 10)"))
            rows.append((f"Mpx/s, second run [{where}]", f"{SIZE * SIZE / 1e6 / seconds[1]:.1f}"))
        batch = choose_batch(predictor, tile)
        model_only = _model_only(predictor, summary["windows_predicted"], batch, tile)
        rows.append((f"model alone on the same {summary['windows_predicted']} windows, batch {batch} [{device}]",
                     f"{model_only:.2f} s = {model_only / seconds[1]:.0%} of the last end-to-end run"))
        rows.append(_agreement(folder, predictor))
        rows += _training(folder)
    return rows


TRAIN_SETTINGS = ({"batch_size": 8, "workers": 1}, {"batch_size": 64, "workers": 8})
TRAIN_EPOCHS = 4


def _training(folder: Path) -> list[tuple[str, str]]:
    """Samples/s and data-wait share of train on CUDA; epoch 1 (loader start, cuDNN tuning) left out."""
    from bench.bench_train import _write_scene
    from icetools.sampling import sample_patches_and_blocks
    from icetools.training import TrainOptions, train_model

    scene, labels = _write_scene(folder)
    frame = sample_patches_and_blocks([scene], [labels], size=128, block_size=256, n=400, seed=0).patches
    rows = []
    for setting in TRAIN_SETTINGS:
        marks: dict[int, list[float]] = {}
        waits: dict[int, float] = {}

        def progress(event) -> None:
            if event.stage == "step" and event.done in (0, event.total):
                marks.setdefault(event.info["epoch"], []).append(time.perf_counter())
            elif event.stage == "epoch" and event.info.get("data_wait_share") is not None:
                waits[event.info["epoch"]] = event.info["data_wait_share"]

        samples = 16 * setting["batch_size"]
        options = TrainOptions.from_mapping({"epochs": TRAIN_EPOCHS, "samples_per_epoch": samples, "device": "cuda",
                                             "patience": 100, "overwrite": True, **setting})
        train_model(frame, folder / f"run-{setting['batch_size']}", options, checks=False, progress=progress)
        timed = [e for e in sorted(marks) if e > 1 and len(marks[e]) == 2]
        seconds = sum(marks[e][1] - marks[e][0] for e in timed)
        where = f"unet 128^2, batch {setting['batch_size']}, {setting['workers']} loader worker(s)"
        rows.append((f"train samples/s [{where}]", f"{samples * len(timed) / seconds:.0f}"))
        rows.append((f"train data-wait share of a step, epoch {max(waits)} [{where}]", f"{waits[max(waits)]:.1%} (goal < 10 %)"))
    return rows


def _agreement(folder: Path, gpu_predictor) -> tuple[str, str]:
    """The GPU's SIC map against the CPU's on the same small scene."""
    import rasterio

    from bench.bench_predict import write_bench_scene
    from icetools.inference import PredictJob, default_model_dir, load_predictor, predict_scene

    scene = write_bench_scene(folder / "small.tif", AGREEMENT_SIZE, seed=1)
    maps = {}
    for name, predictor in (("cpu", load_predictor(default_model_dir(), "cpu")), ("gpu", gpu_predictor)):
        output = folder / f"small-{name}.tif"
        predict_scene(PredictJob(scene, output, predictor, batch=None))
        with rasterio.open(output) as ds:
            maps[name] = ds.read(1, masked=True).astype("float64")
    difference = np.abs(maps["gpu"] - maps["cpu"])
    return (f"GPU map vs CPU map, {AGREEMENT_SIZE}^2 scene: largest |difference| / share > 0.02",
            f"{float(difference.max()):.4f} / {float((difference > 0.02).mean()):.3%}")


def _model_only(predictor, windows: int, batch: int, tile: int) -> float:
    """Seconds the model takes on ``windows`` windows in batches of ``batch``, copies included."""
    import torch

    data = np.random.default_rng(0).normal(size=predictor.input_shape(batch, tile)).astype("float32")
    predictor(data)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for first in range(0, windows, batch):
        predictor(data[: min(batch, windows - first)])
    torch.cuda.synchronize()
    return time.perf_counter() - start


if __name__ == "__main__":
    for figure, value in run():
        print(f"{figure}: {value}")
