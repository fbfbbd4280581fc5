"""Figures written beside the products: training curves (other stages add their own functions).

Figures are drawn on a bare ``matplotlib.figure.Figure`` with the Agg canvas, not through pyplot:
no global backend switch, no figure registry to leak, safe in a headless run. Files are written
under a temporary name and moved into place, so a viewer never opens half a PNG.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from icetools.io.atomic import atomic_path


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
