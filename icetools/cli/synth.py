"""``icetools synth``: synthetic scenes with known truth, for tests, examples and benchmarks.

Companion files are named from the whole output name, as GDAL names sidecars (scene.nc ->
scene.nc.chart.gpkg), so ``synth sea-ice s.nc`` and ``synth sea-ice s.tif`` side by side never
collide; each has an option naming its path, so a Makefile can name it as a target.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from icetools.cli.app import app
from icetools.cli.common import guarded, info
from icetools.cli.formats import RASTER_FORMATS, VECTOR_FORMATS, resolve_output
from icetools.cli.options import Overwrite, Quiet, Seed, Verbose

synth_app = typer.Typer(
    help="Synthetic scenes with known truth: sea ice (AI4Arctic layout), DInSAR grounding lines, land cover.",
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(synth_app, name="synth")

# One-file vector formats: a companion is written under a temporary name and renamed into place.
COMPANION_VECTORS = {name: exts for name, exts in VECTOR_FORMATS.items() if name != "ESRI Shapefile"}
SCENE_FORMATS = {"netCDF": (".nc",), **RASTER_FORMATS}


@synth_app.callback()
def synth_group(verbose: Verbose = 0, quiet: Quiet = False) -> None:
    """Synthetic scenes with known truth: sea ice (AI4Arctic layout), DInSAR grounding lines, land cover."""


def _path(text: Path | None, formats: dict[str, tuple[str, ...]], option: str, *, scene: Path | None = None) -> Path | None:
    """A file name checked against the formats the generator writes there, and not the scene's own
    name (usage errors otherwise)."""
    if text is None:
        return None
    path = resolve_output(text, None, formats, option=option).path
    if scene is not None and path is not None and path.resolve() == scene.resolve():
        raise typer.BadParameter(f"{text} is OUT itself: name the companion file differently", param_hint=option)
    return path


def _run(description: str, make: Callable[..., dict[str, Path]], **kwargs: object) -> None:
    """Run one generator under a progress bar, then name what it wrote (stderr)."""
    from icetools.cli.progress import EventBars
    from icetools.io.atomic import removed_on_failure

    start = time.perf_counter()
    with removed_on_failure(), EventBars({"scene": description}) as bars:  # the scene and its truth together
        outputs = make(progress=bars, **kwargs)
    elapsed = time.perf_counter() - start
    for kind, path in outputs.items():
        info(f"wrote {path} ({kind})")
    info(f"{description}: done in {elapsed:.1f} s")


@synth_app.command("sea-ice")
@guarded
def sea_ice_command(
    output: Annotated[Path, typer.Argument(metavar="OUT", help="Scene to write: .nc (AI4Arctic raw layout) or .tif (EPSG:3413).", dir_okay=False)],
    size: Annotated[int, typer.Option("--size", min=64, help="Rows (columns are ~4% more, like AI4Arctic).")] = 1024,
    seed: Seed = 0,
    chart_out: Annotated[Optional[Path], typer.Option("--chart-out", metavar="PATH", help="The SIGRID-3 chart (default OUT.chart.gpkg).")] = None,
    truth_out: Annotated[Optional[Path], typer.Option("--truth-out", metavar="PATH", help="The true SIC raster (default OUT.truth.tif).")] = None,
    overwrite: Overwrite = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """SAR HH/HV scene + OUT.chart.gpkg (SIGRID-3 polygons) + OUT.truth.tif (true concentration)."""
    from icetools.synth import make_sea_ice_scene

    _path(output, SCENE_FORMATS, "'OUT'")
    _run(
        "sea-ice", make_sea_ice_scene, path=output, size=size, seed=seed, overwrite=overwrite,
        chart_path=_path(chart_out, COMPANION_VECTORS, "'--chart-out'", scene=output),
        truth_path=_path(truth_out, RASTER_FORMATS, "'--truth-out'", scene=output),
    )


@synth_app.command("grounding-line")
@guarded
def grounding_line_command(
    output: Annotated[Path, typer.Argument(metavar="OUT", help="Interferogram to write (.tif, EPSG:3031, 50 m).", dir_okay=False)],
    size: Annotated[int, typer.Option("--size", min=64, help="Rows and columns.")] = 512,
    seed: Seed = 0,
    lines_out: Annotated[Optional[Path], typer.Option("--lines-out", metavar="PATH", help="The true grounding lines (default OUT.lines.gpkg).")] = None,
    overwrite: Overwrite = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """DInSAR double difference (bands phase, magnitude) + OUT.lines.gpkg (the true grounding lines)."""
    from icetools.synth import make_grounding_line_scene

    _path(output, RASTER_FORMATS, "'OUT'")
    _run(
        "grounding-line", make_grounding_line_scene, path=output, size=size, seed=seed, overwrite=overwrite,
        lines_path=_path(lines_out, COMPANION_VECTORS, "'--lines-out'", scene=output),
    )


@synth_app.command("landcover")
@guarded
def landcover_command(
    output: Annotated[Path, typer.Argument(metavar="OUT", help="RGB image to write (.tif, UTM, 0.5 m).", dir_okay=False)],
    size: Annotated[int, typer.Option("--size", min=64, help="Rows and columns.")] = 2048,
    classes: Annotated[int, typer.Option("--classes", min=2, max=8, help="Number of classes (2 to 8).")] = 6,
    seed: Seed = 0,
    classes_out: Annotated[Optional[Path], typer.Option("--classes-out", metavar="PATH", help="The class raster (default OUT.classes.tif).")] = None,
    overwrite: Overwrite = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """RGB image (bands red, green, blue) + OUT.classes.tif (uint8 classes, nodata 255)."""
    from icetools.synth import make_landcover_scene

    _path(output, RASTER_FORMATS, "'OUT'")
    _run(
        "landcover", make_landcover_scene, path=output, size=size, seed=seed, n_classes=classes, overwrite=overwrite,
        classes_path=_path(classes_out, RASTER_FORMATS, "'--classes-out'", scene=output),
    )
