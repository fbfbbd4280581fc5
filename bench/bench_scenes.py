"""Benchmark many-scene prediction on Dask: scenes per minute with ``predict --jobs 1`` and ``--jobs 2``.

Six 512 x 512 two-band scenes (ICETOOLS_BENCH_SCENES / ICETOOLS_BENCH_SCENE_SIZE override) mapped by
the packaged sea-ice model, each run a fresh ``icetools predict`` process, as a user runs it. Two
figures per run: the whole command's wall time (cluster start and stop, workers importing torch and
loading the model included) and the rate once every worker is warm (from the N-th scene done to the
last, N workers), which is what a long run of many scenes approaches. ``--jobs N`` gives each of N workers cores/N torch
threads, so the gain over ``--jobs 1`` is what one process per scene adds over threads inside one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_predict import write_bench_scene

JOBS = (1, 2)
DONE_LINE = re.compile(r"\.tif: \d+ windows")


def timed_predict(scenes: list[Path], out: Path, jobs: int) -> tuple[float, list[float]]:
    """Wall seconds of one ``icetools predict --jobs`` run, and the time each scene's line appeared."""
    command = [sys.executable, "-m", "icetools", "predict", *map(str, scenes), "-o", f"{out}/", "--jobs", str(jobs),
               "--device", "cpu", "--overwrite"]
    start = time.perf_counter()
    done: list[float] = []
    with subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True) as proc:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if DONE_LINE.search(line):
                done.append(time.perf_counter() - start)
    wall = time.perf_counter() - start
    if proc.returncode or len(done) != len(scenes):
        raise RuntimeError(f"predict --jobs {jobs} failed ({proc.returncode}):\n{''.join(lines[-20:])}")
    return wall, done


def run() -> list[tuple[str, str]]:
    count = int(os.environ.get("ICETOOLS_BENCH_SCENES", 6))
    size = int(os.environ.get("ICETOOLS_BENCH_SCENE_SIZE", 512))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rows = []
    with tempfile.TemporaryDirectory(prefix="icetools-bench-scenes-") as tmp:
        folder = Path(tmp)
        scenes = [write_bench_scene(folder / f"scene_{i}.tif", size, seed=i) for i in range(count)]
        for jobs in JOBS:
            wall, done = timed_predict(scenes, folder / f"out_{jobs}", jobs)
            where = f"{count} scenes {size}x{size}, default model, --jobs {jobs}, {cores} cores"
            rows.append((f"scenes/min, whole command [{where}]", f"{count / wall * 60:.1f} ({wall:.1f} s)"))
            if len(done) > jobs:  # from the jobs-th scene done (every worker busy and warm) to the last
                steady = (len(done) - jobs) / max(done[-1] - done[jobs - 1], 1e-9) * 60
                rows.append((f"scenes/min, workers warm [{where}]", f"{steady:.1f}"))
    return rows


if __name__ == "__main__":
    for figure, value in run():
        print(f"{figure}: {value}")
