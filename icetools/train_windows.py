"""Training windows drawn afresh every epoch inside the train blocks.

Why it works this way:

* **Not capped by the coverage map.** The fixed patches of ``sample-patches`` are about as many as
  non-overlapping windows fit (three 1024 px scenes give under 200, a third of them for training): a fine
  validation set, a poor training set. Here every epoch draws ``samples_per_epoch`` new windows at any
  pixel offset inside the train blocks, flipped and rotated, so the data grow with the epochs.
* **Leak-free by construction.** A window is kept only if every pixel lies inside the scene and in
  train cells (the blocks layer of the patches file says which; a window may span adjacent train blocks),
  so no pixel of a validation or test block is ever seen in training.
* **Cheap checks.** One streamed pass per train scene at the start (``sampling.scan_scene``) gives valid
  and foreground pixel counts per 16 px cell. Summed-area tables then answer, in O(1) per candidate and
  vectorised over candidates, whether a window meets only train cells (exact) and its invalid share
  (exact for cell-aligned windows; otherwise counted as if each cell's valid pixels were spread evenly
  over it, which is exact wherever cells are wholly valid or wholly invalid).
* **Foreground where it is rare.** For line (binary) tasks a share of the windows (default
  :data:`DEFAULT_FOREGROUND_SHARE`) is centred, within a quarter window of jitter, on a train cell that
  holds foreground; the rest are uniform over all allowed positions.
* **Reproducible.** Epoch ``e`` is drawn from ``(seed, e)`` alone, augmentation seeds included, so a
  resumed run repeats an uninterrupted one whatever the number of workers.
* **One scene per batch.** With ``by_scene`` every batch comes from one scene (chosen by its valid train
  area), so ``collate(pool="scene")`` pools each polygon over all the batch's windows.
* **Several processes.** Under torchrun each step's batch is drawn once for all ``world_size`` processes
  (``world_size x batch_size`` windows, from the same ``(seed, epoch)`` stream on every process) and each
  process takes its near-equal part (:func:`rank_share`): together they step on the one-process epoch at
  the larger batch, no window twice, ``samples_per_epoch`` in all, and every process takes as many steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from rasterio.windows import Window
from torch.utils.data import DataLoader, Sampler

from icetools.data import PatchDataset, Sample, WindowDataset, batch_loader, labels_path, make_loader, split_rows
from icetools.errors import ConfigError, DataError
from icetools.patches_io import CELL
from icetools.progress import Progress
from icetools.sampling import STRIP_ROWS, scan_scene
from icetools.tasks import BINARY

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_FOREGROUND_SHARE = {BINARY: 0.5}
"""Share of windows centred on foreground per task; tasks not named here draw uniform windows only."""
MAX_ROUNDS = 64  # rounds of vectorised candidates before a draw falls back to a sure window

WindowItem = tuple[int, int, int, int]
"""(scene index, row_off, col_off, augmentation seed): one training window, as the sampler yields it."""


# --- where a window may lie ---------------------------------------------------------------------------


@dataclass
class TrainArea:
    """One scene's train cells and per-cell counts, with summed-area tables for O(1) window checks."""

    scene: str
    labels: str
    height: int
    width: int
    valid: np.ndarray  # valid pixels per cell
    foreground: np.ndarray  # valid foreground pixels per cell
    train: np.ndarray  # bool per cell: the cell lies in a train block
    _valid_sum: np.ndarray = field(init=False, repr=False)
    _blocked_sum: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.train = np.asarray(self.train, dtype=bool)
        self._valid_sum = _integral(self.valid.astype("float64"))
        self._blocked_sum = _integral((~self.train).astype("int64"))
        self._row_edges = np.minimum(np.arange(self.valid.shape[0] + 1) * CELL, self.height)
        self._col_edges = np.minimum(np.arange(self.valid.shape[1] + 1) * CELL, self.width)

    @property
    def train_valid_pixels(self) -> int:
        return int(self.valid[self.train].sum())

    def fits(self, rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
        """Which windows lie wholly inside the scene and meet train cells only (exact)."""
        inside = (rows >= 0) & (cols >= 0) & (rows + size <= self.height) & (cols + size <= self.width)
        r0 = np.clip(rows, 0, self.height - size) // CELL
        c0 = np.clip(cols, 0, self.width - size) // CELL
        r1 = (np.clip(rows, 0, self.height - size) + size - 1) // CELL + 1
        c1 = (np.clip(cols, 0, self.width - size) + size - 1) // CELL + 1
        s = self._blocked_sum
        blocked = s[r1, c1] - s[r0, c1] - s[r1, c0] + s[r0, c0]
        return inside & (blocked == 0)

    def valid_share(self, rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
        """Valid share of each window (inside the scene); see the module docstring for partial cells."""
        bottom, right = rows + size, cols + size
        total = (self._cumulative(bottom, right) - self._cumulative(rows, right)
                 - self._cumulative(bottom, cols) + self._cumulative(rows, cols))
        return total / float(size * size)

    def _cumulative(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Valid pixels above-left of pixel corner (y, x), each cell's count spread evenly over it."""
        i, ty = _fraction(y, self._row_edges)
        j, tx = _fraction(x, self._col_edges)
        s = self._valid_sum
        return (s[i, j] * (1 - ty) * (1 - tx) + s[i + 1, j] * ty * (1 - tx)
                + s[i, j + 1] * (1 - ty) * tx + s[i + 1, j + 1] * ty * tx)


def _integral(counts: np.ndarray) -> np.ndarray:
    out = np.zeros((counts.shape[0] + 1, counts.shape[1] + 1), dtype=counts.dtype)
    out[1:, 1:] = counts.cumsum(axis=0).cumsum(axis=1)
    return out


def _fraction(pixel: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cell index and the fraction of that cell before ``pixel`` (a pixel corner, 0..size)."""
    cell = np.clip(np.asarray(pixel) // CELL, 0, edges.size - 2)
    span = edges[cell + 1] - edges[cell]
    return cell, (np.asarray(pixel) - edges[cell]) / span


@dataclass
class _Candidates:
    """What an area offers to the draw, precomputed for one window size."""

    origins: np.ndarray  # flat cell indices whose cell-aligned window fits (uniform draws start here)
    sure: np.ndarray  # flat cell indices whose aligned window fits and is valid enough (the fallback)
    foreground: np.ndarray  # flat indices of train cells holding foreground (centred draws)


class TrainRegions:
    """Where training windows of ``size`` pixels may lie, over all train scenes, and how to draw them.

    Build it with :meth:`from_blocks` (the blocks layer of the patches file; :func:`train_regions`) or
    :meth:`from_patches` (the union of the train patches' footprints, for files written before the blocks
    layer). Scenes that cannot hold one acceptable window are left out; :attr:`scenes` lists the others
    in index order.
    """

    def __init__(
        self, areas: Sequence[TrainArea], *, size: int, max_invalid: float = 0.5, foreground_share: float = 0.0
    ) -> None:
        if size < 1:
            raise ConfigError(f"size {size}: give a window size of at least one pixel")
        if not 0 <= max_invalid <= 1:
            raise ConfigError(f"max_invalid {max_invalid} must lie between 0 and 1")
        if not 0 <= foreground_share <= 1:
            raise ConfigError(f"foreground_share {foreground_share} must lie between 0 and 1")
        self.size, self.max_invalid, self.foreground_share = size, max_invalid, foreground_share
        self.areas: list[TrainArea] = []
        self._candidates: list[_Candidates] = []
        for area in areas:
            if area.height < size or area.width < size:
                continue
            candidates = self._candidates_of(area)
            if candidates.sure.size:
                self.areas.append(area)
                self._candidates.append(candidates)
        if not self.areas:
            raise DataError(
                f"no {size}-pixel training window fits inside the train blocks with at most {max_invalid:.0%} "
                "invalid pixels: sample patches with larger blocks, a larger train share or more scenes"
            )
        weights = np.array([a.train_valid_pixels for a in self.areas], dtype="float64")
        self.weights = weights / weights.sum()

    def _candidates_of(self, area: TrainArea) -> _Candidates:
        rows, cols = np.mgrid[: (area.height - self.size) // CELL + 1, : (area.width - self.size) // CELL + 1]
        rows, cols = rows.ravel() * CELL, cols.ravel() * CELL
        fits = area.fits(rows, cols, self.size)
        good = fits & self._valid_enough(area, rows, cols)
        n_cols = area.valid.shape[1]
        flat = (rows // CELL) * n_cols + cols // CELL
        foreground = np.flatnonzero(((area.foreground > 0) & area.train).ravel())
        return _Candidates(origins=flat[fits], sure=flat[good], foreground=foreground)

    def _valid_enough(self, area: TrainArea, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return 1.0 - area.valid_share(rows, cols, self.size) <= self.max_invalid + 1e-9

    @property
    def scenes(self) -> list[tuple[str, str]]:
        """(scene path, labels path) per scene index, as :class:`RandomWindowDataset` takes them."""
        return [(a.scene, a.labels) for a in self.areas]

    # --- building ---

    @classmethod
    def from_blocks(
        cls, blocks: pd.DataFrame, *, size: int, max_invalid: float = 0.5, foreground_share: float | None = None,
        progress: Progress | None = None,
    ) -> TrainRegions:
        """Train cells from the blocks layer (:func:`icetools.patches_io.read_blocks`); one pass per train scene."""
        train = split_rows(blocks, "train")
        extents = _extents(train, train["height"], train["width"])
        share = _foreground_share(blocks, foreground_share)
        return cls(_scan_areas(extents, size=size, progress=progress), size=size, max_invalid=max_invalid,
                   foreground_share=share)

    @classmethod
    def from_patches(
        cls, frame: pd.DataFrame, *, max_invalid: float = 0.5, foreground_share: float | None = None,
        progress: Progress | None = None,
    ) -> TrainRegions:
        """Train cells = the cells wholly inside a train patch: for patches files written without blocks.

        Those footprints are where the fixed train windows lay, so no new pixel is used and the splits
        stay as leak-free as the file was; windows still move freely inside their union.
        """
        train = split_rows(frame, "train")
        if not len(train):
            raise DataError("the patches have no 'train' patches: sample patches with a train split")
        size = _one_size(train)
        extents = _extents(train, train["size"], train["size"])
        share = _foreground_share(frame, foreground_share)
        return cls(_scan_areas(extents, size=size, progress=progress), size=size, max_invalid=max_invalid,
                   foreground_share=share)

    # --- drawing ---

    def draw(self, scene_index: int, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``count`` windows in one scene: (row_off, col_off, centred on foreground) arrays."""
        area, candidates = self.areas[scene_index], self._candidates[scene_index]
        centred = rng.random(count) < self.foreground_share if candidates.foreground.size else np.zeros(count, bool)
        rows = np.empty(count, dtype="int64")
        cols = np.empty(count, dtype="int64")
        n_centred = int(centred.sum())
        got_r, got_c = self._draw_centred(area, candidates, n_centred, rng)
        # A centred draw that found too few windows hands its remainder to the uniform draw.
        centred[np.flatnonzero(centred)[got_r.size :]] = False
        rows[centred], cols[centred] = got_r, got_c
        rows[~centred], cols[~centred] = self._draw_uniform(area, candidates, count - got_r.size, rng)
        return rows, cols, centred

    def _draw_uniform(
        self, area: TrainArea, candidates: _Candidates, count: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Uniform over all allowed pixel offsets: an origin cell that fits, then a random offset inside it."""
        n_cols = area.valid.shape[1]

        def propose(m: int) -> tuple[np.ndarray, np.ndarray]:
            cell = candidates.origins[rng.integers(candidates.origins.size, size=m)]
            offsets = rng.integers(CELL, size=(2, m))
            return (cell // n_cols) * CELL + offsets[0], (cell % n_cols) * CELL + offsets[1]

        rows, cols = self._accept(area, propose, count)
        missing = count - rows.size
        if missing:  # a nearly invalid scene: take aligned windows known to pass
            cell = candidates.sure[rng.integers(candidates.sure.size, size=missing)]
            rows = np.concatenate([rows, (cell // n_cols) * CELL])
            cols = np.concatenate([cols, (cell % n_cols) * CELL])
        return rows, cols

    def _draw_centred(
        self, area: TrainArea, candidates: _Candidates, count: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Windows whose centre, shifted by up to a quarter window, falls in a foreground train cell."""
        size, n_cols, jitter = self.size, area.valid.shape[1], self.size // 4

        def propose(m: int) -> tuple[np.ndarray, np.ndarray]:
            cell = candidates.foreground[rng.integers(candidates.foreground.size, size=m)]
            centre_r = np.minimum((cell // n_cols) * CELL + rng.integers(CELL, size=m), area.height - 1)
            centre_c = np.minimum((cell % n_cols) * CELL + rng.integers(CELL, size=m), area.width - 1)
            shift = rng.integers(-jitter, jitter + 1, size=(2, m))
            rows = np.clip(centre_r - size // 2 + shift[0], 0, area.height - size)
            return rows, np.clip(centre_c - size // 2 + shift[1], 0, area.width - size)

        return self._accept(area, propose, count) if count else (np.empty(0, "int64"), np.empty(0, "int64"))

    def _accept(
        self, area: TrainArea, propose: Callable[[int], tuple[np.ndarray, np.ndarray]], count: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rounds of vectorised proposals; the first ``count`` that fit and are valid enough, in order."""
        rows_out, cols_out, got = [], [], 0
        for _ in range(MAX_ROUNDS):
            if got >= count:
                break
            rows, cols = propose(max(4 * (count - got), 16))
            ok = area.fits(rows, cols, self.size)
            ok[ok] = self._valid_enough(area, rows[ok], cols[ok])
            take = np.flatnonzero(ok)[: count - got]
            rows_out.append(rows[take])
            cols_out.append(cols[take])
            got += take.size
        if not rows_out:
            return np.empty(0, "int64"), np.empty(0, "int64")
        return np.concatenate(rows_out).astype("int64"), np.concatenate(cols_out).astype("int64")


Extents = dict[tuple[str, str], list[tuple[int, int, int, int]]]
"""(scene path, labels path) -> the (row_off, col_off, height, width) of its train regions."""


def _extents(rows: pd.DataFrame, heights: pd.Series, widths: pd.Series) -> Extents:
    extents: Extents = {}
    for scene, labels, row_off, col_off, height, width in zip(
        rows["scene"], rows["labels"], rows["row_off"], rows["col_off"], heights, widths
    ):
        key = (str(scene), labels_path(labels))
        extents.setdefault(key, []).append((int(row_off), int(col_off), int(height), int(width)))
    return extents


def _one_size(frame: pd.DataFrame) -> int:
    sizes = frame["size"].unique()
    if len(sizes) != 1:
        raise ConfigError(f"the patches mix patch sizes ({', '.join(map(str, sizes))}): train on one size at a time")
    return int(sizes[0])


def _foreground_share(frame: pd.DataFrame, share: float | None) -> float:
    """The given share, or the task's default (:data:`DEFAULT_FOREGROUND_SHARE`)."""
    if share is not None:
        return float(share)
    tasks = frame["task"].dropna().unique()
    return DEFAULT_FOREGROUND_SHARE.get(str(tasks[0]), 0.0) if len(tasks) == 1 else 0.0


def _scan_areas(extents: Extents, *, size: int, progress: Progress | None) -> list[TrainArea]:
    """One streamed pass per train scene; train cells are those wholly inside one of its extents."""
    from icetools.io.scene import open_scene

    heights = {}
    for scene_path, _ in extents:
        with open_scene(scene_path) as scene:
            heights[scene_path] = scene.height
    total = sum(math.ceil(h / STRIP_ROWS) for h in heights.values())
    areas, done = [], 0
    for (scene_path, label_file), boxes in extents.items():
        cells = scan_scene(scene_path, label_file or None, size=size, progress=progress, strips_done=done,
                           strips_total=total)
        done += math.ceil(cells.grid.height / STRIP_ROWS)
        height, width = cells.grid.height, cells.grid.width
        train = np.zeros(cells.valid.shape, dtype=bool)
        for row_off, col_off, box_h, box_w in boxes:
            r0, r1 = _inner_cells(row_off, box_h, height)
            c0, c1 = _inner_cells(col_off, box_w, width)
            train[r0:r1, c0:c1] = True
        areas.append(TrainArea(scene=scene_path, labels=label_file, height=height, width=width,
                               valid=cells.valid, foreground=cells.foreground, train=train))
    return areas


def _inner_cells(offset: int, length: int, scene_length: int) -> tuple[int, int]:
    """The cells [first, stop) wholly inside pixels [offset, offset + length); the scene's last, partial
    cell counts as whole when the extent reaches the scene's edge."""
    first = -(-offset // CELL)
    end = offset + length
    stop = math.ceil(scene_length / CELL) if end >= scene_length else end // CELL
    return first, max(first, stop)


def train_regions(
    frame: pd.DataFrame, blocks: pd.DataFrame, *, foreground_share: float | None = None,
    progress: Progress | None = None,
) -> TrainRegions:
    """The train regions of a patches file's blocks; size and ``max_invalid`` follow its patches.

    ``max_invalid`` comes from ``frame.attrs["sampling"]`` (default 0.5), so training windows obey the
    rule the fixed patches were sampled with.
    """
    size = _one_size(frame)
    max_invalid = float((frame.attrs.get("sampling") or {}).get("max_invalid", 0.5))
    return TrainRegions.from_blocks(blocks, size=size, max_invalid=max_invalid, foreground_share=foreground_share,
                                    progress=progress)


# --- the epoch: sampler and dataset -------------------------------------------------------------------


class RandomWindowSampler(Sampler):
    """Batches of fresh training windows: ``samples_per_epoch`` per epoch, redrawn from ``(seed, epoch)``.

    Batches are near-equal (1000 samples at batch size 8: 125 x 8; 17 at 8: 6 + 6 + 5). With
    ``by_scene`` each batch comes from one scene drawn by its valid train area; otherwise every window
    draws its own scene. Items are :data:`WindowItem` tuples. Process ``rank`` of ``world_size`` gets
    its part of batches drawn for all of them (see the module docstring).
    """

    def __init__(
        self, regions: TrainRegions, batch_size: int, *, samples_per_epoch: int, by_scene: bool = True, seed: int = 0,
        rank: int = 0, world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        if samples_per_epoch < world_size:
            raise ConfigError(
                f"samples_per_epoch must be >= {world_size} (one per process), got {samples_per_epoch}"
            )
        self.regions, self.batch_size, self.samples_per_epoch = regions, batch_size, samples_per_epoch
        self.by_scene, self.seed = by_scene, seed
        self.rank, self.world_size = _checked_rank(rank, world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        """Steps per epoch; each batch holds at least one window per process."""
        return min(math.ceil(self.samples_per_epoch / (self.batch_size * self.world_size)),
                   self.samples_per_epoch // self.world_size)

    def batch_sizes(self) -> list[int]:
        n_batches = len(self)
        base, extra = divmod(self.samples_per_epoch, n_batches)
        return [base + 1] * extra + [base] * (n_batches - extra)

    def __iter__(self) -> Iterator[list[WindowItem]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        n_scenes = len(self.regions.areas)
        for size in self.batch_sizes():
            if self.by_scene:
                scenes = np.full(size, rng.choice(n_scenes, p=self.regions.weights))
            else:
                scenes = np.sort(rng.choice(n_scenes, size=size, p=self.regions.weights))
            rows = np.empty(size, dtype="int64")
            cols = np.empty(size, dtype="int64")
            for scene in np.unique(scenes):
                where = np.flatnonzero(scenes == scene)
                rows[where], cols[where], _ = self.regions.draw(int(scene), where.size, rng)
            seeds = rng.integers(2**31, size=size)
            items = [(int(s), int(r), int(c), int(a)) for s, r, c, a in zip(scenes, rows, cols, seeds)]
            yield rank_share(items, self.rank, self.world_size)


class RandomWindowDataset(WindowDataset):
    """Training samples at the windows a :class:`RandomWindowSampler` draws; items are :data:`WindowItem`.

    ``scenes`` is :attr:`TrainRegions.scenes` (scene path, labels path per scene index); the keyword
    options are :class:`icetools.data.WindowDataset`'s (``augment`` defaults to True here). Scene
    handles open lazily per process, so the dataset pickles into DataLoader workers.
    """

    def __init__(self, scenes: Sequence[tuple[str, str]], *, size: int, augment: bool = True, **options: Any) -> None:
        super().__init__(augment=augment, **options)
        self.scenes = [(str(scene), labels_path(labels)) for scene, labels in scenes]
        self.size = size

    def __getitem__(self, item: WindowItem) -> Sample:
        scene_index, row, col, augment_seed = item
        scene_path, label_file = self.scenes[scene_index]
        window = Window(col, row, self.size, self.size)
        return self.read_sample(scene_path, label_file, window, scene_index=scene_index, augment_seed=augment_seed)


def make_window_loader(
    dataset: RandomWindowDataset,
    regions: TrainRegions,
    *,
    batch_size: int,
    samples_per_epoch: int,
    pool: str,
    workers: int = 1,
    seed: int = 0,
    pin_memory: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A DataLoader of fresh windows; call ``loader.batch_sampler.set_epoch(e)`` before each epoch.

    ``pool="scene"`` draws every batch from one scene so that ``collate`` pools polygons across it;
    ``rank`` and ``world_size`` give one process of several its part of each step's windows.
    """
    if dataset.scenes != regions.scenes or dataset.size != regions.size:
        raise ConfigError("the dataset was not built from these regions: use regions.scenes and regions.size")
    sampler = RandomWindowSampler(regions, batch_size, samples_per_epoch=samples_per_epoch,
                                  by_scene=pool == "scene", seed=seed, rank=rank, world_size=world_size)
    return batch_loader(dataset, sampler, pool=pool, workers=workers, pin_memory=pin_memory)


def make_train_loader(
    frame: pd.DataFrame,
    blocks: pd.DataFrame | None,
    *,
    batch_size: int,
    pool: str,
    samples_per_epoch: int,
    workers: int = 1,
    seed: int = 0,
    pin_memory: bool = False,
    foreground_share: float | None = None,
    progress: Progress | None = None,
    rank: int = 0,
    world_size: int = 1,
    **dataset_options: Any,
) -> DataLoader:
    """The training loader of a patches file: fresh windows in its train blocks, or its fixed train patches.

    Without ``blocks`` (a file written before the blocks layer, or a frame made in memory) it falls back to
    the fixed train windows, ``samples_per_epoch`` then unused. ``dataset_options`` are
    :class:`icetools.data.WindowDataset`'s (inputs, normalization, task, augment, context_scales,
    input_scenes, window_axis). Either way, call ``loader.batch_sampler.set_epoch(e)`` before epoch ``e``.
    Process ``rank`` of ``world_size`` gets its part of every step's batch, drawn for all of them.
    """
    if blocks is None:
        dataset = PatchDataset(frame, "train", seed=seed, **dataset_options)
        loader = make_loader(dataset, batch_size=batch_size * world_size, pool=pool, shuffle=True, workers=workers,
                             seed=seed, pin_memory=pin_memory)
        return rank_loader(loader, rank, world_size)
    regions = train_regions(frame, blocks, foreground_share=foreground_share, progress=progress)
    dataset = RandomWindowDataset(regions.scenes, size=regions.size, seed=seed, **dataset_options)
    return make_window_loader(dataset, regions, batch_size=batch_size, samples_per_epoch=samples_per_epoch, pool=pool,
                              workers=workers, seed=seed, pin_memory=pin_memory, rank=rank, world_size=world_size)


# --- one process's part of batches drawn for several ----------------------------------------------------


def _checked_rank(rank: int, world_size: int) -> tuple[int, int]:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} of {world_size} processes: give 0 <= rank < world_size")
    return rank, world_size


def rank_share(batch: Sequence[Any], rank: int, world_size: int) -> list[Any]:
    """Process ``rank``'s near-equal part of a batch drawn for ``world_size`` processes (the parts differ
    by at most one item and together are the batch). A batch of fewer items than processes, which only
    a fixed-window epoch can make (a scene with fewer train windows than processes), lends the processes
    left without one an item of the batch again, since every process must take the step."""
    n = len(batch)
    if n < world_size:
        return [batch[rank % n]] if n else []
    return list(batch[n * rank // world_size : n * (rank + 1) // world_size])


class RankShares(Sampler):
    """Process ``rank``'s parts of the batches of ``batches`` (drawn for all ``world_size`` processes)."""

    def __init__(self, batches: Sampler, rank: int, world_size: int) -> None:
        self.batches = batches
        self.rank, self.world_size = _checked_rank(rank, world_size)

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[Any]]:
        for batch in self.batches:
            yield rank_share(batch, self.rank, self.world_size)


def with_batch_sampler(loader: DataLoader, batch_sampler: Sampler) -> DataLoader:
    """``loader`` (from :func:`icetools.data.batch_loader`) with another batch sampler, all else kept."""
    return DataLoader(
        loader.dataset,
        batch_sampler=batch_sampler,
        collate_fn=loader.collate_fn,
        num_workers=loader.num_workers,
        persistent_workers=loader.persistent_workers,
        pin_memory=loader.pin_memory,
        prefetch_factor=loader.prefetch_factor,
    )


def rank_loader(loader: DataLoader, rank: int, world_size: int) -> DataLoader:
    """``loader`` whose batches are drawn for ``world_size`` processes, giving process ``rank`` its part."""
    if world_size == 1:
        return loader
    return with_batch_sampler(loader, RankShares(loader.batch_sampler, rank, world_size))


__all__ = [
    "DEFAULT_FOREGROUND_SHARE", "RandomWindowDataset", "RandomWindowSampler", "RankShares", "TrainArea",
    "TrainRegions", "WindowItem", "make_train_loader", "make_window_loader", "rank_loader", "rank_share",
    "train_regions", "with_batch_sampler",
]
