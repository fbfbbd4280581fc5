"""Labels of a scene by window, whichever file carries them: a labels raster or the scene's own chart.

The one place that knows the label file formats (what `icetools rasterize` writes, and AI4Arctic
charts); sampling, the training data and chip export all read labels through :func:`open_labels`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rasterio.windows import Window

from icetools.errors import CRSError, MissingVariableError
from icetools.io.scene import GeoTiffScene, Scene, open_scene
from icetools.tasks import BINARY, MULTICLASS, SIC

LABEL_BANDS: dict[str, tuple[str, ...]] = {SIC: ("polygon_id", "SIC"), BINARY: ("line",), MULTICLASS: ("class",)}
"""The bands of a labels raster per task, as `icetools rasterize` writes them."""


class LabelReader:
    """One scene's labels by window, whichever file carries them: a labels raster or the scene's own chart.

    The task follows from the bands: ``polygon_id`` (+ ``SIC``) -> "sic", ``line`` -> "binary",
    ``class`` -> "multiclass". Without a labels raster the scene must carry a chart (AI4Arctic netCDF).
    """

    def __init__(self, scene: Scene, labels: Scene | None):
        self.scene = scene
        self.labels = labels
        self._lut: np.ndarray | None = None
        self._listed: np.ndarray | None = None  # listed[id]: the chart's polygon_codes has a row for id
        self.unlisted_ids: set[int] = set()  # chart ids read so far that polygon_codes lacks
        self.unlisted_pixels = 0
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
                self.task = SIC
            elif "line" in names:
                self.task = BINARY
            elif "class" in names:
                self.task = MULTICLASS
            else:
                raise MissingVariableError(
                    f"{labels.path.name} has none of the label bands 'polygon_id'+'SIC', 'line' or 'class'; "
                    f"bands found: {', '.join(names)}: make it with `icetools rasterize VECTOR --like SCENE`"
                )
            return
        if not scene.has_chart:
            raise MissingVariableError(
                f"{scene.path.name} carries no ice chart: give it a labels raster "
                f"(made by `icetools rasterize VECTOR --like {scene.path}`)"
            )
        self.task = SIC
        if not (isinstance(scene, GeoTiffScene) and "SIC" in scene.band_names):
            # AI4Arctic charts: SIC comes from the decoded polygon table, looked up by polygon id.
            table = scene.polygon_table()
            size = max(table, default=0) + 1
            self._lut = np.full(size, np.nan, dtype="float32")
            self._listed = np.zeros(size, dtype=bool)
            for poly_id, polygon in table.items():
                if poly_id >= 0:
                    self._lut[poly_id] = polygon.sic
                    self._listed[poly_id] = True

    @property
    def band_names(self) -> tuple[str, ...]:
        return LABEL_BANDS[self.task]

    def read(self, window: Window) -> np.ndarray:
        """The label bands (see :attr:`band_names`) as float32 (n, h, w), NaN for nodata."""
        if self.labels is not None:
            return self.labels.read(list(self.band_names), window)
        ids = self.scene.read_polygon_ids(window)
        if self._lut is None:
            sic = self.scene.read(["SIC"], window)[0]
        else:
            inside = (ids >= 0) & (ids < self._lut.size)
            clipped = np.clip(ids, 0, self._lut.size - 1)
            sic = np.where(inside, self._lut[clipped], np.float32(np.nan))
            unlisted = (ids > 0) & ~(inside & self._listed[clipped])
            if unlisted.any():
                self.unlisted_ids.update(np.unique(ids[unlisted]).tolist())
                self.unlisted_pixels += int(np.count_nonzero(unlisted))
        sic = np.where(ids > 0, sic, np.float32(np.nan))
        return np.stack([ids.astype("float32"), sic.astype("float32")])

    def unlisted_message(self) -> str | None:
        """What the windows read so far showed of chart polygons that the polygon_codes table lacks
        (they count as uncharted); None when there were none."""
        if not self.unlisted_ids:
            return None
        ids = sorted(self.unlisted_ids)
        shown = ", ".join(map(str, ids[:5])) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        return (f"{self.scene.path.name}: {len(ids)} polygon id(s) of its chart have no row in its polygon_codes "
                f"table ({shown}): their {self.unlisted_pixels} pixels are left uncharted")

    def masks(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """(valid, foreground) from the labels alone; the scene's own validity is combined by the caller."""
        bands = self.read(window)
        if self.task == SIC:
            ids, sic = bands
            charted = np.isfinite(sic)
            return charted, charted & (np.nan_to_num(ids) > 0)
        if self.task == BINARY:
            return np.ones(bands.shape[1:], dtype=bool), np.nan_to_num(bands[0]) > 0.5
        return np.ones(bands.shape[1:], dtype=bool), np.isfinite(bands[0])


def open_labels(scene: Scene, labels: str | Path | None) -> LabelReader:
    """The label reader of a scene; ``labels`` None or "" means the scene's own chart."""
    return LabelReader(scene, open_scene(labels) if labels else None)
