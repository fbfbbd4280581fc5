"""The streaming sliding-window engine: window layout, weights, strips and the rolling accumulator.

For each row of windows ONE strip of the scene (the window rows, plus the context margins of a
context model) is read across the full width, cut into windows, run in batches, and merged into a
rolling accumulator of weighted sums sum(w * p) and sum(w) only ``tile`` rows high. Rows that no
later window touches are final: they are divided and written at once. Peak memory is therefore a
strip, whatever the scene size, where whole-scene sliding windows (MONAI's, say) hold the image and
two full-size buffers.

Everything here takes arrays and callables only, so a second pass over a crude mosaic (a refinement
model) reuses it unchanged, and tests can drive it with a fixed convolution.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from rasterio.windows import Window

from icetools.contexts import context_window, read_contexts
from icetools.errors import ConfigError
from icetools.inference.prefetch import prefetched
from icetools.io.scene import clamp_window, pad_array
from icetools.progress import Progress, report

TILE_MULTIPLE = 16  # four 2x poolings: every model here accepts sides that are multiples of 16
MAX_OVERLAP = 0.9
WEIGHTINGS = ("average", "gaussian")
GAUSSIAN_SIGMA_FRACTION = 1 / 8  # nnU-Net's choice: sigma = tile / 8
GAUSSIAN_MIN_WEIGHT = 1e-3  # relative to the centre, so window edges still count where nothing else does
QUEUED_TASKS = 8  # batches to merge and rows to write queued behind the model before it waits
PREFETCH_ROWS = 1  # window rows read and stacked ahead of the model (plus the one being read): on 2 cores,
# packaged model, 2560^2 AI4Arctic netCDF, medians of 3 runs, 0 / 1 / 2 rows ahead took 11.2 / 10.2 / 11.0 s
# (a 3x3 convolution for a model: 1.75 / 1.43 / 1.41 s): one row helps, more does not
WINDOWS_STAGE = "windows"  # the progress stage: windows done of windows in all

BatchPredictor = Callable[[np.ndarray], np.ndarray]  # (B, [T,] C, H, W) -> (B, K, H, W) probabilities
RowSink = Callable[[Window, np.ndarray], None]  # full-width rows, (K, n, W) with NaN = no data


# --------------------------------------------------------------------------------------------
# Window layout and weights


@dataclass(frozen=True)
class WindowPlan:
    """Where the windows go: tile-sized, ``stride`` apart, the last of each row/column shifted inward."""

    height: int
    width: int
    tile: int
    stride: int
    row_starts: tuple[int, ...]
    col_starts: tuple[int, ...]

    @property
    def n_windows(self) -> int:
        return len(self.row_starts) * len(self.col_starts)

    @property
    def accumulator_rows(self) -> int:
        """Rows the rolling accumulator needs: one window row, or the scene if shorter."""
        return min(self.tile, self.height)

    def final_row_after(self, index: int) -> int:
        """Rows above this are final once window row ``index`` is merged (no later window touches them)."""
        return self.row_starts[index + 1] if index + 1 < len(self.row_starts) else self.height


def window_starts(length: int, tile: int, stride: int) -> tuple[int, ...]:
    """Offsets along one axis; the last window ends at the edge instead of running past it."""
    if length <= tile:
        return (0,)  # the one window runs past the edge: padded by reflection, cropped back
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return tuple(starts)


def plan_windows(height: int, width: int, *, tile: int, overlap: float) -> WindowPlan:
    check_tiling(tile, overlap)
    stride = max(1, int(round(tile * (1 - overlap))))
    return WindowPlan(height, width, tile, stride, window_starts(height, tile, stride), window_starts(width, tile, stride))


def check_tiling(tile: int, overlap: float) -> None:
    if not isinstance(tile, int) or tile < TILE_MULTIPLE or tile % TILE_MULTIPLE:
        raise ConfigError(f"tile {tile} must be a positive multiple of {TILE_MULTIPLE} (e.g. 256 or 512)")
    if not (0 <= overlap <= MAX_OVERLAP):
        raise ConfigError(f"overlap {overlap} must lie in [0, {MAX_OVERLAP}] (a fraction of the tile; 0.25 is usual)")


def check_batch(batch: int | None) -> None:
    """None is allowed: the batch is then chosen for the device (see ``predictor.choose_batch``)."""
    if batch is not None and batch < 1:
        raise ConfigError(f"batch {batch} must be at least 1")


def window_weights(tile: int, merge: str) -> np.ndarray:
    """(tile, tile) weights of one window's pixels: uniform, or a Gaussian taper that favours centres."""
    if merge == "average":
        return np.ones((tile, tile), dtype="float32")
    if merge == "gaussian":
        centre = (tile - 1) / 2
        sigma = tile * GAUSSIAN_SIGMA_FRACTION
        axis = np.exp(-((np.arange(tile) - centre) ** 2) / (2 * sigma**2))
        weights = np.outer(axis, axis)
        return np.maximum(weights / weights.max(), GAUSSIAN_MIN_WEIGHT).astype("float32")
    raise ConfigError(f"unknown merge {merge!r}: use {' or '.join(WEIGHTINGS)}")


