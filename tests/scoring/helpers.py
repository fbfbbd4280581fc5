"""What the scoring tests share: tiny rasters on a 40 m grid and the SIC pair scored by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from fixtures import PIXEL, affine_grid
from typer.testing import CliRunner

from icetools.cli.app import app
from icetools.grid import Grid
from icetools.io.raster import write_raster

PIXEL_M = PIXEL
NAN = np.nan


def write(
    path: Path, bands: dict[str, np.ndarray], *, nodata: float | None, tags: dict | None = None, grid: Grid | None = None
) -> Path:
    data = np.stack(list(bands.values()))
    return write_raster(path, data, grid or affine_grid(*data.shape[1:]), nodata=nodata, band_names=list(bands), tags=tags)


def run_cli(*args: object):
    return CliRunner().invoke(app, [str(arg) for arg in args])


TRUTH = np.array([[0.0, 0.2, 0.4, 0.5], [0.6, 0.8, 1.0, NAN]], dtype="float32")
OFFSET = np.array([[0.1, -0.1, 0.0, 0.0], [0.0, 0.2, -0.2, 0.0]], dtype="float32")
# pred[0, 3] is NaN and truth[1, 3] is NaN: 6 pixels count.
# SS_res = .01 + .01 + 0 + .04 + .04 = 0.10; truth mean 0.5; SS_tot = .25+.09+.01+.01+.09+.25 = 0.70
HAND_R2 = 1 - 0.10 / 0.70
HAND_RMSE = math.sqrt(0.10 / 6)


def sic_pair_files(tmp_path: Path) -> tuple[Path, Path]:
    """The prediction TRUTH + OFFSET (NaN at [0, 3]) and the float truth TRUTH (NaN at [1, 3])."""
    pred = TRUTH + OFFSET
    pred[0, 3] = NAN
    truth = write(tmp_path / "truth.tif", {"SIC": TRUTH}, nodata=NAN)
    return write(tmp_path / "pred.tif", {"SIC": pred.astype("float32")}, nodata=NAN), truth


# TRUTH in tenths (the AI4Arctic ready-to-train SIC classes) and percent, 255 = nodata where TRUTH is NaN.
TENTHS = np.array([[0, 2, 4, 5], [6, 8, 10, 255]], dtype="uint8")
PERCENT = np.array([[0, 20, 40, 50], [60, 80, 100, 255]], dtype="uint8")
