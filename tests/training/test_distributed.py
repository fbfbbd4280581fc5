"""Training in several processes: each takes its own part of every step's windows, validation merges
to the one-process figures, and ``torchrun ... -m icetools train`` leaves a model like a one-process run's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from safetensors.torch import load_file
from test_data import write_sic_scene
from typer.testing import CliRunner

from icetools.cli.app import app
from icetools.data import SceneBatchSampler
from icetools.device import resolve_device
from icetools.errors import ConfigError
from icetools.modeldir import read_config
from icetools.patches_io import read_blocks, read_patches, write_patches
from icetools.sampling import sample_patches_and_blocks
from icetools.train_windows import RandomWindowSampler, RankShares, rank_share, train_regions
from icetools.training import train_model
from icetools.training.distributed import Launch, RankBatches, World, share_of
from icetools.training.run import _fresh
from icetools.training.samples import FixedSamplesSampler
from icetools.training.setup import build_parts
from icetools.training.validate import ValidationResult, validate

from .helpers import TINY_UNET, history, tiny

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def blocks_patches(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ddp")
    scene, labels, _ = write_sic_scene(folder, size=192)
    sampled = sample_patches_and_blocks([scene], [labels], size=32, block_size=64, n=60, seed=0)
    return write_patches(sampled.patches, folder / "patches.gpkg", blocks=sampled.blocks)


def _epoch(sampler, epoch: int) -> list[list]:
    sampler.set_epoch(epoch)
    return [list(batch) for batch in sampler]


# --- each process its own windows -----------------------------------------------------------------------


@pytest.mark.parametrize("samples", [64, 17])
def test_the_processes_windows_are_disjoint_and_make_the_epoch(blocks_patches: Path, samples: int) -> None:
    regions = train_regions(read_patches(blocks_patches), read_blocks(blocks_patches))
    ranks = [RandomWindowSampler(regions, 4, samples_per_epoch=samples, seed=3, rank=r, world_size=2) for r in (0, 1)]
    epochs = [_epoch(sampler, 5) for sampler in ranks]
    assert len(epochs[0]) == len(epochs[1]) == len(ranks[0])  # DistributedDataParallel: the same number of steps
    windows = [[item for batch in epoch for item in batch] for epoch in epochs]
    assert len(windows[0]) + len(windows[1]) == samples
    assert not {w[:3] for w in windows[0]} & {w[:3] for w in windows[1]}, "a window is stepped on by both processes"
    # Together they are the one-process epoch at twice the batch size, window for window.
    one = _epoch(RandomWindowSampler(regions, 8, samples_per_epoch=samples, seed=3), 5)
    assert [a + b for a, b in zip(*epochs)] == one
    assert _epoch(ranks[0], 6) != epochs[0]  # a new epoch draws new windows


def test_fixed_windows_are_shared_out_like_a_distributed_sampler() -> None:
    scene_of_item = np.repeat([0, 1, 2], [9, 14, 7])
    parts = []
    for rank in (0, 1):
        fixed = FixedSamplesSampler(SceneBatchSampler(scene_of_item, 8, by_scene=True, seed=1), 49, min_batch=2)
        parts.append(_epoch(RankShares(fixed, rank, 2), 2))
    assert len(parts[0]) == len(parts[1])
    for mine, theirs in zip(*parts):  # each step's batch, split between the processes
        assert mine and theirs and not {i for i, _ in mine} & {i for i, _ in theirs}
    assert sum(len(b) for rank in parts for b in rank) == 49  # the last item joined the batch before it
    one = FixedSamplesSampler(SceneBatchSampler(scene_of_item, 8, by_scene=True, seed=1), 49)
    assert sorted(i for rank in parts for b in rank for i in b) == sorted(i for b in _epoch(one, 2) for i in b)


def test_rank_share_splits_near_equally_and_fills_a_batch_too_small() -> None:
    batch = list(range(7))
    shares = [rank_share(batch, r, 3) for r in range(3)]
    assert shares == [[0, 1], [2, 3], [4, 5, 6]]
    assert [rank_share([9], r, 2) for r in (0, 1)] == [[9], [9]]  # every process must take the step


def test_too_few_samples_for_the_processes_is_refused(blocks_patches: Path) -> None:
    regions = train_regions(read_patches(blocks_patches), read_blocks(blocks_patches))
    with pytest.raises(ConfigError, match="samples_per_epoch must be >= 4"):
        RandomWindowSampler(regions, 2, samples_per_epoch=3, rank=0, world_size=4)


def test_launch_is_read_from_torchrun_environment() -> None:
    assert Launch.from_environment({}) == Launch(1, 0, 0)
    assert Launch.from_environment({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == Launch(4, 3, 1)
    with pytest.raises(ConfigError, match="RANK=4"):
        Launch.from_environment({"WORLD_SIZE": "4", "RANK": "4"})


# --- validation gathered across processes ----------------------------------------------------------------


@pytest.mark.parametrize("frame_name", ["sic_frame", "binary_frame"])
def test_validation_shares_merge_to_the_whole_pass(frame_name: str, request) -> None:
    frame = request.getfixturevalue(frame_name)
    options = tiny(batch_size=3, model="unet")
    start = _fresh(frame, options, None, None)
    parts = build_parts(frame, start.setup, options, normalization=start.normalization, device=resolve_device("cpu"))
    task, n_classes = start.setup.task, start.setup.n_classes

    def run(loader) -> ValidationResult:
        return validate(parts.model, loader, parts.loss_fn, task=task, n_classes=n_classes, device=torch.device("cpu"),
                        thresholds=(0.3, 0.5))

    whole = run(parts.val_loader)
    shares = [run(share_of(parts.val_loader, World(Launch(3, rank, rank)))) for rank in range(3)]
    assert sum(len(share_of(parts.val_loader, World(Launch(3, r, r)))) for r in range(3)) == len(parts.val_loader)
    merged = shares[0]
    for other in shares[1:]:
        merged.merge(other)
    assert merged.n == whole.n
    assert merged.loss == pytest.approx(whole.loss, rel=1e-9)
    for key, value in whole.metrics(0.5 if task == "binary" else None).items():
        assert merged.metrics(0.5 if task == "binary" else None)[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_class_counts_merge() -> None:
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(4):
        logits = torch.from_numpy(rng.normal(size=(2, 3, 8, 8)).astype("float32"))
        batch = {"target": torch.from_numpy(rng.integers(0, 3, (2, 8, 8))), "valid": torch.ones(2, 8, 8, dtype=torch.bool)}
        batches.append((logits, batch))
    whole, first, second = (ValidationResult("multiclass", 3) for _ in range(3))
    for index, (logits, batch) in enumerate(batches):
        whole.update(logits, batch, 1.0)
        (first if index % 2 else second).update(logits, batch, 1.0)
    first.merge(second)
    assert first.metrics() == whole.metrics()


def test_rank_batches_deal_out_whole_batches() -> None:
    batches = SceneBatchSampler(np.zeros(10, "int64"), 3, shuffle=False)  # 4 batches: 3 + 3 + 2 + 2
    dealt = [list(RankBatches(batches, rank, 3)) for rank in range(3)]
    assert [len(RankBatches(batches, rank, 3)) for rank in range(3)] == [len(d) for d in dealt] == [2, 1, 1]
    assert sorted(i for d in dealt for b in d for i in b) == list(range(10))


# --- torchrun ----------------------------------------------------------------------------------------------


def _torchrun(*args: str, env: dict[str, str] | None = None, entry: list[str] | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               *(entry or ["-m", "icetools"]), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=240, env={**os.environ, **(env or {})})


TRAIN = ["--epochs", "2", "--samples-per-epoch", "16", "--batch-size", "4", "--workers", "0",
         "--model-arg", "widths=[4,8,8,8]"]


def test_torchrun_trains_a_model_like_one_process(blocks_patches: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    result = _torchrun("train", "--patches", str(blocks_patches), "-o", str(run), *TRAIN)
    assert result.returncode == 0, result.stderr
    config = read_config(run)
    assert config["training"]["world_size"] == 2
    assert [int(float(r["samples"])) for r in history(run)] == [16, 32]  # the epoch's samples, in all
    assert [r["steps"] for r in history(run)] == ["2", "2"]  # 16 samples, 4 per process and step
    assert result.stderr.count("epoch 2/2") == 1  # rank 0 alone reports

    single = tmp_path / "single"
    train_model(blocks_patches, single, tiny(epochs=1, samples_per_epoch=8, model_args=TINY_UNET))
    assert read_config(single)["training"]["world_size"] == 1
    ddp_weights, one_weights = load_file(run / "model.safetensors"), load_file(single / "model.safetensors")
    assert sorted(ddp_weights) == sorted(one_weights)  # no "module." prefix
    assert all(ddp_weights[k].shape == one_weights[k].shape for k in one_weights)

    scene = read_patches(blocks_patches)["scene"].iloc[0]
    predicted = CliRunner().invoke(app, ["predict", str(scene), "-m", str(run), "-o", str(tmp_path / "sic.tif")])
    assert predicted.exit_code == 0, predicted.stderr
    with rasterio.open(tmp_path / "sic.tif") as out:
        sic = out.read(1)
    assert sic.shape == (192, 192) and np.nanmin(sic) >= 0 and np.nanmax(sic) <= 1 and np.isfinite(sic).mean() > 0.9


def test_an_error_in_one_process_ends_all_with_one_line(blocks_patches: Path, tmp_path: Path) -> None:
    result = _torchrun("train", "--patches", str(blocks_patches), "-o", str(tmp_path / "run"), *TRAIN,
                       env={"ICETOOLS_TEST_FAIL_RANK": "1"}, entry=[str(HERE / "ddp_entry.py")])
    assert result.returncode != 0
    ours = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(ours) == 1 and "cannot be read (test)" in ours[0], result.stderr
    assert "Traceback" not in result.stderr.split("torch/distributed/elastic")[0]  # none of ours, only torchrun's
