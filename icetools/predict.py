"""Sliding-window inference over a full scene, streamed window-row by window-row.

For each row of windows ONE strip of the scene (the window rows, plus the context margins of a
context model) is read across the full width, cut into windows, run in batches, and merged into a
rolling accumulator of weighted sums sum(w * p) and sum(w) only ``tile`` rows high. Rows that no
later window touches are final: they are divided and written at once. Peak memory is therefore a
strip, whatever the scene size, where whole-scene sliding windows (MONAI's, say) hold the image and
two full-size buffers.

The machinery (:func:`plan_windows`, :func:`window_weights`, :class:`RowAccumulator`,
:func:`sliding_window_merge`) takes arrays and callables only, so a second pass over a crude
mosaic (a refinement model) can reuse it unchanged, and tests can drive it with a fixed convolution.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from rasterio.windows import Window

from icetools import __version__
from icetools.contexts import context_window, read_contexts
from icetools.errors import ConfigError, CRSError, DataError, MissingVariableError
from icetools.io.atomic import check_output
from icetools.io.raster import iter_strips, open_raster, open_raster_writer
from icetools.io.scene import Scene, clamp_window, open_scene, pad_array

if TYPE_CHECKING:
    import torch
    from torch import nn

    from icetools.grid import Grid

MERGES = ("average", "gaussian", "refine")
TASKS = ("sic", "binary", "multiclass")
DEFAULT_TILE = 256
TILE_MULTIPLE = 16  # four 2x poolings: every model here accepts sides that are multiples of 16
MAX_OVERLAP = 0.9
GAUSSIAN_SIGMA_FRACTION = 1 / 8  # nnU-Net's choice: sigma = tile / 8
GAUSSIAN_MIN_WEIGHT = 1e-3  # relative to the centre, so window edges still count where nothing else does
ICE_EDGE_SIC = 0.15  # the usual ice-edge concentration: ice where SIC >= 15 %
PERCENT_NODATA = 255  # never 0, which is open water
MASK_NODATA = 255
QUEUED_TASKS = 8  # batches to merge and rows to write queued behind the model before it waits

BatchPredictor = Callable[[np.ndarray], np.ndarray]  # (B, [T,] C, H, W) -> (B, K, H, W) probabilities
RowSink = Callable[[Window, np.ndarray], None]  # full-width rows, (K, n, W) with NaN = no data
Progress = Callable[[int, int], None]  # (windows done, windows in all)


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
        raise ConfigError(f"--tile {tile} must be a positive multiple of {TILE_MULTIPLE} (e.g. 256 or 512)")
    if not (0 <= overlap <= MAX_OVERLAP):
        raise ConfigError(f"--overlap {overlap} must lie in [0, {MAX_OVERLAP}] (a fraction of the tile; 0.25 is usual)")


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
    raise ConfigError(f"unknown --merge {merge!r}: use average or gaussian")


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


def array_strip_reader(data: np.ndarray, *, valid: np.ndarray | None = None) -> Callable[[int, int], Strip]:
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
    read_strip: Callable[[int, int], Strip],
    predict_batch: BatchPredictor,
    plan: WindowPlan,
    *,
    channels: int,
    weights: np.ndarray,
    write_rows: RowSink,
    batch: int = 8,
    context_scales: Sequence[float] = (1.0,),
    progress: Progress | None = None,
) -> MergeStats:
    """Predict every window of ``plan`` and hand finished full-width rows to ``write_rows`` in order.

    ``read_strip(row0, row1)`` returns the scene rows [row0, row1) as a :class:`Strip`. Four stages
    overlap, each in its own thread: reading a window row and stacking its batches (one row ahead),
    the model (the calling thread, so CUDA stays on it), accumulating, and writing; the calling
    thread only feeds the model. Windows without a single valid pixel are not predicted; every scene
    row reaches ``write_rows`` exactly once, top to bottom.
    """
    if batch < 1:
        raise ConfigError(f"--batch {batch} must be at least 1")
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
    with ThreadPoolExecutor(1, thread_name_prefix="icetools-read") as reader, ThreadPoolExecutor(
        1, thread_name_prefix="icetools-merge"
    ) as merger, ThreadPoolExecutor(1, thread_name_prefix="icetools-write") as writer:
        next_work = reader.submit(prepare, 0)
        for index, row in enumerate(plan.row_starts):
            work = next_work.result()
            if index + 1 < len(plan.row_starts):
                next_work = reader.submit(prepare, index + 1)
            stats.valid_pixels += int(work.strip.valid_rows(row, plan.final_row_after(index)).sum())
            done += work.skipped
            first = 0
            for stack in work.batches:
                probs = predict_batch(stack)
                if probs.shape[1] != channels or probs.shape[2:] != (plan.tile, plan.tile):
                    raise ConfigError(
                        f"the model returned shape {tuple(probs.shape[1:])} for {plan.tile} x {plan.tile} windows; "
                        f"expected ({channels}, {plan.tile}, {plan.tile})"
                    )
                queued.append(merger.submit(accumulate, work, first, probs))
                first += len(probs)
                stats.windows_predicted += len(probs)
                done += len(probs)
                if progress is not None:
                    progress(done, plan.n_windows)
            if progress is not None and not work.batches:
                progress(done, plan.n_windows)
            finished = merger.submit(finish_row, work)
            queued.append(finished)
            queued.append(writer.submit(lambda f=finished: write_rows(*f.result())))
            while len(queued) > QUEUED_TASKS:
                queued.pop(0).result()  # bounds memory, and raises the first error of any stage
        for future in queued:
            future.result()
    stats.seconds = time.perf_counter() - start_time
    return stats


# --------------------------------------------------------------------------------------------
# The model side: normalisation, device, logits -> probabilities


@dataclass
class Predictor:
    """A model in eval mode plus what ``config.json`` says about its inputs and outputs."""

    model: nn.Module
    config: dict[str, Any]
    device: torch.device
    task: str
    inputs: tuple[str, ...] | None
    mean: np.ndarray | None
    std: np.ndarray | None
    context_scales: tuple[float, ...]
    patch_size: int
    in_channels: int | None
    source: str = ""
    window_axis: bool = False  # a context model: (B, T, C, H, W) even when T = 1
    _out_channels: int | None = field(default=None, repr=False)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(B, [T,] C, H, W) normalised inputs -> (B, K, H, W) float32 probabilities."""
        import torch

        if self.window_axis and batch.ndim == 4:
            batch = batch[:, None]  # the engine stacks windows only for T > 1
        cuda = self.device.type == "cuda"
        x = torch.from_numpy(batch).to(self.device)  # a plain copy: pinning a fresh buffer per batch costs more
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()
        with torch.inference_mode(), autocast:
            logits = self.model(x)
            if isinstance(logits, (tuple, list)):
                logits = logits[0]
            logits = logits.float()
            probs = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
        return probs.cpu().numpy()

    def out_channels(self) -> int:
        """Channels the model returns: from its spec, else from one small forward pass (any nn.Module)."""
        if self._out_channels is None:
            declared = (getattr(self.model, "spec", None) or {}).get("args", {}).get("out_channels")
            if isinstance(declared, int):
                self._out_channels = declared
            else:
                shape: tuple[int, ...] = (self.in_channels or len(self.inputs or ()) or 1, 32, 32)
                if self.context_scales != (1.0,):
                    shape = (len(self.context_scales), *shape)
                self._out_channels = int(self(np.zeros((1, *shape), dtype="float32")).shape[1])
        return self._out_channels


