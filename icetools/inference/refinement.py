"""The predict side of a refiner: the raster it reads, whether it pairs with a model, whether to use it.

A refiner reads one raster per scene, made the same way at training and at predict by
:func:`write_refiner_inputs`: the segmentation model's crude mosaic (K overlap-averaged probability
bands, seams and all) followed by the scene's image as that model reads it (its input transforms
and normalisation applied), bands named ``image:<channel>``. Training keeps these rasters under
``RUN/crude/``; predict writes one beside its output and removes it.

A refiner's config.json says under ``refines`` what it reads (``crude_inputs``, ``image_inputs``),
and under ``refines.gate`` how it was validated: when it did not beat the averaged mosaic on
validation (or never was validated), :func:`refiner_fallback` says why and predict uses the averaged
mosaic instead.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rasterio

import numpy as np

from icetools.errors import ConfigError
from icetools.inference.mosaic import probability_pass
from icetools.inference.predictor import Predictor, scene_input_spec
from icetools.inference.windows import MergeStats, WindowPlan
from icetools.inputs import InputSpec, read_inputs
from icetools.io.raster import RasterWriter, base_profile, open_raster_writer
from icetools.io.scene import Scene
from icetools.progress import Progress

if TYPE_CHECKING:
    from icetools.grid import Grid

CRUDE_MERGE = "average"  # a crude mosaic is overlap-averaged, seams and all, at training and at predict
IMAGE_PREFIX = "image:"
"""Band names of the image channels in a refiner's input raster: ``image:HH``, ``image:cos(phase)``."""
REFINER_FORMAT = 2
"""``refines.format`` of a residual refiner that reads the image: older refiners are refused."""


def crude_band_names(config: Mapping[str, Any], channels: int) -> tuple[str, ...]:
    """Band names of a crude mosaic: ``probability`` for one channel, ``p_<class>`` for several."""
    if channels == 1:
        return ("probability",)
    names = config.get("class_names")
    if isinstance(names, list) and len(names) == channels and len(set(map(str, names))) == channels:
        return tuple(f"p_{name}" for name in names)
    return tuple(f"p_class{k}" for k in range(channels))


@contextlib.contextmanager
def plain_geotiff(path: Path, grid: Grid, *, count: int, band_names: Sequence[str], tags: Mapping[str, str]) -> Iterator[RasterWriter]:
    """A plain tiled float32 GeoTIFF written in place: for a temporary file the caller removes.

    Unlike ``open_raster_writer`` there is no COG copy (no overviews, fast DEFLATE): the file
    lives for one run and is read back strip by strip, never shown.
    """
    profile = base_profile(grid, count=count, dtype="float32", nodata=float("nan"))
    profile["zlevel"] = 1
    ds = rasterio.open(path, "w", **profile)
    with ds:
        if grid.has_gcps:
            ds.gcps = (list(grid.gcps), grid.gcp_crs)
        for i, name in enumerate(band_names, start=1):
            ds.set_band_description(i, name)
        ds.update_tags(**tags)
        yield RasterWriter(ds)


def image_spec(config: Mapping[str, Any]) -> InputSpec | None:
    """The bands and transforms a segmentation model reads (None when its config names no inputs)."""
    return InputSpec.from_config(config)


def image_band_names(config: Mapping[str, Any]) -> tuple[str, ...]:
    """``image:<channel>`` for every channel the model reads; empty when its config names no inputs."""
    spec = image_spec(config)
    return () if spec is None else tuple(IMAGE_PREFIX + name for name in spec.channel_names)


def _image_reader(scene: Scene, predictor: Predictor, lock: threading.Lock):
    """``window -> (C, h, w)``: the model's channels, normalised as it reads them (NaN where invalid)."""
    if image_spec(predictor.config) is None:
        raise ConfigError(f"{predictor.label} names no inputs in its config: a refiner cannot read its image")
    spec = scene_input_spec(scene, predictor)  # bound as the model's own pass reads the scene (aliases, units)
    mean, std = predictor.mean, predictor.std

    def read(window) -> np.ndarray:
        with lock:
            channels, valid = read_inputs(scene, window, spec)
        if mean is not None and std is not None:
            channels = (channels - mean[:, None, None]) / std[:, None, None]
        channels[:, ~valid] = np.nan
        return channels.astype("float32", copy=False)

    return read


