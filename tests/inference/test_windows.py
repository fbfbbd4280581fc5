"""Tests for icetools.inference.windows: the window layout, the rolling accumulator and the streaming merge."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from icetools.errors import ConfigError
from icetools.inference import (
    RowAccumulator,
    array_strip_reader,
    make_predictor,
    plan_windows,
    sliding_window_merge,
    window_starts,
    window_weights,
)
from icetools.models.base import IcetoolsModel
from icetools.progress import Event

from .helpers import fixed_conv, scene_array

# --- layout --------------------------------------------------------------------------------------


def test_window_starts_cover_the_axis_and_the_last_ends_at_the_edge() -> None:
    assert window_starts(100, 32, 24) == (0, 24, 48, 68)
    assert window_starts(77, 32, 24) == (0, 24, 45)
    assert window_starts(96, 32, 32) == (0, 32, 64)
    assert window_starts(20, 32, 24) == (0,)


@pytest.mark.parametrize("tile, overlap", [(33, 0.25), (0, 0.25), (32, -0.1), (32, 0.95)])
def test_bad_tiling_is_refused(tile: int, overlap: float) -> None:
    with pytest.raises(ConfigError):
        plan_windows(100, 100, tile=tile, overlap=overlap)


def test_library_errors_name_parameters_not_flags() -> None:
    with pytest.raises(ConfigError, match=r"^tile 33 must") as error:
        plan_windows(100, 100, tile=33, overlap=0.25)
    assert "--" not in str(error.value)
    with pytest.raises(ConfigError, match=r"^unknown merge 'median'"):
        window_weights(32, "median")


# --- streaming ------------------------------------------------------------------------------------


def whole_image_raw(conv: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(conv(torch.from_numpy(x.astype("float32"))[None]))[0, 0].numpy()


def test_a_tall_scene_streams_through_a_tile_high_accumulator() -> None:
    height, width, tile = 1000, 40, 32
    data = scene_array(height, width, seed=6)
    reader = array_strip_reader(data)
    strips: list[tuple[int, int]] = []
    written: list[tuple[int, int]] = []
    events: list[Event] = []
    out = np.full((1, height, width), -1.0, dtype="float32")

    def read_strip(row0: int, row1: int):
        strips.append((row0, row1))
        return reader(row0, row1)

    def write_rows(window, probs) -> None:
        written.append((int(window.row_off), int(window.height)))
        out[:, window.row_off : window.row_off + window.height] = probs

    conv = fixed_conv(1)
    predictor = make_predictor(conv, {"task": "sic"}, device="cpu")
    plan = plan_windows(height, width, tile=tile, overlap=0.25)
    stats = sliding_window_merge(read_strip, predictor, plan, channels=1, weights=window_weights(tile, "average"),
                                 write_rows=write_rows, batch=3, progress=events.append)
    assert stats.accumulator_shape == (1, tile, width)  # O(tile) rows, not O(scene)
    assert max(r1 - r0 for r0, r1 in strips) <= tile
    rows = [r for r0, n in written for r in range(r0, r0 + n)]
    assert rows == list(range(height))  # every row written once, in order
    x = np.where(np.isfinite(data), data, 0)
    np.testing.assert_allclose(out[0], whole_image_raw(conv, x), atol=2e-6)
    assert stats.windows == stats.windows_predicted == plan.n_windows
    assert {e.stage for e in events} == {"windows"} and events[-1].done == events[-1].total == plan.n_windows


class TwoScales(IcetoolsModel):
    """A context model: the local window plus the context window twice as large, averaged."""

    takes_windows = True
    context_scales = (1.0, 2.0)
    in_channels = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 5 and x.shape[1] == 2
        return (x[:, 0, :1] + x[:, 1, :1]) / 2


def test_context_models_read_strips_with_their_margins() -> None:
    data = scene_array(200, 50, seed=7)
    strips: list[tuple[int, int]] = []
    reader = array_strip_reader(data)
    predictor = make_predictor(TwoScales(), {"task": "sic"}, device="cpu")
    assert predictor.context_scales == (1.0, 2.0) and predictor.window_axis
    plan = plan_windows(200, 50, tile=32, overlap=0.25)
    out = np.zeros((200, 50), dtype="float32")

    def write_rows(window, probs) -> None:
        out[window.row_off : window.row_off + window.height] = probs[0]

    stats = sliding_window_merge(
        lambda a, b: strips.append((a, b)) or reader(a, b), predictor, plan, channels=1,
        weights=window_weights(32, "average"), write_rows=write_rows, context_scales=(1.0, 2.0),
    )
    assert max(b - a for a, b in strips) <= 32 + 2 * 16
    assert stats.accumulator_shape == (1, 32, 50)
    assert np.isfinite(out).all() and (out > 0).all() and (out < 1).all()


def test_a_bare_module_is_a_plain_model() -> None:
    predictor = make_predictor(fixed_conv(1), {"task": "sic"}, device="cpu")
    assert predictor.context_scales == (1.0,) and not predictor.window_axis and predictor.in_channels == 2


def test_row_accumulator_divides_and_rolls() -> None:
    acc = RowAccumulator(1, 4, 3)
    acc.add(np.full((1, 4, 3), 2.0), np.ones((4, 3)), row=0, col=0)
    acc.add(np.full((1, 2, 3), 5.0), np.full((2, 3), 2.0), row=2, col=0)
    top = acc.pop(2, np.ones((2, 3), dtype=bool))
    np.testing.assert_array_equal(top, np.full((1, 2, 3), 2.0))
    assert acc.top == 2
    bottom = acc.pop(4, np.array([[True, False, True], [True, True, True]]))
    np.testing.assert_allclose(bottom[0, 0], [4.0, np.nan, 4.0])  # (2*1 + 5*2) / 3
