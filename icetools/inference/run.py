"""``predict_scene(job)``: check, plan, one or two probability passes, commit.

One pass for ``average``/``gaussian`` merges. ``refine`` runs two: the refiner's inputs (the model's
crude mosaic and the image as the model reads it, see :mod:`.refinement`) into a temporary GeoTIFF
beside the output, then the refiner over it (its 2x context of the mosaic), both on the same
windows. A refiner whose config says it did not beat the averaged mosaic on validation is not
applied: the averaged mosaic is the answer, with a warning in the summary. Every output appears
whole or not at all: on any error none of this run's files is left, the temporary mosaic included.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from icetools import __version__
from icetools.errors import ConfigError
from icetools.inference.footprint import SIC_FOOTPRINT_M
from icetools.inference.mosaic import probability_pass
from icetools.inference.predictor import Predictor, check_pairing, scene_inputs
from icetools.inference.products import Outputs, extra_path, open_polygon_source, plan_products, source_tags
from icetools.inference.refinement import (
    CRUDE_MERGE,
    check_refiner,
    refiner_bands,
    refiner_fallback,
    refiner_image_inputs,
    write_refiner_inputs,
)
from icetools.inference.windows import (
    TILE_MULTIPLE,
    WINDOWS_STAGE,
    MergeStats,
    WindowPlan,
    check_batch,
    check_tiling,
    plan_windows,
)
from icetools.io.atomic import removed_on_failure
from icetools.io.checks import check_scene_values
from icetools.io.scene import Scene, open_scene
from icetools.progress import Event, Progress, relabel
from icetools.tasks import SIC

MERGES = ("average", "gaussian", "refine")
REFINE = "refine"


@dataclass(frozen=True)
class PredictJob:
    """One scene to predict, where, and how (the options of ``icetools predict`` for one scene).

    ``tile`` None: the model's patch size. ``polygons``: a labels raster, or ``"scene"`` for the
    netCDF's own chart; it adds ``<out>_polygon_sic.tif``. ``refiner`` goes with ``merge="refine"``.
    """

    scene: str | Path
    output: str | Path
    model: Predictor
    refiner: Predictor | None = None
    tile: int | None = None
    overlap: float = 0.25
    merge: str = "gaussian"  # edge pixels of a window count least: no seams (equal weights show the tile grid)
    batch: int | None = None  # None: chosen for the device (predictor.choose_batch)
    percent: bool = False
    polygons: str | Path | None = None
    ice_water: bool = False
    probabilities: bool = False
    overwrite: bool = False
    extra_paths: Mapping[str, Path] | None = None  # names of extra products by kind (products.EXTRA_SUFFIXES)
    checks: bool = True  # sample the input bands against their plausible ranges (icetools.io.checks)
    footprint_m: float | None = None  # SIC over a Gaussian of this sigma (metres); None: SIC_FOOTPRINT_M; 0: per pixel
    calibrate: bool = True  # SIC: apply the model's validated floor/ceiling stretch (icetools.calibration), if any

    @property
    def final(self) -> Predictor:
        """The model whose probabilities become the products."""
        return self.refiner or self.model

    def checked_tile(self) -> int:
        """Every option checked against the others and the models; the window side to use."""
        if self.merge not in MERGES:
            raise ConfigError(f"unknown merge {self.merge!r}: use {', '.join(MERGES)}")
        if self.merge == REFINE and self.refiner is None:
            raise ConfigError("merge 'refine' needs a refiner (a refinement model trained on crude masks)")
        if self.merge != REFINE and self.refiner is not None:
            raise ConfigError(f"a refiner applies to merge 'refine' only, not merge {self.merge!r}: drop one of them")
        if self.refiner is not None:
            check_pairing(self.model, self.refiner)
            check_refiner(self.model, self.refiner)
        tile = self.tile
        if tile is None:
            tile = self.model.patch_size
            if tile % TILE_MULTIPLE:
                raise ConfigError(f"the model's patch_size {tile} is not a multiple of {TILE_MULTIPLE}: give a tile")
        check_tiling(tile, self.overlap)
        check_batch(self.batch)
        if self.footprint_m is not None:
            if not math.isfinite(self.footprint_m) or self.footprint_m < 0:
                raise ConfigError(f"footprint must be a number of metres >= 0, got {self.footprint_m}")
            if self.footprint_m > 0 and self.final.task != SIC:
                raise ConfigError(f"footprint applies to sic models; this model's task is {self.final.task!r}")
        return tile

    def footprint(self, scene: Scene) -> tuple[float, str | None]:
        """The footprint's sigma in pixels of ``scene``, and the tag that records it (None: not a SIC run)."""
        if self.final.task != SIC:
            return 0.0, None
        metres = SIC_FOOTPRINT_M if self.footprint_m is None else self.footprint_m
        if metres == 0:
            return 0.0, "0 (per pixel)"
        if not scene.grid.is_georeferenced:
            return 0.0, "0 (the scene has no georeference, so no pixel size)"
        return metres / scene.grid.pixel_size(), f"{metres:g}"


