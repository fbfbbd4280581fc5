"""Training on a full disk: an epoch's files (weights, config, state, history, curves) go as one unit.

The disk filling while an epoch is saved leaves the previous epoch's files whole and consistent,
and never weights without their resumable state; the message is one line naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

import icetools.training.state as state
from icetools.cli.app import app

from .helpers import history, one_line_error

runner = CliRunner()


def _train(patches_file: Path, run: Path, *extra: str):
    return runner.invoke(app, ["train", "--patches", str(patches_file), "-o", str(run), "--epochs", "2",
                               "--batch-size", "4", "--workers", "0", "--samples-per-epoch", "20",
                               "--model-arg", "widths=[4,8,8,8]", "-q", *extra])


def _full_at_state_write(monkeypatch, number: int) -> None:
    """The disk fills while the ``number``-th resumable state is written, reported as safetensors does."""
    from safetensors import SafetensorError

    real, calls = state.save_file, []

    def save_file(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == number:
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(state, "save_file", save_file)


def test_a_disk_full_at_the_first_epoch_leaves_no_model_without_state(patches_file, tmp_path, monkeypatch):
    _full_at_state_write(monkeypatch, 1)
    run = tmp_path / "run"
    result = _train(patches_file, run)
    assert result.exit_code == 1
    assert one_line_error(result) == f"error: {run / state.STATE_WEIGHTS}: no space left on the device"
    assert not run.exists() or list(run.iterdir()) == []  # no weights, config, history or temporary


def test_a_disk_full_later_keeps_the_last_whole_epoch(patches_file, tmp_path, monkeypatch):
    _full_at_state_write(monkeypatch, 2)
    run = tmp_path / "run"
    result = _train(patches_file, run)
    assert result.exit_code == 1 and "no space left" in result.stderr
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["model.safetensors", "config.json", "history.csv", "curves.png", state.STATE_JSON, state.STATE_WEIGHTS])
    info, _ = state.read_state(run)  # weights and settings of one epoch
    assert info["epoch"] == 1 and [row["epoch"] for row in history(run)] == ["1"]
    config = json.loads((run / "config.json").read_text())
    assert config["training"]["best_epoch"] == 1
