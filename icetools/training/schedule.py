"""The training budget and what follows it: how much of it is used, the learning rate, early stopping.

A run's budget is an epoch cap, a time limit, or both. :class:`Budget` says what fraction of it is
used (the larger of the epoch and the time fraction), so the learning rate decays to its floor
exactly when the budget ends, whichever of the two ends it, and early stopping waits until a
share of the budget is spent. The fraction reached is stored with the run, so a resumed run
continues its schedule instead of restarting it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

COSINE_FLOOR = 0.01
"""The cosine schedule ends at this share of the base learning rate (poly ends at 0)."""
MIN_BUDGET_FRACTION = 0.75
"""Early stopping may act only after this share of the budget (unless a minimum of steps is given).

The cosine rate spends the end of the budget low, where models gain most late: the skill bench's
line model had its best epoch at 45 of 46, and with a floor of one half the same recipe
(``make -C examples grounding-line``) stopped at 53 % of its 8 minutes on a plateau of the
validation loss, Dice 0.22 on the held-out scene, where the bench's run went on to 0.66."""


@dataclass
class Clock:
    """Seconds the run has trained (earlier sessions included) and this session's deadline, if any.

    ``now`` is the time source (``time.monotonic``); tests pass a fake one.
    """

    seconds_before: float = 0.0
    time_limit_minutes: float | None = None
    now: Callable[[], float] = time.monotonic
    started: float = field(default=math.nan)

    def __post_init__(self) -> None:
        if math.isnan(self.started):
            self.started = self.now()

    def session_seconds(self) -> float:
        return self.now() - self.started

    def elapsed(self) -> float:
        return self.seconds_before + self.session_seconds()

    def session_fraction(self) -> float | None:
        """Share of this session's time limit used; None without a time limit."""
        if self.time_limit_minutes is None:
            return None
        return self.session_seconds() / (self.time_limit_minutes * 60)

    def out_of_time(self) -> bool:
        fraction = self.session_fraction()
        return fraction is not None and fraction >= 1


@dataclass
class Budget:
    """How much training a run may do and how much of it is used.

    ``epochs`` caps the epochs (None: as many as the time limit allows); ``start_fraction`` is the
    fraction earlier sessions reached (a resumed run). The time fraction of a resumed session spreads
    what remains of the budget over its own time limit; the epoch fraction counts samples against
    the current cap, so a resume with more epochs stretches the schedule over the larger budget.
    """

    epochs: int | None
    samples_per_epoch: int
    clock: Clock
    start_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs is None and self.clock.time_limit_minutes is None:
            raise ValueError("a budget needs an epoch cap, a time limit or both")

    def fraction(self, samples: int) -> float:
        """Share of the budget used after ``samples`` training samples in all (0..1)."""
        parts = []
        if self.epochs is not None:
            parts.append(samples / (self.samples_per_epoch * self.epochs))
        session = self.clock.session_fraction()
        if session is not None:
            parts.append(self.start_fraction + (1 - self.start_fraction) * session)
        return min(1.0, max(parts))


@dataclass
class LearningRate:
    """The learning rate at a fraction of the budget: constant, poly (to 0) or cosine (to a floor)."""

    base: float
    schedule: str
    power: float = 0.9

    def __call__(self, fraction: float) -> float:
        fraction = min(1.0, max(0.0, fraction))
        if self.schedule == "poly":
            return self.base * (1 - fraction) ** self.power
        if self.schedule == "cosine":
            return self.base * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * fraction)))
        return self.base

    def record(self) -> dict[str, object]:
        """What config.json says about the schedule."""
        record: dict[str, object] = {"lr": self.base, "schedule": self.schedule, "over": "budget fraction"}
        if self.schedule == "poly":
            record["power"] = self.power
        if self.schedule == "cosine":
            record["floor"] = self.base * COSINE_FLOOR
        return record


@dataclass(frozen=True)
class StoppingRule:
    """Early stopping: ``patience`` epochs without a better smoothed validation loss, never before
    ``min_steps`` optimiser steps (or, when None, before :data:`MIN_BUDGET_FRACTION` of the budget)."""

    patience: int
    smoothing: float
    min_steps: int | None = None

    def may_stop(self, *, steps: int, fraction: float) -> bool:
        if self.min_steps is not None:
            return steps >= self.min_steps
        return fraction >= MIN_BUDGET_FRACTION

    def record(self) -> dict[str, object]:
        return {
            "watches": "validation loss, exponential moving average",
            "smoothing": self.smoothing, "patience_epochs": self.patience,
            "min_steps": self.min_steps,
            "min_budget_fraction": None if self.min_steps is not None else MIN_BUDGET_FRACTION,
        }


def smoothed(previous: float | None, value: float, smoothing: float) -> float:
    """Exponential moving average: ``smoothing`` is the weight of the past (0 = the raw value)."""
    if previous is None or not math.isfinite(previous):
        return value
    return smoothing * previous + (1 - smoothing) * value


__all__ = [
    "COSINE_FLOOR", "MIN_BUDGET_FRACTION", "Budget", "Clock", "LearningRate", "StoppingRule", "smoothed",
]
