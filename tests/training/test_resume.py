"""Resume rules: the run's own options are the defaults, a finished run says so, other patches are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from icetools.cli.app import app
from icetools.errors import ConfigError
from icetools.patches_io import write_patches
from icetools.progress import Event
from icetools.training import TrainOptions, train_model

from .helpers import history, tiny

runner = CliRunner()


def _interrupt_in_epoch_two(event: Event) -> None:
    if event.stage == "step" and event.info["epoch"] == 2:
        raise KeyboardInterrupt


def test_a_bare_resume_keeps_the_runs_own_options(sic_frame, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = train_model(sic_frame, run_dir, tiny(epochs=3, patience=7, save_at=0.5), progress=_interrupt_in_epoch_two)
    assert first["stopped_because"] == "interrupted"
    bare = TrainOptions.from_mapping({"resume": True})  # workers, epochs, patience, save_at all left unsaid
    summary = train_model(sic_frame, run_dir, bare)
    assert [int(row["epoch"]) for row in history(run_dir)] == [1, 2, 3]  # not on to 50 epochs
    assert summary["stopped_because"] == "epochs"
    import json

    options = json.loads((run_dir / "last_state.json").read_text())["options"]
    assert (options["epochs"], options["patience"], options["save_at"], options["workers"]) == (3, 7, 0.5, 0)


def test_a_finished_run_says_so(patches_file, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    flags = ["train", "--patches", str(patches_file), "-o", str(run_dir), "--epochs", "1", "--workers", "0",
             "--samples-per-epoch", "8", "--model-arg", "widths=[2,4,4,4]"]
    assert runner.invoke(app, flags).exit_code == 0
    again = runner.invoke(app, ["train", "--patches", str(patches_file), "-o", str(run_dir), "--resume"])
    assert again.exit_code == 0, again.stderr
    assert "the run already finished" in again.stderr and "after 1 epochs" in again.stderr
    assert [int(row["epoch"]) for row in history(run_dir)] == [1]


def test_resume_refuses_other_patches_or_another_task(sic_frame, binary_frame, patches_file, tmp_path) -> None:
    run_dir = tmp_path / "run"
    train_model(patches_file, run_dir, tiny(epochs=1))
    other = write_patches(sic_frame.iloc[: len(sic_frame) - 2], tmp_path / "other.gpkg")
    with pytest.raises(ConfigError, match="not the patches the run .* started on"):
        train_model(other, run_dir, tiny(epochs=2, resume=True))
    with pytest.raises(ConfigError, match="hold binary patches, but the run .* learns sic"):
        train_model(binary_frame, run_dir, tiny(epochs=2, resume=True))
    result = runner.invoke(app, ["train", "--patches", str(other), "-o", str(run_dir), "--resume", "--epochs", "2"])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and "not the patches" in lines[0]


def test_a_failed_start_leaves_no_folder(sic_frame, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(Exception):
        train_model(sic_frame, run_dir, tiny(inputs=["no_such_band"]))
    assert not run_dir.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(Exception):
        train_model(sic_frame, kept, tiny(inputs=["no_such_band"], overwrite=True))
    assert (kept / "notes.txt").read_text() == "mine"


def _fail_in_epoch(epoch: int):
    def progress(event: Event) -> None:
        if event.stage == "step" and event.info["epoch"] == epoch:
            raise RuntimeError("the disk went away")

    return progress


def test_a_failure_in_the_first_epoch_leaves_no_folder_and_a_later_one_keeps_the_run(sic_frame, tmp_path: Path) -> None:
    first = tmp_path / "first"
    with pytest.raises(RuntimeError, match="disk went away"):
        train_model(sic_frame, first, tiny(epochs=3), progress=_fail_in_epoch(1))
    assert not first.exists()  # nothing committed: no half run folder to trip a later --resume
    later = tmp_path / "later"
    with pytest.raises(RuntimeError, match="disk went away"):
        train_model(sic_frame, later, tiny(epochs=3), progress=_fail_in_epoch(2))
    assert (later / "last_state.json").is_file()  # epoch 1 is a run that --resume continues
    summary = train_model(sic_frame, later, TrainOptions.from_mapping({"resume": True}))
    assert [int(row["epoch"]) for row in history(later)] == [1, 2, 3] and summary["stopped_because"] == "epochs"
