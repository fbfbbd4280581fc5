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
  split gets at least one when there are enough.
* **Footprints.** In the scenes' CRS when all share one affine CRS; otherwise (GCP scenes, mixed CRSs)
  in pixel space, x = column and y = row from the scene's top-left corner, with ``attrs["coords"] = "pixel"``.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from rasterio.control import GroundControlPoint
from rasterio.windows import Window

from icetools.errors import ConfigError, CRSError, DataError, EmptyInputError, InputFileError, MissingVariableError
from icetools.grid import Grid
from icetools.io.atomic import atomic_path
from icetools.io.scene import GeoTiffScene, Scene, open_scene

if TYPE_CHECKING:
    import geopandas as gpd

CELL = 16
STRIP_ROWS = 512
SPLITS = ("train", "val", "test")
LAYER = "patches"
PATCH_COLUMNS = (
    "scene", "labels", "task", "row_off", "col_off", "size", "split", "foreground", "unseen", "valid", "patch_id",
)
METADATA_PREFIX = "icetools_"  # GDAL splits metadata keys at ":" and "="

# progress(stage, done, total) with stage "scan" (strips read) or "sample" (patches accepted).
Progress = Callable[[str, int, int], None]


# --- labels -------------------------------------------------------------------------------------------


class LabelReader:
    """One scene's labels by window, whichever file carries them: a labels raster or the scene's own chart.

    The task follows from the bands: ``polygon_id`` (+ ``SIC``) -> "sic", ``line`` -> "binary",
    ``class`` -> "multiclass". Without a labels raster the scene must carry a chart (AI4Arctic netCDF).
    """

    def __init__(self, scene: Scene, labels: Scene | None):
        self.scene = scene
        self.labels = labels
        self._lut: np.ndarray | None = None
        if labels is not None:
            if not scene.grid.same_pixels_as(labels.grid):
                raise CRSError(
                    f"{labels.path.name} ({labels.height} x {labels.width}) is not on the grid of {scene.path.name} "
                    f"({scene.height} x {scene.width}): run `icetools rasterize VECTOR --like {scene.path}`"
                )
            names = labels.band_names
            if "polygon_id" in names:
                if "SIC" not in names:
                    raise MissingVariableError(
                        f"{labels.path.name} has 'polygon_id' but no 'SIC' band; bands found: {', '.join(names)}"
                    )
                self.task = "sic"
            elif "line" in names:
                self.task = "binary"
            elif "class" in names:
                self.task = "multiclass"
            else:
                raise MissingVariableError(
                    f"{labels.path.name} has none of the label bands 'polygon_id'+'SIC', 'line' or 'class'; "
                    f"bands found: {', '.join(names)}: make it with `icetools rasterize VECTOR --like SCENE`"
                )
            return
        if not scene.has_chart:
            raise MissingVariableError(
                f"{scene.path.name} carries no ice chart: pass --labels LABELS.tif "
                f"(made by `icetools rasterize VECTOR --like {scene.path}`)"
            )
        self.task = "sic"
        if not (isinstance(scene, GeoTiffScene) and "SIC" in scene.band_names):
            # AI4Arctic charts: SIC comes from the decoded polygon table, looked up by polygon id.
            table = scene.polygon_table()
            size = max(table, default=0) + 1
            self._lut = np.full(size, np.nan, dtype="float32")
            for poly_id, polygon in table.items():
                if poly_id >= 0:
                    self._lut[poly_id] = polygon.sic

    @property
    def band_names(self) -> tuple[str, ...]:
        return {"sic": ("polygon_id", "SIC"), "binary": ("line",), "multiclass": ("class",)}[self.task]

    def read(self, window: Window) -> np.ndarray:
        """The label bands (see :attr:`band_names`) as float32 (n, h, w), NaN for nodata."""
        if self.labels is not None:
            return self.labels.read(list(self.band_names), window)
        ids = self.scene.read_polygon_ids(window)
        if self._lut is None:
            sic = self.scene.read(["SIC"], window)[0]
        else:
            inside = (ids >= 0) & (ids < self._lut.size)
            sic = np.where(inside, self._lut[np.clip(ids, 0, self._lut.size - 1)], np.float32(np.nan))
        sic = np.where(ids > 0, sic, np.float32(np.nan))
        return np.stack([ids.astype("float32"), sic.astype("float32")])

    def masks(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """(valid, foreground) from the labels alone; the scene's own validity is combined by the caller."""
        bands = self.read(window)
        if self.task == "sic":
            ids, sic = bands
            charted = np.isfinite(sic)
            return charted, charted & (np.nan_to_num(ids) > 0)
        if self.task == "binary":
            return np.ones(bands.shape[1:], dtype=bool), np.nan_to_num(bands[0]) > 0.5
        return np.ones(bands.shape[1:], dtype=bool), np.isfinite(bands[0])


def open_labels(scene: Scene, labels: str | Path | None) -> LabelReader:
    """The label reader of a scene; ``labels`` None or "" means the scene's own chart."""
    return LabelReader(scene, open_scene(labels) if labels else None)


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
            "use a smaller --size"
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
                if progress:
                    progress("scan", strips_done, strips_total)
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


def _assign_block_splits(
    cells: list[SceneCells], fractions: Sequence[float], *, block_size: int, size: int, max_invalid: float,
    rng: np.random.Generator,
) -> None:
    """Deal blocks to splits by the fractions, pooled over all scenes.

    Blocks that can hold an acceptable window on their own are dealt first, so every split gets one that
    it can actually sample from (a block of land would not do).
    """
    per_block = block_size // CELL
    indices = [(_block_index(c.valid.shape[0], per_block), _block_index(c.valid.shape[1], per_block)) for c in cells]
    useful = np.concatenate([
        _blocks_with_a_window(c, rows, cols, size, max_invalid).ravel() for c, (rows, cols) in zip(cells, indices)
    ])
    dealt = rng.permutation(np.repeat(np.arange(3), split_counts(int(useful.sum()), fractions)))
    # The other blocks cannot host a window alone, but a window may still reach into one.
    filler = rng.choice(3, size=int((~useful).sum()), p=np.asarray(fractions) / np.sum(fractions))
    flat = np.empty(useful.size, dtype="int8")
    flat[useful] = dealt
    flat[~useful] = filler
    start = 0
    for item, (rows, cols) in zip(cells, indices):
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
        raise ConfigError(f"--size {size} is not a multiple of {CELL}: use 128, 256 or 512")
    if n < 1:
        raise ConfigError(f"--n {n}: ask for at least one patch")
    if not 0 <= min_unseen <= 1:
        raise ConfigError(f"--min-unseen {min_unseen} must lie between 0 and 1")
    if not 0 <= max_invalid <= 1:
        raise ConfigError(f"--max-invalid {max_invalid} must lie between 0 and 1")
    if max_rejects < 1:
        raise ConfigError(f"--max-rejects {max_rejects} must be at least 1")
    max_empty = n // 10 if max_empty is None else max_empty
    if max_empty < 0:
        raise ConfigError(f"--max-empty {max_empty} must be 0 or more")
    if split_by not in ("auto", "scene", "block"):
        raise ConfigError(f"--split-by {split_by!r}: use auto, scene or block")
    block_size = 4 * size if block_size is None else block_size
    if block_size < size or block_size % CELL:
        raise ConfigError(
            f"--block-size {block_size} must be a multiple of {CELL} and at least the patch size {size}"
        )
    shares = tuple(float(f) for f in fractions)
    if len(shares) != 3 or any(f < 0 or not math.isfinite(f) for f in shares) or abs(sum(shares) - 1) > 1e-6:
        given = ",".join(map(str, fractions))
        raise ConfigError(f"--fractions {given}: give three shares (train,val,test) that sum to 1")
    return max_empty, block_size, (shares[0], shares[1], shares[2])


def sample_patches(
    scenes: Sequence[str | Path],
    labels: Sequence[str | Path | None] | None = None,
    *,
    size: int = 256,
    n: int = 500,
    seed: int = 0,
    min_unseen: float = 0.5,
    max_empty: int | None = None,
    max_invalid: float = 0.5,
    max_rejects: int = 1000,
    split_by: str = "auto",
    block_size: int | None = None,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    progress: Progress | None = None,
) -> "gpd.GeoDataFrame":
    """Sample up to ``n`` patch windows over the scenes; one row per patch (see the module docstring).

    ``frame.attrs`` holds ``coords`` ("crs" or "pixel"), ``sampling`` (the parameters) and ``stats``
    (stop reason, candidates, rejections by reason, empty windows).
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

    # Check every input (sizes, label grids, tasks) before the long pass, so a mistake fails fast.
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

    rng = np.random.default_rng(seed)
    used_split = split_by if split_by != "auto" else ("scene" if len(cells) >= 3 else "block")
    if used_split == "scene" and len(cells) < 3:
        warnings.warn(
            f"--split-by scene needs at least 3 scenes, got {len(cells)}: splitting by spatial blocks instead",
            UserWarning, stacklevel=2,
        )
        used_split = "block"
    if used_split == "scene":
        _assign_scene_splits(cells, shares, rng)
    else:
        _assign_block_splits(cells, shares, block_size=block_size, size=size, max_invalid=max_invalid, rng=rng)

    accepted, stats = _draw(
        cells, rng, size=size, n=n, min_unseen=min_unseen, max_empty=max_empty, max_invalid=max_invalid,
        max_rejects=max_rejects, progress=progress,
    )
    params = {
        "size": size, "n": n, "seed": seed, "min_unseen": min_unseen, "max_empty": max_empty,
        "max_invalid": max_invalid, "max_rejects": max_rejects, "split_by": split_by, "split_by_used": used_split,
        "block_size": block_size, "fractions": list(shares), "cell": CELL,
    }
    return _to_frame(cells, accepted, size=size, params=params, stats=stats)


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
        if progress:
            progress("sample", len(accepted), n)
    stop = f"reached {n} patches" if len(accepted) >= n else f"{max_rejects} candidates rejected in a row"
    return accepted, {
        "stop_reason": stop, "candidates": candidates, "rejected": rejected, "empty_windows": empty_taken,
        "accepted": len(accepted),
    }


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


def _to_frame(cells: list[SceneCells], accepted: list[_Accepted], *, size: int, params: dict, stats: dict):
    """Footprints in the scenes' CRS when they share one affine CRS, else in pixel space (x = col, y = row)."""
    import geopandas as gpd
    import pandas as pd
    from pyproj import CRS
    from shapely.geometry import Polygon, box

    first = cells[0].grid
    map_coords = all(_is_affine(c.grid) for c in cells) and all(CRS(c.grid.crs).equals(first.crs) for c in cells)
    rows, geometries = [], []
    for patch_id, a in enumerate(accepted):
        item = cells[a.scene]
        row_off, col_off = a.row * CELL, a.col * CELL
        if map_coords:
            t = item.grid.window_transform(Window(col_off, row_off, size, size))
            geometries.append(Polygon([t @ (0, 0), t @ (size, 0), t @ (size, size), t @ (0, size)]))
        else:
            geometries.append(box(col_off, row_off, col_off + size, row_off + size))
        rows.append({
            "scene": str(item.scene), "labels": str(item.labels) if item.labels else "", "task": item.task,
            "row_off": row_off, "col_off": col_off, "size": size, "split": SPLITS[a.split],
            "foreground": a.foreground, "unseen": a.unseen, "valid": a.valid, "patch_id": patch_id,
        })
    table = pd.DataFrame(rows, columns=list(PATCH_COLUMNS))
    frame = gpd.GeoDataFrame(table, geometry=gpd.GeoSeries(geometries), crs=first.crs if map_coords else None)
    frame = frame.astype({"row_off": "int64", "col_off": "int64", "size": "int64", "patch_id": "int64",
                          "foreground": "float64", "unseen": "float64", "valid": "float64"})
    frame.attrs = {"coords": "crs" if map_coords else "pixel", "sampling": params, "stats": stats}
    return frame


# --- files --------------------------------------------------------------------------------------------


def write_patches(frame: "gpd.GeoDataFrame", path: str | Path, *, overwrite: bool = False) -> Path:
    """GeoPackage layer "patches"; the parameters and the coordinate mode travel as layer metadata.

    Written here rather than through ``write_layer`` because that does not pass layer metadata.
    """
    import pyogrio

    path = Path(path)
    if path.suffix.lower() != ".gpkg":
        raise ConfigError(f"{path}: patches are written as a GeoPackage; use a .gpkg output")
    attrs = frame.attrs or {}
    metadata = {
        f"{METADATA_PREFIX}coords": str(attrs.get("coords", "crs" if frame.crs is not None else "pixel")),
        f"{METADATA_PREFIX}sampling": json.dumps(attrs.get("sampling", {})),
        f"{METADATA_PREFIX}stats": json.dumps(attrs.get("stats", {})),
    }
    with atomic_path(path, overwrite=overwrite) as tmp, warnings.catch_warnings():
        # Pixel-space footprints have no CRS on purpose; pyogrio would warn about it.
        warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
        pyogrio.write_dataframe(frame, tmp, layer=LAYER, driver="GPKG", layer_metadata=metadata)
    return path


def read_patches(path: str | Path) -> "gpd.GeoDataFrame":
    """The patches layer written by :func:`write_patches`, with its metadata back in ``frame.attrs``."""
    import pyogrio

    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path} does not exist: make it with `icetools sample-patches`")
    try:
        layers = [str(name) for name, _ in pyogrio.list_layers(path)]
    except Exception as exc:  # pyogrio raises several GDAL-derived types; all mean "not a vector file"
        raise InputFileError(f"cannot read {path} as a GeoPackage: {str(exc).splitlines()[0]}") from None
    if LAYER not in layers:
        raise DataError(f"{path} has no '{LAYER}' layer (layers: {', '.join(layers) or 'none'}): "
                        "make it with `icetools sample-patches`")
    frame = pyogrio.read_dataframe(path, layer=LAYER)
    missing = [c for c in PATCH_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path} layer '{LAYER}' lacks the columns {', '.join(missing)}: "
                        "was it written by `icetools sample-patches`?")
    frame["labels"] = frame["labels"].fillna("")
    metadata = pyogrio.read_info(path, layer=LAYER).get("layer_metadata") or {}
    frame.attrs = {
        "coords": metadata.get(f"{METADATA_PREFIX}coords", "crs" if frame.crs is not None else "pixel"),
        "sampling": json.loads(metadata.get(f"{METADATA_PREFIX}sampling", "{}")),
        "stats": json.loads(metadata.get(f"{METADATA_PREFIX}stats", "{}")),
    }
    return frame


