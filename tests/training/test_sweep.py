"""Tests for icetools.sweep and ``icetools sweep``: the grid, and runs ranked by validation loss."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from icetools.cli.app import app
from icetools.errors import ConfigError
from icetools.modeldir import read_config
from icetools.sweep import expand_grid, split_values

runner = CliRunner()


def test_grid_names_each_configuration_once() -> None:
    assert split_values("0.5,[4,8],abc") == [0.5, [4, 8], "abc"]
    configs = expand_grid(models=["unet", "unet++"], loss_args={"gamma": [1, 2]},
                          ds_weights=[[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]])
    # ds_weights vary only for the model with deep supervision heads: 2 (unet) + 2 x 2 (unet++)
    assert len(configs) == 6
    assert [c.ds_weights for c in configs if c.model == "unet"] == [None, None]
    assert configs[0].name == "01_unet_default-loss_gamma=1"
    assert len({c.name for c in configs}) == 6
    with pytest.raises(ConfigError, match="loss_args gamma: give at least one value"):
        expand_grid(loss_args={"gamma": []})


def test_sweep_ranks_runs_by_validation_loss(patches_file, tmp_path: Path) -> None:
    result = runner.invoke(app, [
        "sweep", "--patches", str(patches_file), "-o", str(tmp_path / "sweep"), "--model", "unet",
        "--model-arg", "widths=[2,2,2,2],[4,8,8,8]", "--epochs", "1", "--workers", "0", "--batch-size", "4",
        "--lr", "0.003", "--samples-per-epoch", "20",
    ])
    assert result.exit_code == 0, result.stderr
    with (tmp_path / "sweep" / "sweep.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["model.widths"] for row in rows} == {"2,2,2,2", "4,8,8,8"}
    losses = [float(row["best_val_loss"]) for row in rows]
    assert losses == sorted(losses)
    for row in rows:
        assert read_config(tmp_path / "sweep" / row["run"])["model"]["args"]["widths"] == [
            int(w) for w in row["model.widths"].split(",")
        ]
    assert "sweep ranked by validation loss" in result.stderr
    assert "run 1/2:" in result.stderr and "epoch 1/1" in result.stderr
