"""Tests for the ``icetools train`` command: flags over the YAML config, one-line errors, exit 130."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

import icetools.training
from icetools.cli.app import app
from icetools.modeldir import read_config

from .helpers import one_line_error

runner = CliRunner()


def test_cli_flags_override_the_yaml_config(patches_file, tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"epochs": 3, "batch-size": 2, "lr": 0.002, "workers": 0,
                                      "samples-per-epoch": 100, "model_args": {"widths": [4, 8, 8, 8]}}))
    result = runner.invoke(app, ["train", "--patches", str(patches_file), "-o", str(tmp_path / "run"),
                                 "--config", str(config), "--epochs", "1", "--model-arg", "widths=[2,4,4,4]",
                                 "--samples-per-epoch", "10"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    training = read_config(tmp_path / "run")["training"]
    options = training["options"]
    assert (options["epochs"], options["batch_size"], options["lr"]) == (1, 2, 0.002)
    assert options["samples_per_epoch"] == training["samples_per_epoch"] == 10
    assert options["model_args"] == {"widths": [2, 4, 4, 4]}
    assert "training summary" in result.stderr and "best epoch" in result.stderr


def test_cli_errors_are_one_line(patches_file, tmp_path: Path) -> None:
    bad_loss = runner.invoke(app, ["train", "--patches", str(patches_file), "-o", str(tmp_path / "a"), "--loss", "focal"])
    assert bad_loss.exit_code == 1
    assert "valid losses for sic: regional, pixel-mse, pixel-ce" in one_line_error(bad_loss)

    config = tmp_path / "bad.yaml"
    config.write_text("epochs: 2\nlearning_rate: 0.1\n")
    bad_key = runner.invoke(app, ["train", "--patches", str(patches_file), "-o", str(tmp_path / "b"), "--config", str(config)])
    assert bad_key.exit_code == 1 and "unknown option 'learning_rate'" in one_line_error(bad_key)

    # Errors name the option as --help does, less the dashes: --from is also --from-model.
    refiner = runner.invoke(app, ["train", "--patches", str(patches_file), "-o", str(tmp_path / "c"), "--model", "unet",
                                  "--from-model", str(tmp_path)])
    assert refiner.exit_code == 1 and "from_model trains a refiner" in one_line_error(refiner)
    bad_patience = runner.invoke(app, ["train", "--patches", str(patches_file), "-o", str(tmp_path / "d"),
                                       "--patience", "0"])
    # A bad flag value is a usage error (exit 2) naming the flag; the YAML's values stay data errors (1).
    assert bad_patience.exit_code == 2 and "Invalid value for '--patience'" in bad_patience.stderr


def test_cli_exits_130_when_interrupted(patches_file, tmp_path: Path, monkeypatch) -> None:
    summary = {"run_dir": "r", "model": "unet", "loss": "regional", "epochs_run": 1, "best_epoch": 1,
               "stopped_because": "interrupted", "warnings": [], "val_metrics": {}, "seconds": 1.0}
    monkeypatch.setattr(icetools.training, "train_model", lambda *args, **kwargs: summary)
    result = runner.invoke(app, ["train", "--patches", str(patches_file), "-o", str(tmp_path / "r")])
    assert result.exit_code == 130 and "interrupted" in result.stderr
