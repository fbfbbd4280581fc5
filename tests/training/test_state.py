"""Tests for icetools.training.state: resumable state, history.csv, run directory rules."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from icetools.errors import ConfigError, InputFileError, OutputExistsError
from icetools.training import train_model
from icetools.training.state import RunState, read_history, save_at_epoch, save_at_name, write_history

from .helpers import history, tiny


def test_resume_continues_where_the_run_stopped(sic_frame, tmp_path: Path) -> None:
    # A constant rate: this run's budget grows from 1 to 3 epochs, which stretches a decaying schedule.
    run_dir = tmp_path / "resumed"
    train_model(sic_frame, run_dir, tiny(epochs=1, lr_schedule="constant"))
    header_size = struct.unpack("<Q", (run_dir / "last_state.safetensors").read_bytes()[:8])[0]
    assert (run_dir / "last_state.safetensors").read_bytes()[8 : 8 + header_size].startswith(b"{")
    state = json.loads((run_dir / "last_state.json").read_text())
    assert state["epoch"] == 1 and state["run"]["global_step"] == 5

    summary = train_model(sic_frame, run_dir, tiny(epochs=3, resume=True))
    assert [int(row["epoch"]) for row in history(run_dir)] == [1, 2, 3]
    assert summary["epochs_run"] == 3

    straight = tmp_path / "straight"
    train_model(sic_frame, straight, tiny(epochs=3, lr_schedule="constant"))
    resumed_state = load_file(str(run_dir / "last_state.safetensors"))
    straight_state = load_file(str(straight / "last_state.safetensors"))
    assert resumed_state.keys() == straight_state.keys()
    assert any(key.startswith("optimizer.") for key in resumed_state)
    for key in straight_state:  # resuming repeats the uninterrupted run (same batches, same augmentations)
        torch.testing.assert_close(resumed_state[key], straight_state[key], rtol=1e-5, atol=1e-6)

    with pytest.raises(ConfigError, match="differs from the run's 'unet'"):
        train_model(sic_frame, run_dir, tiny(epochs=5, resume=True, model="unet++"))
    same = train_model(sic_frame, run_dir, tiny(epochs=3, resume=True, model="unet"))  # the same as before: fine
    assert same["stopped_because"] == "epochs (already complete)" and same["epochs_run"] == 3
    with pytest.raises(InputFileError, match="nothing to resume"):
        train_model(sic_frame, tmp_path / "never", tiny(resume=True))


def test_an_existing_run_needs_overwrite_or_resume(sic_frame, trained_sic) -> None:
    run_dir, _ = trained_sic
    with pytest.raises(OutputExistsError, match="set overwrite to replace the run, or resume to continue it"):
        train_model(sic_frame, run_dir, tiny())


def test_history_round_trip_and_save_at_rules(tmp_path: Path) -> None:
    columns = ["epoch", "steps", "train_loss", "val_loss", "lr", "seconds"]
    rows = [{"epoch": e, "steps": 5, "train_loss": 1 / e, "val_loss": float("nan"), "lr": 1e-4, "seconds": 0.5}
            for e in (1, 2, 3)]
    write_history(tmp_path / "history.csv", rows, columns)
    again = read_history(tmp_path / "history.csv", up_to_epoch=2)
    assert [row["epoch"] for row in again] == [1, 2] and again[1]["train_loss"] == pytest.approx(0.5)
    assert (tmp_path / "history.csv").read_text().splitlines()[0] == ",".join(columns)
    assert (save_at_name(0.4), save_at_epoch(0.4, 10), save_at_epoch(0.01, 10)) == ("at_40pct", 4, 1)


def test_run_state_counts_epochs_without_improvement() -> None:
    run = RunState()
    assert run.record_epoch({"epoch": 1, "train_loss": 1.0, "val_loss": float("nan")}, metrics={}) is False
    assert run.record_epoch({"epoch": 2, "train_loss": 1.0, "val_loss": 0.5}, metrics={"r2": 0.1}) is True
    assert run.record_epoch({"epoch": 3, "train_loss": 0.9, "val_loss": 0.6}, metrics={"r2": 0.0}) is False
    assert (run.best_epoch, run.best_val_loss, run.best_metrics, run.bad_epochs) == (2, 0.5, {"r2": 0.1}, 1)
    assert RunState.from_stored(run.stored(), run.history).stored() == run.stored()
