"""Tests for epochs in samples, the budget, the learning rate schedule and early stopping
(icetools.training.schedule, .samples and their use by the loop)."""

from __future__ import annotations

import json
import math
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import icetools.training.loop as loop_module
import icetools.training.run as run_module
import icetools.training.setup as training_setup
from icetools.data import SceneBatchSampler
from icetools.errors import ConfigError
from icetools.modeldir import read_config
from icetools.progress import Event
from icetools.training import TrainOptions, train_model
from icetools.training.samples import FixedSamplesSampler
from icetools.training.schedule import COSINE_FLOOR, Budget, Clock, LearningRate, StoppingRule
from icetools.training.state import RunState

from .helpers import history, tiny


class FakeTime:
    """A clock that moves ``step`` seconds every time it is read."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_learning_rate_schedules() -> None:
    assert LearningRate(1e-3, "constant", 0.9)(0.5) == 1e-3
    poly = LearningRate(1e-3, "poly", 0.9)
    assert poly(0) == 1e-3 and poly(1) == 0.0 and poly(1.5) == 0.0
    assert poly(0.5) == pytest.approx(1e-3 * 0.5**0.9)
    cosine = LearningRate(1e-3, "cosine")
    assert cosine(0) == pytest.approx(1e-3) and cosine(1) == pytest.approx(1e-3 * COSINE_FLOOR)
    assert cosine(0.5) == pytest.approx(1e-3 * (COSINE_FLOOR + (1 - COSINE_FLOOR) / 2))
    assert all(cosine(a) > cosine(b) for a, b in zip(np.linspace(0, 0.9, 10), np.linspace(0.1, 1, 10)))


def test_budget_is_the_larger_of_the_epoch_and_time_fractions() -> None:
    clock = Clock(time_limit_minutes=1.0, now=FakeTime(0.0))  # frozen at 0 s
    assert Budget(None, 100, clock).fraction(10_000) == 0.0  # no epoch cap: time alone
    assert Budget(4, 100, clock).fraction(100) == 0.25
    timed = Clock(time_limit_minutes=1.0, now=FakeTime(30.0))  # started at 30 s, read at 60 s
    assert Budget(4, 100, timed).fraction(100) == pytest.approx(0.5)
    # A resumed session spreads what is left of the budget over its own time limit.
    resumed = Clock(time_limit_minutes=1.0, now=FakeTime(30.0))
    assert Budget(None, 100, resumed, start_fraction=0.6).fraction(0) == pytest.approx(0.6 + 0.4 * 0.5)
    assert Budget(4, 100, Clock()).fraction(1000) == 1.0
    with pytest.raises(ValueError, match="epoch cap, a time limit or both"):
        Budget(None, 100, Clock())
    assert TrainOptions().epoch_cap == 50 and TrainOptions(time_limit=5).epoch_cap is None
    assert TrainOptions(time_limit=5, epochs=3).epoch_cap == 3


def test_fixed_samples_sampler_cycles_the_windows() -> None:
    scene_of_item = [0] * 7 + [1] * 5
    sampler = FixedSamplesSampler(SceneBatchSampler(scene_of_item, 4, by_scene=True, seed=3), 30)
    sampler.set_epoch(2)
    batches = list(sampler)
    assert sum(len(b) for b in batches) == 30 and len(batches) == len(sampler)
    counts = Counter(item for batch in batches for item, _ in batch)
    assert set(counts) == set(range(12)) and max(counts.values()) - min(counts.values()) <= 1
    assert all(len({scene_of_item[item] for item, _ in batch}) == 1 for batch in batches)  # one scene per batch
    first_pass = SceneBatchSampler(scene_of_item, 4, by_scene=True, seed=3)
    first_pass.set_epoch(2)
    assert batches[: len(first_pass)] == list(first_pass)  # the first pass is the plain sampler's epoch
    sampler.set_epoch(2)
    assert list(sampler) == batches  # reproducible from the epoch
    with pytest.raises(ConfigError, match="samples_per_epoch must be >= 1"):
        FixedSamplesSampler(first_pass, 0)


def test_an_epoch_has_the_samples_it_says(sic_frame, tmp_path: Path, monkeypatch) -> None:
    """Count what the model sees in training mode: 13 samples an epoch, from 20 windows of batch 4."""
    seen: list[int] = []
    real_build = training_setup.build_model

    def counting_build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0].shape[0]) if m.training else None)
        return model

    monkeypatch.setattr(training_setup, "build_model", counting_build)
    train_model(sic_frame, tmp_path / "run", tiny(epochs=2, samples_per_epoch=13))
    assert sum(seen) == 26 and max(seen) <= 4
    rows = history(tmp_path / "run")
    assert [int(row["samples"]) for row in rows] == [13, 26]
    assert read_config(tmp_path / "run")["training"]["samples_per_epoch"] == 13

    seen.clear()  # more samples than windows: the windows are cycled
    train_model(sic_frame, tmp_path / "more", tiny(epochs=1, samples_per_epoch=50))
    assert sum(seen) == 50
    with pytest.raises(ConfigError, match="give one"):
        tiny(samples_per_epoch=8, steps_per_epoch=2)


def _rising_validation(monkeypatch) -> None:
    """Validation losses 1, 2, 3, ...: worse at every epoch from the start."""
    real = loop_module.validate
    losses = iter(range(1, 1000))

    def rising(*args, **kwargs):
        result = real(*args, **kwargs)
        result.loss_sum, result.n = float(next(losses)), 1
        return result

    monkeypatch.setattr(loop_module, "validate", rising)


def test_early_stopping_waits_for_min_steps(sic_frame, tmp_path: Path, monkeypatch) -> None:
    _rising_validation(monkeypatch)
    # 5 steps an epoch; patience 1 would stop after epoch 2, min_steps holds it to epoch 5 (25 steps).
    summary = train_model(sic_frame, tmp_path / "min", tiny(epochs=10, patience=1, min_steps=25))
    assert summary["stopped_because"] == "early stopping" and summary["epochs_run"] == 5
    assert summary["best_epoch"] == 1  # the best model is still chosen on the raw validation loss
    # Without min_steps: not before three quarters of the budget (epoch 6 of 8).
    late = train_model(sic_frame, tmp_path / "late", tiny(epochs=8, patience=1))
    assert late["stopped_because"] == "early stopping" and late["epochs_run"] == 6
    training = read_config(tmp_path / "late")["training"]
    assert training["early_stopping"]["smoothing"] == 0.6 and training["early_stopping"]["min_budget_fraction"] == 0.75


def test_early_stopping_watches_the_smoothed_loss() -> None:
    run = RunState()
    rule = StoppingRule(patience=2, smoothing=0.5)
    for epoch, loss in enumerate([1.0, 0.5, 0.9, 0.6, 0.7, 0.8], start=1):
        run.record_epoch({"epoch": epoch, "train_loss": 1.0, "val_loss": loss}, metrics={}, smoothing=rule.smoothing)
    # The raw loss never beats epoch 2 again (4 bad epochs); its average improves until epoch 5 (1 bad epoch).
    smooth = [row["val_loss_smooth"] for row in run.history]
    assert smooth == pytest.approx([1.0, 0.75, 0.825, 0.7125, 0.70625, 0.753125])
    assert (run.best_epoch, run.bad_epochs, run.smooth_bad_epochs) == (2, 4, 1)
    assert rule.may_stop(steps=0, fraction=0.75) and not rule.may_stop(steps=10**6, fraction=0.74)
    assert not StoppingRule(1, 0.5, min_steps=100).may_stop(steps=99, fraction=1.0)


def test_schedule_ends_at_its_floor_when_the_time_budget_ends(sic_frame, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(run_module, "Clock", partial(Clock, now=FakeTime(1.0)))  # a second per reading
    summary = train_model(sic_frame, tmp_path / "timed", tiny(epochs=None, time_limit=0.5))
    assert summary["stopped_because"] == "time limit" and summary["epochs_run"] >= 2
    rates = [float(row["lr"]) for row in history(tmp_path / "timed")]
    assert rates == sorted(rates, reverse=True) and rates[0] > 10 * rates[-1]
    assert rates[-1] == pytest.approx(3e-3 * COSINE_FLOOR, rel=1e-3)
    training = read_config(tmp_path / "timed")["training"]
    assert training["budget"] == {"epochs": None, "time_limit_minutes": 0.5}
    assert training["schedule"] == {"lr": 3e-3, "schedule": "cosine", "over": "budget fraction",
                                    "floor": pytest.approx(3e-3 * COSINE_FLOOR)}


def test_resume_restores_the_schedule(sic_frame, tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    train_model(sic_frame, straight, tiny(epochs=3))

    def interrupt(event: Event) -> None:
        if event.stage == "step" and event.info["epoch"] == 2 and event.done >= 2:
            raise KeyboardInterrupt

    resumed = tmp_path / "resumed"
    assert train_model(sic_frame, resumed, tiny(epochs=3), progress=interrupt)["stopped_because"] == "interrupted"
    state = json.loads((resumed / "last_state.json").read_text())["run"]
    assert (state["samples"], state["budget_fraction"]) == (20, pytest.approx(1 / 3))
    train_model(sic_frame, resumed, tiny(epochs=3, resume=True))

    rates = [[float(row["lr"]) for row in history(folder)] for folder in (straight, resumed)]
    assert rates[0] == rates[1] and rates[0][0] > rates[0][1] > rates[0][2]
    assert rates[0][2] == pytest.approx(3e-3 * COSINE_FLOOR, rel=1e-3)
    a, b = load_file(str(straight / "last_state.safetensors")), load_file(str(resumed / "last_state.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert math.isfinite(float(history(resumed)[-1]["val_loss_smooth"]))
