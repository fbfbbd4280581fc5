"""Training in several processes on the CPU: samples/s of 2 processes (torchrun, gloo) against 1, and
the share of a step spent waiting for data.

Every run trains the default sea-ice U-Net on fresh 128 px windows of a synthetic 1024 px scene for
``EPOCHS`` epochs of ``SAMPLES`` samples, ``BATCH`` per process and step. Throughput counts the
optimiser steps only (validation and start-up left out) and skips the first epoch, which starts the
loader workers. One process runs twice: with torch's default threads (all cores, as ``icetools train``
runs) and with one thread (as torchrun starts each of its processes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PATCH = 128
SCENE = 1024
EPOCHS = 3
SAMPLES = 32
BATCH = 8
ROOT = Path(__file__).resolve().parents[1]


def _patches(folder: Path) -> Path:
    """A patches file with a blocks layer over one synthetic scene."""
    from bench.bench_train import _write_scene
    from icetools.patches_io import write_patches
    from icetools.sampling import sample_patches_and_blocks

    scene, labels = _write_scene(folder, size=SCENE)
    sampled = sample_patches_and_blocks([scene], [labels], size=PATCH, block_size=256, n=40, seed=0)
    return write_patches(sampled.patches, folder / "patches.gpkg", blocks=sampled.blocks)


def _child(patches: str, out_dir: str) -> None:
    """One process of a run (started by torchrun or alone): train, and on rank 0 print the timings."""
    from icetools.training import TrainOptions, train_model
    from icetools.training.distributed import training_world

    step_s: dict[int, list[float]] = {}
    waits: dict[int, float] = {}

    def progress(event) -> None:
        if event.stage == "step" and event.done in (0, event.total):
            step_s.setdefault(event.info["epoch"], []).append(time.perf_counter())
        elif event.stage == "epoch" and "data_wait_share" in event.info:
            waits[event.info["epoch"]] = event.info["data_wait_share"]

    options = TrainOptions.from_mapping({"epochs": EPOCHS, "samples_per_epoch": SAMPLES, "batch_size": BATCH,
                                         "workers": 1, "device": "cpu", "patience": 100, "overwrite": True})
    with training_world() as world:
        summary = train_model(patches, out_dir, options, checks=False, world=world,
                              progress=progress if world.is_main else None)
    if world.is_main:
        timed = [e for e in sorted(step_s) if e > 1 and len(step_s[e]) == 2]
        seconds = sum(step_s[e][1] - step_s[e][0] for e in timed)
        print(json.dumps({"samples_per_s": SAMPLES * len(timed) / seconds,
                          "data_wait": sum(waits[e] for e in timed) / len(timed),
                          "world_size": summary["world_size"], "threads": _threads()}))


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _run(patches: Path, out_dir: Path, *, processes: int | None, threads: int | None = None) -> dict:
    """Train in a child: under torchrun with ``processes``, or alone (None)."""
    entry = ["-m", "bench.bench_ddp", "child", str(patches), str(out_dir)]
    if processes is None:
        command = [sys.executable, *entry]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
                   *entry]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"training child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run() -> list[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        patches = _patches(folder)
        alone = _run(patches, folder / "one", processes=None)
        one_thread = _run(patches, folder / "one1", processes=None, threads=1)
        two = _run(patches, folder / "two", processes=2)
    setting = f"unet, {PATCH}^2, batch {BATCH} per process, CPU"
    return [
        (f"train throughput, 1 process, {alone['threads']} threads ({setting})", f"{alone['samples_per_s']:.1f} samples/s"),
        (f"train throughput, 1 process, 1 thread ({setting})", f"{one_thread['samples_per_s']:.1f} samples/s"),
        (f"train throughput, torchrun 2 processes x 1 thread, gloo ({setting})", f"{two['samples_per_s']:.1f} samples/s"),
        ("2 processes vs 1 process of 1 thread", f"{two['samples_per_s'] / one_thread['samples_per_s']:.2f}x"),
        (f"2 processes vs 1 process of {alone['threads']} threads", f"{two['samples_per_s'] / alone['samples_per_s']:.2f}x"),
        ("data wait share of a step, 1 process / 2 processes", f"{alone['data_wait']:.1%} / {two['data_wait']:.1%}"),
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        _child(*sys.argv[2:4])
    else:
        for figure, value in run():
            print(f"{figure}: {value}")
