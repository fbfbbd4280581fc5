"""``icetools predict``: a model over whole scenes, streamed and overlap-merged, into GeoTIFFs."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Annotated, Optional

import typer

from icetools.cli.app import app
from icetools.cli.common import guarded, info, warn
from icetools.cli.options import Device, Overwrite
from icetools.errors import ConfigError, InputFileError
from icetools.io.atomic import check_output

GLOB_CHARS = set("*?[")


def expand_scenes(patterns: list[str]) -> tuple[list[Path], bool]:
    """Scene paths, quoted globs expanded; True when a glob was used (output is then a folder)."""
    scenes: list[Path] = []
    globbed = False
    for pattern in patterns:
        if GLOB_CHARS & set(pattern) and not Path(pattern).exists():
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise InputFileError(f"no scene matches {pattern}")
            scenes += [Path(m) for m in matches]
            globbed = True
        else:
            scenes.append(Path(pattern))
    return scenes, globbed


def plan_outputs(
    scenes: list[Path], output: Path, quicklook: Path | None, *, folder: bool
) -> list[tuple[Path, Path, Path | None]]:
    """(scene, output, quicklook) per scene: OUT is a file for one scene, a folder of <stem>.tif for several."""
    if not folder and not output.is_dir():
        return [(scenes[0], output, quicklook)]
    if output.exists() and not output.is_dir():
        raise InputFileError(f"{output} is a file: with several scenes -o names a folder")
    stems = [scene.stem for scene in scenes]
    if len(set(stems)) != len(stems):
        twice = sorted({s for s in stems if stems.count(s) > 1})
        raise ConfigError(f"several scenes share the name {twice[0]!r}: outputs <stem>.tif would collide; predict them apart")
    output.mkdir(parents=True, exist_ok=True)
    if quicklook is not None:
        if quicklook.exists() and not quicklook.is_dir():
            raise InputFileError(f"{quicklook} is a file: with several scenes --quicklook names a folder of <stem>.png")
        quicklook.mkdir(parents=True, exist_ok=True)
    return [(s, output / f"{s.stem}.tif", quicklook / f"{s.stem}.png" if quicklook else None) for s in scenes]


@app.command("predict")
@guarded
def predict_command(
    scenes: Annotated[list[str], typer.Argument(metavar="SCENE...", help="Scene(s): AI4Arctic netCDF or GeoTIFF; quoted globs are expanded.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output GeoTIFF (one scene) or folder of <stem>.tif (several).")],
    model_dir: Annotated[Optional[Path], typer.Option("-m", "--model", help="Model directory (default: the packaged sea-ice model).")] = None,
    tile: Annotated[Optional[int], typer.Option("--tile", help="Window side in pixels, a multiple of 16 (default: the model's patch size).")] = None,
    overlap: Annotated[float, typer.Option("--overlap", help="Overlap between windows, a fraction of the tile in [0, 0.9].")] = 0.25,
    merge: Annotated[str, typer.Option("--merge", help="How overlapping windows combine: average, gaussian (centre-weighted) or refine (a --refiner pass over the averaged crude mosaic).")] = "average",
    refiner: Annotated[Optional[Path], typer.Option("--refiner", help="Refiner directory for --merge refine (icetools train --model refiner --from MODEL).")] = None,
    batch: Annotated[int, typer.Option("--batch", help="Windows per forward pass.")] = 8,
    device: Device = "auto",
    percent: Annotated[bool, typer.Option("--percent", help="SIC as uint8 0-100 (nodata 255) instead of float 0-1.")] = False,
    polygons: Annotated[Optional[str], typer.Option("--polygons", help="Also write <out>_polygon_sic.tif: mean SIC per chart polygon, from a labels raster or 'scene' (the netCDF's own chart).")] = None,
    ice_water: Annotated[bool, typer.Option("--ice-water", help="Also write <out>_icewater.tif: 1 ice (SIC >= 15 %), 0 water, 255 nodata.")] = False,
    probabilities: Annotated[bool, typer.Option("--probabilities", help="Multiclass models: also write <out>_probs.tif, one band per class.")] = False,
    quicklook: Annotated[Optional[Path], typer.Option("--quicklook", help="PNG of input and output side by side (a folder of <stem>.png with several scenes).")] = None,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Skip scenes whose output exists (for reruns).")] = False,
    overwrite: Overwrite = False,
) -> None:
    """Predict SCENE(s) with a model directory: sliding windows streamed strip by strip, merged by overlap.

    Outputs by task: sic -> SIC (float 0-1, or --percent); binary -> probability + <out>_mask.tif at
    the model's threshold; multiclass -> class (+ --probabilities). Every file appears whole or not at all.
    With --merge refine the products come from the refiner, run over the model's crude mosaic.
    """
    from icetools.cli.progress import EventBars
    from icetools.inference import PredictJob, default_model_dir, load_predictor, predict_scene
    from icetools.quicklook import write_quicklook

    if (merge == "refine") != (refiner is not None):
        raise ConfigError(
            "--merge refine needs --refiner REFINER_DIR" if refiner is None
            else f"--refiner applies to --merge refine only, not --merge {merge}: drop one of them"
        )
    paths, globbed = expand_scenes(scenes)
    jobs = plan_outputs(paths, output, quicklook, folder=globbed or len(paths) > 1)
    if skip_existing:
        skipped = [scene for scene, out, _ in jobs if out.exists()]
        for scene in skipped:
            info(f"skip {scene}: its output exists")
        jobs = [job for job in jobs if job[0] not in skipped]
    if not jobs:
        return
    for _, _, png in jobs:
        if png is not None:
            check_output(png, overwrite=overwrite)
    if model_dir is None:
        try:
            model_dir = default_model_dir()
        except ConfigError:
            raise ConfigError("no default model is installed: pass -m MODEL_DIR") from None
    predictor = load_predictor(model_dir, device)
    refiner_predictor = load_predictor(refiner, device) if refiner is not None else None
    input_band = predictor.inputs[0] if predictor.inputs else None
    for scene, out, png in jobs:
        job = PredictJob(
            scene, out, predictor, refiner=refiner_predictor, tile=tile, overlap=overlap, merge=merge, batch=batch,
            percent=percent, polygons=polygons, ice_water=ice_water, probabilities=probabilities, overwrite=overwrite,
        )
        with EventBars({"windows": scene.name}, rate_unit="windows/s") as bars:
            summary = predict_scene(job, progress=bars)
        for message in summary["warnings"]:  # e.g. a refiner that failed its validation: averaging instead
            warn(message)
        if png is not None:
            write_quicklook(scene, out, png, input_band=input_band, overwrite=overwrite)
        info(
            f"{out}: {summary['windows']} windows, {summary['megapixels_per_second']:.2f} Mpx/s, "
            f"{summary['seconds']:.1f} s on {summary['device']}"
        )
