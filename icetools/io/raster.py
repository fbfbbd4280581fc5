"""GeoTIFF output: tiled, DEFLATE-compressed, cloud-optimised, written window by window.

The writer streams into a tiled GeoTIFF under a temporary name, then GDAL's COG driver lays it
out as a cloud-optimised GeoTIFF with overviews, and the result is moved into place. Neither
step holds the raster in memory, so a 10k x 10k product costs a strip of memory, not the scene.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from icetools.errors import InputFileError
from icetools.grid import Grid
from icetools.io.atomic import atomic_path
from icetools.io.style import Legend, aux_path, place_sidecar, rat_xml

BLOCK = 512


def _predictor(dtype: str) -> int:
    return 3 if np.dtype(dtype).kind == "f" else 2


def base_profile(grid: Grid, *, count: int, dtype: str, nodata: float | None) -> dict:
    """The profile every icetools GeoTIFF starts from."""
    profile = {
        "driver": "GTiff",
        "height": grid.height,
        "width": grid.width,
        "count": count,
        "dtype": dtype,
        "nodata": nodata,
        "compress": "deflate",
        "predictor": _predictor(dtype),
        "BIGTIFF": "IF_SAFER",
    }
    if grid.width >= BLOCK and grid.height >= BLOCK:
        profile.update(tiled=True, blockxsize=BLOCK, blockysize=BLOCK)
    else:
        profile.update(tiled=False)
    if not grid.has_gcps:
        profile.update(crs=grid.crs, transform=grid.transform)
    return profile


class RasterWriter:
    """Writes windows of an open GeoTIFF; keeps numpy dtypes and band order straight."""

    def __init__(self, dataset: rasterio.io.DatasetWriter):
        self._ds = dataset
        self.dtype = np.dtype(dataset.dtypes[0])
        self.count = dataset.count

    def write(self, data: np.ndarray, window: Window | None = None) -> None:
        data = np.asarray(data)
        if data.ndim == 2:
            data = data[None]
        if data.shape[0] != self.count:
            raise ValueError(f"writer expects {self.count} bands, got {data.shape[0]}")
        self._ds.write(data.astype(self.dtype, copy=False), window=window)

    def write_band(self, band: int, data: np.ndarray, window: Window | None = None) -> None:
        self._ds.write(np.asarray(data).astype(self.dtype, copy=False), band, window=window)


@contextlib.contextmanager
def open_raster_writer(
    path: str | Path,
    grid: Grid,
    *,
    count: int,
    dtype: str,
    nodata: float | None,
    band_names: Sequence[str] | None = None,
    tags: Mapping[str, object] | None = None,
    overwrite: bool = False,
    categorical: bool = False,
    legend: Legend | None = None,
    band_tags: Sequence[Mapping[str, object]] | None = None,
    scales: Sequence[float] | None = None,
) -> Iterator[RasterWriter]:
    """Open a GeoTIFF for windowed writing; it appears at ``path`` only if the block succeeds.

    ``categorical`` picks nearest-neighbour overviews (classes, ids, masks) instead of averages.
    ``legend`` styles band 1: a colour table in the file (8-bit bands) and a raster attribute table in
    ``<path>.aux.xml``, put in place right after the raster (a stale sidecar is removed). ``band_tags``
    and ``scales`` (GDAL band scale: value = stored * scale) go to the bands in order.
    """
    rat = rat_xml(legend) if legend is not None else None
    with atomic_path(path, overwrite=overwrite) as tmp:
        staging = tmp.with_name(tmp.stem + ".stage.tif")
        try:
            # The staging file is written uncompressed: the COG copy compresses once (measured on
            # 10k x 10k x 2 float32: 1.3 s to stage uncompressed vs 4.5 s with DEFLATE).
            profile = base_profile(grid, count=count, dtype=dtype, nodata=nodata)
            profile.pop("compress"), profile.pop("predictor")
            with warnings.catch_warnings():
                # GCP grids are georeferenced by their GCPs, set right after opening.
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                ds = rasterio.open(staging, "w", **profile)
            with ds:
                if grid.has_gcps:
                    ds.gcps = (list(grid.gcps), grid.gcp_crs)
                for i, name in enumerate(band_names or [], start=1):
                    ds.set_band_description(i, name)
                if tags:
                    ds.update_tags(**{k: str(v) for k, v in tags.items()})
                for i, band in enumerate(band_tags or [], start=1):
                    ds.update_tags(i, **{k: str(v) for k, v in band.items()})
                if scales is not None:
                    ds.scales = tuple(float(v) for v in scales)
                if legend is not None and np.dtype(dtype) == np.uint8:
                    ds.write_colormap(1, legend.colormap())
                yield RasterWriter(ds)
            _to_cog(staging, tmp, dtype=dtype, categorical=categorical)
        finally:
            for leftover in (staging, aux_path(staging), aux_path(tmp)):
                leftover.unlink(missing_ok=True)
    place_sidecar(Path(path), rat)


def _to_cog(src: Path, dst: Path, *, dtype: str, categorical: bool) -> None:
    """Lay a tiled GeoTIFF out as a COG (overviews first, tiles in order) with GDAL's COG driver."""
    with rasterio.open(src) as ds:
        small = ds.width < BLOCK or ds.height < BLOCK
    options = {
        "driver": "COG",
        "compress": "DEFLATE",
        "predictor": "YES" if not small else "NO",
        "BIGTIFF": "IF_SAFER",
        "BLOCKSIZE": BLOCK,
        "OVERVIEWS": "AUTO" if not small else "NONE",
        "OVERVIEW_RESAMPLING": "NEAREST" if categorical else "AVERAGE",
        "NUM_THREADS": str(os.cpu_count() or 1),
    }
    if np.dtype(dtype).kind == "f":
        options["predictor"] = "FLOATING_POINT" if not small else "NO"
    rasterio.shutil.copy(str(src), str(dst), **options)


