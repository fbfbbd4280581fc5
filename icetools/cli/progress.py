"""The one renderer of :class:`icetools.progress.Event` for every command: a rich bar per stage."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from types import TracebackType

from icetools.cli.common import make_progress
from icetools.progress import Event


class EventBars:
    """A progress callback that draws one bar per event stage on stderr (silent under -q or when
    stderr is not a terminal).

    ``labels`` maps a stage to the bar's text (default: the stage name); ``rate_unit`` adds a
    done-per-second figure ("windows/s"); ``also`` is called with every event after drawing, for a
    command that prints lines of its own (an epoch summary, say).
    """

    def __init__(
        self,
        labels: Mapping[str, str] | None = None,
        *,
        rate_unit: str | None = None,
        also: Callable[[Event], None] | None = None,
    ) -> None:
        self.labels = dict(labels or {})
        self.rate_unit = rate_unit
        self.also = also
        self.bar = make_progress(rate_unit=rate_unit)
        self._tasks: dict[str, tuple[int, float]] = {}

    def __enter__(self) -> EventBars:
        self.bar.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.bar.__exit__(kind, value, traceback)

    def __call__(self, event: Event) -> None:
        key = str(event.info.get("bar", event.stage))
        if key not in self._tasks:
            label = self.labels.get(event.stage, event.stage)
            fields = {"rate": ""} if self.rate_unit else {}
            self._tasks[key] = (self.bar.add_task(label, total=event.total, **fields), time.perf_counter())
        task, start = self._tasks[key]
        fields = {}
        if self.rate_unit:
            elapsed = max(time.perf_counter() - start, 1e-9)
            fields["rate"] = f"{event.done / elapsed:.1f} {self.rate_unit}"
        self.bar.update(task, completed=event.done, total=event.total, **fields)
        if self.also is not None:
            self.also(event)
