"""Products: how merged probabilities become files (SIC, masks, classes, polygon SIC, ice/water).

:class:`Outputs` holds every file of one run and what writing them needs (grid, tags, overwrite,
the polygon source and its lock, the per-polygon means), so the passes take one object.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rasterio.windows import Window

from icetools.errors import ConfigError, CRSError, MissingVariableError
from icetools.inference.footprint import footprint_sink
from icetools.inference.predictor import Predictor
from icetools.inference.windows import RowSink
from icetools.io.atomic import check_output
from icetools.io.paths import refuse_duplicate_outputs, refuse_overwriting_inputs
from icetools.io.raster import iter_strips, open_raster, open_raster_writer
from icetools.io.scene import CHART_CRS_TAG, Scene, open_scene
from icetools.io.style import ICE_WATER, LINE_MASK, Legend, class_legend
from icetools.metrics import PolygonAccumulator
from icetools.tasks import BINARY, MULTICLASS, SIC

if TYPE_CHECKING:
    from icetools.grid import Grid

ICE_EDGE_SIC = 0.15  # the usual ice-edge concentration: ice where SIC >= 15 %
PERCENT_NODATA = 255  # never 0, which is open water
MASK_NODATA = 255
SCENE_POLYGONS = "scene"  # polygons="scene": the netCDF's own chart


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
    legend: Legend | None = None  # colour table + raster attribute table of a categorical band


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


EXTRA_SUFFIXES: dict[str, str] = {
    "ice_water": "_icewater.tif",
    "mask": "_mask.tif",
    "probabilities": "_probs.tif",
    "polygon_sic": "_polygon_sic.tif",
}
"""The extra products and the suffix of their default name beside the output."""


def extra_path(output: Path, kind: str, paths: Mapping[str, Path] | None = None) -> Path:
    """Where the extra product ``kind`` goes: the path given for it, else ``<out stem><suffix>``.

    Named paths let a Makefile name every product as a target.
    """
    given = (paths or {}).get(kind)
    return Path(given) if given is not None else sibling(output, EXTRA_SUFFIXES[kind])


def plan_products(
    output: Path,
    predictor: Predictor,
    *,
    channels: int,
    percent: bool,
    ice_water: bool,
    probabilities: bool,
    polygons: bool,
    paths: Mapping[str, Path] | None = None,
) -> list[Product]:
    """Every file this run writes (the polygon map aside), checked against the task before any work starts.

    ``paths``: names for the extra products by kind (see :data:`EXTRA_SUFFIXES`); a named one is wanted.
    """
    task = predictor.task
    paths = dict(paths or {})
    unknown = sorted(set(paths) - set(EXTRA_SUFFIXES))
    if unknown:
        raise ConfigError(f"unknown extra product {unknown[0]!r}; products: {', '.join(EXTRA_SUFFIXES)}")
    ice_water = ice_water or "ice_water" in paths
    probabilities = probabilities or "probabilities" in paths
    for option, wanted, tasks in (
        ("percent", percent, (SIC,)),
        ("ice_water", ice_water, (SIC,)),
        ("polygons", polygons, (SIC,)),
        ("probabilities", probabilities, (MULTICLASS,)),
        ("mask", "mask" in paths, (BINARY,)),
    ):
        if wanted and task not in tasks:
            raise ConfigError(f"{option} applies to {' or '.join(tasks)} models; this model's task is {task!r}")
    if task == SIC:
        return _sic_products(output, percent=percent, ice_water=ice_water, paths=paths)
    if task == BINARY:
        return _binary_products(output, predictor, channels=channels, paths=paths)
    return _class_products(output, predictor, channels=channels, probabilities=probabilities, paths=paths)


def _sic_products(output: Path, *, percent: bool, ice_water: bool, paths: Mapping[str, Path]) -> list[Product]:
    if percent:
        main = Product(output, "uint8", PERCENT_NODATA, ("SIC",), lambda p: to_percent(sic_of(p))[None], tags={"units": "percent"})
    else:
        main = Product(output, "float32", float("nan"), ("SIC",), lambda p: sic_of(p)[None], tags={"units": "fraction 0-1"})
    products = [main]
    if ice_water:
        products.append(
            Product(extra_path(output, "ice_water", paths), "uint8", MASK_NODATA, ("ice",),
                    lambda p: to_mask(sic_of(p), ICE_EDGE_SIC)[None], categorical=True,
                    tags={"classes": "0 water, 1 ice", "ice_threshold_sic": str(ICE_EDGE_SIC)}, legend=ICE_WATER)
        )
    return products


def _binary_products(output: Path, predictor: Predictor, *, channels: int, paths: Mapping[str, Path]) -> list[Product]:
    if channels not in (1, 2):
        raise ConfigError(f"a binary model must return 1 or 2 channels, this one returns {channels}")
    threshold = float(predictor.config.get("threshold", 0.5))
    if not 0 <= threshold <= 1:
        raise ConfigError(f"config threshold {threshold} must lie in [0, 1]")
    threshold_tags = {"threshold": str(threshold)}  # on both: evaluate reads it from the probability raster too
    return [
        Product(output, "float32", float("nan"), ("probability",), lambda p: _binary_probability(p)[None],
                tags=threshold_tags),
        Product(extra_path(output, "mask", paths), "uint8", MASK_NODATA, ("line",),
                lambda p: to_mask(_binary_probability(p), threshold)[None], categorical=True,
                tags=threshold_tags, legend=LINE_MASK),
    ]


def _class_products(
    output: Path, predictor: Predictor, *, channels: int, probabilities: bool, paths: Mapping[str, Path]
) -> list[Product]:
    if channels < 2 or channels > 254:
        raise ConfigError(f"a multiclass model must return 2 to 254 class channels, this one returns {channels}")
    names = predictor.config.get("class_names") or [f"class{k}" for k in range(channels)]
    if len(names) != channels:
        raise ConfigError(f"config names {len(names)} classes but the model returns {channels} channels")
    class_tags = {"class_names": ",".join(map(str, names))}
    products = [Product(output, "uint8", MASK_NODATA, ("class",), lambda p: _classes(p)[None], categorical=True,
                        tags=class_tags, legend=class_legend(list(map(str, names)), nodata=MASK_NODATA))]
    if probabilities:
        products.append(Product(extra_path(output, "probabilities", paths), "float32", float("nan"), tuple(map(str, names)), lambda p: p, tags=class_tags))
    return products


def source_tags(scene: Scene, output: Path) -> dict[str, str]:
    """What a product records of its scene, without local absolute paths: its file name, its path
    relative to the product's folder (how ``evaluate`` finds the scene's chart again) and, where
    known, the CRS of its chart (where ``vectorize`` puts vectors of a radar-geometry product)."""
    tags = {"scene": scene.path.name}
    try:
        tags["scene_path"] = Path(os.path.relpath(scene.path.resolve(), Path(output).resolve().parent)).as_posix()
    except ValueError:  # another drive (Windows): the name alone
        pass
    crs = scene.chart_crs if scene.grid.has_gcps else None
    if crs is not None:
        tags[CHART_CRS_TAG] = crs.to_string()
    return tags


def open_polygon_source(polygons: str | Path, scene: Scene) -> Scene:
    """The scene itself (``"scene"``: its polygon_icechart) or a labels raster on the scene's grid."""
    if str(polygons) == SCENE_POLYGONS:
        if not scene.has_chart:
            raise MissingVariableError(
                f"{scene.path.name} carries no ice chart polygons: give polygons as a labels raster made by "
                "icetools rasterize"
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


# --------------------------------------------------------------------------------------------
# Writing them


@dataclass
class Outputs:
    """Every file of one run and what writing them needs.

    ``polygon_source`` (a scene with a chart, or None) feeds the per-polygon means; ``lock``
    serialises its reads with the pass's scene reads (one netCDF may be both).
    """

    products: list[Product]
    grid: Grid
    tags: dict[str, str]
    overwrite: bool = False
    polygon_path: Path | None = None
    polygon_source: Scene | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    polygon_means: PolygonAccumulator = field(default_factory=PolygonAccumulator)
    footprint_px: float = 0.0  # Gaussian sigma the SIC rows are smoothed by (inference.footprint); 0: none
    footprint_device: str = "cpu"  # where that smoothing runs: the CPU, or the GPU the model runs on

    @property
    def paths(self) -> list[Path]:
        return [p.path for p in self.products] + ([self.polygon_path] if self.polygon_path else [])

    def check(self, inputs: Iterable[Path | None]) -> None:
        """No two outputs share a file, none is an input of the run; none exists unless overwriting."""
        paths = self.paths
        refuse_duplicate_outputs(paths)
        refuse_overwriting_inputs(paths, inputs)
        for path in paths:
            check_output(path, overwrite=self.overwrite)

    def tags_for(self, path: Path) -> dict[str, str]:
        """The run's tags for one file: ``scene_path`` is relative to that file's own folder."""
        tags = dict(self.tags)
        if "scene_path" in tags and self.products:
            scene = self.products[0].path.resolve().parent / tags["scene_path"]
            try:
                tags["scene_path"] = Path(os.path.relpath(scene, Path(path).resolve().parent)).as_posix()
            except ValueError:
                tags.pop("scene_path")
        return tags

    @contextmanager
    def row_sink(self) -> Iterator[RowSink]:
        """Every product's writer open (each appears whole or not at all); yields where merged rows go."""
        with ExitStack() as stack:
            writers = [
                stack.enter_context(
                    open_raster_writer(
                        product.path, self.grid, count=len(product.band_names), dtype=product.dtype,
                        nodata=product.nodata, band_names=product.band_names, tags={**self.tags_for(product.path), **product.tags},
                        overwrite=self.overwrite, categorical=product.categorical, legend=product.legend,
                    )
                )
                for product in self.products
            ]

            def write_rows(window: Window, probs: np.ndarray) -> None:
                for product, writer in zip(self.products, writers):
                    writer.write(product.render(probs), window)
                if self.polygon_source is not None:
                    with self.lock:
                        ids = self.polygon_source.read_polygon_ids(window)
                    self.polygon_means.update(sic_of(probs), ids)

            yield footprint_sink(write_rows, self.footprint_px, height=self.grid.height, width=self.grid.width,
                                 device=self.footprint_device)

    def write_polygon_product(self) -> None:
        """After the pass: polygon means painted wherever the main product holds a value, strip by strip."""
        if self.polygon_path is None or self.polygon_source is None:
            return
        main = self.products[0]
        percent = main.dtype == "uint8"
        means = self.polygon_means.mean_array()
        with open_raster(main.path) as done, open_raster_writer(
            self.polygon_path, self.grid, count=1, dtype=main.dtype, nodata=main.nodata, band_names=("SIC",),
            tags={**self.tags_for(self.polygon_path), **main.tags, "product": "mean predicted SIC per chart polygon"},
            overwrite=self.overwrite,
        ) as writer:
            for window in iter_strips(self.grid.height, self.grid.width):
                values = done.read(1, window=window)
                has_value = values != main.nodata if percent else np.isfinite(values)
                with self.lock:
                    ids = self.polygon_source.read_polygon_ids(window)
                painted = np.where(has_value, self.polygon_means.paint(ids, means), np.float32(np.nan))
                writer.write((to_percent(painted) if percent else painted)[None], window)
