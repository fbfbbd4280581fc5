"""FCtL's contextual refinement: what a refiner learns from, and on which data.

The refiner redraws a crude mask with a twice-larger context of that mask and the scene's image in
view (see :mod:`icetools.models.refiner`: a residual over the crude mask, gated by its confidence).
It must learn from inputs made exactly as ``predict --merge refine`` makes them: both paths write
them with :func:`icetools.inference.refinement.write_refiner_inputs` (the normal sliding-window
engine, overlap averaging, K probability bands, seams and all, then the image as the segmentation
model reads it). Training keeps one such raster per scene under ``RUN/crude/`` (reused while neither
the scene nor the segmentation model changed).

**Held-out crude masks.** Where the segmentation model trained, its crude masks are right and
over-confident: a refiner taught there learns to trust them, and on a new scene it then makes maps
worse. So the refiner learns where the model did not: on the blocks that were the model's
validation blocks (the ``val`` split; seen only to pick its best epoch), and it is validated on the
``test`` blocks (:func:`held_out_splits`). K-fold models would give held-out masks of every block,
at K times the cost of the segmentation model: not affordable on a CPU budget, whereas the block
split costs nothing. When the model learnt from other scenes altogether, every split is held out
already and is used as sampled.

This module imports :mod:`icetools.inference`, never the reverse: predict needs nothing from here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rasterio

from icetools.errors import ConfigError, DataError, InputFileError
from icetools.inference import (
    CRUDE_MERGE,
    Predictor,
    WindowPlan,
    crude_band_names,
    load_predictor,
    model_classes,
    plan_windows,
)
from icetools.inference.refinement import REFINER_FORMAT, image_band_names, write_refiner_inputs
from icetools.io.raster import open_raster
from icetools.io.scene import open_scene
from icetools.modeldir import CONFIG_FILE, WEIGHTS_FILE
from icetools.progress import Progress, relabel, report
from icetools.tasks import REFINER_MODEL

if TYPE_CHECKING:
    import pandas as pd
    import torch

CRUDE_DIR = "crude"  # inside the refiner's run directory
CRUDE_SUFFIX = "_crude.tif"
CRUDE_OVERLAP = 0.25  # predict's default overlap: the seams the refiner sees at training are those of a default run
CRUDE_STAGE = "crude"
"""Progress stage of the crude mosaics: info ``{"scene", "index", "scenes", "path", "reused", "finished"}``."""


@dataclass(frozen=True)
class RefineSource:
    """The segmentation model whose crude masks (and image channels) a refiner learns to redraw."""

    predictor: Predictor
    model_dir: Path
    model_name: str
    task: str
    n_classes: int
    band_names: tuple[str, ...]  # the crude probability bands
    image_names: tuple[str, ...] = ()  # the image channels as the model reads them, ``image:<channel>``

    @property
    def input_names(self) -> tuple[str, ...]:
        """The refiner's inputs: the crude bands, then the image channels."""
        return self.band_names + self.image_names

    @property
    def channels(self) -> int:
        return len(self.input_names)

    def record(self) -> dict[str, Any]:
        """What the refiner's config.json keeps under ``refines``: what it reads, from which model."""
        config = self.predictor.config if self.predictor is not None else {}
        return {
            "format": REFINER_FORMAT,
            "model_dir": str(self.model_dir),
            "model": self.model_name,
            "task": self.task,
            "n_classes": self.n_classes,
            "crude_inputs": list(self.band_names),
            "crude_merge": CRUDE_MERGE,
            "crude_overlap": CRUDE_OVERLAP,
            "image_inputs": list(self.image_names),
            "image_source": {
                "inputs": config.get("inputs"),
                "input_transforms": config.get("input_transforms"),
                "normalization": config.get("normalization"),
                "note": "image channels as the model reads them (transforms, then its normalisation)",
            },
        }


def open_refine_source(model_dir: str | Path, *, device: str | torch.device | None = "auto") -> RefineSource:
    """The model a refiner run learns from (``from_model``), ready to predict crude mosaics."""
    model_dir = Path(model_dir)
    predictor = load_predictor(model_dir, device)
    name = str((predictor.config.get("model") or {}).get("name", "?"))
    if name == REFINER_MODEL:
        raise ConfigError(f"{model_dir} is itself a refiner: train a refiner from the segmentation model it should refine")
    return RefineSource(
        predictor=predictor,
        model_dir=model_dir.resolve(),
        model_name=name,
        task=predictor.task,
        n_classes=model_classes(predictor),
        band_names=crude_band_names(predictor.config, predictor.out_channels()),
        image_names=image_band_names(predictor.config),
    )


# --------------------------------------------------------------------------------------------
# Held-out data: the blocks the model did not learn from

HELD_OUT_SPLITS = {"val": "train", "test": "val"}
"""A refiner's splits from its model's: learn on the model's val blocks, validate on its test blocks."""