def predict_scene(job: PredictJob, *, progress: Progress | None = None) -> dict[str, Any]:
    """Predict a whole scene into ``job.output`` (and its sibling products); return a summary.

    Progress: ``windows`` events (both passes counted under ``refine``), info ``{"scene": name}``.
    """
    tile = job.checked_tile()
    if not job.calibrate and job.model.calibration is not None:
        job = replace(job, model=replace(job.model, calibration=None))
    fallback = refiner_fallback(job.refiner) if job.refiner is not None else None
    with open_scene(job.scene) as scene, ExitStack() as stack:
        inputs = scene_inputs(scene, job.model)  # every missing band named before anything else is checked
        if job.checks:
            check_scene_values(scene, inputs)
        outputs = _plan_outputs(job, scene, tile, fallback=fallback is not None)
        if job.polygons is not None:
            outputs.polygon_source = open_polygon_source(job.polygons, scene)
            if outputs.polygon_source is not scene:
                stack.callback(outputs.polygon_source.close)
        plan = plan_windows(scene.height, scene.width, tile=tile, overlap=job.overlap)
        with removed_on_failure(outputs.paths):
            stats = _passes(job, scene, plan, outputs, relabel(progress, scene=scene.path.name),
                            refiner=job.refiner if fallback is None else None)
            outputs.write_polygon_product()
    seconds = max(stats.seconds, 1e-9)
    return {
        "scene": str(job.scene),
        "outputs": [str(p) for p in outputs.paths],
        "windows": stats.windows,
        "windows_predicted": stats.windows_predicted,
        "valid_pixels": stats.valid_pixels,
        "seconds": stats.seconds,
        "megapixels_per_second": scene.height * scene.width / 1e6 / seconds,
        "windows_per_second": stats.windows / seconds,
        "tile": tile,
        "overlap": job.overlap,
        "merge": job.merge,
        "refiner": job.refiner.source if job.refiner is not None else None,
        "refined": job.refiner is not None and fallback is None,
        "warnings": [fallback] if fallback else [],
        "device": str(job.model.device),
        "accumulator_shape": list(stats.accumulator_shape),
    }


def _plan_outputs(job: PredictJob, scene: Scene, tile: int, *, fallback: bool = False) -> Outputs:
    """The products of the job, their tags, checked: no collision, nothing overwritten unasked."""
    output = Path(job.output)
    products = plan_products(
        output, job.final, channels=job.final.out_channels(), percent=job.percent, ice_water=job.ice_water,
        probabilities=job.probabilities, polygons=job.polygons is not None, paths=job.extra_paths,
    )
    tags = {
        "model": job.model.label,
        "icetools_version": __version__,
        "task": job.model.task,
        "merge": job.merge,
        "overlap": f"{job.overlap:g}",
        "tile": str(tile),
        **source_tags(scene, output),  # scene name, its path relative to the output, its chart's CRS
    }
    if job.refiner is not None:
        tags["refiner"] = job.refiner.label
        if fallback:
            tags["refine_fallback"] = "average: the refiner did not beat the averaged mosaic on validation"
    polygon_path = extra_path(output, "polygon_sic", job.extra_paths) if job.polygons is not None else None
    footprint_px, footprint_tag = job.footprint(scene)
    if footprint_tag is not None:
        tags["sic_footprint_sigma_m"] = footprint_tag
    if job.final.task == SIC:
        calibration = job.final.calibration
        tags["sic_calibration"] = calibration.describe() if calibration is not None else "none"
    device = job.final.device
    outputs = Outputs(products, scene.grid, tags, overwrite=job.overwrite, polygon_path=polygon_path,
                      footprint_px=footprint_px, footprint_device=str(device) if device.type == "cuda" else "cpu")
    outputs.check(_input_files(job))
    return outputs


def _input_files(job: PredictJob) -> list[Path]:
    """Every file the run reads: the scene, the polygons source and the models' files."""
    files = [Path(job.scene)]
    if job.polygons is not None and job.polygons != "scene":
        files.append(Path(job.polygons))
    for predictor in (job.model, job.refiner):
        if predictor is not None and predictor.source:
            source = Path(predictor.source)
            files += [source, *(source.iterdir() if source.is_dir() else ())]
    return files


def _passes(
    job: PredictJob, scene: Scene, plan: WindowPlan, outputs: Outputs, progress: Progress | None, *,
    refiner: Predictor | None,
) -> MergeStats:
    """The products' probabilities: the model's pass, or the refiner's inputs and then the refiner's pass."""
    if refiner is None:  # a refiner that failed its validation leaves the averaged mosaic, its starting point
        merge = CRUDE_MERGE if job.merge == REFINE else job.merge
        with outputs.row_sink() as write_rows:
            return probability_pass(
                scene, job.model, plan, write_rows=write_rows, merge=merge, batch=job.batch, lock=outputs.lock,
                progress=progress,
            )
    # The temporary inputs sit beside the output (same file system, no /tmp filling up) and go in every case.
    output = Path(job.output)
    crude_path = output.with_name(f".{output.stem}.crude-{os.getpid()}.tif")
    try:
        first = write_refiner_inputs(
            scene, job.model, crude_path, plan=plan, image=bool(refiner_image_inputs(refiner)), batch=job.batch,
            temporary=True, lock=outputs.lock, progress=_half(progress, 0, plan.n_windows),
        )
        with open_scene(crude_path) as crude, outputs.row_sink() as write_rows:
            second = probability_pass(
                crude, refiner, plan, write_rows=write_rows, bands=refiner_bands(refiner, crude),
                merge=CRUDE_MERGE, batch=job.batch, lock=outputs.lock,
                progress=_half(progress, plan.n_windows, plan.n_windows),
            )
    finally:
        crude_path.unlink(missing_ok=True)
    second.seconds += first.seconds
    return second


def _half(progress: Progress | None, offset: int, windows: int) -> Progress | None:
    """One of two passes over the same windows: counted as windows of both, in whole numbers."""
    if progress is None:
        return None
    return lambda event: progress(Event(WINDOWS_STAGE, offset + event.done, 2 * windows, event.info))
