"""The step/epoch loop, and the callbacks that act at the end of each epoch.

The loop only trains and validates; what a run leaves behind after each epoch (the best model, a
model at a fraction of the budget, history.csv, curves.png, the resumable state) and early stopping
are :class:`Callback` objects, in the order given.

An epoch is one pass over the train loader, whose sampler gives it a fixed number of samples. The
learning rate is set before every step from the fraction of the budget used (see
:mod:`icetools.training.schedule`), so it reaches its floor when the epochs or the time run out.

Each epoch reseeds torch from ``(seed, epoch)`` and the batch sampler draws batch order and
augmentations from the same pair, so a resumed run repeats what an uninterrupted one would have
done (on the CPU exactly; cuDNN may differ in the last bits).

Under torchrun (a :class:`icetools.training.distributed.World` of several processes) the model steps
wrapped in DistributedDataParallel, every process on its part of each step's samples; the processes
agree before every step (:meth:`World.next_batch`), validate a share of the validation batches each
and merge the sums, so they all take the same decisions; only rank 0's callbacks write files.

The loop also times how long each step waited for its batch: ``data_wait_share`` (the time spent
waiting on the loader over the time of the steps) says whether the data or the model sets the pace.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from icetools.device import autocast, derived_seed
from icetools.io.atomic import committed_together
from icetools.modeldir import save_model_dir
from icetools.plots import plot_training_curves
from icetools.progress import Progress, report
from icetools.training.distributed import World
from icetools.training.schedule import Budget, Clock, LearningRate, StoppingRule
from icetools.training.setup import Parts
from icetools.training.state import (
    RunRecord,
    RunState,
    history_columns,
    save_at_name,
    write_history,
    write_state,
)
from icetools.training.validate import ValidationResult, to_device, validate

CURVES_EVERY_S = 5.0  # drawing the PNG costs ~0.2 s: tiny epochs would spend most of their time on it


@dataclass
class EpochEnd:
    """What the callbacks see after an epoch: its history row and validation metrics."""

    epoch: int
    row: dict[str, Any]
    metrics: dict[str, float]
    improved: bool


@dataclass
class EpochTraining:
    """One process's training part of an epoch: its loss sum and samples, steps, whether time ran out,
    and the seconds its steps took and spent waiting on the loader."""

    loss_sum: float
    seen: int
    steps: int
    out_of_time: bool
    wait_s: float
    step_s: float


class _Heads(nn.Module):
    """A deep-supervision model whose forward is its ``forward_heads``: DistributedDataParallel
    synchronises the gradients of the pass made through its own forward only."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_heads(image)


def _batch_size(batch: dict[str, torch.Tensor]) -> int:
    return int(batch["image"].shape[0])


class Callback:
    """Hooks the loop calls; a returned string is a reason to stop (or not to start)."""

    def before_fit(self, loop: TrainingLoop) -> str | None:
        return None

    def after_epoch(self, loop: TrainingLoop, end: EpochEnd) -> str | None:
        return None

    def after_fit(self, loop: TrainingLoop, stopped_because: str) -> None:
        return None


