"""SIC over a footprint: the merged probabilities smoothed by a Gaussian as their rows stream to the files.

Concentration is the share of an area covered by ice. At 40 m a pixel is ice or water, and a model's
per-pixel output carries the speckle of the pixels it saw; a concentration map needs an area. The
default footprint, a Gaussian of sigma 200 m (full width at half maximum 470 m, some five resolution
cells of Sentinel-1 EW GRDM, about 90 m), is far finer than any chart polygon or passive-microwave
cell, and it raised the held-out pixel R2 of every sea-ice model we trained (``python -m bench skill``).
``--footprint 0`` writes the per-pixel output.

The smoothing is a normalised convolution (scipy.ndimage.gaussian_filter of value x valid, divided by
that of valid): no-data pixels stay no-data and never pull their neighbours towards zero, and a
pixel beside land or the scene's edge averages the valid pixels around it only.
"""

from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from rasterio.windows import Window
from scipy import ndimage

from icetools.inference.windows import RowSink

SIC_FOOTPRINT_M = 200.0
"""Gaussian sigma, in metres, of the area a predicted SIC stands for (``predict --footprint``)."""

TRUNCATE = 4.0  # scipy's default: the kernel reaches 4 sigma
COLUMN_CHUNK = 1024  # columns per thread: scipy.ndimage lets go of the GIL, and on a GPU run the
# smoothing in the writer thread alone set the pace (10k scene on an H200: 5.1 s -> 10.1 s end to end)


def footprint_halo(sigma_px: float) -> int:
    """Rows beyond a strip that its smoothed values depend on (the kernel's radius)."""
    return int(TRUNCATE * sigma_px + 0.5)


def smooth_valid(values: np.ndarray, sigma_px: float) -> np.ndarray:
    """Normalised Gaussian of (K, n, W) ``values`` over rows and columns; NaN stays NaN.

    Wide rows are cut into column chunks (each with the kernel's radius of columns beside it, so the
    result is the same) smoothed in threads.
    """
    width, halo = values.shape[2], footprint_halo(sigma_px)
    if width < 2 * COLUMN_CHUNK:
        return smooth_block(values, sigma_px)
    starts = range(0, width, COLUMN_CHUNK)

    def chunk(c0: int) -> np.ndarray:
        c1 = min(c0 + COLUMN_CHUNK, width)
        lo, hi = max(c0 - halo, 0), min(c1 + halo, width)
        return smooth_block(values[:, :, lo:hi], sigma_px)[:, :, c0 - lo: c1 - lo]

    return np.concatenate(list(_pool().map(chunk, starts)), axis=2)


def smooth_valid_torch(values: np.ndarray, sigma_px: float, device: str) -> np.ndarray:
    """:func:`smooth_valid` on a torch device (a GPU run's): the same kernel, radius and zero padding
    as scipy's, two separable convolutions per array. On an H200 run the CPU threads of
    :func:`smooth_valid` still cost 1.6-2.5 s of a 10k scene's 5-10 s; the GPU does it in passing."""
    import torch
    import torch.nn.functional as F

    halo = footprint_halo(sigma_px)
    taps = np.exp(-0.5 * (np.arange(-halo, halo + 1) / sigma_px) ** 2)
    kernel = torch.as_tensor(taps / taps.sum(), dtype=torch.float32, device=device)
    down, across = kernel.view(1, 1, -1, 1), kernel.view(1, 1, 1, -1)
    with torch.no_grad():
        rows = torch.from_numpy(np.ascontiguousarray(values, dtype="float32")).to(device)
        valid = torch.isfinite(rows)
        both = torch.cat([torch.where(valid, rows, 0.0), valid.float()])[:, None]  # K values, then K weights
        both = F.conv2d(F.conv2d(both, down, padding=(halo, 0)), across, padding=(0, halo))[:, 0]
        total, weight = both[: len(rows)], both[len(rows):]
        smoothed = torch.where(valid, total / weight.clamp_min(1e-12), float("nan"))
        return smoothed.cpu().numpy()


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="icetools-footprint")


def smooth_block(values: np.ndarray, sigma_px: float) -> np.ndarray:
    """:func:`smooth_valid` in one thread, in float32 (half the time of float64, far finer than a SIC
    needs). Where every pixel is valid the weights are the outer product of two 1-D profiles, which
    saves the second 2-D filter."""
    valid = np.isfinite(values)
    sigma = (0.0, sigma_px, sigma_px)
    total = ndimage.gaussian_filter(np.where(valid, values, 0).astype("float32"), sigma, mode="constant",
                                    truncate=TRUNCATE)
    if valid.all():
        rows, cols = (ndimage.gaussian_filter1d(np.ones(n, dtype="float32"), sigma_px, mode="constant",
                                                truncate=TRUNCATE) for n in values.shape[1:])
        return total / (rows[:, None] * cols[None, :])
    weight = ndimage.gaussian_filter(valid.astype("float32"), sigma, mode="constant", truncate=TRUNCATE)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid, total / weight, np.float32(np.nan))


class FootprintRows:
    """A row sink that smooths full-width rows arriving top to bottom before handing them on.

    It holds the rows it has not yet written and ``halo`` rows above them: a row is written once the
    rows ``halo`` below it have come (or the scene has ended), so the result equals
    :func:`smooth_valid` of the whole scene while memory stays at a few strips.
    """

    def __init__(self, write_rows: RowSink, sigma_px: float, *, height: int, width: int, device: str = "cpu") -> None:
        self.write_rows = write_rows
        self.smooth = smooth_valid if device == "cpu" else functools.partial(smooth_valid_torch, device=device)
        self.sigma_px = sigma_px
        self.halo = footprint_halo(sigma_px)
        self.height, self.width = height, width
        self.rows: np.ndarray | None = None  # held rows [first, received)
        self.first = 0  # scene row of self.rows[:, 0]
        self.received = 0
        self.written = 0

    def __call__(self, window: Window, probs: np.ndarray) -> None:
        if int(window.row_off) != self.received:
            raise ValueError(f"rows must arrive in order: expected row {self.received}, got {int(window.row_off)}")
        self.rows = probs if self.rows is None else np.concatenate([self.rows, probs], axis=1)
        self.received += probs.shape[1]
        ready = self.height if self.received >= self.height else self.received - self.halo
        if ready > self.written:
            self._write_until(ready)

    def _write_until(self, end: int) -> None:
        assert self.rows is not None
        below = min(end + self.halo, self.received)
        smoothed = self.smooth(self.rows[:, : below - self.first], self.sigma_px)
        start, stop = self.written - self.first, end - self.first
        self.write_rows(Window(0, self.written, self.width, end - self.written), smoothed[:, start:stop])
        self.written = end
        keep_from = max(self.first, end - self.halo)
        self.rows = self.rows[:, keep_from - self.first:]
        self.first = keep_from


def footprint_sink(write_rows: RowSink, sigma_px: float, *, height: int, width: int, device: str = "cpu") -> RowSink:
    """``write_rows`` itself for no footprint, else a :class:`FootprintRows` in front of it (smoothing
    on ``device``: "cpu", or the GPU the model runs on)."""
    if sigma_px <= 0 or not math.isfinite(sigma_px):
        return write_rows
    return FootprintRows(write_rows, sigma_px, height=height, width=width, device=device)
