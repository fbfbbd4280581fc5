"""``icetools sample-patches``: deal scenes or blocks to train/val/test and choose fixed windows in them."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import math

import typer

from icetools.cli.app import app
from icetools.cli.common import STATE, console, guarded, usage_error, warn
from icetools.cli.formats import resolve_output
from icetools.cli.options import NoChecks, OutPath, Overwrite, Quiet, Seed, Verbose, multiple_of_16


class SplitBy(str, Enum):
    auto = "auto"
    scene = "scene"
    block = "block"


def _parse_fractions(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"{text!r}: give three numbers such as 0.7,0.15,0.15") from None
    if len(values) != 3:
        raise typer.BadParameter(f"{text!r}: give three shares train,val,test such as 0.7,0.15,0.15")
    if any(v < 0 or not math.isfinite(v) for v in values) or abs(sum(values) - 1) > 1e-6:
        raise typer.BadParameter(f"{text!r}: the three shares must be 0 or more and sum to 1")
    return values  # type: ignore[return-value]


@app.command("sample-patches")
@guarded
def sample_patches_command(
    scenes: Annotated[list[Path], typer.Argument(help="Scenes (AI4Arctic netCDF or GeoTIFF).", dir_okay=False, metavar="SCENE")],
    output: OutPath,
    labels: Annotated[
        Optional[list[Path]],
        typer.Option("--labels", metavar="LABELS", help="Labels raster per scene, in order (from `icetools rasterize`); "
                     "omit for netCDF scenes that carry their chart."),
    ] = None,
    size: Annotated[int, typer.Option("--size", callback=multiple_of_16, help="Patch size in pixels, a multiple of 16 (also the size of "
                                      "the windows training draws).")] = 128,
    n: Annotated[int, typer.Option("--n", min=1, help="Most fixed patches over all splits; sampling also stops when "
                                   "the scenes are covered. Training draws fresh windows in the train blocks "
                                   "instead of reusing the train patches.")] = 500,
    seed: Seed = 0,
    min_unseen: Annotated[float, typer.Option("--min-unseen", min=0.0, max=1.0, help="Least share of a window not yet sampled.")] = 0.5,
    max_empty: Annotated[
        Optional[int], typer.Option("--max-empty", min=0, help="Most windows without foreground (default: 10% of --n).")
    ] = None,
    max_invalid: Annotated[
        float, typer.Option("--max-invalid", min=0.0, max=1.0, help="Most share of land/nodata in a window (also in the windows "
                            "training draws).")
    ] = 0.5,
    max_rejects: Annotated[int, typer.Option("--max-rejects", min=1, help="Stop after this many rejections in a row.")] = 1000,
    split_by: Annotated[
        SplitBy, typer.Option("--split-by", help="block: spatial blocks dealt to the splits (one scene is enough); "
                              "scene: whole scenes (needs 3); auto: by scene with 3 or more scenes, else by block.")
    ] = SplitBy.block,
    block_size: Annotated[
        Optional[int], typer.Option("--block-size", callback=multiple_of_16, help="Split block size in pixels, a multiple of 16 and at least --size (default: 2 x --size).")
    ] = None,
    fractions: Annotated[
        str, typer.Option("--fractions", help="Train,val,test shares.", callback=_parse_fractions)
    ] = "0.7,0.15,0.15",
    export: Annotated[
        Optional[Path], typer.Option("--export", help="Also write each patch as GeoTIFF chips into this folder.",
                                     file_okay=False)
    ] = None,
    plot: Annotated[
        Optional[Path], typer.Option("--plot", help="Also draw the coverage map (PNG).", dir_okay=False)
    ] = None,
    no_checks: NoChecks = False,
    overwrite: Overwrite = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Split scenes into train/val/test blocks and sample fixed, coverage-aware windows in them.

    The GeoPackage holds two layers: "patches" (the windows; validation and test use them) and "blocks"
    (where each split lies; training draws fresh windows inside the train blocks every epoch).
    """
    if labels and len(labels) != len(scenes):
        # A usage error: `guarded` lets Click's own errors through, so this exits 2.
        raise typer.BadParameter(
            f"got {len(labels)} for {len(scenes)} scenes: give one --labels per scene, in the scenes' order",
            param_hint="'--labels'",
        )
    if block_size is not None and block_size < size:
        raise usage_error(f"--block-size {block_size} is smaller than --size {size}: a block holds whole patches")
    resolve_output(output, None, {"GPKG": (".gpkg",)})  # two layers (patches, blocks): a GeoPackage only
    if plot is not None and plot.suffix.lower() != ".png":
        raise typer.BadParameter(f"{plot}: the coverage map is a PNG: name it .png", param_hint="'--plot'")
    _run(
        scenes, output, labels=labels, size=size, n=n, seed=seed, min_unseen=min_unseen, max_empty=max_empty,
        max_invalid=max_invalid, max_rejects=max_rejects, split_by=split_by.value, block_size=block_size,
        fractions=fractions, export=export, plot=plot, overwrite=overwrite, checks=not no_checks,
    )


