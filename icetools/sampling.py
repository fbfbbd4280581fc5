"""Where a model learns: stochastic, coverage-aware patch sampling with leak-free splits.

Why it works this way:

* **One streamed pass per scene.** Each scene is read strip by strip, once, and reduced to 16 x 16-pixel
  cells: how many pixels of each cell are valid and how many are foreground. A full Sentinel-1 scene
  (10k x 10k) becomes two ~625 x 625 count maps, so sampling never touches the pixels again.
* **Windows aligned to the cells.** Candidate windows start on multiples of 16 pixels and ``size`` is a
  multiple of 16, so a window covers whole cells only: its valid, foreground and unseen shares are exact
  sums of cells, not estimates. The coverage map (how often each pixel was sampled) lives on the same
  cells and is exact for the same reason. The price: up to 15 rows/columns at the bottom/right edge of a
  scene whose size is not a multiple of 16 are never sampled.
* **Stochastic and coverage-aware.** Candidates are drawn at random (scene by valid area; half of them
  centred near a random foreground cell so that rare foreground such as grounding lines is found, half
  uniform) and accepted only if enough of the window is still unseen, valid, inside one split region,
  and, when the window holds no foreground, while the cap on empty windows allows it.
* **Splits never share a pixel.** The source work cut overlapping patches and then split the patches at
  random, so a test patch shared pixels with training patches and the test score measured memory, not
  generalisation. Here whole scenes, or whole spatial blocks, are given to train/val/test first, and a
  window is accepted only if every one of its pixels lies in one split's region. The fractions therefore
  share out scenes or blocks, not patches; blocks that hold valid pixels are dealt first so that every
  split gets at least one when there are enough. The default splits by block (one scene is enough); a
  split by scene is available.
* **Blocks are written too.** The patches are fixed windows, which is what validation and test want; training
  draws fresh windows anywhere inside the train blocks (see :mod:`icetools.train_windows`), so the blocks
  (one per scene for a split by scene) travel beside the patches with their split and statistics.
* **Footprints.** In the scenes' CRS when all share one affine CRS; otherwise (GCP scenes, mixed CRSs)
  in pixel space, x = column and y = row from the scene's top-left corner, with ``attrs["coords"] = "pixel"``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from rasterio.windows import Window

from icetools.errors import ConfigError, DataError
from icetools.grid import Grid
from icetools.io.checks import check_labels, check_scenes
from icetools.io.scene import Scene, open_scene
from icetools.labels import open_labels
from icetools.patches_io import BLOCK_COLUMNS, CELL, PATCH_COLUMNS, SPLITS
from icetools.progress import Progress, report

if TYPE_CHECKING:
    import geopandas as gpd

STRIP_ROWS = 512
# Progress events: stage "scan" (strips read, over all scenes) and "sample" (patches accepted of n).


# --- the streamed pass --------------------------------------------------------------------------------


@dataclass
class SceneCells:
    """One scene reduced to 16-px cells: all the sampler needs, a few MB even for a full scene."""

    scene: Path
    labels: Path | None
    task: str
    grid: Grid
    valid: np.ndarray  # valid pixels per cell (0..256)
    foreground: np.ndarray  # valid foreground pixels per cell
    split: np.ndarray = field(init=False)  # split index (0 train, 1 val, 2 test) per cell
    coverage: np.ndarray = field(init=False)  # how many accepted windows cover each cell

    def __post_init__(self) -> None:
        self.split = np.zeros(self.valid.shape, dtype="int8")
        self.coverage = np.zeros(self.valid.shape, dtype="int32")
        self._valid_sum = _integral(self.valid)
        self._fg_sum = _integral(self.foreground)
        self.foreground_cells = np.flatnonzero(self.foreground)

    def window_sum(self, which: str, row, col, k: int):
        """Pixels counted in the k x k cells from cell (row, col): an exact sum, via a summed-area table.

        ``row`` and ``col`` may be integers or arrays of them (all candidate windows at once).
        """
        s = self._valid_sum if which == "valid" else self._fg_sum
        return s[row + k, col + k] - s[row, col + k] - s[row + k, col] + s[row, col]


def _integral(counts: np.ndarray) -> np.ndarray:
    out = np.zeros((counts.shape[0] + 1, counts.shape[1] + 1), dtype="int64")
    out[1:, 1:] = counts.cumsum(axis=0).cumsum(axis=1)
    return out


def _inspect(scene_path: str | Path, labels_path: str | Path | None, *, size: int) -> tuple[int, str]:
    """Open a scene and its labels without reading pixels: checks size and label grid; (height, task)."""
    with open_scene(scene_path) as scene:
        _require_patch_fits(scene, size)
        reader = open_labels(scene, labels_path or None)
        if reader.labels is not None:
            reader.labels.close()
        return scene.height, reader.task


def _require_patch_fits(scene: Scene, size: int) -> None:
    if scene.height < size or scene.width < size:
        raise DataError(
            f"{scene.path} is {scene.height} x {scene.width} pixels, smaller than one {size}-pixel patch: "
            "use a smaller patch size"
        )


def scan_scene(
    scene_path: str | Path, labels_path: str | Path | None, *, size: int, progress: Progress | None = None,
    strips_done: int = 0, strips_total: int = 0,
) -> SceneCells:
    """Read a scene once, strip by strip, into per-cell valid and foreground counts."""
    from skimage.measure import block_reduce

    from icetools.io.raster import iter_strips

    with open_scene(scene_path) as scene:
        _require_patch_fits(scene, size)
        reader = open_labels(scene, labels_path)
        try:
            cells_shape = (math.ceil(scene.height / CELL), math.ceil(scene.width / CELL))
            valid = np.zeros(cells_shape, dtype="int32")
            foreground = np.zeros(cells_shape, dtype="int32")
            # Strips start on cell boundaries (STRIP_ROWS is a multiple of CELL): no cell straddles two strips.
            for window in iter_strips(scene.height, scene.width, rows=STRIP_ROWS):
                label_valid, label_fg = reader.masks(window)
                ok = scene.valid_mask(window) & label_valid
                row = int(window.row_off) // CELL
                v = block_reduce(ok, (CELL, CELL), np.sum)
                valid[row : row + v.shape[0]] = v
                foreground[row : row + v.shape[0]] = block_reduce(label_fg & ok, (CELL, CELL), np.sum)
                strips_done += 1
                report(progress, "scan", strips_done, strips_total)
            unlisted = reader.unlisted_message()
            if unlisted is not None:
                warnings.warn(unlisted, UserWarning, stacklevel=2)
        finally:
            if reader.labels is not None:
                reader.labels.close()
        return SceneCells(
            scene=scene.path.resolve(),
            labels=Path(labels_path).resolve() if labels_path else None,
            task=reader.task,
            grid=scene.grid,
            valid=valid,
            foreground=foreground,
        )


# --- splits -------------------------------------------------------------------------------------------


def split_counts(n_items: int, fractions: Sequence[float]) -> np.ndarray:
    """Items per split: largest remainder, then at least one for every split with a share, if enough items."""
    shares = np.asarray(fractions, dtype="float64")
    raw = shares * n_items
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    for i in order[: n_items - int(counts.sum())]:
        counts[i] += 1
    # The splits with the largest shares get one item each first (ties: train, val, test).
    ensured = [int(i) for i in np.argsort(-shares, kind="stable") if shares[i] > 0][:n_items]
    for i in ensured:
        if counts[i] == 0:
            # A donor exists by pigeonhole: n_items >= len(ensured) items sit outside this split.
            donor = next(
                j for j in np.argsort(-counts, kind="stable") if counts[j] >= 2 or (counts[j] == 1 and j not in ensured)
            )
            counts[donor] -= 1
            counts[i] += 1
    return counts


def _assign_scene_splits(cells: list[SceneCells], fractions: Sequence[float], rng: np.random.Generator) -> None:
    labels = rng.permutation(np.repeat(np.arange(3), split_counts(len(cells), fractions)))
    for item, split in zip(cells, labels):
        item.split[:] = split


def _block_index(n_cells: int, per_block: int) -> np.ndarray:
    """Block index of each cell along one axis; an edge remnant under half a block joins its neighbour.

    A narrow sliver at the scene's edge could hold hardly any window, so the split dealt to it would be
    empty in practice.
    """
    n_blocks = max(1, math.floor(n_cells / per_block + 0.5))
    return np.minimum(np.arange(n_cells) // per_block, n_blocks - 1)


BlockLayout = tuple[np.ndarray, np.ndarray]
"""Block index of each cell row and of each cell column of one scene."""


def _block_layouts(cells: list[SceneCells], *, split_by: str, block_size: int) -> list[BlockLayout]:
    """How each scene is cut into blocks; a split by scene makes the whole scene one block."""
    if split_by == "scene":
        return [(np.zeros(c.valid.shape[0], dtype="int64"), np.zeros(c.valid.shape[1], dtype="int64")) for c in cells]
    per_block = block_size // CELL
    return [(_block_index(c.valid.shape[0], per_block), _block_index(c.valid.shape[1], per_block)) for c in cells]


def _assign_block_splits(
    cells: list[SceneCells], layouts: list[BlockLayout], fractions: Sequence[float], *, size: int,
    max_invalid: float, rng: np.random.Generator,
) -> None:
    """Deal blocks to splits by the fractions, pooled over all scenes.

    Blocks that can hold an acceptable window on their own are dealt first, so every split gets one that
    it can actually sample from (a block of land would not do).
    """
    useful = np.concatenate([
        _blocks_with_a_window(c, rows, cols, size, max_invalid).ravel() for c, (rows, cols) in zip(cells, layouts)
    ])
    dealt = rng.permutation(np.repeat(np.arange(3), split_counts(int(useful.sum()), fractions)))
    # The other blocks cannot host a window alone, but a window may still reach into one.
    filler = rng.choice(3, size=int((~useful).sum()), p=np.asarray(fractions) / np.sum(fractions))
    flat = np.empty(useful.size, dtype="int8")
    flat[useful] = dealt
    flat[~useful] = filler
    start = 0
    for item, (rows, cols) in zip(cells, layouts):
        shape = (int(rows[-1]) + 1, int(cols[-1]) + 1)
        assignment = flat[start : start + shape[0] * shape[1]].reshape(shape)
        start += shape[0] * shape[1]
        item.split[:] = assignment[np.ix_(rows, cols)]


def _blocks_with_a_window(
    item: SceneCells, block_rows: np.ndarray, block_cols: np.ndarray, size: int, max_invalid: float
) -> np.ndarray:
    """Which blocks contain a whole cell-aligned window that is valid enough (exact cell sums, vectorised)."""
    k = size // CELL
    last_row, last_col = (item.grid.height - size) // CELL, (item.grid.width - size) // CELL
    rows, cols = np.mgrid[: last_row + 1, : last_col + 1]
    valid = item.window_sum("valid", rows, cols, k)
    ok = valid >= (1.0 - max_invalid) * size * size - 1e-6
    ok &= (block_rows[rows] == block_rows[rows + k - 1]) & (block_cols[cols] == block_cols[cols + k - 1])
    useful = np.zeros((int(block_rows[-1]) + 1, int(block_cols[-1]) + 1), dtype=bool)
    useful[block_rows[rows[ok]], block_cols[cols[ok]]] = True
    return useful


# --- sampling -----------------------------------------------------------------------------------------


@dataclass
class _Accepted:
    scene: int
    row: int  # in cells
    col: int
    split: int
    foreground: float
    unseen: float
    valid: float


def _check_options(
    *, size: int, n: int, min_unseen: float, max_empty: int | None, max_invalid: float, max_rejects: int,
    split_by: str, block_size: int | None, fractions: Sequence[float],
) -> tuple[int, int, tuple[float, float, float]]:
    if size < CELL or size % CELL:
        raise ConfigError(f"size {size} is not a multiple of {CELL}: use 128, 256 or 512")
    if n < 1:
        raise ConfigError(f"n {n}: ask for at least one patch")
    if not 0 <= min_unseen <= 1:
        raise ConfigError(f"min_unseen {min_unseen} must lie between 0 and 1")
    if not 0 <= max_invalid <= 1:
        raise ConfigError(f"max_invalid {max_invalid} must lie between 0 and 1")
    if max_rejects < 1:
        raise ConfigError(f"max_rejects {max_rejects} must be at least 1")
    max_empty = n // 10 if max_empty is None else max_empty
    if max_empty < 0:
        raise ConfigError(f"max_empty {max_empty} must be 0 or more")
    if split_by not in ("auto", "scene", "block"):
        raise ConfigError(f"split_by {split_by!r}: use auto, scene or block")
    block_size = 2 * size if block_size is None else block_size
    if block_size < size or block_size % CELL:
        raise ConfigError(
            f"block_size {block_size} must be a multiple of {CELL} and at least the patch size {size}"
        )
    shares = tuple(float(f) for f in fractions)
    if len(shares) != 3 or any(f < 0 or not math.isfinite(f) for f in shares) or abs(sum(shares) - 1) > 1e-6:
        given = ",".join(map(str, fractions))
        raise ConfigError(f"fractions {given}: give three shares (train, val, test) that sum to 1")
    return max_empty, block_size, (shares[0], shares[1], shares[2])


@dataclass
class SampledPatches:
    """What sample-patches writes: the fixed windows and the blocks (split regions) they were drawn in."""

    patches: "gpd.GeoDataFrame"  # PATCH_COLUMNS + footprint; attrs: coords, sampling, stats
    blocks: "gpd.GeoDataFrame"  # BLOCK_COLUMNS + footprint, in the same coordinates as the patches


def sample_patches(
    scenes: Sequence[str | Path],
    labels: Sequence[str | Path | None] | None = None,
    **options: Any,
) -> "gpd.GeoDataFrame":
    """The patch windows alone (see :func:`sample_patches_and_blocks` for the options).

    Without the blocks, training can only draw its windows inside the train patches' footprints; write
    the result of :func:`sample_patches_and_blocks` to let it use the whole train blocks.
    """
    return sample_patches_and_blocks(scenes, labels, **options).patches


def sample_patches_and_blocks(
    scenes: Sequence[str | Path],
    labels: Sequence[str | Path | None] | None = None,
    *,
    size: int = 128,
    n: int = 500,
    seed: int = 0,
    min_unseen: float = 0.5,
    max_empty: int | None = None,
    max_invalid: float = 0.5,
    max_rejects: int = 1000,
    split_by: str = "block",
    block_size: int | None = None,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    checks: bool = True,
    progress: Progress | None = None,
) -> SampledPatches:
    """Deal scenes or blocks to train/val/test, then sample up to ``n`` windows (see the module docstring).

    ``split_by`` "block" (default; ``block_size`` pixels, default twice ``size``), "scene" (needs 3
    scenes) or "auto" (by scene with 3 or more scenes, else by block). ``patches.attrs`` holds ``coords``
    ("crs" or "pixel"), ``sampling`` (the parameters) and ``stats`` (stop reason, candidates, rejections
    by reason, empty windows). ``checks`` samples each scene's bands against their plausible ranges
    (:mod:`icetools.io.checks`).
    """
    if not scenes:
        raise ConfigError("no scene given")
    labels = list(labels) if labels is not None else [None] * len(scenes)
    if len(labels) != len(scenes):
        raise ConfigError(f"{len(labels)} labels for {len(scenes)} scenes: give one labels file per scene, in order")
    resolved = [Path(s).resolve() for s in scenes]
    for i, path in enumerate(resolved):
        if path in resolved[:i]:
            # Its two copies could land in different splits and share every pixel.
            raise ConfigError(f"{scenes[i]} is given twice: give each scene once")
    max_empty, block_size, shares = _check_options(
        size=size, n=n, min_unseen=min_unseen, max_empty=max_empty, max_invalid=max_invalid,
        max_rejects=max_rejects, split_by=split_by, block_size=block_size, fractions=fractions,
    )
    if checks:
        check_scenes(scenes)
        check_labels(labels)
    cells = _scan_all(scenes, labels, size=size, progress=progress)

    rng = np.random.default_rng(seed)
    used_split = _split_used(split_by, len(cells))
    layouts = _block_layouts(cells, split_by=used_split, block_size=block_size)
    if used_split == "scene":
        _assign_scene_splits(cells, shares, rng)
    else:
        _assign_block_splits(cells, layouts, shares, size=size, max_invalid=max_invalid, rng=rng)

    accepted, stats = _draw(
        cells, rng, size=size, n=n, min_unseen=min_unseen, max_empty=max_empty, max_invalid=max_invalid,
        max_rejects=max_rejects, progress=progress,
    )
    if not accepted:
        raise _nothing_sampled(stats, size=size, max_invalid=max_invalid, min_unseen=min_unseen)
    params = {
        "size": size, "n": n, "seed": seed, "min_unseen": min_unseen, "max_empty": max_empty,
        "max_invalid": max_invalid, "max_rejects": max_rejects, "split_by": split_by, "split_by_used": used_split,
        "block_size": block_size, "fractions": list(shares), "cell": CELL,
    }
    return SampledPatches(
        patches=_to_frame(cells, accepted, size=size, params=params, stats=stats),
        blocks=_blocks_frame(cells, layouts),
    )


def _scan_all(
    scenes: Sequence[str | Path], labels: Sequence[str | Path | None], *, size: int, progress: Progress | None
) -> list[SceneCells]:
    """Every scene's cell maps; every input (sizes, label grids, tasks) is checked before the long pass."""
    inspected = [_inspect(scene_path, labels_path, size=size) for scene_path, labels_path in zip(scenes, labels)]
    tasks = {task for _, task in inspected}
    if len(tasks) > 1:
        raise ConfigError(f"the labels mix tasks ({', '.join(sorted(tasks))}): sample one task at a time")
    strips_total = sum(math.ceil(height / STRIP_ROWS) for height, _ in inspected)
    cells: list[SceneCells] = []
    for scene_path, labels_path in zip(scenes, labels):
        done = sum(math.ceil(c.grid.height / STRIP_ROWS) for c in cells)
        cells.append(scan_scene(scene_path, labels_path or None, size=size, progress=progress,
                                strips_done=done, strips_total=strips_total))
    return cells


