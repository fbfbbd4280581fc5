"""Read ahead in a background thread, a bounded number of items ahead of their consumer.

Predict reads a strip of the scene and stacks its windows (rasterio / netCDF4 reads, decompression,
normalisation: numpy and GDAL release the GIL) while the model runs on the previous one, so the GPU
never waits on a read. The queue is bounded, so memory stays a few strips whatever the scene size.
An error in the reader is raised in the consumer, with its own traceback; a consumer that stops early
(an error of its own, a signal) stops the reader too, and the source iterator is closed in the reader's
thread, where it runs.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

_POLL_S = 0.05  # how often a blocked reader looks whether its consumer has gone


class _Failed:
    """The reader's exception, carried through the queue to be raised where the items are used."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


@contextmanager
def prefetched(source: Iterable[T], *, depth: int, name: str = "icetools-read") -> Iterator[Iterator[T]]:
    """Iterate ``source`` in a background thread, at most ``depth`` items ahead of the consumer.

    ``depth`` 0 iterates in the caller's thread (nothing overlaps). Use as
    ``with prefetched(items, depth=2) as items: for item in items: ...``; leaving the block, even
    early, stops and joins the reader thread.
    """
    if depth < 0:
        raise ValueError(f"prefetch depth {depth} must be at least 0")
    if depth == 0:
        yield iter(source)
        return
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        """Queue ``item`` unless the consumer has gone; False when it has."""
        while not stop.is_set():
            try:
                items.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(source)
        try:
            for item in iterator:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as error:  # noqa: BLE001 - every failure belongs to the consumer
            put(_Failed(error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # a generator's cleanup runs here, in the thread that ran it

    def consume() -> Iterator[T]:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        yield consume()
    finally:
        stop.set()
        while thread.is_alive():  # unblock a reader waiting on a full queue, then wait for it
            try:
                items.get(timeout=_POLL_S)
            except queue.Empty:
                pass
        thread.join()
