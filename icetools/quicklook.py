"""A quicklook PNG: a scene's input band beside the prediction, with a colour bar.

Both rasters are read decimated (GeoTIFF overviews where they exist, strided strips otherwise), so
a 10k x 10k scene costs a PNG-sized array, never the whole scene in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window

from icetools.io.atomic import atomic_path
from icetools.io.raster import iter_strips, open_raster
from icetools.io.scene import GeoTiffScene, Scene, open_scene

MAX_SIDE = 1024
STRETCH_PERCENTILES = (2.0, 98.0)
NODATA_COLOUR = "#d8cfb8"  # land / no data: a sand tone that neither the grey input nor the maps use


def decimated_shape(height: int, width: int, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """The largest shape with the scene's aspect whose longer side is at most ``max_side``."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def read_scene_band(scene: Scene, band: str, shape: tuple[int, int]) -> np.ndarray:
    """One band at ``shape``, NaN for no data: GDAL's decimated read for GeoTIFFs, strided strips else."""
    name = scene.resolve([band])[0]
    if isinstance(scene, GeoTiffScene):
        index = scene.band_names.index(name) + 1
        data = scene.handle.read(index, out_shape=shape, masked=True, resampling=Resampling.nearest)
        return np.ma.filled(data.astype("float32"), np.nan)
    rows = np.minimum((np.arange(shape[0]) * scene.height) // shape[0], scene.height - 1)
    cols = np.minimum((np.arange(shape[1]) * scene.width) // shape[1], scene.width - 1)
    out = np.empty(shape, dtype="float32")
    for strip in iter_strips(scene.height, scene.width):
        start, stop = int(strip.row_off), int(strip.row_off + strip.height)
        wanted = np.flatnonzero((rows >= start) & (rows < stop))
        if wanted.size:
            block = scene.read([name], Window(0, start, scene.width, stop - start))[0]
            out[wanted] = block[rows[wanted] - start][:, cols]
    return out


def read_prediction(path: str | Path, shape: tuple[int, int]) -> tuple[np.ndarray, str, dict[str, str]]:
    """Band 1 of a prediction at ``shape`` (from its overviews), its description and its tags."""
    with open_raster(path) as ds:
        data = ds.read(1, out_shape=shape, masked=True, resampling=Resampling.nearest)
        return np.ma.filled(data.astype("float32"), np.nan), ds.descriptions[0] or "prediction", ds.tags()


def stretch(values: np.ndarray) -> tuple[float, float]:
    """2-98 % percentiles of the finite values: a SAR backscatter stretch robust to bright targets."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, STRETCH_PERCENTILES)
    return float(lo), float(hi if hi > lo else lo + 1)


def write_quicklook(
    scene_path: str | Path,
    prediction_path: str | Path,
    png_path: str | Path,
    *,
    input_band: str | None = None,
    max_side: int = MAX_SIDE,
    overwrite: bool = False,
) -> Path:
    """Input (2-98 % stretch) and prediction side by side, with a colour bar; written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.figure import Figure

    with open_scene(scene_path) as scene:
        band = input_band or scene.default_inputs[0]
        shape = decimated_shape(scene.height, scene.width, max_side)
        image = read_scene_band(scene, band, shape)
    prediction, description, tags = read_prediction(prediction_path, shape)

    aspect = shape[0] / shape[1]
    figure = Figure(figsize=(12, max(3.0, 5.5 * aspect)), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    lo, hi = stretch(image)
    left.imshow(image, cmap=_with_nodata("gray"), vmin=lo, vmax=hi, interpolation="nearest")
    left.set_title(f"{Path(scene_path).name}: {band}")
    names = [n for n in tags.get("class_names", "").split(",") if n]
    if description == "class" and names:
        cmap = ListedColormap([_class_colour(k) for k in range(len(names))]).with_extremes(bad=NODATA_COLOUR)
        norm = BoundaryNorm(np.arange(len(names) + 1) - 0.5, len(names))
        shown = right.imshow(prediction, cmap=cmap, norm=norm, interpolation="nearest")
        bar = figure.colorbar(shown, ax=right, ticks=np.arange(len(names)), shrink=0.8)
        bar.ax.set_yticklabels(names)
    else:
        vmax = 100.0 if tags.get("units") == "percent" else 1.0
        cmap = _with_nodata("Blues_r" if description == "SIC" else "viridis")
        shown = right.imshow(prediction, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
        bar = figure.colorbar(shown, ax=right, shrink=0.8)
        bar.set_label(f"{description} ({tags['units']})" if "units" in tags else description)
    right.set_title(f"{Path(prediction_path).name}: {description}")
    for axis in (left, right):
        axis.set_xticks([])
        axis.set_yticks([])
    with atomic_path(png_path, overwrite=overwrite) as tmp:
        figure.savefig(tmp, format="png")
    return Path(png_path)


def _with_nodata(name: str):
    from matplotlib import colormaps

    return colormaps[name].with_extremes(bad=NODATA_COLOUR)


def _class_colour(index: int) -> tuple[float, float, float, float]:
    from matplotlib import colormaps

    return colormaps["tab20"](index % 20)