def patch_window(record) -> Window:
    """The pixel window of one patch row."""
    return Window(int(record["col_off"]), int(record["row_off"]), int(record["size"]), int(record["size"]))


def chip_grid(grid: Grid, window: Window) -> Grid:
    """The grid of a window: the shifted affine transform, or the GCPs moved by the window's offsets."""
    height, width = int(window.height), int(window.width)
    if grid.has_gcps:
        shifted = tuple(
            GroundControlPoint(row=g.row - window.row_off, col=g.col - window.col_off, x=g.x, y=g.y, z=g.z, id=g.id)
            for g in grid.gcps
        )
        return Grid(height, width, gcps=shifted, gcp_crs=grid.gcp_crs)
    return Grid(height, width, crs=grid.crs, transform=grid.window_transform(window))


def coverage_maps(frame: "gpd.GeoDataFrame") -> dict[str, np.ndarray]:
    """How many patches cover each 16-px cell, per scene: replayed from the windows (exact, they are aligned)."""
    maps: dict[str, np.ndarray] = {}
    for scene_path, rows in frame.groupby("scene", sort=False):
        with open_scene(scene_path) as scene:
            coverage = np.zeros((math.ceil(scene.height / CELL), math.ceil(scene.width / CELL)), dtype="int32")
        for _, record in rows.iterrows():
            r, c, k = int(record["row_off"]) // CELL, int(record["col_off"]) // CELL, int(record["size"]) // CELL
            coverage[r : r + k, c : c + k] += 1
        maps[str(scene_path)] = coverage
    return maps