# --------------------------------------------------------------------------------------------
# Strips: what is read once per window row


@dataclass
class Strip:
    """Full-width rows of normalised inputs (NaN where invalid) and their validity.

    ``read`` cuts any window from it exactly as ``Scene.read(..., pad_mode="reflect")`` would, so
    context windows reaching past the scene edge are reflected about the scene's own edge.
    """

    row_off: int
    data: np.ndarray  # (C, h, W) float32
    valid: np.ndarray  # (h, W) bool
    scene_shape: tuple[int, int]
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def rows(self) -> tuple[int, int]:
        return self.row_off, self.row_off + self.data.shape[1]

    def read(self, window: Window) -> np.ndarray:
        inner, pad = clamp_window(window, *self.scene_shape)
        top = int(inner.row_off) - self.row_off
        if top < 0 or top + int(inner.height) > self.data.shape[1]:
            raise RuntimeError(f"window {window} reaches outside the strip of rows {self.rows}")
        cols = slice(int(inner.col_off), int(inner.col_off + inner.width))
        return pad_array(self.data[:, top : top + int(inner.height), cols], pad, "reflect")

    def valid_rows(self, start: int, stop: int) -> np.ndarray:
        return self.valid[start - self.row_off : stop - self.row_off]


StripReader = Callable[[int, int], Strip]  # (row0, row1) -> the scene rows [row0, row1)


def array_strip_reader(data: np.ndarray, *, valid: np.ndarray | None = None) -> StripReader:
    """Strips of an in-memory (C, H, W) array (tests, a crude mosaic held in memory, benchmarks)."""
    valid = np.isfinite(data).all(axis=0) if valid is None else valid

    def read(row0: int, row1: int) -> Strip:
        return Strip(row0, data[:, row0:row1].astype("float32", copy=True), valid[row0:row1], data.shape[1:])

    return read


def context_margin(tile: int, scales: Sequence[float]) -> int:
    """Rows above and below a window row that its context windows reach."""
    probe = Window(0, 0, tile, tile)
    margin = 0
    for scale in scales:
        ctx = context_window(probe, scale)
        margin = max(margin, -int(ctx.row_off), int(ctx.row_off + ctx.height) - tile)
    return margin


def strip_rows(plan: WindowPlan, index: int, margin: int) -> tuple[int, int]:
    """Scene rows (clamped) that window row ``index`` and its contexts need."""
    start = plan.row_starts[index]
    return max(0, start - margin), min(plan.height, start + plan.tile + margin)


def stack_windows(strip: Strip, windows: Sequence[Window], scales: Sequence[float]) -> np.ndarray:
    """(B, C, H, W) for plain models, (B, T, C, H, W) for context models; NaN becomes 0 (the mean)."""
    if tuple(scales) == (1.0,):
        stack = np.stack([strip.read(w) for w in windows])
    else:
        stack = np.stack([read_contexts(strip.read, w, scales) for w in windows])
    stack[~np.isfinite(stack)] = 0.0
    return np.ascontiguousarray(stack, dtype="float32")


# --------------------------------------------------------------------------------------------
# The rolling accumulator and the merge loop


class RowAccumulator:
    """sum(w * p) and sum(w) for ``rows`` scene rows starting at ``top``, full width."""

    def __init__(self, channels: int, rows: int, width: int) -> None:
        self.num = np.zeros((channels, rows, width), dtype="float32")
        self.den = np.zeros((rows, width), dtype="float32")
        self.top = 0

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.num.shape  # type: ignore[return-value]

    def add(self, probs: np.ndarray, weights: np.ndarray, *, row: int, col: int) -> None:
        """Add one window's (K, h, w) probabilities with (h, w) weights at scene (row, col)."""
        h, w = weights.shape
        r = row - self.top
        if r < 0 or r + h > self.den.shape[0]:
            raise RuntimeError(f"rows {row}..{row + h} lie outside the accumulator ({self.top}..{self.top + self.den.shape[0]})")
        self.num[:, r : r + h, col : col + w] += probs * weights
        self.den[r : r + h, col : col + w] += weights

    def pop(self, until: int, valid: np.ndarray) -> np.ndarray:
        """Divide rows [top, until), NaN where no weight or invalid input; shift the rest up."""
        n = until - self.top
        num, den = self.num[:, :n], self.den[:n]
        keep = (den > 0) & valid
        mean = np.full(num.shape, np.nan, dtype="float32")
        np.divide(num, den, out=mean, where=keep[None])
        rows = self.den.shape[0]
        self.num[:, : rows - n] = self.num[:, n:]
        self.num[:, rows - n :] = 0
        self.den[: rows - n] = self.den[n:]
        self.den[rows - n :] = 0
        self.top = until
        return mean


