"""How long ``vectorize`` takes on a full 10k x 10k class raster, and how much memory it holds.

The raster is generated strip by strip (never whole in memory): a blobby field made of three
octaves of bilinearly upsampled noise, cut into five classes, with a nodata "land" disc. Each
vectorization runs in a fresh subprocess so its own peak resident memory (getrusage
ru_maxrss) is measured without the generator's memory mixed in.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from affine import Affine
from pyproj import CRS
from scipy.sparse import csr_matrix

from icetools.grid import Grid
from icetools.io.raster import iter_strips, open_raster_writer

PIXEL_SIZE = 40.0
NODATA = 255
OCTAVES = ((400.0, 1.0), (60.0, 0.35), (8.0, 0.12))  # (cell size in pixels, amplitude)
CLASS_EDGES = np.array([-0.55, -0.2, 0.2, 0.55])

_WORKER = """
import json, resource, sys, time
from icetools.vectorize import vectorize_polygons
kwargs = json.loads(sys.argv[2])
start = time.perf_counter()
frame = vectorize_polygons(sys.argv[1], **kwargs)
print(json.dumps({"seconds": time.perf_counter() - start, "features": len(frame),
                  "max_holes": int(frame.geometry.interiors.map(len).max()),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _interpolation_matrix(n_out: int, cell: float, n_low: int) -> csr_matrix:
    """Sparse bilinear weights from a coarse grid of n_low nodes to n_out pixels."""
    position = (np.arange(n_out) + 0.5) / cell
    lower = np.clip(np.floor(position).astype(np.int64), 0, n_low - 2)
    weight = position - lower
    rows = np.repeat(np.arange(n_out), 2)
    cols = np.stack([lower, lower + 1], axis=1).ravel()
    values = np.stack([1 - weight, weight], axis=1).ravel()
    return csr_matrix((values, (rows, cols)), shape=(n_out, n_low))


def write_blob_raster(path: Path, size: int, *, seed: int = 0) -> Path:
    """A size x size uint8 class raster (classes 0..4, 255 = nodata), written strip by strip."""
    rng = np.random.default_rng(seed)
    octaves = []
    for cell, amplitude in OCTAVES:
        n_low = int(np.ceil(size / cell)) + 2
        coarse = rng.standard_normal((n_low, n_low)) * amplitude
        weights = _interpolation_matrix(size, cell, n_low)
        octaves.append((coarse, weights))
    grid = Grid(size, size, crs=CRS.from_epsg(3413), transform=Affine(PIXEL_SIZE, 0, 0, 0, -PIXEL_SIZE, size * PIXEL_SIZE))
    centre, radius = size * 0.85, size * 0.2
    with open_raster_writer(path, grid, count=1, dtype="uint8", nodata=NODATA, overwrite=True, categorical=True) as out:
        for window in iter_strips(size, size, 1024):
            rows = slice(window.row_off, window.row_off + window.height)
            field = np.zeros((window.height, size))
            for coarse, weights in octaves:
                field += (weights @ (weights[rows] @ coarse).T).T
            classes = np.searchsorted(CLASS_EDGES, field).astype(np.uint8)
            r = np.arange(window.row_off, window.row_off + window.height)[:, None]
            c = np.arange(size)[None, :]
            classes[(r - centre) ** 2 + (c - centre) ** 2 < radius**2] = NODATA
            out.write(classes, window)
    return path


def _measure(path: Path, **kwargs: object) -> dict:
    """Vectorize in a child process; its time, feature count and peak RSS (MB, ru_maxrss is KiB on Linux)."""
    done = subprocess.run(
        [sys.executable, "-c", _WORKER, str(path), json.dumps(kwargs)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(size: int = 10_000) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        raster = write_blob_raster(Path(tmp) / "classes.tif", size)
        for label, kwargs in (
            ("", {}),
            (", --min-area-px 16 --simplify 1.5 px", {"min_area_px": 16, "simplify": 1.5 * PIXEL_SIZE}),
        ):
            r = _measure(raster, **kwargs)
            rows.append((
                f"vectorize {size}x{size} class raster{label}",
                f"{r['seconds']:.1f} s, {r['peak_mb']:.0f} MB peak RSS, {r['features'] / 1000:.1f}k polygons "
                f"(largest hole count {r['max_holes']})",
            ))
    return rows


if __name__ == "__main__":
    for name, value in run(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000):
        print(f"{name}: {value}")