@dataclass(frozen=True)
class RefinerData:
    """Which of the patches' splits a refiner learns and validates on, and why (config.json's record)."""

    shifted: bool
    why: str

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The patches (or blocks) rows with the refiner's splits; the model's train rows dropped."""
        return held_out_splits(frame) if self.shifted else frame

    def record(self) -> dict[str, Any]:
        """config.json's ``refines.training_data`` (``shifted`` also tells a resumed run which rows to use)."""
        if self.shifted:
            return {"shifted": True, "train": "the val blocks of the patches (the model did not learn there)",
                    "val": "the test blocks of the patches", "why": self.why}
        return {"shifted": False, "train": "the train blocks of the patches", "val": "the val blocks of the patches",
                "why": self.why}


def held_out_splits(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of the val and test splits, relabelled train and val (:data:`HELD_OUT_SPLITS`); attrs kept."""
    for split in HELD_OUT_SPLITS:
        if not (frame["split"] == split).any():
            raise DataError(
                f"a refiner learns on the blocks its model did not train on (the {', '.join(HELD_OUT_SPLITS)} "
                f"blocks), but the patches have no {split!r} ones: sample patches with val and test shares "
                "(the default 70/15/15)"
            )
    out = frame[frame["split"].isin(list(HELD_OUT_SPLITS))].copy()
    out["split"] = out["split"].map(HELD_OUT_SPLITS)
    out = out.reset_index(drop=True)
    out.attrs = dict(frame.attrs)
    return out


def _resolved(paths: Sequence[object]) -> set[str]:
    return {str(Path(str(p)).resolve()) for p in paths if p}


def refiner_data(
    frame: pd.DataFrame, model_config: Mapping[str, Any], *, patches_path: str | Path | None
) -> RefinerData:
    """Shift the splits (:func:`held_out_splits`) unless the model provably learnt from other scenes.

    The model's config.json names its patches file and scenes (``provenance``). The same patches
    file, shared scenes, or no record at all: the model's train blocks are among these scenes, so the
    refiner takes the val and test blocks. Disjoint scenes: every split is unseen and kept.
    """
    provenance = model_config.get("provenance") or {}
    model_patches = provenance.get("patches")
    model_scenes = _resolved(provenance.get("scenes") or [])
    scenes = _resolved(list(frame["scene"]))
    if patches_path is not None and model_patches and _resolved([patches_path]) == _resolved([model_patches]):
        why = "the model was trained on these patches: its train blocks hold over-confident crude masks"
    elif model_scenes and not model_scenes & scenes:
        return RefinerData(False, "the model learnt from other scenes: every split here is held out")
    elif model_scenes:
        why = "the model learnt from some of these scenes: its train blocks there hold over-confident crude masks"
    else:
        why = "the model's config does not say what it learnt from: assumed these patches"
    data = RefinerData(True, why)
    data.apply(frame)  # a DataError now, before any run directory exists
    return data


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
    return {
        "crude_scene": str(scene.resolve()),
        "crude_scene_stamp": _file_stamp(scene),
        "crude_model_dir": str(source.model_dir),
        "crude_model_stamp": _file_stamp(source.model_dir / WEIGHTS_FILE) + "/"
        + _file_stamp(source.model_dir / CONFIG_FILE),
        "crude_tile": str(plan.tile),
        "crude_overlap": f"{CRUDE_OVERLAP:g}",
        "crude_image": ",".join(source.image_names),
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
    progress: Progress | None = None,
) -> dict[str, str]:
    """scene path -> refiner input raster (crude mosaic + image channels) for every scene with patches
    in ``splits``; stale ones remade.

    Progress: ``crude`` events per scene (windows done while one is written, then one ``finished``).
    """
    crude_dir = Path(crude_dir)
    crude_dir.mkdir(parents=True, exist_ok=True)
    scenes = list(dict.fromkeys(str(p) for p in frame.loc[frame["split"].isin(list(splits)), "scene"]))
    taken: set[str] = set()
    mapping: dict[str, str] = {}
    tile = source.predictor.patch_size
    for index, scene_path in enumerate(scenes):
        target = crude_path_for(scene_path, crude_dir, taken=taken)
        about = {"scene": Path(scene_path).name, "index": index, "scenes": len(scenes), "path": str(target)}
        with open_scene(scene_path) as scene:
            plan = plan_windows(scene.height, scene.width, tile=tile, overlap=CRUDE_OVERLAP)
            identity = _identity_tags(Path(scene_path), source, plan)
            reused = is_up_to_date(target, identity, channels=source.channels)
            if not reused:
                write_refiner_inputs(
                    scene, source.predictor, target, plan=plan, image=bool(source.image_names), batch=batch,
                    tags=identity, overwrite=True,
                    progress=relabel(progress, CRUDE_STAGE, **about, reused=False, finished=False),
                )
        report(progress, CRUDE_STAGE, 1, 1, **about, reused=reused, finished=True)
        mapping[scene_path] = str(target.resolve())
    return mapping


def identity_normalization(channels: int) -> dict[str, list[float]]:
    """A refiner's inputs are fed as they are (probabilities, and image channels normalised when written)."""
    return {"mean": [0.0] * channels, "std": [1.0] * channels}


__all__ = [
    "CRUDE_DIR", "CRUDE_OVERLAP", "CRUDE_STAGE", "HELD_OUT_SPLITS", "RefineSource", "RefinerData", "crude_band_names",
    "held_out_splits", "identity_normalization", "open_refine_source", "prepare_crude_inputs", "refiner_data",
]
