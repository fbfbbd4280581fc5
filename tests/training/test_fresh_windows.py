"""Training on a patches file with a blocks layer draws fresh windows in its train blocks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from test_data import write_sic_scene

from icetools.device import resolve_device
from icetools.patches_io import read_blocks, read_patches, write_patches
from icetools.sampling import sample_patches_and_blocks
from icetools.train_windows import RandomWindowSampler
from icetools.training import train_model
from icetools.training.run import _fresh
from icetools.training.setup import build_parts

from .helpers import TINY_UNET, history, tiny


def _patches_with_blocks(folder: Path) -> Path:
    scene, labels, _ = write_sic_scene(folder, size=192)
    sampled = sample_patches_and_blocks([scene], [labels], size=32, block_size=64, n=60, seed=0)
    return write_patches(sampled.patches, folder / "patches.gpkg", blocks=sampled.blocks)


def test_a_blocks_layer_gives_fresh_windows_of_the_epoch_size(tmp_path: Path) -> None:
    path = _patches_with_blocks(tmp_path)
    frame, blocks = read_patches(path), read_blocks(path)
    options = tiny(samples_per_epoch=24)
    start = _fresh(frame, options, None, None)
    parts = build_parts(frame, start.setup, start.options, normalization=start.normalization,
                        device=resolve_device("cpu"), blocks=blocks)
    sampler = parts.train_loader.batch_sampler
    assert isinstance(sampler, RandomWindowSampler)
    sampler.set_epoch(0)
    items = [item for batch in sampler for item in batch]
    assert len(items) == 24
    fixed = {(int(r.row_off), int(r.col_off)) for r in frame.itertuples() if r.split == "train"}
    drawn = {(int(item[1]), int(item[2])) for item in items}
    assert drawn - fixed, "fresh windows are not only the fixed train windows"


def test_train_model_counts_the_samples_of_fresh_windows(tmp_path: Path) -> None:
    path = _patches_with_blocks(tmp_path)
    run = tmp_path / "run"
    train_model(path, run, tiny(epochs=2, samples_per_epoch=16, model_args=TINY_UNET))
    rows = history(run)
    assert len(rows) == 2
    assert [int(float(r["samples"])) for r in rows] == [16, 32]
    assert np.isfinite(float(rows[-1]["val_loss"]))
