"""Benchmark ``icetools predict``: throughput against the bare model, and memory against a whole-scene merge.

Figures:
- sea-ice U-Net (default widths) over a 4096 x 4096 2-band scene (a few minutes on CPU, where
  the default U-Net takes about half a second a window; ICETOOLS_BENCH_PREDICT_SIZE overrides):
  windows/s, Mpx/s, and the model's share of predict's wall time, i.e. the time the model alone
  takes on the same windows in the same batches divided by predict's wall time (target >= 0.85:
  reading, merging and writing overlap the compute);
- the small grounding-line U-Net-ASPP (defaults) on 5000 x 5000 and 10000 x 10000 scenes: peak RSS
  of a subprocess running predict (target < 2 GB and flat with scene size), and of one running a
  whole-scene-in-memory sliding window (MONAI-style: the full image plus full-size sum and count
  buffers) over the same windows, with times.

Each memory figure is the ``ru_maxrss`` of RUSAGE_CHILDREN in a fresh wrapper process whose only
child is the measured run, so one run's peak never hides another's. Scenes are written once,
uncompressed and tiled, into a temporary folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TILE = 256
BATCH = 16
OVERLAP = 0.25
MEMORY_SIZES = (5000, 10000)
STRIP_ROWS = 512

WRAPPER = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(done.stderr)
if done.returncode:
    sys.exit(done.returncode)
print(done.stdout.strip().splitlines()[-1])
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def write_bench_scene(path: Path, size: int, *, seed: int = 0) -> Path:
    """A size x size 2-band float32 scene (HH, HV) with structure and noise, written strip by strip."""
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(seed)
    profile = {
        "driver": "GTiff", "height": size, "width": size, "count": 2, "dtype": "float32", "tiled": True,
        "blockxsize": 512, "blockysize": 512, "crs": "EPSG:3413", "transform": Affine(40, 0, 0, 0, -40, 0),
    }
    cols = np.arange(size, dtype="float32")
    with rasterio.open(path, "w", **profile) as ds:
        ds.set_band_description(1, "HH")
        ds.set_band_description(2, "HV")
        for row in range(0, size, STRIP_ROWS):
            rows = np.arange(row, min(row + STRIP_ROWS, size), dtype="float32")[:, None]
            base = np.sin(rows / 97.0) * np.cos(cols / 131.0)
            noise = rng.normal(scale=0.3, size=(2, *base.shape)).astype("float32")
            block = np.stack([base - 18, 0.5 * base - 25]) + noise
            ds.write(block.astype("float32"), window=((row, row + len(rows)), (0, size)))
    return path


def save_bench_model(directory: Path, name: str) -> Path:
    import torch

    from icetools.modeldir import save_model_dir
    from icetools.models import build_model

    torch.manual_seed(0)
    model = build_model(name, in_channels=2)
    config = {
        "task": "sic" if name == "unet" else "binary",
        "inputs": ["HH", "HV"],
        "normalization": {"mean": [-18.0, -25.0], "std": [1.0, 1.0]},
        "patch_size": TILE,
        "threshold": 0.5,
    }
    save_model_dir(directory, model, config)
    return directory


# ---------------------------------------------------------------------------------------------
# Throughput


def throughput(workdir: Path) -> list[tuple[str, str]]:
    import torch

    from icetools.inference import PredictJob, load_predictor, predict_scene

    cuda = torch.cuda.is_available()
    size = int(os.environ.get("ICETOOLS_BENCH_PREDICT_SIZE", 4096))
    scene = write_bench_scene(workdir / f"scene_{size}.tif", size)
    predictor = load_predictor(save_bench_model(workdir / "unet", "unet"), "auto")
    warm = np.zeros((BATCH, 2, TILE, TILE), dtype="float32")
    predictor(warm)  # kernels chosen, memory pools filled: neither timing pays for it
    summary = predict_scene(
        PredictJob(scene, workdir / "sic.tif", predictor, tile=TILE, overlap=OVERLAP, merge="average", batch=BATCH, overwrite=True)
    )
    wall = summary["seconds"]
    n = summary["windows_predicted"]
    batches = np.random.default_rng(1).normal(size=(BATCH, 2, TILE, TILE)).astype("float32")
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for first in range(0, n, BATCH):
        predictor(batches[: min(BATCH, n - first)])
    if cuda:
        torch.cuda.synchronize()
    forward = time.perf_counter() - start
    where = f"unet (default widths), {size}x{size}, tile {TILE}, batch {BATCH}, {predictor.device}"
    return [
        (f"predict windows/s [{where}]", f"{n / wall:.1f}"),
        (f"predict Mpx/s [{where}]", f"{size * size / 1e6 / wall:.2f}"),
        (f"predict wall s / model-only s [{where}]", f"{wall:.1f} / {forward:.1f}"),
        (f"model share of predict wall time (target >= 0.85) [{where}]", f"{forward / wall:.2f}"),
    ]


# ---------------------------------------------------------------------------------------------
# Memory: streamed vs whole scene in memory, each in its own process


def child(mode: str, scene: str, model_dir: str, output: str) -> None:
    """The measured run: prints one JSON line (seconds)."""
    from icetools.inference import PredictJob, load_predictor, predict_scene

    predictor = load_predictor(model_dir, "auto")
    start = time.perf_counter()
    if mode == "streamed":
        predict_scene(PredictJob(scene, output, predictor, tile=TILE, overlap=OVERLAP, merge="average", batch=BATCH, overwrite=True))
    else:
        whole_scene_sliding_window(scene, predictor, output)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def whole_scene_sliding_window(scene_path: str, predictor, output: str) -> None:
    """MONAI-style: the whole normalised image, full-size sum and count buffers, one write at the end."""
    from icetools.io.raster import write_raster
    from icetools.io.scene import open_scene
    from icetools.inference import plan_windows, window_weights

    with open_scene(scene_path) as scene:
        image = scene.read(list(predictor.inputs))
        grid = scene.grid
    image -= predictor.mean[:, None, None]
    image /= predictor.std[:, None, None]
    valid = np.isfinite(image).all(axis=0)
    image[~np.isfinite(image)] = 0
    _, height, width = image.shape
    plan = plan_windows(height, width, tile=TILE, overlap=OVERLAP)
    weights = window_weights(TILE, "average")
    total = np.zeros((1, height, width), dtype="float32")
    count = np.zeros((height, width), dtype="float32")
    windows = [(r, c) for r in plan.row_starts for c in plan.col_starts]
    for first in range(0, len(windows), BATCH):
        chunk = windows[first : first + BATCH]
        probs = predictor(np.stack([image[:, r : r + TILE, c : c + TILE] for r, c in chunk]))
        for (r, c), p in zip(chunk, probs):
            total[:, r : r + TILE, c : c + TILE] += p * weights
            count[r : r + TILE, c : c + TILE] += weights
    out = np.where(valid & (count > 0), total[0] / np.maximum(count, 1e-12), np.nan).astype("float32")
    write_raster(output, out, grid, nodata=float("nan"), band_names=["probability"], overwrite=True)


def measure(mode: str, scene: Path, model_dir: Path, output: Path) -> tuple[float, float]:
    """(seconds, peak RSS in GB) of one run in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER, sys.executable, __file__, "child", mode, str(scene), str(model_dir), str(output)],
        capture_output=True, text=True, check=False,
    )
    if done.returncode:
        raise RuntimeError(f"{mode} run on {scene.name} failed: {done.stderr.strip().splitlines()[-1:]}")
    result, rss_kb = done.stdout.strip().splitlines()[-2:]
    return json.loads(result)["seconds"], int(rss_kb) / 1024**2


def memory(workdir: Path) -> list[tuple[str, str]]:
    model_dir = save_bench_model(workdir / "unet-aspp", "unet-aspp")
    rows = []
    for size in MEMORY_SIZES:
        scene = write_bench_scene(workdir / f"gl_{size}.tif", size, seed=size)
        for mode in ("streamed", "whole-scene"):
            seconds, rss = measure(mode, scene, model_dir, workdir / f"gl_{size}_{mode}.tif")
            label = f"unet-aspp {size}x{size} {mode}"
            rows.append((f"{label} peak RSS GB" + (" (target < 2, flat)" if mode == "streamed" else ""), f"{rss:.2f}"))
            rows.append((f"{label} seconds", f"{seconds:.1f}"))
        scene.unlink()
    return rows


def run() -> list[tuple[str, str]]:
    with tempfile.TemporaryDirectory(prefix="icetools-bench-predict-") as tmp:
        workdir = Path(tmp)
        return throughput(workdir) + memory(workdir)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child(*sys.argv[2:6])
    else:
        for figure, value in run():
            print(f"{figure}: {value}")