def write_refiner_inputs(
    scene: Scene,
    predictor: Predictor,
    output: str | Path,
    *,
    plan: WindowPlan,
    image: bool = True,
    batch: int | None = None,
    tags: Mapping[str, str] | None = None,
    temporary: bool = False,
    overwrite: bool = False,
    lock: threading.Lock | None = None,
    progress: Progress | None = None,
) -> MergeStats:
    """The crude mosaic of ``predictor`` over ``scene`` (K bands, NaN = no data), then with ``image``
    the model's normalised image channels (:func:`image_band_names`), in one GeoTIFF.

    ``temporary``: a plain GeoTIFF written in place (the caller removes it); otherwise a COG that
    appears whole or not at all.
    """
    lock = lock or threading.Lock()
    channels = predictor.out_channels()
    band_names = list(crude_band_names(predictor.config, channels))
    read_image = None
    if image:
        read_image = _image_reader(scene, predictor, lock)
        band_names += image_band_names(predictor.config)
    tags = {"product": "crude class probabilities (overlap-averaged) and image channels for a refiner",
            "merge": CRUDE_MERGE, "model": predictor.label, "tile": str(plan.tile), **(tags or {})}
    if temporary:
        writer_context = plain_geotiff(Path(output), scene.grid, count=len(band_names), band_names=band_names, tags=tags)
    else:
        writer_context = open_raster_writer(output, scene.grid, count=len(band_names), dtype="float32",
                                            nodata=float("nan"), band_names=band_names, tags=tags, overwrite=overwrite)

    with writer_context as writer:

        def write_rows(window, probs: np.ndarray) -> None:
            if read_image is not None:
                pixels = read_image(window)
                pixels[:, ~np.isfinite(probs).all(axis=0)] = np.nan
                probs = np.concatenate([probs, pixels])
            writer.write(probs, window)

        return probability_pass(scene, predictor, plan, write_rows=write_rows, merge=CRUDE_MERGE, batch=batch,
                                lock=lock, progress=progress)


# --------------------------------------------------------------------------------------------
# Pairing and the verdict of validation


def refines_entry(refiner: Predictor) -> Mapping[str, Any]:
    refines = refiner.config.get("refines")
    return refines if isinstance(refines, Mapping) else {}


def refiner_image_inputs(refiner: Predictor) -> tuple[str, ...]:
    """The image channels a refiner reads (``refines.image_inputs``), none for a crude-only refiner."""
    return tuple(refines_entry(refiner).get("image_inputs") or ())


def check_refiner(model: Predictor, refiner: Predictor) -> None:
    """What :func:`~icetools.inference.predictor.check_pairing` leaves: the format and the image channels."""
    where = refiner.source or "the refiner"
    refines = refines_entry(refiner)
    if refines.get("format") != REFINER_FORMAT:
        raise ConfigError(
            f"{where} was made by an older icetools (a refiner that does not start from the crude mask): "
            "train it again with `icetools train --model refiner --from MODEL_DIR`"
        )
    wanted = refiner_image_inputs(refiner)
    offered = image_band_names(model.config)
    if wanted and tuple(wanted) != offered:
        raise ConfigError(
            f"{where} reads the image channels {', '.join(wanted)} but the model reads "
            f"{', '.join(offered) or 'none'}: pair the refiner with the model it was trained from"
        )


def refiner_fallback(refiner: Predictor) -> str | None:
    """Why predict must not apply this refiner (then the averaged mosaic is the answer), or None."""
    where = refiner.source or "the refiner"
    gate = refines_entry(refiner).get("gate")
    if not isinstance(gate, Mapping):
        return f"{where} was never validated (its training did not finish): the averaged mosaic is used instead"
    if gate.get("beats_crude") is not True:
        metric = gate.get("metric", "score")
        return (
            f"{where} did not beat the averaged mosaic on validation ({metric} {_fmt(gate.get('refined'))} vs "
            f"{_fmt(gate.get('crude'))}): the averaged mosaic is used instead"
        )
    return None


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "?"


def refiner_bands(refiner: Predictor, crude: Scene) -> Sequence[str]:
    """The bands of the refiner's input raster that the refiner reads, in its order."""
    return list(refiner.inputs) if refiner.inputs is not None else list(crude.band_names)


__all__ = [
    "IMAGE_PREFIX", "REFINER_FORMAT", "check_refiner", "image_band_names", "image_spec", "refiner_bands",
    "refiner_fallback", "refiner_image_inputs", "write_refiner_inputs",
]
