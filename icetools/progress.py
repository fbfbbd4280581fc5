"""One progress event for every stage, so the CLI needs one renderer.

A library function takes ``progress: Progress | None`` and calls it with :class:`Event` values; it
never prints. ``stage`` names what is counted (``"windows"``, ``"strips"``, ``"epoch"``, ...),
``done``/``total`` say how far it is (``total`` None when unknown), ``info`` carries extra figures
(an epoch's losses, the scene being read) that a renderer may show.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    stage: str
    done: float = 0
    total: float | None = None
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float | None:
        """done / total in 0..1, or None when the total is unknown or zero."""
        if not self.total:
            return None
        return min(1.0, max(0.0, self.done / self.total))


Progress = Callable[[Event], None]


def report(progress: Progress | None, stage: str, done: float = 0, total: float | None = None, **info: Any) -> None:
    """Send an event when someone listens; a no-op otherwise."""
    if progress is not None:
        progress(Event(stage, done, total, info))


def scaled(progress: Progress | None, *, offset: float, scale: float, total: float) -> Progress | None:
    """Map a sub-task's events into a share of a larger one (e.g. the second of two mosaic passes)."""
    if progress is None:
        return None

    def forward(event: Event) -> None:
        fraction = event.fraction if event.fraction is not None else 0.0
        progress(Event(event.stage, offset + scale * fraction * total, total, event.info))

    return forward


def relabel(progress: Progress | None, stage: str | None = None, **info: Any) -> Progress | None:
    """Forward a sub-task's events under another stage name and/or with more info (the scene, say)."""
    if progress is None:
        return None

    def forward(event: Event) -> None:
        progress(Event(stage or event.stage, event.done, event.total, {**event.info, **info}))

    return forward
