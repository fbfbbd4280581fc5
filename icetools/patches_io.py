"""The patches file and what is made from it: the GeoPackage layers of patch windows and blocks, chips, coverage.

A patch is a row of the ``patches`` layer: the scene (and labels) it comes from, its window
(``row_off``, ``col_off``, ``size``), its split and its statistics; the footprint is the geometry.
Windows are aligned to :data:`CELL`-pixel cells, so the coverage of a set of patches is exact on those
cells. A block is a row of the ``blocks`` layer: a cell-aligned region of a scene (the whole scene for a
split by scene) given to one split, where training draws fresh windows; QGIS shows both layers.
``sample-patches`` writes the file, ``train`` reads it. Files written before the blocks layer existed
have only ``patches``: :func:`read_blocks` then answers None.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from rasterio.control import GroundControlPoint
from rasterio.windows import Window

from icetools.errors import ConfigError, DataError, InputFileError, OutputExistsError
from icetools.grid import Grid
from icetools.io.atomic import atomic_path
from icetools.io.paths import refuse_overwriting_inputs
from icetools.io.scene import open_scene
from icetools.labels import open_labels

if TYPE_CHECKING:
    import geopandas as gpd

CELL = 16
"""Patch windows start on multiples of CELL pixels and their size is a multiple of it."""
SPLITS = ("train", "val", "test")
LAYER = "patches"
PATCH_COLUMNS = (
    "scene", "labels", "task", "row_off", "col_off", "size", "split", "foreground", "unseen", "valid", "patch_id",
)
BLOCK_LAYER = "blocks"
BLOCK_COLUMNS = (
    "scene", "labels", "task", "row_off", "col_off", "height", "width", "split", "valid", "foreground", "block_id",
)
"""A block's pixel extent, its split, and its valid and foreground pixels as shares of its area."""
METADATA_PREFIX = "icetools_"  # GDAL splits metadata keys at ":" and "="


def write_patches(
    frame: "gpd.GeoDataFrame", path: str | Path, *, blocks: "gpd.GeoDataFrame | None" = None,
    overwrite: bool = False,
) -> Path:
    """GeoPackage layer "patches" (and "blocks" when given); parameters and coordinate mode as layer metadata.

    Written here rather than through ``write_layer`` because that does not pass layer metadata.
    """
    import pyogrio

    path = Path(path)
    if path.suffix.lower() != ".gpkg":
        raise ConfigError(f"{path}: patches are written as a GeoPackage; use a .gpkg output")
    sources = [p for column in ("scene", "labels") if column in frame for p in set(frame[column]) if p]
    refuse_overwriting_inputs([path], sources)
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
        if blocks is not None:
            pyogrio.write_dataframe(blocks, tmp, layer=BLOCK_LAYER, driver="GPKG")
    return path


def _layers(path: Path) -> list[str]:
    import pyogrio

    if not path.exists():
        raise InputFileError(f"{path} does not exist: make it with `icetools sample-patches`")
    try:
        return [str(name) for name, _ in pyogrio.list_layers(path)]
    except Exception as exc:  # pyogrio raises several GDAL-derived types; all mean "not a vector file"
        raise InputFileError(f"cannot read {path} as a GeoPackage: {str(exc).splitlines()[0]}") from None


def read_patches(path: str | Path) -> "gpd.GeoDataFrame":
    """The patches layer written by :func:`write_patches`, with its metadata back in ``frame.attrs``."""
    import pyogrio

    path = Path(path)
    layers = _layers(path)
    if LAYER not in layers:
        raise DataError(f"{path} has no '{LAYER}' layer (layers: {', '.join(layers) or 'none'}): "
                        "make it with `icetools sample-patches`")
    frame = _read_layer(path, LAYER, PATCH_COLUMNS)
    metadata = pyogrio.read_info(path, layer=LAYER).get("layer_metadata") or {}
    frame.attrs = {
        "coords": metadata.get(f"{METADATA_PREFIX}coords", "crs" if frame.crs is not None else "pixel"),
        "sampling": json.loads(metadata.get(f"{METADATA_PREFIX}sampling", "{}")),
        "stats": json.loads(metadata.get(f"{METADATA_PREFIX}stats", "{}")),
    }
    return frame


def read_blocks(path: str | Path) -> "gpd.GeoDataFrame | None":
    """The blocks layer (where each split lies); None for a file written before sample-patches wrote it."""
    path = Path(path)
    if BLOCK_LAYER not in _layers(path):
        return None
    return _read_layer(path, BLOCK_LAYER, BLOCK_COLUMNS)


def _read_layer(path: Path, layer: str, columns: Sequence[str]) -> "gpd.GeoDataFrame":
    """One layer of a patches file, with the columns sample-patches writes (labels "" when none)."""
    import pyogrio

    frame = pyogrio.read_dataframe(path, layer=layer)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path} layer '{layer}' lacks the columns {', '.join(missing)}: "
                        "was it written by `icetools sample-patches`?")
    frame["labels"] = frame["labels"].fillna("")
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
    The chips are staged in a hidden folder moved into place whole: an interrupted export leaves no
    chip, and one over an earlier export replaces its folder as a whole (no old chip survives).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputFileError(f"{out_dir} exists and is not a folder: choose another chip folder")
    empty = out_dir.is_dir() and not any(out_dir.iterdir())
    if out_dir.is_dir() and not (overwrite or empty):
        raise OutputExistsError(f"{out_dir} already holds files: pass --overwrite or choose an empty chip folder")
    with atomic_path(out_dir, overwrite=overwrite or empty) as staging:
        staging.mkdir()
        written = _write_chips(frame, staging)
    return [out_dir / path.relative_to(staging) for path in written]


def _write_chips(frame: "gpd.GeoDataFrame", out_dir: Path) -> list[Path]:
    from icetools.io.raster import write_raster

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
                                            band_names=names, tags=tags, overwrite=True))
                label, nodata = _label_chip(reader.task, reader.read(window))
                written.append(write_raster(folder / f"{stem}_labels.tif", label, grid, nodata=nodata,
                                            band_names=reader.band_names, tags=tags, overwrite=True,
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
