"""FCtL's contextual refinement: crude probability mosaics, and a refiner paired with the model it refines.

The refiner redraws a crude mask with a twice-larger context of that mask in view. It must learn
from crude masks made exactly as ``predict --merge refine`` makes them at inference: the normal
sliding-window engine, overlap averaging, K probability bands (seams and all). So both paths
write one: training keeps a crude GeoTIFF per scene under ``RUN/crude/`` (reused while neither
the scene nor the segmentation model changed), predict streams one into a temporary file beside
its output. The paper trains the refiner on a NOT converged segmentation model (the checkpoint
at 40 % of training), whose masks still hold the errors a refiner should learn to remove.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rasterio

from icetools.errors import ConfigError, DataError, InputFileError
from icetools.io.raster import RasterWriter, base_profile, open_raster, open_raster_writer
from icetools.io.scene import Scene, open_scene
from icetools.predict import (
    MergeStats,
    Predictor,
    WindowPlan,
    load_predictor,
    plan_windows,
    scene_inputs,
    scene_strip_reader,
    sliding_window_merge,
    window_weights,
)

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from icetools.grid import Grid

CRUDE_DIR = "crude"  # inside the refiner's run directory
CRUDE_SUFFIX = "_crude.tif"
CRUDE_OVERLAP = 0.25  # predict's default overlap: the seams the refiner sees at training are those of a default run
CRUDE_MERGE = "average"
REFINER_MODEL = "refiner"

CrudeProgress = Callable[[dict[str, Any]], None]
"""progress(event) with ``{"event": "crude", "scene", "done", "total", "reused"}`` per scene."""


@dataclass(frozen=True)
class RefineSource:
    """The segmentation model whose crude masks a refiner learns to redraw."""

    predictor: Predictor
    model_dir: Path
    model_name: str
    task: str
    n_classes: int
    band_names: tuple[str, ...]

    @property
    def channels(self) -> int:
        return len(self.band_names)

    def record(self) -> dict[str, Any]:
        """What the refiner's config.json keeps under ``refines``."""
        return {
            "model_dir": str(self.model_dir),
            "model": self.model_name,
            "task": self.task,
            "n_classes": self.n_classes,
            "crude_inputs": list(self.band_names),
            "crude_merge": CRUDE_MERGE,
            "crude_overlap": CRUDE_OVERLAP,
        }


def crude_band_names(config: Mapping[str, Any], channels: int) -> tuple[str, ...]:
    """Band names of a crude mosaic: ``probability`` for one channel, ``p_<class>`` for several."""
    if channels == 1:
        return ("probability",)
    names = config.get("class_names")
    if isinstance(names, list) and len(names) == channels and len(set(map(str, names))) == channels:
        return tuple(f"p_{name}" for name in names)
    return tuple(f"p_class{k}" for k in range(channels))


def model_classes(predictor: Predictor) -> int:
    """Classes a model tells apart: config n_classes (multiclass), else 1 (sic and binary maps)."""
    if predictor.task != "multiclass":
        return 1
    declared = predictor.config.get("n_classes")
    return int(declared) if isinstance(declared, int) else predictor.out_channels()


def open_refine_source(model_dir: str | Path, *, device: str | torch.device | None = "auto") -> RefineSource:
    """The --from model of a refiner run, ready to predict crude mosaics."""
    model_dir = Path(model_dir)
    predictor = load_predictor(model_dir, device)
    name = str((predictor.config.get("model") or {}).get("name", "?"))
    if name == REFINER_MODEL:
        raise ConfigError(f"--from {model_dir} is itself a refiner: give the segmentation model it should refine")
    return RefineSource(
        predictor=predictor,
        model_dir=model_dir.resolve(),
        model_name=name,
        task=predictor.task,
        n_classes=model_classes(predictor),
        band_names=crude_band_names(predictor.config, predictor.out_channels()),
    )


def check_pairing(model: Predictor, refiner: Predictor) -> None:
    """A refiner fits a segmentation model of the same task, classes and crude channels; else one line."""
    where = refiner.source or "the refiner"
    refines = refiner.config.get("refines")
    if not isinstance(refines, Mapping):
        raise ConfigError(
            f"{where} is not a refiner (its config has no 'refines' entry): train one with "
            "`icetools train --model refiner --from MODEL_DIR`"
        )
    if refiner.task != model.task:
        raise ConfigError(f"{where} refines {refiner.task} masks but the model's task is {model.task}: pair models of one task")
    model_n, refiner_n = model_classes(model), model_classes(refiner)
    if model_n != refiner_n:
        raise ConfigError(
            f"{where} refines {refiner_n} classes but the model has {model_n}: "
            "train a refiner --from a model with these classes"
        )
    channels = model.out_channels()
    if refiner.in_channels is not None and refiner.in_channels != channels:
        raise ConfigError(
            f"{where} reads {refiner.in_channels} crude probability bands but the model returns {channels}: "
            "train a refiner --from a model with these outputs"
        )


# --------------------------------------------------------------------------------------------
# Writing a crude mosaic


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


