"""``icetools synth``: synthetic scenes with known truth, for tests, examples and benchmarks."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Callable

import typer

from icetools.cli.app import app
from icetools.cli.common import guarded, info
from icetools.cli.options import Overwrite, Seed

synth_app = typer.Typer(
    help="Synthetic scenes with known truth: sea ice (AI4Arctic layout), DInSAR grounding lines, land cover.",
    no_args_is_help=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(synth_app, name="synth")


def _run(description: str, make: Callable[..., dict[str, Path]], **kwargs: object) -> None:
    """Run one generator under a progress bar, then name what it wrote (stderr)."""
    from icetools.cli.progress import EventBars

    start = time.perf_counter()
    with EventBars({"scene": description}) as bars:
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
    overwrite: Overwrite = False,
) -> None:
    """SAR HH/HV scene + OUT_chart.gpkg (SIGRID-3 polygons) + OUT_truth.tif (true concentration)."""
    from icetools.synth import make_sea_ice_scene

    _run("sea-ice", make_sea_ice_scene, path=output, size=size, seed=seed, overwrite=overwrite)


@synth_app.command("grounding-line")
@guarded
def grounding_line_command(
    output: Annotated[Path, typer.Argument(metavar="OUT", help="Interferogram to write (.tif, EPSG:3031, 50 m).", dir_okay=False)],
    size: Annotated[int, typer.Option("--size", min=64, help="Rows and columns.")] = 512,
    seed: Seed = 0,
    overwrite: Overwrite = False,
) -> None:
    """DInSAR double difference (bands phase, magnitude) + OUT_lines.gpkg (the true grounding lines)."""
    from icetools.synth import make_grounding_line_scene

    _run("grounding-line", make_grounding_line_scene, path=output, size=size, seed=seed, overwrite=overwrite)


@synth_app.command("landcover")
@guarded
def landcover_command(
    output: Annotated[Path, typer.Argument(metavar="OUT", help="RGB image to write (.tif, UTM, 0.5 m).", dir_okay=False)],
    size: Annotated[int, typer.Option("--size", min=64, help="Rows and columns.")] = 2048,
    classes: Annotated[int, typer.Option("--classes", min=2, max=8, help="Number of classes (2 to 8).")] = 6,
    seed: Seed = 0,
    overwrite: Overwrite = False,
) -> None:
    """RGB image (bands red, green, blue) + OUT_classes.tif (uint8 classes, nodata 255)."""
    from icetools.synth import make_landcover_scene

    _run("landcover", make_landcover_scene, path=output, size=size, seed=seed, n_classes=classes, overwrite=overwrite)
