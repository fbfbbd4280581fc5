"""Tests for icetools.calibration: the stretch's known answers, the ends measured from histograms, the
ends it refuses, and config.json round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from icetools.calibration import MIN_END_PIXELS, EndHistograms, SICCalibration
from icetools.errors import ConfigError


def test_the_stretch_maps_floor_and_ceiling_onto_0_and_1_and_clips() -> None:
    calibration = SICCalibration(0.03, 0.99)
    p = np.array([0.0, 0.03, 0.51, 0.99, 1.0, np.nan], dtype="float32")
    np.testing.assert_allclose(calibration.apply(p), [0.0, 0.0, 0.5, 1.0, 1.0, np.nan], atol=1e-6)
    tensor = calibration.apply(torch.from_numpy(p[:5]))  # predict applies it to tensors
    np.testing.assert_allclose(tensor.numpy(), [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    untouched = np.array([0.2, 0.7])
    assert SICCalibration().apply(untouched) is untouched


def test_config_round_trip_and_bad_entries() -> None:
    calibration = SICCalibration(0.0285, 0.9985)
    assert SICCalibration.from_config({"sic_calibration": calibration.record({"water": 5, "ice": 6})}) == calibration
    assert SICCalibration.from_config({}) is None  # models trained before calibration
    assert SICCalibration.from_config({"sic_calibration": {"floor": 0, "ceiling": 1}}) is None
    for bad in ({"floor": 0.5, "ceiling": 0.4}, {"floor": -0.1}, {"floor": "low"}, [0.1, 0.9]):
        with pytest.raises(ConfigError, match="sic_calibration"):
            SICCalibration.from_config({"sic_calibration": bad})


def _histograms(water: np.ndarray, ice: np.ndarray, mixed: np.ndarray) -> EndHistograms:
    """Outputs over pixels charted 0 %, 100 % and 40 % (the last must not count)."""
    probabilities = np.concatenate([water, ice, mixed])
    chart = np.concatenate([np.zeros(water.size), np.ones(ice.size), np.full(mixed.size, 0.4)])
    valid = np.ones(probabilities.size, dtype=bool)
    ends = EndHistograms()
    ends.update(probabilities, chart, valid)
    return ends


def test_the_ends_are_the_median_outputs_where_the_chart_says_0_and_100_percent() -> None:
    rng = np.random.default_rng(0)
    water = 0.03 + rng.normal(0, 0.003, 5000)
    water[:400] = 0.6  # ice in an open-water polygon: the median ignores it
    ice = 0.985 + rng.normal(0, 0.002, 3000)
    ends = _histograms(water, ice, rng.random(4000))
    calibration, notes = ends.fit()
    assert notes == []
    assert calibration.floor == pytest.approx(np.median(water), abs=5e-4)
    assert calibration.ceiling == pytest.approx(np.median(ice), abs=5e-4)
    assert ends.counts == {"water": 5000, "ice": 3000}

    halves = _histograms(water[:2500], ice[:1000], np.array([])), _histograms(water[2500:], ice[1000:], np.array([]))
    halves[0].merge(halves[1])  # two processes' shares add up to one pass over all of it
    np.testing.assert_array_equal(halves[0].water, ends.water)
    np.testing.assert_array_equal(halves[0].ice, ends.ice)


def test_an_end_the_model_missed_or_too_few_pixels_is_left_alone() -> None:
    rng = np.random.default_rng(1)
    missed_water = 0.3 + rng.normal(0, 0.01, 5000)  # not a saturation floor: the model is wrong there
    calibration, notes = _histograms(missed_water, np.full(MIN_END_PIXELS - 1, 0.97), np.array([])).fit()
    assert calibration == SICCalibration(0.0, 1.0)
    assert any("open water reads" in n and "has not learnt it; the floor is left at 0" in n for n in notes)
    assert any(f"{MIN_END_PIXELS - 1} validation pixels charted 100 %" in n for n in notes)
    invalid = EndHistograms()
    invalid.update(np.full(3000, 0.02), np.zeros(3000), np.zeros(3000, dtype=bool))
    assert invalid.counts == {"water": 0, "ice": 0}
