"""Which band of a prediction or truth file to score, and what the file says about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from rasterio.windows import Window

from icetools.errors import MissingVariableError
from icetools.io.scene import GeoTiffScene, NetCDFScene, Scene
from icetools.tasks import BINARY, MULTICLASS, SIC

Reader = Callable[[Window], np.ndarray]

# Prediction band names that tell the task, in the order they are looked for.
TASK_BANDS = {SIC: ("SIC",), BINARY: ("probability", "line"), MULTICLASS: ("class",)}
TRUTH_BANDS = {SIC: ("SIC",), BINARY: ("line",), MULTICLASS: ("class",)}


@dataclass(frozen=True)
class BandInfo:
    """A band's storage type, declared nodata, its own tags / attributes and the file's."""

    dtype: np.dtype
    nodata: float | None
    attrs: dict[str, str] = field(default_factory=dict)
    file_attrs: dict[str, str] = field(default_factory=dict)

    @property
    def is_integer(self) -> bool:
        return self.dtype.kind in "iu"


def band_info(scene: Scene, band: str) -> BandInfo:
    """Band-level metadata: GeoTIFF band tags and unit type, or a netCDF variable's attributes."""
    if isinstance(scene, NetCDFScene):
        variable = scene.handle.variables[band]
        attrs = {key: str(variable.getncattr(key)) for key in variable.ncattrs()}
        nodata = _number(attrs.get("_FillValue", attrs.get("chart_fill_value")))
        return BandInfo(np.dtype(variable.dtype), nodata, attrs, {k: str(v) for k, v in scene.attrs.items()})
    if isinstance(scene, GeoTiffScene):
        ds = scene.handle
        index = scene.band_names.index(band)
        attrs = dict(ds.tags(index + 1))
        if ds.units[index]:
            attrs.setdefault("units", ds.units[index])
        dtype = np.dtype(ds.dtypes[index])
        if ds.scales[index] != 1 or ds.offsets[index] != 0:
            dtype = np.dtype("float64")  # integers with a band scale (labels.tif's SIC) are read as real values
        return BandInfo(dtype, ds.nodatavals[index], attrs, dict(ds.tags()))
    return BandInfo(np.dtype("float32"), None)


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def file_tags(scene: Scene) -> dict[str, str]:
    """Dataset-level tags of a GeoTIFF, global attributes of a netCDF."""
    if isinstance(scene, GeoTiffScene):
        return dict(scene.tags or {})
    if isinstance(scene, NetCDFScene):
        return {key: str(value) for key, value in scene.attrs.items()}
    return {}


def is_netcdf(scene: Scene) -> bool:
    return isinstance(scene, NetCDFScene)


def find_band(scene: Scene, names: tuple[str, ...]) -> str | None:
    """The scene's own spelling of the first of ``names`` it holds (case-insensitive)."""
    lowered = {name.lower(): name for name in scene.band_names}
    for name in names:
        if name.lower() in lowered:
            return lowered[name.lower()]
    return None


def only_unnamed_band(scene: Scene) -> str | None:
    """A single-band GeoTIFF without a band description (GDAL calls it band1) is taken as is."""
    return scene.band_names[0] if scene.band_names == ("band1",) else None


def detect_task(band_names: tuple[str, ...]) -> str | None:
    """The task a prediction's band names imply, or None when they say nothing."""
    lowered = {name.lower() for name in band_names}
    for task, names in TASK_BANDS.items():
        if any(name.lower() in lowered for name in names):
            return task
    return None


def prediction_band(scene: Scene, task: str, names: tuple[str, ...] | None = None) -> str:
    """The band to score in a prediction: a named one, else the only band of a one-band file."""
    names = names or TASK_BANDS[task]
    band = find_band(scene, names) or only_unnamed_band(scene)
    if band is None and len(scene.band_names) == 1:
        band = scene.band_names[0]  # the task was given for a one-band file: trust the user
    if band is None:
        wanted = " or ".join(f"'{name}'" for name in names)
        raise MissingVariableError(
            f"prediction {scene.path.name} has no {wanted} band for the {task} task; "
            f"bands found: {', '.join(scene.band_names)}"
        )
    return band


def missing_truth_band(
    scene: Scene, task: str, extra: str = "", names: tuple[str, ...] | None = None
) -> MissingVariableError:
    wanted = " or ".join(f"'{name}'" for name in (names or TRUTH_BANDS[task]))
    return MissingVariableError(
        f"truth {scene.path.name} has no {wanted} band for the {task} task{extra}; "
        f"bands found: {', '.join(scene.band_names)}"
    )


@dataclass
class BandReader:
    """One band read by window as float with NaN for nodata; 255 in a uint8 band that does not
    declare it is nodata too (no SIC unit or chart class reaches 255), counted for a warning."""

    scene: Scene
    band: str
    info: BandInfo | None = None
    masked_255: int = 0

    def __post_init__(self) -> None:
        self.info = self.info or band_info(self.scene, self.band)
        # AI4Arctic charts name their fill in 'chart_fill_value'; the scene masks only _FillValue.
        self._fill = _number(self.info.attrs.get("chart_fill_value"))
        self._mask_255 = self.info.dtype == np.uint8 and 255 not in (self.info.nodata, self._fill)

    def __call__(self, window: Window) -> np.ndarray:
        data = self.scene.read([self.band], window)[0]
        if self._mask_255:
            hit = data == 255
            count = int(np.count_nonzero(hit))
            if count:
                self.masked_255 += count
                data = np.where(hit, np.float32(np.nan), data)
        if self._fill is not None:
            data = np.where(data == self._fill, np.float32(np.nan), data)
        return data

    def warnings(self, role: str) -> list[str]:
        if not self.masked_255:
            return []
        return [
            f"{role} {self.scene.path.name}: {self.masked_255} pixels of '{self.band}' hold 255, which the file "
            "does not declare as nodata; taken as nodata (set the raster's nodata to 255 to silence this)"
        ]
