"""Tests for icetools.training.options: coercion, checks, the YAML/flag precedence and resumed options."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from icetools.errors import ConfigError, InputFileError
from icetools.training.options import (
    TrainOptions,
    build_options,
    parse_key_values,
    parse_weights,
    read_yaml_options,
    resume_options,
)


def test_options_reject_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ConfigError, match="unknown option 'epoch'"):
        TrainOptions.from_mapping({"epoch": 3})
    with pytest.raises(ConfigError, match="must be an integer"):
        TrainOptions.from_mapping({"epochs": "many"})
    with pytest.raises(ConfigError, match="between 0 and 1"):
        TrainOptions.from_mapping({"save_at": 1.5})
    options = TrainOptions.from_mapping({"batch-size": 2, "inputs": "HH,HV", "thresholds": [0.4, 0.6]})
    assert (options.batch_size, options.inputs, options.thresholds) == (2, ["HH", "HV"], [0.4, 0.6])
    merged = options.updated(model_args={"widths": [4, 8, 8, 8]}).updated(model_args={"x": 1})
    assert merged.model_args == {"widths": [4, 8, 8, 8], "x": 1}


def test_errors_name_options_not_flags() -> None:
    """The library speaks of parameters; the command line spells the same words with dashes."""
    for values, expected in (
        ({"patience": 0}, "patience must be >= 1, got 0"),
        ({"samples_per_epoch": 0}, "samples_per_epoch must be >= 1, got 0"),
        ({"smoothing": 1.0}, "smoothing must be >= 0 and < 1"),
        ({"lr_schedule": "step"}, "lr_schedule must be one of cosine, poly, constant"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"device": "tpu"}, "device must be auto, cpu, cuda or cuda:N"),
        ({"resume": True, "overwrite": True}, "resume and overwrite contradict each other"),
        ({"model": "unet", "from_model": "m"}, "from_model trains a refiner"),
        ({"model": "refiner"}, "model 'refiner' needs from_model"),
    ):
        with pytest.raises(ConfigError) as caught:
            TrainOptions.from_mapping(values)
        assert expected in str(caught.value) and "--" not in str(caught.value)


def test_yaml_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("epochs: 3\nbatch-size: 2\nmodel_args: {widths: [4, 8, 8, 8]}\n")
    options = build_options(config, {"epochs": 1, "lr": None, "resume": False, "model_args": {"x": 1}},
                            defaults={"epochs": 7, "seed": 4})
    assert (options.epochs, options.batch_size, options.seed, options.resume) == (1, 2, 4, False)
    assert options.model_args == {"widths": [4, 8, 8, 8], "x": 1}
    assert read_yaml_options(_write(tmp_path / "empty.yaml", "")) == {}
    with pytest.raises(ConfigError, match="mapping"):
        read_yaml_options(_write(tmp_path / "list.yaml", "- 1\n"))
    with pytest.raises(InputFileError, match="does not exist"):
        read_yaml_options(tmp_path / "none.yaml")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_key_values_and_weights() -> None:
    assert parse_key_values(["gamma=2", "widths=[4,8]", "name=abc"], what="--loss-arg") == {
        "gamma": 2, "widths": [4, 8], "name": "abc"
    }
    with pytest.raises(ConfigError, match="--loss-arg 'gamma': write KEY=VALUE"):
        parse_key_values(["gamma"], what="--loss-arg")
    assert parse_weights("0.1,0.2,0.3,0.4") == [0.1, 0.2, 0.3, 0.4]
    with pytest.raises(ConfigError, match="positive sum"):
        parse_weights([0, 0])


def test_resume_keeps_the_stored_options_but_the_few_that_may_change() -> None:
    stored = TrainOptions(epochs=2, lr=0.01)
    setup = {"model": "unet", "loss": "regional", "model_args": {"in_channels": 2}, "loss_args": {}}
    resumed = resume_options(asdict(stored), setup, TrainOptions(epochs=5, resume=True, model="unet"))
    assert (resumed.epochs, resumed.lr, resumed.resume) == (5, 0.01, True)
    with pytest.raises(ConfigError, match="differs from the run's 'unet'"):
        resume_options(asdict(stored), setup, TrainOptions(resume=True, model="unet++"))