def _run(
    scenes: list[Path], output: Path, *, labels: list[Path] | None, size: int, n: int, seed: int,
    min_unseen: float, max_empty: int | None, max_invalid: float, max_rejects: int, split_by: str,
    block_size: int | None, fractions: tuple[float, float, float], export: Path | None, plot: Path | None,
    overwrite: bool, checks: bool = True,
) -> None:
    import warnings

    from icetools.cli.progress import EventBars
    from icetools.errors import OutputExistsError
    from icetools.io.atomic import check_output, removed_on_failure
    from icetools.patches_io import coverage_maps, export_chips, write_patches
    from icetools.plots import plot_coverage
    from icetools.sampling import sample_patches_and_blocks

    check_output(output, overwrite=overwrite)  # fail before the long pass, not after it
    if plot:
        check_output(plot, overwrite=overwrite)
    if export and export.is_dir() and any(export.iterdir()) and not overwrite:
        raise OutputExistsError(f"{export} already holds files: pass --overwrite or choose an empty --export folder")
    bars = EventBars({"scan": "reading scenes", "sample": "sampling"})
    caught: list[warnings.WarningMessage] = []
    try:
        with bars, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            sampled = sample_patches_and_blocks(
                scenes, labels, size=size, n=n, seed=seed, min_unseen=min_unseen, max_empty=max_empty,
                max_invalid=max_invalid, max_rejects=max_rejects, split_by=split_by, block_size=block_size,
                fractions=fractions, checks=checks, progress=bars,
            )
    finally:  # also before an error: a warning may name its cause (a chart its table does not cover)
        for warning in caught:
            if issubclass(warning.category, UserWarning):
                warn(str(warning.message))
    frame = sampled.patches
    with removed_on_failure():  # the GeoPackage, the chips and the plot appear together or not at all
        write_patches(frame, output, blocks=sampled.blocks, overwrite=overwrite)
        if export:
            export_chips(frame, export, overwrite=overwrite)
        if plot:  # sampling never returns zero patches: it fails and says why
            plot_coverage(frame, coverage_maps(frame), plot, overwrite=overwrite)
    _summary(frame, sampled.blocks, output)


def _summary(frame, blocks, output: Path) -> None:
    """Patches per split, foreground share, empty windows and why sampling stopped, on stderr."""
    from rich.table import Table

    from icetools.patches_io import SPLITS

    stats = frame.attrs.get("stats", {})
    params = frame.attrs.get("sampling", {})
    shares = dict(zip(SPLITS, params.get("fractions", (1.0, 1.0, 1.0))))
    missing = [s for s in SPLITS if shares[s] > 0 and not (frame["split"] == s).any()]
    if len(frame) and missing:
        warn(f"no {' or '.join(missing)} patches: give more scenes, a smaller --block-size or a larger --n")
    if STATE["verbosity"] < 0:
        return
    table = Table(title=f"{output.name}: {len(frame)} patches ({params.get('split_by_used', '?')} split)")
    for column in ("split", "blocks", "patches", "with foreground", "mean foreground", "empty"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split in SPLITS:
        part = frame[frame["split"] == split]
        with_fg = int((part["foreground"] > 0).sum())
        mean_fg = f"{part['foreground'].mean():.1%}" if len(part) else "-"
        n_blocks = int((blocks["split"] == split).sum())
        table.add_row(split, str(n_blocks), str(len(part)), str(with_fg), mean_fg, str(len(part) - with_fg))
    console.print(table)
    rejected = ", ".join(f"{reason} {count}" for reason, count in stats.get("rejected", {}).items())
    console.print(
        f"stop: {stats.get('stop_reason', '?')}; {stats.get('candidates', 0)} candidates; rejected: {rejected}",
        soft_wrap=True,
    )
