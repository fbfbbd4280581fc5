"""Tests for icetools.training.loop: time limits, Ctrl-C, save-at, deep supervision and context models,
the learning rate schedule and the progress Events."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from icetools.errors import ConfigError
from icetools.modeldir import load_model_dir, read_config
from icetools.progress import Event
from icetools.training import train_model

from .helpers import history, tiny


def test_time_limit_stops_after_the_current_step(sic_frame, tmp_path: Path) -> None:
    summary = train_model(sic_frame, tmp_path / "short", tiny(epochs=50, time_limit=1e-5))
    assert summary["stopped_because"] == "time limit" and summary["epochs_run"] == 1
    assert [row["steps"] for row in history(tmp_path / "short")] == ["1"]
    assert (tmp_path / "short" / "model.safetensors").is_file()


def test_ctrl_c_keeps_the_best_model(sic_frame, tmp_path: Path) -> None:
    events: list[Event] = []

    def interrupt(event: Event) -> None:
        events.append(event)
        if event.stage == "step" and event.info["epoch"] == 2 and event.done >= 1:
            raise KeyboardInterrupt

    summary = train_model(sic_frame, tmp_path / "stopped", tiny(epochs=5), progress=interrupt)
    assert summary["stopped_because"] == "interrupted" and summary["best_epoch"] == 1
    model, config = load_model_dir(tmp_path / "stopped")
    assert config["training"]["stopped_because"] == "interrupted"

    # The Events a renderer sees: the epochs bar, each epoch's steps, the end of epoch 1 with its row.
    assert events[0] == Event("epoch", 0, 5)
    assert [(e.done, e.total) for e in events if e.stage == "step" and e.info["epoch"] == 1] == [
        (i, 5) for i in range(6)
    ]
    ends = [e for e in events if e.stage == "epoch" and e.done == 1]
    assert len(ends) == 1 and ends[0].info["improved"] is True
    assert {"epoch", "steps", "train_loss", "val_loss", "val_r2", "lr", "seconds"} <= set(ends[0].info)


def test_save_at_keeps_an_early_model(sic_frame, tmp_path: Path) -> None:
    train_model(sic_frame, tmp_path / "run", tiny(epochs=4, save_at=0.5, steps_per_epoch=1))
    early = read_config(tmp_path / "run" / "at_50pct")
    assert early["training"]["epochs_run"] == 2
    assert early["training"]["stopped_because"] == "saved at epoch 2 of 4"
    assert read_config(tmp_path / "run")["training"]["epochs_run"] == 4
    assert [row["steps"] for row in history(tmp_path / "run")] == ["1"] * 4


def test_deep_supervision_and_context_models_train(sic_frame, tmp_path: Path) -> None:
    unetpp = tiny(epochs=1, steps_per_epoch=2, model="unet++", model_args={"widths": [2, 2, 4, 4, 4]},
                  loss_args={"ds_weights": [0.25, 0.25, 0.25, 0.25]})
    summary = train_model(sic_frame, tmp_path / "pp", unetpp)
    assert np.isfinite(summary["best_val_loss"])
    assert read_config(tmp_path / "pp")["training"]["ds_weights"] == [0.25, 0.25, 0.25, 0.25]
    with pytest.raises(ConfigError, match="one weight per head"):
        train_model(sic_frame, tmp_path / "pp3", unetpp.updated(loss_args={"ds_weights": [0.5, 0.5]}))

    fctl = tiny(epochs=1, steps_per_epoch=2, model="fctl", model_args={"width": 1 / 32, "context_scales": [1.0, 2.0]})
    train_model(sic_frame, tmp_path / "fctl", fctl)
    config = read_config(tmp_path / "fctl")
    assert config["context_scales"] == [1.0, 2.0] and config["training"]["lr_schedule"] == "cosine"

