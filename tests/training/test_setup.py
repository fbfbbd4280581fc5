"""Tests for icetools.training.setup: defaults per task and model, mistakes found before training."""

from __future__ import annotations

import pytest

from icetools import tasks
from icetools.errors import ConfigError
from icetools.losses import REGIONAL_KL, REGIONAL_SHARPNESS
from icetools.tasks import TrainingDefaults, training_defaults
from icetools.training import TrainOptions, resolve_setup


def test_defaults_follow_task_and_model(sic_frame, binary_frame) -> None:
    sic = resolve_setup(sic_frame, TrainOptions())
    assert (sic.model, sic.loss, sic.pool, sic.lr, sic.lr_schedule) == ("unet", "regional", "scene", 1e-3, "cosine")
    assert sic.samples_per_epoch == 512
    assert sic.loss_args == {"sharpness": REGIONAL_SHARPNESS, "kl": REGIONAL_KL}  # config.json: what trained it
    assert resolve_setup(sic_frame, TrainOptions(loss_args={"sharpness": 0})).loss_args["sharpness"] == 0
    binary = resolve_setup(binary_frame, TrainOptions())
    assert (binary.model, binary.loss, binary.pool) == ("unet-aspp", "bce-ftl", "patch")
    fctl = resolve_setup(binary_frame, TrainOptions(model="fctl"))
    assert (fctl.loss, fctl.loss_args, fctl.lr, fctl.lr_schedule) == ("focal", {"gamma": 3.0}, 1e-3, "cosine")
    mine = resolve_setup(binary_frame, TrainOptions(model="fctl", lr=1e-4, lr_schedule="constant"))
    assert (mine.lr, mine.lr_schedule) == (1e-4, "constant")
    assert resolve_setup(sic_frame, TrainOptions(steps_per_epoch=3, batch_size=4)).samples_per_epoch == 12
    unetpp = resolve_setup(sic_frame, TrainOptions(model="unet++"))
    assert unetpp.ds_weights == [0.1, 0.2, 0.3, 0.4]
    assert sic.model_args == {"in_channels": 2, "out_channels": 1}

    with pytest.raises(ConfigError, match="valid losses for sic: regional, pixel-mse, pixel-ce"):
        resolve_setup(sic_frame, TrainOptions(loss="focal"))
    with pytest.raises(ConfigError, match="ds_weights"):
        resolve_setup(sic_frame, TrainOptions(loss_args={"ds_weights": "0.5,0.5"}))
    with pytest.raises(ConfigError, match="no option"):
        resolve_setup(binary_frame, TrainOptions(loss_args={"alpah": 0.5}))
    with pytest.raises(ConfigError, match="model_args in_channels=3 contradicts the data"):
        resolve_setup(sic_frame, TrainOptions(model_args={"in_channels": 3}))


def test_training_defaults_come_from_the_task_table(sic_frame, monkeypatch) -> None:
    """One place: a model's entry in icetools.tasks overrides its task's, and the setup follows it."""
    assert training_defaults("sic") == tasks.TASK_SPECS["sic"].training
    custom = TrainingDefaults(lr=2e-3, lr_schedule="poly", samples_per_epoch=64, model_size="paper")
    monkeypatch.setitem(tasks.MODEL_TRAINING, "unet", custom)
    setup = resolve_setup(sic_frame, TrainOptions())
    assert (setup.lr, setup.lr_schedule, setup.samples_per_epoch) == (2e-3, "poly", 64)
    assert setup.model_args["widths"] == [64, 128, 256, 512]  # the paper's U-Net
    assert resolve_setup(sic_frame, TrainOptions(model="unet-aspp")).lr == 1e-3  # other models keep the task's


def test_model_sizes(sic_frame) -> None:
    paper = resolve_setup(sic_frame, TrainOptions(model_size="paper", model_args={"widths": [8, 8, 8, 8]}))
    assert paper.model_args["widths"] == [8, 8, 8, 8]  # model_args given override the size
    assert resolve_setup(sic_frame, TrainOptions(model="fctl", model_size="paper")).model_args["width"] == 1.0
    with pytest.raises(ConfigError, match="model 'refiner' has no 'paper' size; its sizes: laptop"):
        from icetools.models import size_args

        size_args("refiner", "paper")
    with pytest.raises(ConfigError, match="model_size must be one of laptop, paper"):
        TrainOptions(model_size="huge").validate()