def resolve_device(name: str | None = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU; a named CUDA device must exist."""
    import torch

    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {name!r} is not a device: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA GPU is available here; use --device cpu or auto")
    return device


def _model_in_channels(model: nn.Module, config: dict[str, Any]) -> int | None:
    args = (config.get("model") or {}).get("args") or getattr(model, "spec", {}).get("args", {})
    if isinstance(args.get("in_channels"), int):
        return int(args["in_channels"])
    value = getattr(model, "in_channels", None)  # a bare nn.Conv2d, e.g. in tests
    return int(value) if isinstance(value, int) else None


def make_predictor(model: nn.Module, config: dict[str, Any], *, device: str | torch.device | None = "auto", source: str = "") -> Predictor:
    """Check ``config`` against the contract written by ``train`` and put the model on ``device``."""
    from icetools.models import context_scales_of

    task = config.get("task", "sic")
    if task not in TASKS:
        raise ConfigError(f"the model's task {task!r} is unknown: expected one of {', '.join(TASKS)}")
    inputs = config.get("inputs")
    if inputs is not None and not (isinstance(inputs, list) and inputs and all(isinstance(n, str) for n in inputs)):
        raise ConfigError(f'config "inputs" must be a list of band names, got {inputs!r}')
    in_channels = _model_in_channels(model, config)
    if inputs is not None and in_channels is not None and len(inputs) != in_channels:
        raise ConfigError(f"config.json names {len(inputs)} input bands but the model takes {in_channels}: the model directory is inconsistent")
    mean = std = None
    norm = config.get("normalization")
    if norm:
        try:
            mean = np.asarray(norm["mean"], dtype="float32").reshape(-1)
            std = np.asarray(norm["std"], dtype="float32").reshape(-1)
        except (KeyError, TypeError, ValueError):
            raise ConfigError('config "normalization" must be {"mean": [...], "std": [...]}') from None
        expected = len(inputs) if inputs is not None else in_channels
        if mean.size != std.size or (expected is not None and mean.size != expected):
            raise ConfigError(
                f"normalization has {mean.size} means and {std.size} stds for {expected} input bands: "
                "the model directory is inconsistent"
            )
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise ConfigError("normalization statistics must be finite with std > 0")
    patch = config.get("patch_size", DEFAULT_TILE)
    if not isinstance(patch, int) or patch < 1:
        raise ConfigError(f'config "patch_size" must be a positive integer, got {patch!r}')
    torch_device = resolve_device(device) if not hasattr(device, "type") else device
    model = model.to(torch_device).eval()
    return Predictor(
        model=model,
        config=config,
        device=torch_device,  # type: ignore[arg-type]
        task=task,
        inputs=tuple(inputs) if inputs is not None else None,
        mean=mean,
        std=std,
        context_scales=context_scales_of(model),
        patch_size=patch,
        in_channels=in_channels,
        source=source,
        window_axis=hasattr(model, "context_scales"),
    )


def load_predictor(model_dir: str | Path, device: str | torch.device | None = "auto") -> Predictor:
    """Rebuild the model of a model directory and ready it for :func:`predict_scene`."""
    from icetools.checkpoint import load_model_dir

    model, config = load_model_dir(model_dir)
    return make_predictor(model, config, device=device, source=str(model_dir))


def default_model_dir() -> Path:
    """The sea-ice model shipped inside the package; ConfigError until one is installed."""
    import icetools

    path = Path(icetools.__file__).parent / "data" / "default_sic_model"
    if not (path / "config.json").is_file():
        raise ConfigError("no default model is installed: pass -m MODEL_DIR")
    return path


# --------------------------------------------------------------------------------------------
# From a scene to strips


def scene_inputs(scene: Scene, predictor: Predictor) -> list[str]:
    """The scene bands the model reads, every missing one named at once."""
    wanted = list(predictor.inputs) if predictor.inputs is not None else list(scene.default_inputs)
    missing = []
    for name in wanted:
        try:
            scene.resolve([name])
        except MissingVariableError:
            missing.append(name)
    if missing:
        raise MissingVariableError(
            f"{scene.path.name} lacks band(s) {', '.join(missing)} that the model needs; "
            f"bands found: {', '.join(scene.band_names)}"
        )
    if predictor.in_channels is not None and len(wanted) != predictor.in_channels:
        raise DataError(
            f"the model takes {predictor.in_channels} bands but {scene.path.name} offers {len(wanted)} "
            f"({', '.join(wanted)}): name the bands (band descriptions) or use a matching model"
        )
    return scene.resolve(wanted)


def scene_strip_reader(
    scene: Scene,
    names: Sequence[str],
    *,
    mean: np.ndarray | None,
    std: np.ndarray | None,
    lock: threading.Lock,
) -> Callable[[int, int], Strip]:
    """Read full-width rows of ``names`` and normalise them ((x - mean) / std, NaN kept)."""
    # Scenes with their own validity rule (AI4Arctic ready-to-train: all-zero SAR is land) are asked
    # for it; for the others finite inputs are the rule and a second read is spared.
    own_rule = type(scene).valid_mask is not Scene.valid_mask

    def read(row0: int, row1: int) -> Strip:
        window = Window(0, row0, scene.width, row1 - row0)
        with lock:
            data = scene.read(names, window)
            valid = scene.valid_mask(window, names) if own_rule else np.isfinite(data).all(axis=0)
        if own_rule:
            valid &= np.isfinite(data).all(axis=0)
        if mean is not None and std is not None:
            data -= mean[:, None, None]
            data /= std[:, None, None]
        return Strip(row0, data, valid, (scene.height, scene.width))

    return read


# --------------------------------------------------------------------------------------------
# Products: how merged probabilities become files


@dataclass(frozen=True)
class Product:
    """One output file and how to render it from merged (K, n, W) probabilities (NaN = no data)."""

    path: Path
    dtype: str
    nodata: float
    band_names: tuple[str, ...]
    render: Callable[[np.ndarray], np.ndarray]
    categorical: bool = False
    tags: dict[str, str] = field(default_factory=dict)


def sic_of(probs: np.ndarray) -> np.ndarray:
    """SIC 0..1 from one sigmoid channel, or the expected value of K evenly spaced classes (0, .., 1)."""
    if probs.shape[0] == 1:
        return probs[0]
    levels = np.linspace(0.0, 1.0, probs.shape[0], dtype="float32")
    return np.tensordot(levels, probs, axes=1)


def to_percent(sic: np.ndarray) -> np.ndarray:
    """uint8 0..100 with 255 for no data (0 is open water)."""
    out = np.full(sic.shape, PERCENT_NODATA, dtype="uint8")
    finite = np.isfinite(sic)
    out[finite] = np.clip(np.rint(sic[finite] * 100), 0, 100).astype("uint8")
    return out


def to_mask(values: np.ndarray, threshold: float) -> np.ndarray:
    """uint8 1 where values >= threshold, 0 below, 255 for no data."""
    out = np.full(values.shape, MASK_NODATA, dtype="uint8")
    finite = np.isfinite(values)
    out[finite] = values[finite] >= threshold
    return out


def _binary_probability(probs: np.ndarray) -> np.ndarray:
    return probs[0] if probs.shape[0] == 1 else probs[1]


def _classes(probs: np.ndarray) -> np.ndarray:
    out = np.argmax(np.nan_to_num(probs, nan=-1.0), axis=0).astype("uint8")
    out[~np.isfinite(probs[0])] = MASK_NODATA
    return out


def sibling(output: Path, suffix: str) -> Path:
    """OUT_stem + suffix beside OUT (e.g. sic.tif -> sic_mask.tif)."""
    return output.with_name(output.stem + suffix)


def plan_products(
    output: Path,
    predictor: Predictor,
    *,
    channels: int,
    percent: bool,
    ice_water: bool,
    probabilities: bool,
    polygons: bool,
) -> list[Product]:
    """Every file this run writes, checked against the task before any work starts."""
    task = predictor.task
    config = predictor.config
    for flag, wanted, tasks in (
        ("--percent", percent, ("sic",)),
        ("--ice-water", ice_water, ("sic",)),
        ("--polygons", polygons, ("sic",)),
        ("--probabilities", probabilities, ("multiclass",)),
    ):
        if wanted and task not in tasks:
            raise ConfigError(f"{flag} applies to {' or '.join(tasks)} models; this model's task is {task!r}")
    if task == "sic":
        if percent:
            main = Product(output, "uint8", PERCENT_NODATA, ("SIC",), lambda p: to_percent(sic_of(p))[None], tags={"units": "percent"})
        else:
            main = Product(output, "float32", float("nan"), ("SIC",), lambda p: sic_of(p)[None], tags={"units": "fraction 0-1"})
        products = [main]
        if ice_water:
            products.append(
                Product(sibling(output, "_icewater.tif"), "uint8", MASK_NODATA, ("ice",),
                        lambda p: to_mask(sic_of(p), ICE_EDGE_SIC)[None], categorical=True,
                        tags={"classes": "0 water, 1 ice", "ice_threshold_sic": str(ICE_EDGE_SIC)})
            )
        return products
    if task == "binary":
        if channels not in (1, 2):
            raise ConfigError(f"a binary model must return 1 or 2 channels, this one returns {channels}")
        threshold = float(config.get("threshold", 0.5))
        if not 0 <= threshold <= 1:
            raise ConfigError(f"config threshold {threshold} must lie in [0, 1]")
        return [
            Product(output, "float32", float("nan"), ("probability",), lambda p: _binary_probability(p)[None]),
            Product(sibling(output, "_mask.tif"), "uint8", MASK_NODATA, ("line",),
                    lambda p: to_mask(_binary_probability(p), threshold)[None], categorical=True,
                    tags={"threshold": str(threshold)}),
        ]
    if channels < 2 or channels > 254:
        raise ConfigError(f"a multiclass model must return 2 to 254 class channels, this one returns {channels}")
    names = config.get("class_names") or [f"class{k}" for k in range(channels)]
    if len(names) != channels:
        raise ConfigError(f"config names {len(names)} classes but the model returns {channels} channels")
    class_tags = {"class_names": ",".join(map(str, names))}
    products = [Product(output, "uint8", MASK_NODATA, ("class",), lambda p: _classes(p)[None], categorical=True, tags=class_tags)]
    if probabilities:
        products.append(Product(sibling(output, "_probs.tif"), "float32", float("nan"), tuple(map(str, names)), lambda p: p, tags=class_tags))
    return products


class PolygonMeans:
    """Per-polygon sums and counts of predicted SIC, one np.bincount per block of rows."""

    def __init__(self) -> None:
        self.sums = np.zeros(1, dtype="float64")
        self.counts = np.zeros(1, dtype="int64")

    def add(self, ids: np.ndarray, sic: np.ndarray) -> None:
        keep = (ids > 0) & np.isfinite(sic)
        if not keep.any():
            return
        found, values = ids[keep], sic[keep].astype("float64")
        size = max(int(found.max()) + 1, self.sums.size)
        self.sums = np.pad(self.sums, (0, size - self.sums.size)) + np.bincount(found, weights=values, minlength=size)
        self.counts = np.pad(self.counts, (0, size - self.counts.size)) + np.bincount(found, minlength=size)

    def means(self) -> np.ndarray:
        """Mean SIC per polygon id; NaN for ids never seen on a valid pixel (and for 0, no polygon)."""
        out = np.full(self.sums.size, np.nan)
        np.divide(self.sums, self.counts, out=out, where=self.counts > 0)
        return out

    def paint(self, ids: np.ndarray, means: np.ndarray | None = None) -> np.ndarray:
        """Each pixel's polygon mean (NaN outside polygons); pass ``means()`` once when painting many strips."""
        means = self.means() if means is None else means
        inside = (ids > 0) & (ids < means.size)
        out = np.full(ids.shape, np.nan, dtype="float32")
        out[inside] = means[ids[inside]]
        return out


def open_polygon_source(polygons: str | Path, scene: Scene) -> Scene:
    """The scene itself (``scene``: its polygon_icechart) or a labels raster on the scene's grid."""
    if str(polygons) == "scene":
        if not scene.has_chart:
            raise MissingVariableError(
                f"{scene.path.name} carries no ice chart polygons: pass --polygons LABELS.tif made by icetools rasterize"
            )
        return scene
    labels = open_scene(polygons)
    if not labels.has_chart:
        raise MissingVariableError(
            f"{labels.path} has no polygon_id band: make it with icetools rasterize CHART --like {scene.path.name}"
        )
    if not labels.grid.same_pixels_as(scene.grid):
        raise CRSError(
            f"{labels.path} ({labels.height} x {labels.width}) is not on the grid of {scene.path.name} "
            f"({scene.height} x {scene.width}): rasterize the chart with --like {scene.path.name}"
        )
    return labels


def _write_polygon_product(
    product_path: Path, main: Product, grid: Grid, source: Scene, polygon_means: PolygonMeans, *, lock: threading.Lock,
    tags: dict[str, str], overwrite: bool,
) -> None:
    """Second pass: polygon means painted wherever OUT holds a value, strip by strip."""
    percent = main.dtype == "uint8"
    means = polygon_means.means()
    with open_raster(main.path) as done, open_raster_writer(
        product_path, grid, count=1, dtype=main.dtype, nodata=main.nodata, band_names=("SIC",),
        tags={**tags, **main.tags, "product": "mean predicted SIC per chart polygon"}, overwrite=overwrite,
    ) as writer:
        for window in iter_strips(grid.height, grid.width):
            values = done.read(1, window=window)
            has_value = values != main.nodata if percent else np.isfinite(values)
            with lock:
                ids = source.read_polygon_ids(window)
            painted = np.where(has_value, polygon_means.paint(ids, means), np.float32(np.nan))
            writer.write((to_percent(painted) if percent else painted)[None], window)


# --------------------------------------------------------------------------------------------
# The whole run


def predict_scene(
    scene_path: str | Path,
    model: nn.Module | Predictor,
    config: dict[str, Any] | None,
    output: str | Path,
    *,
    tile: int | None = None,
    overlap: float = 0.25,
    merge: str = "average",
    batch: int = 8,
    device: str | torch.device | None = "cpu",
    percent: bool = False,
    polygons: str | Path | None = None,
    ice_water: bool = False,
    probabilities: bool = False,
    refiner: Predictor | str | Path | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Predict a whole scene into ``output`` (and its sibling products); return a summary.

    ``merge="refine"`` runs two passes: the model's overlap-averaged probabilities (the crude
    mosaic, streamed into a temporary GeoTIFF beside ``output``), then ``refiner`` (a model
    directory or Predictor trained by ``train --model refiner --from``) over that mosaic with its
    2x context, merged by overlap averaging again. Every output appears whole or not at all: on
    any error none of this run's files is left, the temporary mosaic included.
    """
    if merge not in MERGES:
        raise ConfigError(f"unknown --merge {merge!r}: use {', '.join(MERGES)}")
    if merge == "refine" and refiner is None:
        raise ConfigError("--merge refine needs --refiner REFINER_DIR (a refinement model trained on crude masks)")
    if merge != "refine" and refiner is not None:
        raise ConfigError(f"--refiner applies to --merge refine only, not --merge {merge}: drop one of them")
    predictor = model if isinstance(model, Predictor) else make_predictor(model, config or {}, device=device)
    refiner_predictor = None
    if refiner is not None:
        from icetools.refine import check_pairing

        refiner_predictor = refiner if isinstance(refiner, Predictor) else load_predictor(refiner, predictor.device)
        check_pairing(predictor, refiner_predictor)
    if tile is None:
        tile = predictor.patch_size
        if tile % TILE_MULTIPLE:
            raise ConfigError(f"the model's patch_size {tile} is not a multiple of {TILE_MULTIPLE}: pass --tile N")
    check_tiling(tile, overlap)
    if batch < 1:
        raise ConfigError(f"--batch {batch} must be at least 1")
    output = Path(output)
    scene = open_scene(scene_path)
    with scene:
        names = scene_inputs(scene, predictor)
        final = refiner_predictor or predictor  # the model whose probabilities become the products
        channels = final.out_channels()
        products = plan_products(
            output, final, channels=channels, percent=percent, ice_water=ice_water,
            probabilities=probabilities, polygons=polygons is not None,
        )
        polygon_path = sibling(output, "_polygon_sic.tif") if polygons is not None else None
        paths = [p.path for p in products] + ([polygon_path] if polygon_path else [])
        if len(set(paths)) != len(paths) or Path(scene_path).resolve() in {p.resolve() for p in paths}:
            raise ConfigError(f"output {output} collides with the scene or its own sibling products: choose another name")
        for path in paths:
            check_output(path, overwrite=overwrite)
        lock = threading.Lock()
        polygon_source = open_polygon_source(polygons, scene) if polygons is not None else None
        polygon_means = PolygonMeans()
        plan = plan_windows(scene.height, scene.width, tile=tile, overlap=overlap)
        tags = {
            "model": predictor.source or "(in memory)",
            "icetools_version": __version__,
            "task": predictor.task,
            "merge": merge,
            "overlap": f"{overlap:g}",
            "tile": str(tile),
            "scene": scene.path.name,
        }
        if refiner_predictor is not None:
            tags["refiner"] = refiner_predictor.source or "(in memory)"
        before = {path: _stamp(path) for path in paths}
        try:
            if refiner_predictor is not None:
                stats = _predict_refined(
                    scene, predictor, refiner_predictor, plan, products, output=output, channels=channels,
                    batch=batch, tags=tags, overwrite=overwrite, lock=lock, polygon_source=polygon_source,
                    polygon_means=polygon_means, progress=progress,
                )
            else:
                stats = _predict_products(
                    scene, predictor, names, plan, products, channels=channels, merge=merge, batch=batch, tags=tags,
                    overwrite=overwrite, lock=lock, polygon_source=polygon_source, polygon_means=polygon_means,
                    progress=progress,
                )
            if polygon_path is not None and polygon_source is not None:
                _write_polygon_product(
                    polygon_path, products[0], scene.grid, polygon_source, polygon_means, lock=lock, tags=tags,
                    overwrite=overwrite,
                )
        except BaseException:
            for path in paths:  # a failure after some outputs were moved into place removes them too
                if path.exists() and _stamp(path) != before[path]:
                    path.unlink()
            raise
        finally:
            if polygon_source is not None and polygon_source is not scene:
                polygon_source.close()
    pixels = scene.height * scene.width
    return {
        "scene": str(scene_path),
        "outputs": [str(p) for p in paths],
        "windows": stats.windows,
        "windows_predicted": stats.windows_predicted,
        "valid_pixels": stats.valid_pixels,
        "seconds": stats.seconds,
        "megapixels_per_second": pixels / 1e6 / max(stats.seconds, 1e-9),
        "windows_per_second": stats.windows / max(stats.seconds, 1e-9),
        "tile": tile,
        "overlap": overlap,
        "merge": merge,
        "refiner": refiner_predictor.source if refiner_predictor is not None else None,
        "device": str(predictor.device),
        "accumulator_shape": list(stats.accumulator_shape),
    }


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _predict_products(
    scene: Scene,
    predictor: Predictor,
    names: list[str],
    plan: WindowPlan,
    products: list[Product],
    *,
    channels: int,
    merge: str,
    batch: int,
    tags: dict[str, str],
    overwrite: bool,
    lock: threading.Lock,
    polygon_source: Scene | None,
    polygon_means: PolygonMeans,
    progress: Progress | None,
    grid: Grid | None = None,
) -> MergeStats:
    """First pass: merge the windows and write every product strip by strip (atomically).

    ``grid`` (default: the scene's) is the grid of the outputs: the original scene's when
    ``scene`` is a crude mosaic written on it.
    """
    with ExitStack() as stack:
        writers = [
            stack.enter_context(
                open_raster_writer(
                    product.path, grid or scene.grid, count=len(product.band_names), dtype=product.dtype,
                    nodata=product.nodata, band_names=product.band_names, tags={**tags, **product.tags},
                    overwrite=overwrite, categorical=product.categorical,
                )
            )
            for product in products
        ]

        def write_rows(window: Window, probs: np.ndarray) -> None:
            for product, writer in zip(products, writers):
                writer.write(product.render(probs), window)
            if polygon_source is not None:
                with lock:
                    ids = polygon_source.read_polygon_ids(window)
                polygon_means.add(ids, sic_of(probs))

        stats = sliding_window_merge(
            scene_strip_reader(scene, names, mean=predictor.mean, std=predictor.std, lock=lock),
            predictor,
            plan,
            channels=channels,
            weights=window_weights(plan.tile, merge),
            write_rows=write_rows,
            batch=batch,
            context_scales=predictor.context_scales,
            progress=progress,
        )
        if stats.valid_pixels == 0:
            raise DataError(
                f"{scene.path.name} has no valid pixel in {', '.join(names)} (all NaN / nodata / land): nothing to predict"
            )
    return stats


def _predict_refined(
    scene: Scene,
    predictor: Predictor,
    refiner: Predictor,
    plan: WindowPlan,
    products: list[Product],
    *,
    output: Path,
    channels: int,
    batch: int,
    tags: dict[str, str],
    overwrite: bool,
    lock: threading.Lock,
    polygon_source: Scene | None,
    polygon_means: PolygonMeans,
    progress: Progress | None,
) -> MergeStats:
    """``--merge refine``: the crude mosaic into a temporary file, then the refiner over it into the products.

    Both passes use the same windows; progress counts the windows of both. The temporary file
    sits beside the output (same file system, no /tmp filling up) and goes in every case.
    """
    from icetools.refine import write_crude_mosaic

    def shifted(offset: int) -> Progress | None:
        if progress is None:
            return None
        return lambda done, total: progress(offset + done, 2 * total)

    crude_path = output.with_name(f".{output.stem}.crude-{os.getpid()}.tif")
    try:
        first = write_crude_mosaic(scene, predictor, crude_path, plan=plan, batch=batch, temporary=True, lock=lock,
                                   progress=shifted(0))
        with open_scene(crude_path) as crude:
            second = _predict_products(
                crude, refiner, list(crude.band_names), plan, products, channels=channels, merge="average",
                batch=batch, tags=tags, overwrite=overwrite, lock=lock, polygon_source=polygon_source,
                polygon_means=polygon_means, progress=shifted(plan.n_windows), grid=scene.grid,
            )
    finally:
        crude_path.unlink(missing_ok=True)
    second.seconds += first.seconds
    return second
