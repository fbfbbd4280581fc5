"""What the training tests share: tiny options and the history a run writes."""

from __future__ import annotations

import csv
from pathlib import Path

from icetools.training import TrainOptions

TINY_UNET = {"widths": [4, 8, 8, 8]}


TRAIN_PATCHES = 20  # the training patches of the conftest frames: 5 rows x 4 columns of 32 px windows


def tiny(**changes: object) -> TrainOptions:
    """Options for a run of seconds: a tiny U-Net, 2 epochs of one pass over the train patches (5
    steps), no worker processes."""
    values = {"epochs": 2, "batch_size": 4, "workers": 0, "lr": 3e-3, "model_args": TINY_UNET}
    if "steps_per_epoch" not in changes:
        values["samples_per_epoch"] = TRAIN_PATCHES
    values.update(changes)
    return TrainOptions.from_mapping(values)


def split_by_column(row: int, col: int) -> str:
    return "val" if col >= 64 else "train"


def history(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "history.csv").open() as handle:
        return list(csv.DictReader(handle))


def one_line_error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]
