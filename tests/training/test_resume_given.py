"""A resume takes every option given again, even one set to its default value."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from icetools.errors import ConfigError
from icetools.training.options import TrainOptions, build_options, resume_options

STORED = asdict(TrainOptions(epochs=6, patience=3, batch_size=4, thresholds=[0.3, 0.5]))


def _resume(**flags):
    return resume_options(STORED, {}, build_options(None, {**flags, "resume": True}))


def test_an_option_given_at_its_default_value_replaces_the_runs_own():
    resumed = _resume(patience=10, workers=1)  # both the TrainOptions defaults
    assert (resumed.patience, resumed.workers) == (10, 1)
    assert resumed.epochs == 6 and resumed.thresholds == [0.3, 0.5]  # not given: the run's own


def test_a_bare_resume_keeps_the_runs_own_options():
    resumed = _resume()
    assert (resumed.epochs, resumed.patience, resumed.batch_size) == (6, 3, 4)


def test_a_fixed_option_given_at_its_default_value_is_refused_when_the_run_differs():
    with pytest.raises(ConfigError, match=r"batch_size=8 differs from the run's 4"):
        _resume(batch_size=8)  # 8 is the default, but this run trained with 4
    assert _resume(batch_size=4).batch_size == 4  # the run's own value, given again: fine


def test_yaml_options_count_as_given(tmp_path):
    config = tmp_path / "resume.yaml"
    config.write_text("patience: 10\n")
    options = build_options(config, {"resume": True})
    assert options.given == {"patience", "resume"}
    assert resume_options(STORED, {}, options).patience == 10


def test_options_built_in_code_fall_back_to_comparing_with_the_defaults():
    resumed = resume_options(STORED, {}, TrainOptions(resume=True, patience=7))
    assert (resumed.patience, resumed.epochs) == (7, 6)


def test_the_command_line_resume_takes_a_default_value_given_again(patches_file, tmp_path):
    from typer.testing import CliRunner

    from icetools.cli.app import app
    from icetools.modeldir import read_config

    run = tmp_path / "run"
    common = ["train", "--patches", str(patches_file), "-o", str(run), "--batch-size", "4", "--workers", "0",
              "--samples-per-epoch", "8", "--model-arg", "widths=[4,8,8,8]", "-q"]
    first = CliRunner().invoke(app, [*common, "--epochs", "1", "--patience", "3"])
    assert first.exit_code == 0, first.output
    resumed = CliRunner().invoke(app, [*common, "--resume", "--epochs", "2", "--patience", "10"])
    assert resumed.exit_code == 0, resumed.output
    options = read_config(run)["training"]["options"]
    assert (options["epochs"], options["patience"]) == (2, 10)