def write_raster(
    path: str | Path,
    data: np.ndarray,
    grid: Grid,
    *,
    nodata: float | None,
    band_names: Sequence[str] | None = None,
    tags: Mapping[str, object] | None = None,
    overwrite: bool = False,
    categorical: bool = False,
    legend: Legend | None = None,
) -> Path:
    """Write a small in-memory array (tests, synthetic truth) with the same layout rules."""
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    with open_raster_writer(
        path, grid, count=data.shape[0], dtype=data.dtype.name, nodata=nodata, band_names=band_names,
        tags=tags, overwrite=overwrite, categorical=categorical, legend=legend,
    ) as writer:
        for window in iter_strips(grid.height, grid.width):
            writer.write(data[:, window.row_off : window.row_off + window.height, :], window)
    return Path(path)


def iter_strips(height: int, width: int, rows: int = BLOCK) -> Iterator[Window]:
    """Full-width strips of ``rows`` rows: the unit of streamed work."""
    for row in range(0, height, rows):
        yield Window(0, row, width, min(rows, height - row))


def grid_of(dataset: rasterio.io.DatasetReader) -> Grid:
    """The Grid of an open rasterio dataset (affine + CRS, or GCPs)."""
    gcps, gcp_crs = dataset.gcps
    has_transform = not dataset.transform.is_identity or dataset.crs is not None
    if gcps and not (dataset.crs is not None and has_transform):
        return Grid(dataset.height, dataset.width, gcps=tuple(gcps), gcp_crs=gcp_crs)
    return Grid(
        dataset.height, dataset.width, crs=dataset.crs, transform=dataset.transform if has_transform else None
    )


def open_raster(path: str | Path) -> rasterio.io.DatasetReader:
    """rasterio.open with a one-line error that names the path."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"{path} does not exist")
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputFileError(f"cannot read {path} as a raster: {str(exc).splitlines()[0]}") from None
