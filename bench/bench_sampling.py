"""Sampling figures: the streamed pass over a 4096 x 4096 two-band scene with SIC labels (speed, and the
peak memory it adds next to the scene's size in memory), drawing 200 patches of 256 px, and the leak that
a patch-by-patch random split would cause on the same windows, next to the block split's."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench.util import run_child

# Peak resident memory of this process only (ru_maxrss can carry the parent's peak over a fork).
_HWM = """
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")
"""

SIZE = 4096
PATCH = 256
N_PATCHES = 200  # a 4096 x 4096 scene holds about 260 windows of 256 px at min_unseen 0.5


def _make_inputs(folder: Path) -> tuple[Path, Path]:
    """A smooth two-band scene (land in one corner) and quadrant SIC labels, written strip by strip."""
    import numpy as np
    from affine import Affine
    from pyproj import CRS

    from icetools.grid import Grid
    from icetools.io.raster import iter_strips, open_raster_writer

    grid = Grid(SIZE, SIZE, crs=CRS.from_epsg(3413), transform=Affine(40.0, 0, 100_000.0, 0, -40.0, -2_000_000.0))
    scene, labels = folder / "scene.tif", folder / "labels.tif"
    land = SIZE // 4
    with open_raster_writer(scene, grid, count=2, dtype="float32", nodata=float("nan"), band_names=["HH", "HV"]) as w1, \
         open_raster_writer(labels, grid, count=2, dtype="float32", nodata=float("nan"),
                            band_names=["polygon_id", "SIC"]) as w2:
        for window in iter_strips(SIZE, SIZE):
            rows, cols = np.mgrid[window.row_off : window.row_off + window.height, 0:SIZE]
            hh = np.sin(rows / 97.0) * np.cos(cols / 53.0)
            data = np.stack([hh, 0.5 * hh]).astype("float32")
            is_land = (rows < land) & (cols < land)
            data[:, is_land] = np.nan
            ids = (1 + (rows >= SIZE // 2) * 2 + (cols >= SIZE // 2)).astype("float32")
            ids[is_land] = 0
            sic = np.where(ids > 0, np.array([0.0, 0.1, 0.5, 0.9, 1.0], dtype="float32")[ids.astype(int)], np.nan)
            w1.write(data, window)
            w2.write(np.stack([ids, sic.astype("float32")]), window)
    return scene, labels


def run() -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        scene, labels = _make_inputs(Path(tmp))
        scan_code = _HWM + f"""
import time
import skimage.measure
from icetools.sampling import scan_scene
before = hwm()
start = time.perf_counter()
cells = scan_scene("{scene}", "{labels}", size={PATCH})
result = {{"seconds": time.perf_counter() - start, "cells": list(cells.valid.shape), "added_mb": hwm() - before}}
"""
        scan = run_child(scan_code)
        small_cache = run_child(scan_code, env=dict(os.environ, GDAL_CACHEMAX="64"))
        megapixels = SIZE * SIZE / 1e6
        full_mb = SIZE * SIZE * 2 * 4 / 2**20
        rows.append((
            "streamed pass (valid + foreground cells)",
            f"{megapixels / scan['seconds']:.0f} Mpx/s ({SIZE}x{SIZE}, 2 bands + 2 label bands, "
            f"{scan['seconds']:.1f} s); cell maps {scan['cells'][0]}x{scan['cells'][1]}",
        ))
        rows.append((
            "peak memory added by the pass",
            f"{small_cache['added_mb']:.0f} MB with GDAL_CACHEMAX=64, {scan['added_mb']:.0f} MB with GDAL's default "
            f"tile cache (scene {full_mb:.0f} MB + labels {full_mb:.0f} MB if read whole)",
        ))
        draw = run_child(f"""
            import time
            import numpy as np
            from icetools.sampling import sample_patches
            start = time.perf_counter()
            frame = sample_patches(["{scene}"], ["{labels}"], size={PATCH}, n={N_PATCHES}, seed=0, min_unseen=0.5,
                                   split_by="block")
            seconds = time.perf_counter() - start
            # The leak: pixels of test windows also inside train windows, with the block split and with a
            # patch-by-patch random split of the very same windows (what the source work did).
            def leak(splits):
                train = np.zeros(({SIZE}, {SIZE}), bool)
                test = np.zeros(({SIZE}, {SIZE}), bool)
                for r, c, s in zip(frame.row_off, frame.col_off, splits):
                    target = train if s == "train" else test if s == "test" else None
                    if target is not None:
                        target[r : r + {PATCH}, c : c + {PATCH}] = True
                return float((train & test).sum() / max(test.sum(), 1))
            random_splits = np.random.default_rng(0).choice(["train", "val", "test"], p=[0.7, 0.15, 0.15],
                                                            size=len(frame))
            result = {{"seconds": seconds, "patches": len(frame), "stop": frame.attrs["stats"]["stop_reason"],
                       "candidates": frame.attrs["stats"]["candidates"],
                       "per_split": frame.split.value_counts().to_dict(),
                       "leak_block": leak(frame.split), "leak_random": leak(random_splits)}}
        """)
        rows.append((
            f"sample {N_PATCHES} patches of {PATCH} px (scan + draw)",
            f"{draw['seconds']:.1f} s; {draw['patches']} patches from {draw['candidates']} candidates "
            f"({draw['stop']}); per split {draw['per_split']}",
        ))
        rows.append((
            "test pixels also in train patches",
            f"block split {draw['leak_block']:.1%}; random patch-by-patch split of the same windows "
            f"{draw['leak_random']:.1%}",
        ))
    return rows


if __name__ == "__main__":
    for figure, value in run():
        print(f"{figure}: {value}")