def export_chips(frame: "gpd.GeoDataFrame", out_dir: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Each patch's image and label bands as GeoTIFF chips: DIR/SPLIT/ID_image.tif and ID_labels.tif.

    For tools that want files; icetools itself reads patches by window from the scenes at train time.
    """
    from icetools.io.raster import write_raster

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputFileError(f"{out_dir} exists and is not a folder: choose another --export folder")
    written: list[Path] = []
    for (scene_path, labels_path), rows in frame.groupby(["scene", "labels"], sort=False):
        with open_scene(scene_path) as scene:
            reader = open_labels(scene, labels_path or None)
            names = scene.resolve(scene.default_inputs)
            for _, record in rows.iterrows():
                window = patch_window(record)
                grid = chip_grid(scene.grid, window)
                folder = out_dir / str(record["split"])
                folder.mkdir(parents=True, exist_ok=True)
                stem = f"{int(record['patch_id']):06d}"
                tags = {"scene": scene_path, "patch_id": int(record["patch_id"]), "split": record["split"],
                        "row_off": int(record["row_off"]), "col_off": int(record["col_off"])}
                image = scene.read(names, window)
                written.append(write_raster(folder / f"{stem}_image.tif", image, grid, nodata=float("nan"),
                                            band_names=names, tags=tags, overwrite=overwrite))
                label, nodata = _label_chip(reader.task, reader.read(window))
                written.append(write_raster(folder / f"{stem}_labels.tif", label, grid, nodata=nodata,
                                            band_names=reader.band_names, tags=tags, overwrite=overwrite,
                                            categorical=True))
            if reader.labels is not None:
                reader.labels.close()
    return written


def _label_chip(task: str, bands: np.ndarray) -> tuple[np.ndarray, float | None]:
    """Label bands in the file conventions of `icetools rasterize`: float32 ids+SIC, uint8 line, uint8 class."""
    if task == "sic":
        ids = np.nan_to_num(bands[0], nan=0.0)
        return np.stack([ids, bands[1]]).astype("float32"), float("nan")
    if task == "binary":
        return (np.nan_to_num(bands, nan=0.0) > 0.5).astype("uint8"), None
    return np.where(np.isfinite(bands), bands, 255).astype("uint8"), 255.0


def plot_coverage(
    frame: "gpd.GeoDataFrame", coverage: dict[str, np.ndarray], png_path: str | Path, *, overwrite: bool = False
) -> Path:
    """Per scene, the coverage cells with the footprints outlined by split: where the model will learn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    colours = {"train": "tab:blue", "val": "tab:orange", "test": "tab:red"}
    scenes = list(coverage)
    if not scenes:
        raise EmptyInputError("no patches were sampled, so there is no coverage to plot")
    cols = min(len(scenes), 3)
    rows_n = math.ceil(len(scenes) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5 * cols, 5 * rows_n), squeeze=False)
    try:
        for ax in axes.ravel()[len(scenes):]:
            ax.set_axis_off()
        for ax, scene_path in zip(axes.ravel(), scenes):
            cover = coverage[scene_path]
            image = ax.imshow(cover, cmap="viridis", extent=(0, cover.shape[1] * CELL, cover.shape[0] * CELL, 0),
                              interpolation="nearest")
            fig.colorbar(image, ax=ax, shrink=0.7, label="patches per pixel")
            for _, record in frame[frame["scene"] == scene_path].iterrows():
                ax.add_patch(Rectangle((record["col_off"], record["row_off"]), record["size"], record["size"],
                                       fill=False, lw=0.8, edgecolor=colours.get(record["split"], "white")))
            ax.set_title(Path(scene_path).name, fontsize=9)
            ax.set_xlabel("column")
            ax.set_ylabel("row")
        handles = [Rectangle((0, 0), 1, 1, fill=False, edgecolor=c, label=s) for s, c in colours.items()]
        fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False)
        fig.tight_layout(rect=(0, 0.04, 1, 1))
        with atomic_path(png_path, overwrite=overwrite) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)
    return Path(png_path)

