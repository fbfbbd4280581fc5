"""``icetools predict``: a model over whole scenes, streamed and overlap-merged, into GeoTIFFs."""

from __future__ import annotations

import glob
import signal
import traceback
from collections.abc import Iterable
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape

from icetools.cli.app import app
from icetools.cli.common import (
    STATE, console, fail, guarded, info, interrupted_message, plain_os_error, usage_error, warn,
)
from icetools.cli.formats import RASTER_FORMATS, folder_output, is_folder, resolve_output
from icetools.cli.options import Device, Format, MergeName, NoChecks, Overwrite, Quiet, Verbose, multiple_of_16
from icetools.errors import ConfigError, IcetoolsError, InputFileError
from icetools.io.atomic import check_output, check_writable
from icetools.progress import Event, Progress

if TYPE_CHECKING:
    from icetools.inference.batch import Models, SceneResult, SceneTask
    from icetools.inference.predictor import Predictor

GLOB_CHARS = set("*?[")
# Extra products named on the command line: option -> the library's product kind.
EXTRA_OPTIONS = {
    "--ice-water-out": "ice_water",
    "--mask-out": "mask",
    "--polygon-sic-out": "polygon_sic",
    "--probabilities-out": "probabilities",
}


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
    scenes: list[Path], output: str, quicklook: str | None, *, folder: bool, fmt: str | None = None
) -> list[tuple[Path, Path, Path | None]]:
    """(scene, output, quicklook) per scene: OUT is a file for one scene, a folder of <stem>.tif for
    several (``-o FOLDER/`` or an existing folder: a name like multi.tif is refused, not made a folder)."""
    if not folder and not is_folder(output):
        path = resolve_output(output, fmt, RASTER_FORMATS).path
        if quicklook is not None and Path(quicklook).suffix.lower() != ".png":
            raise typer.BadParameter(f"{quicklook}: the quicklook is a PNG: name it .png", param_hint="'--quicklook'")
        return [(scenes[0], path, Path(quicklook) if quicklook else None)]  # type: ignore[list-item]
    if fmt is not None:
        resolve_output("out.tif", fmt, RASTER_FORMATS)  # a folder holds GeoTIFFs: -f can only agree
    out_dir = folder_output(output)
    looks = folder_output(quicklook, option="'--quicklook'") if quicklook is not None else None
    stems = [scene.stem for scene in scenes]
    if len(set(stems)) != len(stems):
        twice = sorted({s for s in stems if stems.count(s) > 1})
        raise ConfigError(f"several scenes share the name {twice[0]!r}: outputs <stem>.tif would collide; predict them apart")
    out_dir.mkdir(parents=True, exist_ok=True)
    if looks is not None:
        looks.mkdir(parents=True, exist_ok=True)
    return [(s, out_dir / f"{s.stem}.tif", looks / f"{s.stem}.png" if looks else None) for s in scenes]


def extra_paths(named: dict[str, str | None], *, several: bool, polygons: str | None) -> dict[str, Path]:
    """The extra products named by their options, checked: GeoTIFF names, one scene, a polygon source."""
    given = {option: text for option, text in named.items() if text is not None}
    if given and several:
        raise usage_error(
            f"{', '.join(given)} name one file each: with several scenes or -o FOLDER/ the extra products "
            "take their default names (<stem>_icewater.tif, ...); predict one scene into a file to name them"
        )
    if "--polygon-sic-out" in given and polygons is None:
        raise usage_error("--polygon-sic-out needs --polygons (a labels raster or 'scene')")
    return {
        EXTRA_OPTIONS[option]: resolve_output(text, None, RASTER_FORMATS, option=f"'{option}'").path  # type: ignore[misc]
        for option, text in given.items()
    }


def _band_map(value: str | None) -> str | None:
    """--bands must read MODEL_BAND=FILE_BAND,...: else a usage error."""
    from icetools.inputs import parse_band_map

    try:
        parse_band_map(value)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


def _shard(value: str | None) -> str | None:
    """--shard must read INDEX/COUNT with INDEX in 1..COUNT: else a usage error."""
    if value is not None:
        from icetools.inference.batch import parse_shard

        try:
            parse_shard(value)
        except ConfigError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def _extra(option: str, help: str) -> object:
    return typer.Option(option, metavar="PATH", help=help)


