"""Tests for icetools.inference.prefetch and the engine reading ahead with it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import nullcontext

import numpy as np
import pytest

from icetools.inference import array_strip_reader, make_predictor, plan_windows, sliding_window_merge, window_weights
from icetools.inference.prefetch import prefetched

from .helpers import CONFIG, fixed_conv, scene_array

READER = "test-prefetch"


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == READER]


def test_items_arrive_in_order_from_another_thread() -> None:
    made_in: set[str] = set()

    def source() -> Iterator[int]:
        for i in range(40):
            made_in.add(threading.current_thread().name)
            time.sleep(0.001 * (i % 3))  # uneven reads
            yield i

    with prefetched(source(), depth=2, name=READER) as items:
        assert list(items) == list(range(40))
    assert made_in == {READER}
    assert not reader_threads()


def test_depth_zero_reads_in_the_callers_thread() -> None:
    made_in = []
    with prefetched((made_in.append(threading.current_thread()) or i for i in range(3)), depth=0) as items:
        assert list(items) == [0, 1, 2]
    assert made_in == [threading.current_thread()] * 3


def test_an_error_in_the_reader_is_raised_in_the_caller_after_the_items_before_it() -> None:
    def source() -> Iterator[int]:
        yield from range(3)
        raise OSError("row 3: read failed")

    got = []
    with pytest.raises(OSError, match="row 3: read failed"):
        with prefetched(source(), depth=2, name=READER) as items:
            for item in items:
                got.append(item)
    assert got == [0, 1, 2]
    assert not reader_threads()


@pytest.mark.parametrize("stop", ["break", "error"])
def test_the_reader_stops_when_the_consumer_stops_early(stop: str) -> None:
    made, closed = [], threading.Event()

    def endless() -> Iterator[int]:
        try:
            i = 0
            while True:
                made.append(i)
                yield i
                i += 1
        finally:
            closed.set()

    with pytest.raises(RuntimeError) if stop == "error" else nullcontext():
        with prefetched(endless(), depth=2, name=READER) as items:
            for item in items:
                if item == 3:
                    if stop == "error":
                        raise RuntimeError("the model failed")
                    break
    assert not reader_threads()
    assert closed.is_set()  # the source was closed, its cleanup ran
    assert len(made) <= 4 + 2 + 1  # consumed, queued, and at most one more being made


def test_negative_depth_is_refused() -> None:
    with pytest.raises(ValueError, match="depth"):
        with prefetched([1], depth=-1):
            pass


@pytest.mark.parametrize("depth", [1, 3])
def test_reading_ahead_leaves_the_merge_bit_identical(depth: int) -> None:
    data = scene_array(150, 90, seed=2)
    data[:, 40:60, :30] = np.nan
    predictor = make_predictor(fixed_conv(3), CONFIG, device="cpu")
    plan = plan_windows(150, 90, tile=32, overlap=0.25)

    def merged(prefetch: int) -> np.ndarray:
        rows: list[np.ndarray] = []
        sliding_window_merge(
            array_strip_reader(data), predictor, plan, channels=1, weights=window_weights(32, "gaussian"),
            write_rows=lambda window, block: rows.append(block), batch=5, prefetch=prefetch,
        )
        return np.concatenate(rows, axis=1)

    assert merged(depth).tobytes() == merged(0).tobytes()  # 0: read in turn, nothing overlaps