@dataclass
class _RowWork:
    """One window row made ready by the reader thread: its strip and the stacked batches to predict."""

    index: int
    strip: Strip
    windows: list[tuple[int, np.ndarray]]  # (column, valid mask of the in-scene part) per window predicted
    batches: list[np.ndarray]
    skipped: int


@dataclass
class MergeStats:
    windows: int = 0
    windows_predicted: int = 0
    valid_pixels: int = 0
    accumulator_shape: tuple[int, ...] = ()
    seconds: float = 0.0


def sliding_window_merge(
    read_strip: StripReader,
    predict_batch: BatchPredictor,
    plan: WindowPlan,
    *,
    channels: int,
    weights: np.ndarray,
    write_rows: RowSink,
    batch: int = 8,
    context_scales: Sequence[float] = (1.0,),
    progress: Progress | None = None,
    prefetch: int = PREFETCH_ROWS,
) -> MergeStats:
    """Predict every window of ``plan`` and hand finished full-width rows to ``write_rows`` in order.

    ``read_strip(row0, row1)`` returns the scene rows [row0, row1) as a :class:`Strip`. Four stages
    overlap, each in its own thread: reading a window row and stacking its batches (``prefetch`` rows
    ahead, see :mod:`.prefetch`; 0 reads in the calling thread), the model (the calling thread, so
    CUDA stays on it), accumulating, and writing; the calling thread only feeds the model. Windows
    without a single valid pixel are not predicted; every scene row reaches ``write_rows`` exactly
    once, top to bottom. Progress: ``windows`` events.
    """
    check_batch(batch)
    start_time = time.perf_counter()
    stats = MergeStats(windows=plan.n_windows)
    margin = context_margin(plan.tile, context_scales)
    accumulator = RowAccumulator(channels, plan.accumulator_rows, plan.width)
    stats.accumulator_shape = accumulator.shape

    def prepare(index: int) -> _RowWork:
        strip = read_strip(*strip_rows(plan, index, margin))
        row = plan.row_starts[index]
        rows_here = min(plan.tile, plan.height - row)
        windows = []
        for col in plan.col_starts:
            valid = strip.valid[row - strip.row_off : row - strip.row_off + rows_here, col : col + min(plan.tile, plan.width - col)]
            if valid.any():
                windows.append((col, valid))
        batches = [
            stack_windows(strip, [Window(c, row, plan.tile, plan.tile) for c, _ in windows[i : i + batch]], context_scales)
            for i in range(0, len(windows), batch)
        ]
        return _RowWork(index, strip, windows, batches, len(plan.col_starts) - len(windows))

    def accumulate(work: _RowWork, first: int, probs: np.ndarray) -> None:
        row = plan.row_starts[work.index]
        for (col, valid), p in zip(work.windows[first : first + len(probs)], probs):
            h, w = valid.shape
            accumulator.add(p[:, :h, :w], weights[:h, :w] * valid, row=row, col=col)

    def finish_row(work: _RowWork) -> tuple[Window, np.ndarray]:
        top, until = accumulator.top, plan.final_row_after(work.index)
        return Window(0, top, plan.width, until - top), accumulator.pop(until, work.strip.valid_rows(top, until))

    done = 0
    queued: list[Future] = []
    rows = (prepare(index) for index in range(len(plan.row_starts)))
    with prefetched(rows, depth=prefetch) as works, ThreadPoolExecutor(
        1, thread_name_prefix="icetools-merge"
    ) as merger, ThreadPoolExecutor(1, thread_name_prefix="icetools-write") as writer:
        for index, work in enumerate(works):
            row = plan.row_starts[index]
            stats.valid_pixels += int(work.strip.valid_rows(row, plan.final_row_after(index)).sum())
            done += work.skipped
            first = 0
            for stack in work.batches:
                probs = predict_batch(stack)
                _check_shape(probs, channels, plan.tile)
                queued.append(merger.submit(accumulate, work, first, probs))
                first += len(probs)
                stats.windows_predicted += len(probs)
                done += len(probs)
                report(progress, WINDOWS_STAGE, done, plan.n_windows)
            if not work.batches:
                report(progress, WINDOWS_STAGE, done, plan.n_windows)
            finished = merger.submit(finish_row, work)
            queued.append(finished)
            queued.append(writer.submit(lambda f=finished: write_rows(*f.result())))
            while len(queued) > QUEUED_TASKS:
                queued.pop(0).result()  # bounds memory, and raises the first error of any stage
        for future in queued:
            future.result()
    stats.seconds = time.perf_counter() - start_time
    return stats


def _check_shape(probs: np.ndarray, channels: int, tile: int) -> None:
    if probs.shape[1] != channels or probs.shape[2:] != (tile, tile):
        raise ConfigError(
            f"the model returned shape {tuple(probs.shape[1:])} for {tile} x {tile} windows; "
            f"expected ({channels}, {tile}, {tile})"
        )