@app.command("predict")
@guarded
def predict_command(
    scenes: Annotated[list[str], typer.Argument(metavar="SCENE...", help="Scene(s): AI4Arctic netCDF or GeoTIFF; quoted globs are expanded.")],
    output: Annotated[str, typer.Option("-o", "--output", metavar="OUT", help="Output GeoTIFF (one scene), or a folder of <stem>.tif: FOLDER/ (trailing slash) or an existing folder (needed with several scenes).")],
    fmt: Format = None,
    model_dir: Annotated[Optional[Path], typer.Option("-m", "--model", help="Model directory (default: the packaged sea-ice model).")] = None,
    tile: Annotated[Optional[int], typer.Option("--tile", callback=multiple_of_16, help="Window side in pixels, a multiple of 16 (default: the model's patch size).")] = None,
    overlap: Annotated[float, typer.Option("--overlap", min=0.0, max=0.9, help="Overlap between windows, a fraction of the tile in [0, 0.9].")] = 0.25,
    merge: Annotated[MergeName, typer.Option("--merge", help="How overlapping windows combine: gaussian (centre-weighted, the default: a window's edge pixels, which see the least context, count least, so no seams), average (equal weights, as MONAI's default) or refine (a --refiner pass over the averaged crude mosaic).")] = "gaussian",
    refiner: Annotated[Optional[Path], typer.Option("--refiner", help="Refiner directory for --merge refine (icetools train --model refiner --from MODEL).")] = None,
    batch: Annotated[Optional[int], typer.Option("--batch", min=1, help="Windows per forward pass (default: 8 on the CPU; on a GPU as many as half its free memory holds).")] = None,
    device: Device = "auto",
    bands: Annotated[Optional[str], typer.Option("--bands", metavar="MODEL_BAND=FILE_BAND,...", callback=_band_map, help="Read these model bands from these file bands (names or 1-based numbers), e.g. nersc_sar_primary=Sigma0_HH_db,nersc_sar_secondary=2. Without it the usual Sentinel-1 names (HH, sigma0_HH, Sigma0_HH_db, ...) and HH-then-HV in undescribed two-band files are found by themselves.")] = None,
    footprint: Annotated[Optional[float], typer.Option("--footprint", min=0.0, metavar="METRES", help="SIC models: the area each SIC value stands for, a Gaussian of this sigma in metres (default 200; 0 writes the per-pixel output). No-data pixels stay no-data and never leak into their neighbours.")] = None,
    no_calibration: Annotated[bool, typer.Option("--no-calibration", help="SIC models: write the model's output as it is, without the stretch of its validated floor and ceiling onto 0 and 1 (config.json 'sic_calibration').")] = False,
    percent: Annotated[bool, typer.Option("--percent", help="SIC as uint8 0-100 (nodata 255) instead of float 0-1.")] = False,
    polygons: Annotated[Optional[str], typer.Option("--polygons", help="Also write the mean SIC per chart polygon (<out>_polygon_sic.tif, or --polygon-sic-out), from a labels raster or 'scene' (the netCDF's own chart).")] = None,
    ice_water: Annotated[bool, typer.Option("--ice-water", help="Also write <out>_icewater.tif: 1 ice (SIC >= 15 %), 0 water, 255 nodata.")] = False,
    probabilities: Annotated[bool, typer.Option("--probabilities", help="Multiclass models: also write <out>_probs.tif, one band per class.")] = False,
    ice_water_out: Annotated[Optional[str], _extra("--ice-water-out", "Write the ice/water map here instead of <out>_icewater.tif (implies --ice-water).")] = None,
    mask_out: Annotated[Optional[str], _extra("--mask-out", "Binary models: write the mask here instead of <out>_mask.tif.")] = None,
    polygon_sic_out: Annotated[Optional[str], _extra("--polygon-sic-out", "Write the polygon SIC here instead of <out>_polygon_sic.tif (with --polygons).")] = None,
    probabilities_out: Annotated[Optional[str], _extra("--probabilities-out", "Write the class probabilities here instead of <out>_probs.tif (implies --probabilities).")] = None,
    no_checks: NoChecks = False,
    quicklook: Annotated[Optional[str], typer.Option("--quicklook", metavar="PNG", help="PNG of input and output side by side (a folder of <stem>.png with several scenes: FOLDER/).")] = None,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Skip scenes whose output exists (for reruns).")] = False,
    jobs: Annotated[Optional[int], typer.Option("--jobs", min=1, metavar="N", help="Predict the scenes on a local Dask cluster of N worker processes, one scene each at a time (pip install 'icetools[distributed]').")] = None,
    scheduler: Annotated[Optional[str], typer.Option("--scheduler", metavar="tcp://HOST:PORT", help="Predict the scenes on an existing Dask cluster; its workers must see the scenes, outputs and model at the same paths.")] = None,
    shard: Annotated[Optional[str], typer.Option("--shard", metavar="I/N", callback=_shard, help="Predict only shard I of N, counted from 1: every N-th scene of the sorted list, from the I-th (array jobs of a batch system).")] = None,
    overwrite: Overwrite = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Predict SCENE(s) with a model directory: sliding windows streamed strip by strip, merged by overlap.

    Outputs by task: sic -> SIC (float 0-1, or --percent); binary -> probability + <out>_mask.tif at
    the model's threshold; multiclass -> class (+ --probabilities). Each extra product has an option
    naming its path, so a Makefile can name it as a target. Every file appears whole or not at all.
    With --merge refine the products come from the refiner, run over the model's crude mosaic.
    Several scenes: a failed one is named in one line, the others go on, and the exit status is 1.
    """
    from icetools.inference.batch import SceneTask

    if (merge == "refine") != (refiner is not None):
        raise usage_error(
            "--merge refine needs --refiner REFINER_DIR" if refiner is None
            else f"--refiner applies to --merge refine only, not --merge {merge}: drop one of them"
        )
    if jobs is not None and scheduler is not None:
        raise usage_error("--jobs starts a local Dask cluster, --scheduler names a running one: give one of them")
    paths, globbed = expand_scenes(scenes)
    several = globbed or len(paths) > 1
    named = {"--ice-water-out": ice_water_out, "--mask-out": mask_out, "--polygon-sic-out": polygon_sic_out,
             "--probabilities-out": probabilities_out}
    extras = extra_paths(named, several=several or is_folder(output), polygons=polygons)
    tasks = [SceneTask(*job) for job in plan_outputs(paths, output, quicklook, folder=several, fmt=fmt)]
    tasks = select_tasks(tasks, shard=shard, skip_existing=skip_existing)
    if not tasks:
        return
    for task in tasks:
        if task.quicklook is not None:  # an unwritable quicklook fails now, not after the long pass
            check_writable(check_output(task.quicklook, overwrite=overwrite))
    on_dask = jobs is not None or scheduler is not None
    models, predictors = load_models(model_dir, refiner, device, bands, on_dask=on_dask)
    options = {
        "tile": tile, "overlap": overlap, "merge": merge, "batch": batch, "percent": percent, "polygons": polygons,
        "ice_water": ice_water, "probabilities": probabilities, "overwrite": overwrite, "extra_paths": extras,
        "checks": not no_checks, "footprint_m": footprint,
        "calibrate": not no_calibration,
    }
    failed = run_scenes(tasks, models, options, jobs=jobs, scheduler=scheduler, predictors=predictors)
    if failed:
        raise fail(f"{failed} of {len(tasks)} scenes failed (named above); {len(tasks) - failed} written")


def run_scenes(
    tasks: list[SceneTask], models: Models, options: dict[str, object], *, jobs: int | None, scheduler: str | None,
    predictors: tuple[Predictor, Predictor | None] | None,
) -> int:
    """Predict the scenes, here or on Dask, with their progress bars and lines; how many failed.

    Here each scene has its bar of windows; on Dask one bar counts the scenes done. An interrupted
    Dask run names the outputs its workers finished (this process's own record has none of them).
    """
    from icetools.cli.progress import EventBars
    from icetools.inference.batch import predict_scenes

    on_dask = jobs is not None or scheduler is not None
    written: list[Path] = []
    try:
        with EventBars({"scenes": "scenes"} if on_dask else None, rate_unit=None if on_dask else "windows/s") as bars:
            with closing(predict_scenes(tasks, models, options, jobs=jobs, scheduler=scheduler, predictors=predictors,
                                        progress=bars if on_dask else _bar_per_scene(bars))) as results:
                return report_results(results, single=len(tasks) == 1, written=written)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP
        if not on_dask:
            raise  # the error edge names what this process wrote
        message = interrupted_message(written)
        if scheduler is not None:
            message += "; scenes already running on the cluster finish there"
        raise fail(message, 128 + int(getattr(exc, "signum", signal.SIGINT))) from None


def select_tasks(tasks: list[SceneTask], *, shard: str | None, skip_existing: bool) -> list[SceneTask]:
    """The scenes of this run: those of its shard, less those already predicted with --skip-existing."""
    from icetools.inference.batch import parse_shard, shard as shard_of

    if shard is not None:
        index, count = parse_shard(shard)
        total = len(tasks)
        tasks = shard_of(tasks, index, count, key=lambda task: str(task.scene))
        info(f"shard {index}/{count}: {len(tasks)} of {total} scenes")
    if skip_existing:
        for task in tasks:
            if task.output.exists():
                info(f"skip {task.scene}: its output exists")
        tasks = [task for task in tasks if not task.output.exists()]
    return tasks


def load_models(
    model_dir: Path | None, refiner: Path | None, device: str, bands: str | None, *, on_dask: bool
) -> tuple[Models, tuple[Predictor, Predictor | None] | None]:
    """The run's models as directories, loaded here once so that a bad model or --bands is one line
    before any scene starts; the loaded models too when the scenes are predicted here."""
    from icetools.inference import default_model_dir
    from icetools.inference.batch import Models
    from icetools.inputs import check_band_map, parse_band_map

    if model_dir is None:
        try:
            model_dir = default_model_dir()
        except ConfigError:
            raise ConfigError("no default model is installed: pass -m MODEL_DIR") from None
    band_map = parse_band_map(bands) if bands else {}
    models = Models(model_dir, refiner, device, tuple(band_map.items()))
    predictors = models.load("cpu" if on_dask else None)  # Dask workers load their own, on their device
    if bands:
        try:
            check_band_map(band_map, predictors[0].inputs or ())
        except ConfigError as exc:
            raise usage_error(f"--{exc}") from None
    return models, None if on_dask else predictors


def report_results(results: Iterable[SceneResult], *, single: bool, written: list[Path] | None = None) -> int:
    """One line per scene as it finishes: its figures, or its error; the number of scenes that failed.
    A single scene's error is raised as it is (the usual one-line error and exit status). The
    products of each scene done are added to ``written``."""
    failed = 0
    for result in results:
        if result.error is not None:
            if single:
                raise result.error
            failed += 1
            console.print(f"[bold red]error:[/] {escape(scene_error_line(result))}")
            continue
        for message in result.warnings:  # e.g. a refiner that failed its validation: averaging instead
            warn(escape(message))
        summary = result.summary or {}
        if written is not None:
            written += [Path(path) for path in summary.get("outputs", [])]
            written += [result.task.quicklook] if result.task.quicklook is not None else []
        info(
            f"{escape(str(result.task.output))}: {summary['windows']} windows, "
            f"{summary['megapixels_per_second']:.2f} Mpx/s, {summary['seconds']:.1f} s on {summary['device']}"
        )
    return failed


def scene_error_line(result: SceneResult) -> str:
    """A failed scene in one line that names it, as the error edge words a command's error."""
    error = result.error
    if isinstance(error, IcetoolsError):
        message = str(error)
    else:
        first = str(error).splitlines()[0] if str(error) else ""
        message = plain_os_error(error) or f"{type(error).__name__}: {first} (internal error; rerun with -v for the traceback)"
        if STATE["verbosity"] > 0 and error is not None:
            traceback.print_exception(type(error), error, error.__traceback__)
    return message if result.task.scene.name in message else f"{result.task.scene}: {message}"


def _bar_per_scene(bars: Progress) -> Progress:
    """Each scene's windows on a bar of its own, labelled with the scene's name."""
    from icetools.inference.windows import WINDOWS_STAGE

    def forward(event: Event) -> None:
        if event.stage == WINDOWS_STAGE:
            bars(replace(event, stage=str(event.info.get("scene", event.stage))))

    return forward
