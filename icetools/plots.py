"""Figures written beside the products: training curves, the patch coverage map.

Figures are drawn on a bare ``matplotlib.figure.Figure`` with the Agg canvas, not through pyplot:
no global backend switch, no figure registry to leak, safe in a headless run. Files are written
under a temporary name and moved into place, so a viewer never opens half a PNG.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from icetools.errors import EmptyInputError
from icetools.io.atomic import atomic_path
from icetools.patches_io import CELL

if TYPE_CHECKING:
    import geopandas as gpd
    import numpy as np


def _finite(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def plot_training_curves(
    history: Sequence[Mapping[str, object]],
    path: str | Path,
    *,
    best_epoch: int | None = None,
    title: str | None = None,
) -> Path:
    """Training and validation loss per epoch (log scale when all are positive), best epoch marked.

    ``history`` rows need ``epoch``, ``train_loss`` and ``val_loss``; non-finite values are left out.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # Fixed margins instead of tight_layout: it renders the figure a second time (~half the cost).
    figure = Figure(figsize=(6.4, 4.0), dpi=100)
    figure.subplots_adjust(left=0.12, right=0.97, bottom=0.12, top=0.92)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    every_value: list[float] = []
    for key, label, style in (("train_loss", "train", "-o"), ("val_loss", "validation", "-s")):
        points = [(int(row["epoch"]), _finite(row.get(key))) for row in history]
        points = [(epoch, value) for epoch, value in points if value is not None]
        if points:
            epochs, values = zip(*points)
            axes.plot(epochs, values, style, markersize=3, label=label)
            every_value.extend(values)
    if best_epoch is not None:
        axes.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best (epoch {best_epoch})")
    if every_value and min(every_value) > 0 and max(every_value) / min(every_value) > 20:
        axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss")
    axes.grid(True, alpha=0.3)
    if title:
        axes.set_title(title)
    if every_value:
        axes.legend()
    path = Path(path)
    with atomic_path(path, overwrite=True) as tmp:
        figure.savefig(tmp, format="png")
    return path


SPLIT_COLOURS = {"train": "tab:blue", "val": "tab:orange", "test": "tab:red"}


def plot_coverage(
    frame: gpd.GeoDataFrame, coverage: Mapping[str, np.ndarray], png_path: str | Path, *, overwrite: bool = False
) -> Path:
    """Per scene, the coverage cells with the footprints outlined by split: where the model will learn.

    ``coverage`` is :func:`icetools.patches_io.coverage_maps` of the frame (scene path -> patches per cell).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    scenes = list(coverage)
    if not scenes:
        raise EmptyInputError("no patches were sampled, so there is no coverage to plot")
    cols = min(len(scenes), 3)
    rows_n = math.ceil(len(scenes) / cols)
    figure = Figure(figsize=(5 * cols, 5 * rows_n))
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows_n, cols, squeeze=False)
    for ax in axes.ravel()[len(scenes) :]:
        ax.set_axis_off()
    for ax, scene_path in zip(axes.ravel(), scenes):
        cover = coverage[scene_path]
        image = ax.imshow(cover, cmap="viridis", extent=(0, cover.shape[1] * CELL, cover.shape[0] * CELL, 0),
                          interpolation="nearest")
        figure.colorbar(image, ax=ax, shrink=0.7, label="patches per pixel")
        for _, record in frame[frame["scene"] == scene_path].iterrows():
            ax.add_patch(Rectangle((record["col_off"], record["row_off"]), record["size"], record["size"],
                                   fill=False, lw=0.8, edgecolor=SPLIT_COLOURS.get(record["split"], "white")))
        ax.set_title(Path(scene_path).name, fontsize=9)
        ax.set_xlabel("column")
        ax.set_ylabel("row")
    handles = [Rectangle((0, 0), 1, 1, fill=False, edgecolor=c, label=s) for s, c in SPLIT_COLOURS.items()]
    figure.legend(handles=handles, loc="lower center", ncol=3, frameon=False)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    with atomic_path(png_path, overwrite=overwrite) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    return Path(png_path)