def write_crude_mosaic(
    scene: Scene,
    predictor: Predictor,
    output: str | Path,
    *,
    plan: WindowPlan,
    batch: int = 8,
    tags: Mapping[str, str] | None = None,
    temporary: bool = False,
    overwrite: bool = False,
    lock: threading.Lock | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> MergeStats:
    """Overlap-averaged probabilities (K float32 bands, NaN = no data) of ``predictor`` over ``scene``.

    ``temporary``: a plain GeoTIFF written in place (the caller removes it); otherwise a COG that
    appears whole or not at all.
    """
    lock = lock or threading.Lock()
    names = scene_inputs(scene, predictor)
    channels = predictor.out_channels()
    band_names = crude_band_names(predictor.config, channels)
    tags = {"product": "crude class probabilities (overlap-averaged) for a refiner", "merge": CRUDE_MERGE,
            "model": predictor.source or "(in memory)", "tile": str(plan.tile), **(tags or {})}
    if temporary:
        writer_context = plain_geotiff(Path(output), scene.grid, count=channels, band_names=band_names, tags=tags)
    else:
        writer_context = open_raster_writer(output, scene.grid, count=channels, dtype="float32", nodata=float("nan"),
                                            band_names=band_names, tags=tags, overwrite=overwrite)
    with writer_context as writer:
        stats = sliding_window_merge(
            scene_strip_reader(scene, names, mean=predictor.mean, std=predictor.std, lock=lock),
            predictor,
            plan,
            channels=channels,
            weights=window_weights(plan.tile, CRUDE_MERGE),
            write_rows=lambda window, probs: writer.write(probs, window),
            batch=batch,
            context_scales=predictor.context_scales,
            progress=progress,
        )
        if stats.valid_pixels == 0:
            raise DataError(
                f"{scene.path.name} has no valid pixel in {', '.join(names)} (all NaN / nodata / land): nothing to refine"
            )
    return stats


# --------------------------------------------------------------------------------------------
# Crude mosaics of the training scenes


def _file_stamp(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def crude_path_for(scene: str | Path, crude_dir: Path, *, taken: set[str]) -> Path:
    """``<stem>_crude.tif``; scenes of one name from different folders get a short hash of their path."""
    scene = Path(scene)
    name = scene.stem
    if name in taken:
        name = f"{name}-{hashlib.sha1(str(scene.resolve()).encode()).hexdigest()[:8]}"
    taken.add(name)
    return crude_dir / f"{name}{CRUDE_SUFFIX}"


def _identity_tags(scene: Path, source: RefineSource, plan: WindowPlan) -> dict[str, str]:
    """What a crude mosaic was made from: it is up to date while all of these still hold."""
    from icetools.checkpoint import CONFIG_FILE, WEIGHTS_FILE

    return {
        "crude_scene": str(scene.resolve()),
        "crude_scene_stamp": _file_stamp(scene),
        "crude_model_dir": str(source.model_dir),
        "crude_model_stamp": _file_stamp(source.model_dir / WEIGHTS_FILE) + "/"
        + _file_stamp(source.model_dir / CONFIG_FILE),
        "crude_tile": str(plan.tile),
        "crude_overlap": f"{CRUDE_OVERLAP:g}",
    }


def is_up_to_date(path: Path, identity: Mapping[str, str], *, channels: int) -> bool:
    if not path.is_file():
        return False
    try:
        with open_raster(path) as ds:
            tags, count = ds.tags(), ds.count
    except (InputFileError, rasterio.errors.RasterioError):
        return False
    return count == channels and all(tags.get(key) == value for key, value in identity.items())


def prepare_crude_inputs(
    frame: pd.DataFrame,
    source: RefineSource,
    crude_dir: str | Path,
    *,
    splits: Sequence[str] = ("train", "val"),
    batch: int = 8,
    progress: CrudeProgress | None = None,
) -> dict[str, str]:
    """scene path -> crude mosaic path for every scene with patches in ``splits``; stale ones remade."""
    crude_dir = Path(crude_dir)
    crude_dir.mkdir(parents=True, exist_ok=True)
    scenes = list(dict.fromkeys(str(p) for p in frame.loc[frame["split"].isin(list(splits)), "scene"]))
    notify = progress or (lambda event: None)
    taken: set[str] = set()
    mapping: dict[str, str] = {}
    tile = source.predictor.patch_size
    for index, scene_path in enumerate(scenes):
        target = crude_path_for(scene_path, crude_dir, taken=taken)
        with open_scene(scene_path) as scene:
            plan = plan_windows(scene.height, scene.width, tile=tile, overlap=CRUDE_OVERLAP)
            identity = _identity_tags(Path(scene_path), source, plan)
            reused = is_up_to_date(target, identity, channels=source.channels)
            if not reused:
                write_crude_mosaic(
                    scene, source.predictor, target, plan=plan, batch=batch, tags=identity, overwrite=True,
                    progress=lambda done, total, name=scene.path.name: notify(
                        {"event": "crude", "scene": name, "done": done, "total": total, "reused": False,
                         "index": index, "scenes": len(scenes)}),
                )
        notify({"event": "crude", "scene": Path(scene_path).name, "done": 1, "total": 1, "reused": reused,
                "index": index, "scenes": len(scenes), "finished": True, "path": str(target)})
        mapping[scene_path] = str(target.resolve())
    return mapping


def identity_normalization(channels: int) -> dict[str, list[float]]:
    """Crude probabilities are fed as they are: mean 0, std 1 for every band."""
    return {"mean": [0.0] * channels, "std": [1.0] * channels}


__all__ = [
    "CRUDE_DIR", "CRUDE_OVERLAP", "RefineSource", "check_pairing", "crude_band_names",
    "identity_normalization", "model_classes", "open_refine_source", "prepare_crude_inputs", "write_crude_mosaic",
]