def _split_used(split_by: str, n_scenes: int) -> str:
    """The split actually used: "auto" picks scenes from 3 on; a split by scene needs 3 scenes."""
    used = split_by if split_by != "auto" else ("scene" if n_scenes >= 3 else "block")
    if used == "scene" and n_scenes < 3:
        warnings.warn(
            f"split_by scene needs at least 3 scenes, got {n_scenes}: splitting by spatial blocks instead",
            UserWarning, stacklevel=3,
        )
        used = "block"
    return used


def _draw(
    cells: list[SceneCells], rng: np.random.Generator, *, size: int, n: int, min_unseen: float, max_empty: int,
    max_invalid: float, max_rejects: int, progress: Progress | None,
) -> tuple[list[_Accepted], dict]:
    """The rejection sampler; window statistics are exact cell sums (windows are cell-aligned)."""
    k = size // CELL
    area = float(size * size)
    weights = np.array([c.valid.sum() for c in cells], dtype="float64")
    if weights.sum() <= 0:
        raise DataError("no scene has a valid pixel (all land, nodata or uncharted): nothing to sample")
    choose = weights / weights.sum()
    # Last cell offset whose window still lies wholly inside the scene.
    last = [((c.grid.height - size) // CELL, (c.grid.width - size) // CELL) for c in cells]
    jitter = k // 4
    accepted: list[_Accepted] = []
    rejected = {"split": 0, "invalid": 0, "seen": 0, "empty": 0}
    empty_taken = candidates = in_a_row = 0
    while len(accepted) < n and in_a_row < max_rejects:
        candidates += 1
        index = int(rng.choice(len(cells), p=choose))
        item = cells[index]
        last_row, last_col = last[index]
        centred = rng.random() < 0.5
        if centred and item.foreground_cells.size:
            # Centred on a foreground cell, shifted by up to a quarter window so the same cell can seed
            # several distinct windows while it stays in the window's central half.
            cell_row, cell_col = divmod(int(item.foreground_cells[rng.integers(item.foreground_cells.size)]),
                                        item.valid.shape[1])
            shift = rng.integers(-jitter, jitter + 1, size=2)
            row = int(np.clip(cell_row - k // 2 + shift[0], 0, last_row))
            col = int(np.clip(cell_col - k // 2 + shift[1], 0, last_col))
        else:
            row, col = int(rng.integers(0, last_row + 1)), int(rng.integers(0, last_col + 1))
        reason, stats = _judge(item, row, col, k, area, min_unseen=min_unseen, max_invalid=max_invalid,
                               empty_allowed=empty_taken < max_empty)
        if reason:
            rejected[reason] += 1
            in_a_row += 1
            continue
        in_a_row = 0
        item.coverage[row : row + k, col : col + k] += 1
        if stats["foreground"] == 0:
            empty_taken += 1
        accepted.append(_Accepted(index, row, col, int(item.split[row, col]), **stats))
        report(progress, "sample", len(accepted), n)
    stop = f"reached {n} patches" if len(accepted) >= n else f"{max_rejects} candidates rejected in a row"
    return accepted, {
        "stop_reason": stop, "candidates": candidates, "rejected": rejected, "empty_windows": empty_taken,
        "accepted": len(accepted),
    }


def _nothing_sampled(stats: dict, *, size: int, max_invalid: float, min_unseen: float) -> DataError:
    """Zero patches is no result: say which rule turned every window away and what to change."""
    rejected = stats["rejected"]
    worst = max(rejected, key=rejected.get)
    advice = {
        "invalid": f"held too many invalid pixels (land, nodata or uncharted; at most {max_invalid:.0%} allowed): "
                   "use a smaller patch size or a larger max_invalid",
        "empty": "held no foreground: allow empty patches (max_empty) or check the labels",
        "split": "straddled two split regions: use larger blocks (block_size) or a smaller patch size",
        "seen": f"overlapped earlier patches (less than {min_unseen:.0%} unseen): lower min_unseen",
    }[worst]
    counts = ", ".join(f"{reason} {count}" for reason, count in rejected.items() if count)
    return DataError(
        f"no {size}-pixel patch could be sampled: all {stats['candidates']} candidate windows were rejected "
        f"({counts}); most {advice}"
    )


def _judge(
    item: SceneCells, row: int, col: int, k: int, area: float, *, min_unseen: float, max_invalid: float,
    empty_allowed: bool,
) -> tuple[str | None, dict]:
    """Why a window is rejected (None if it is accepted), and its statistics."""
    valid = int(item.window_sum("valid", row, col, k)) / area
    if 1.0 - valid > max_invalid + 1e-12:
        return "invalid", {}
    foreground = int(item.window_sum("foreground", row, col, k)) / area
    if foreground == 0 and not empty_allowed:
        return "empty", {}
    splits = item.split[row : row + k, col : col + k]
    if (splits != splits[0, 0]).any():
        return "split", {}
    unseen = np.count_nonzero(item.coverage[row : row + k, col : col + k] == 0) / float(k * k)
    if unseen < min_unseen - 1e-12:
        return "seen", {}
    return None, {"foreground": foreground, "unseen": unseen, "valid": valid}


def _is_affine(grid: Grid) -> bool:
    return not grid.has_gcps and grid.transform is not None and grid.crs is not None


def _map_coords(cells: list[SceneCells]) -> bool:
    """Footprints in the scenes' CRS when they share one affine CRS, else in pixel space (x = col, y = row)."""
    from pyproj import CRS

    first = cells[0].grid
    return all(_is_affine(c.grid) for c in cells) and all(CRS(c.grid.crs).equals(first.crs) for c in cells)


def _footprint(grid: Grid, row_off: int, col_off: int, height: int, width: int, *, map_coords: bool):
    from shapely.geometry import Polygon, box

    if map_coords:
        t = grid.window_transform(Window(col_off, row_off, width, height))
        return Polygon([t @ (0, 0), t @ (width, 0), t @ (width, height), t @ (0, height)])
    return box(col_off, row_off, col_off + width, row_off + height)


def _to_frame(cells: list[SceneCells], accepted: list[_Accepted], *, size: int, params: dict, stats: dict):
    """One row per accepted window, footprints as :func:`_map_coords` decides."""
    import geopandas as gpd
    import pandas as pd

    map_coords = _map_coords(cells)
    rows, geometries = [], []
    for patch_id, a in enumerate(accepted):
        item = cells[a.scene]
        row_off, col_off = a.row * CELL, a.col * CELL
        geometries.append(_footprint(item.grid, row_off, col_off, size, size, map_coords=map_coords))
        rows.append({
            "scene": str(item.scene), "labels": str(item.labels) if item.labels else "", "task": item.task,
            "row_off": row_off, "col_off": col_off, "size": size, "split": SPLITS[a.split],
            "foreground": a.foreground, "unseen": a.unseen, "valid": a.valid, "patch_id": patch_id,
        })
    table = pd.DataFrame(rows, columns=list(PATCH_COLUMNS))
    crs = cells[0].grid.crs if map_coords else None
    frame = gpd.GeoDataFrame(table, geometry=gpd.GeoSeries(geometries), crs=crs)
    frame = frame.astype({"row_off": "int64", "col_off": "int64", "size": "int64", "patch_id": "int64",
                          "foreground": "float64", "unseen": "float64", "valid": "float64"})
    frame.attrs = {"coords": "crs" if map_coords else "pixel", "sampling": params, "stats": stats}
    return frame


def _blocks_frame(cells: list[SceneCells], layouts: list[BlockLayout]):
    """One row per block: its pixel extent (cell-aligned, clipped to the scene), split and shares."""
    import geopandas as gpd
    import pandas as pd

    map_coords = _map_coords(cells)
    rows, geometries = [], []
    for item, (block_rows, block_cols) in zip(cells, layouts):
        height, width = item.grid.height, item.grid.width
        for b_row in range(int(block_rows[-1]) + 1):
            r0, r1 = _cell_span(block_rows, b_row)
            for b_col in range(int(block_cols[-1]) + 1):
                c0, c1 = _cell_span(block_cols, b_col)
                row_off, col_off = r0 * CELL, c0 * CELL
                block_h, block_w = min(r1 * CELL, height) - row_off, min(c1 * CELL, width) - col_off
                area = float(block_h * block_w)
                geometries.append(_footprint(item.grid, row_off, col_off, block_h, block_w, map_coords=map_coords))
                rows.append({
                    "scene": str(item.scene), "labels": str(item.labels) if item.labels else "", "task": item.task,
                    "row_off": row_off, "col_off": col_off, "height": block_h, "width": block_w,
                    "split": SPLITS[int(item.split[r0, c0])],
                    "valid": float(item.valid[r0:r1, c0:c1].sum()) / area,
                    "foreground": float(item.foreground[r0:r1, c0:c1].sum()) / area,
                    "block_id": len(rows),
                })
    table = pd.DataFrame(rows, columns=list(BLOCK_COLUMNS))
    crs = cells[0].grid.crs if map_coords else None
    frame = gpd.GeoDataFrame(table, geometry=gpd.GeoSeries(geometries), crs=crs)
    return frame.astype({"row_off": "int64", "col_off": "int64", "height": "int64", "width": "int64",
                         "block_id": "int64", "valid": "float64", "foreground": "float64"})


def _cell_span(block_index: np.ndarray, block: int) -> tuple[int, int]:
    """The cells [first, stop) of one block along an axis."""
    where = np.flatnonzero(block_index == block)
    return int(where[0]), int(where[-1]) + 1