class TrainingLoop:
    """Epochs of optimiser steps and validation over ``parts``, until a budget or a callback stops it."""

    def __init__(
        self,
        parts: Parts,
        *,
        task: str,
        n_classes: int,
        budget: Budget,
        grad_clip: float,
        seed: int,
        learning_rate: LearningRate,
        smoothing: float,
        run: RunState,
        device: torch.device,
        callbacks: Sequence[Callback] = (),
        progress: Progress | None = None,
        world: World | None = None,
    ) -> None:
        self.parts, self.model, self.optimizer = parts, parts.model, parts.optimizer
        self.task, self.n_classes = task, n_classes
        self.budget, self.clock, self.epochs = budget, budget.clock, budget.epochs
        self.grad_clip, self.seed, self.learning_rate, self.smoothing = grad_clip, seed, learning_rate, smoothing
        self.run, self.device = run, device
        self.callbacks = list(callbacks)
        self.progress = progress
        self.world = world if world is not None else World()
        # What steps: the model (its heads for deep supervision), gradients averaged over the processes.
        self.trained = self.world.wrap(_Heads(self.model) if parts.deep else self.model, device)
        self.wait_s = self.step_s = 0.0  # this session's seconds waiting on the loader, and of steps

    def data_wait_share(self) -> float | None:
        """Share of the steps' time spent waiting for batches, this session (None before any step)."""
        return self.wait_s / self.step_s if self.step_s > 0 else None

    def budget_fraction(self) -> float:
        """Share of the budget used so far (what the learning rate follows)."""
        return self.budget.fraction(self.run.samples)

    def train_epoch(self, epoch: int) -> EpochTraining:
        """Optimiser steps of one epoch, one pass over the train loader (this process's part of it).

        The loss is summed on the device and read once at the end: no host sync per step.
        """
        parts, device = self.parts, self.device
        torch.manual_seed(derived_seed(self.seed, epoch))
        parts.train_loader.batch_sampler.set_epoch(epoch)
        n_steps = len(parts.train_loader)
        report(self.progress, "step", 0, n_steps, epoch=epoch)
        self.trained.train()
        loss_total = torch.zeros((), device=device)
        seen = steps = 0
        wait_s, started, out_of_time = 0.0, time.perf_counter(), False
        batches = iter(parts.train_loader)
        while True:
            fetched = self.world.next_batch(batches, _batch_size)  # under torchrun, once every process has one
            wait_s += fetched.wait_s
            if fetched.batch is None:
                break
            batch = to_device(fetched.batch, device)
            lr = self.learning_rate(self.budget_fraction())
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            with autocast(device):
                loss = parts.loss_fn(self.trained(batch["image"]), batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.optimizer.step()
            size = _batch_size(batch)
            loss_total += loss.detach().float() * size
            seen += size
            steps += 1
            self.run.global_step += 1
            self.run.samples += fetched.samples  # every process's samples: the budget counts them all
            report(self.progress, "step", steps, n_steps, epoch=epoch)
            if self.clock.out_of_time():
                out_of_time = True
                break
        loss_sum = float(loss_total)
        return EpochTraining(loss_sum, seen, steps, out_of_time, wait_s, time.perf_counter() - started)

    def validate_epoch(self, training: EpochTraining) -> tuple[ValidationResult, float, float | None]:
        """Validation over every process's share, merged in rank order (equal on every process); the
        mean training loss over all processes; the epoch's data-wait share."""
        with self.world.together():
            share = validate(self.model, self.parts.val_share, self.parts.loss_fn, task=self.task,
                             n_classes=self.n_classes, device=self.device)
        shares = self.world.gather((share, training))
        result = shares[0][0]
        for other, _ in shares[1:]:
            result.merge(other)
        trained = [part for _, part in shares]
        loss_sum, seen = sum(p.loss_sum for p in trained), sum(p.seen for p in trained)
        wait_s, step_s = sum(p.wait_s for p in trained), sum(p.step_s for p in trained)
        self.wait_s += training.wait_s
        self.step_s += training.step_s
        return result, loss_sum / max(seen, 1), (wait_s / step_s if step_s > 0 else None)

    def end_epoch(self, epoch: int, training: EpochTraining, *, epoch_start: float) -> tuple[float, list[str]]:
        """Validate, record the epoch, run the callbacks; the mean training loss and the reasons to stop
        the callbacks gave."""
        run = self.run
        result, train_loss, wait_share = self.validate_epoch(training)
        metrics = result.metrics()
        run.epoch = epoch
        run.seconds = self.clock.elapsed()
        run.budget_fraction = self.budget_fraction()
        row = {"epoch": epoch, "steps": training.steps, "samples": run.samples, "train_loss": train_loss,
               "val_loss": result.loss, **{f"val_{k}": v for k, v in metrics.items()},
               "lr": self.learning_rate(run.budget_fraction), "seconds": time.monotonic() - epoch_start}
        end = EpochEnd(epoch, row, metrics, run.record_epoch(row, metrics=metrics, smoothing=self.smoothing))
        # One unit per epoch: a full disk or a signal never leaves weights without their state.
        with self.world.together(), committed_together():
            reasons = [reason for callback in self.callbacks if (reason := callback.after_epoch(self, end))]
        report(self.progress, "epoch", epoch, self.epochs, **row, improved=end.improved, data_wait_share=wait_share)
        return train_loss, reasons

    def has_epochs_left(self) -> bool:
        return self.epochs is None or self.run.epoch < self.epochs

    def fit(self) -> str:
        """Epochs until the budget, a callback (early stopping), the time limit or Ctrl-C; why it stopped."""
        if not self.has_epochs_left():
            return "epochs (already complete)"
        for callback in self.callbacks:
            if reason := callback.before_fit(self):
                return reason
        with self.world.deferred_stop_signals():
            stopped_because = self._epochs()
            with self.world.together():
                for callback in self.callbacks:
                    callback.after_fit(self, stopped_because)
        return stopped_because

    def _epochs(self) -> str:
        """Train and validate epochs until something stops them; why."""
        run = self.run
        try:
            report(self.progress, "epoch", run.epoch, self.epochs)
            while self.has_epochs_left():
                epoch = run.epoch + 1
                epoch_start = time.monotonic()
                training = self.train_epoch(epoch)
                train_loss, reasons = self.end_epoch(epoch, training, epoch_start=epoch_start)
                if not math.isfinite(train_loss):
                    return "non-finite training loss"
                if training.out_of_time:
                    return "time limit"
                if reasons:
                    return reasons[0]
        except KeyboardInterrupt:
            return "interrupted"
        return "epochs"


# --------------------------------------------------------------------------- the callbacks


class SaveBest(Callback):
    """The model directory holds the best epoch so far: an interrupted run leaves it ready for predict."""

    def __init__(self, out_dir: Path, record: RunRecord) -> None:
        self.out_dir, self.record = out_dir, record

    def after_epoch(self, loop: TrainingLoop, end: EpochEnd) -> None:
        if end.improved:
            save_model_dir(self.out_dir, loop.model, self.record.model_config(loop.run, end.metrics, stopped_because=None))


class SaveAt(Callback):
    """Also keep the model of the first epoch that ends past a fraction of the budget (at_40pct/):
    a refiner's source."""

    def __init__(self, out_dir: Path, record: RunRecord, *, fraction: float) -> None:
        self.folder, self.record, self.fraction = out_dir / save_at_name(fraction), record, fraction
        self.reached_before = 0.0

    def before_fit(self, loop: TrainingLoop) -> None:
        self.reached_before = loop.run.budget_fraction  # a resumed run past the fraction has saved it

    def after_epoch(self, loop: TrainingLoop, end: EpochEnd) -> None:
        reached = loop.run.budget_fraction
        if self.reached_before < self.fraction - 1e-9 <= reached:
            where = f"of {loop.epochs}" if loop.epochs is not None else f"({reached:.0%} of the time budget)"
            saved = f"saved at epoch {end.epoch} {where}"
            save_model_dir(self.folder, loop.model, self.record.model_config(loop.run, end.metrics, stopped_because=saved))
        self.reached_before = reached


class WriteHistory(Callback):
    """history.csv, every epoch, with the task's metric columns."""

    def __init__(self, path: Path, task: str) -> None:
        self.path, self.columns = path, history_columns(task)

    def after_epoch(self, loop: TrainingLoop, end: EpochEnd) -> None:
        write_history(self.path, loop.run.history, self.columns)


class DrawCurves(Callback):
    """curves.png: at the last epoch and at most every CURVES_EVERY_S seconds; always up to date at the end."""

    def __init__(self, path: Path, *, title: str) -> None:
        self.path, self.title = path, title
        self.plotted_epoch: int | None = None
        self.plotted_at = -math.inf

    def draw(self, run: RunState) -> None:
        plot_training_curves(run.history, self.path, best_epoch=run.best_epoch, title=self.title)
        self.plotted_epoch, self.plotted_at = run.epoch, time.monotonic()

    def after_epoch(self, loop: TrainingLoop, end: EpochEnd) -> None:
        if end.epoch == loop.epochs or time.monotonic() - self.plotted_at >= CURVES_EVERY_S:
            self.draw(loop.run)

    def after_fit(self, loop: TrainingLoop, stopped_because: str) -> None:
        if loop.run.history and self.plotted_epoch != loop.run.epoch:
            self.draw(loop.run)  # the curves always end at the last finished epoch


class WriteState(Callback):
    """last_state.safetensors + last_state.json, every epoch: what a resumed run starts from."""

    def __init__(self, out_dir: Path, record: RunRecord) -> None:
        self.out_dir, self.record = out_dir, record

    def after_epoch(self, loop: TrainingLoop, end: EpochEnd) -> None:
        write_state(self.out_dir, loop.model, loop.optimizer, self.record.state_info(loop.run))


class EarlyStopping(Callback):
    """Stop after ``patience`` epochs without a better smoothed validation loss, once the rule's
    minimum of training is done (see :class:`icetools.training.schedule.StoppingRule`)."""

    def __init__(self, rule: StoppingRule) -> None:
        self.rule = rule

    def should_stop(self, loop: TrainingLoop) -> bool:
        run = loop.run
        return run.smooth_bad_epochs >= self.rule.patience and self.rule.may_stop(
            steps=run.global_step, fraction=run.budget_fraction)

    def before_fit(self, loop: TrainingLoop) -> str | None:
        return "early stopping (already stopped)" if self.should_stop(loop) else None

    def after_epoch(self, loop: TrainingLoop, end: EpochEnd) -> str | None:
        return "early stopping" if self.should_stop(loop) else None


__all__ = [
    "Budget", "Callback", "Clock", "DrawCurves", "EarlyStopping", "EpochEnd", "EpochTraining", "LearningRate", "SaveAt", "SaveBest",
    "TrainingLoop", "WriteHistory", "WriteState",
]
