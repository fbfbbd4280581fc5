"""SIC calibration: a model's saturation floor and ceiling, measured on validation, stretched onto 0 and 1.

A sigmoid reaches 0 and 1 only at infinite logits, and the regional loss's gradient fades with
p (1 - p) as an output nears them, so a run of minutes ends with open water at a floor (about 0.03)
and full ice a little under 1. Every open-water polygon then reads about 3 % SIC where the chart
says 0, which is most of what separates a model's polygon means from the chart's.

``train`` measures both ends on the validation patches, as the median output over the pixels that
the chart calls 0 % and 100 % ice, and records them in config.json (``sic_calibration``); predict
maps [floor, ceiling] linearly onto [0, 1], clipped, in every window (``--no-calibration`` skips
it). It is chosen on validation, as the line task's threshold is, never on the scenes scored. An end
further than :data:`MAX_END_OFFSET` from 0 or 1 is a model that has not learnt that end, not a
saturation floor, and is left as it is: stretching it would hide the miss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from icetools.errors import ConfigError

BINS = 2000  # histogram bins over [0, 1]: medians to 0.0005, in 16 kB per end
MAX_END_OFFSET = 0.1  # a floor above 0.1 (ceiling below 0.9) is a miss, not saturation: left alone
MIN_END_PIXELS = 1000  # fewer validation pixels at an end than this: that end is left alone
CONFIG_KEY = "sic_calibration"
RULE = "sic = clip((p - floor) / (ceiling - floor), 0, 1); floor, ceiling = median validation output where the chart says 0 % and 100 %"

Values = TypeVar("Values")  # a numpy array or a torch tensor: both have clip()


@dataclass(frozen=True)
class SICCalibration:
    """The linear stretch of [floor, ceiling] onto [0, 1], clipped."""

    floor: float = 0.0
    ceiling: float = 1.0

    def __post_init__(self) -> None:
        if not (0.0 <= self.floor < self.ceiling <= 1.0):
            raise ConfigError(
                f"{CONFIG_KEY} needs 0 <= floor < ceiling <= 1, got floor {self.floor!r}, ceiling {self.ceiling!r}"
            )

    @property
    def is_identity(self) -> bool:
        return self.floor == 0.0 and self.ceiling == 1.0

    def apply(self, probabilities: Values) -> Values:
        """Calibrated SIC of sigmoid outputs (numpy or torch, any shape); NaN stays NaN."""
        if self.is_identity:
            return probabilities
        scale = 1.0 / (self.ceiling - self.floor)
        return ((probabilities - self.floor) * scale).clip(0.0, 1.0)  # type: ignore[operator,attr-defined]

    def describe(self) -> str:
        return f"floor {self.floor:.4f}, ceiling {self.ceiling:.4f}"

    def record(self, counts: dict[str, int] | None = None) -> dict[str, Any]:
        """config.json's entry: the ends, the rule and how many validation pixels each end came from."""
        entry: dict[str, Any] = {"floor": round(self.floor, 6), "ceiling": round(self.ceiling, 6), "rule": RULE}
        if counts is not None:
            entry["validation_pixels"] = counts
        return entry

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SICCalibration | None:
        """The calibration a config.json records; None when it records none (older models)."""
        entry = config.get(CONFIG_KEY)
        if entry is None:
            return None
        if not isinstance(entry, dict):
            raise ConfigError(f'config "{CONFIG_KEY}" must be an object with "floor" and "ceiling"')
        try:
            calibration = cls(float(entry.get("floor", 0.0)), float(entry.get("ceiling", 1.0)))
        except (TypeError, ValueError):
            raise ConfigError(f'config "{CONFIG_KEY}" floor and ceiling must be numbers, got {entry!r}') from None
        return None if calibration.is_identity else calibration


class EndHistograms:
    """Histograms of the output over the valid pixels whose chart SIC is 0 and whose chart SIC is 1.

    Histograms, not the pixels themselves, so measuring costs 32 kB whatever the validation set's
    size, and the shares of several processes add up.
    """

    def __init__(self) -> None:
        self.water = np.zeros(BINS, dtype="int64")
        self.ice = np.zeros(BINS, dtype="int64")

    def update(self, probabilities: np.ndarray, chart_sic: np.ndarray, valid: np.ndarray) -> None:
        bins = np.clip((np.nan_to_num(probabilities, nan=0.0) * BINS).astype("int64"), 0, BINS - 1)
        usable = valid & np.isfinite(probabilities) & np.isfinite(chart_sic)
        self.water += np.bincount(bins[usable & (chart_sic <= 0.0)], minlength=BINS)
        self.ice += np.bincount(bins[usable & (chart_sic >= 1.0)], minlength=BINS)

    def merge(self, other: EndHistograms) -> None:
        self.water += other.water
        self.ice += other.ice

    @property
    def counts(self) -> dict[str, int]:
        return {"water": int(self.water.sum()), "ice": int(self.ice.sum())}

    def fit(self) -> tuple[SICCalibration, list[str]]:
        """The calibration, and one note for each end left alone (and why)."""
        notes: list[str] = []
        floor = _end(self.water, at=0.0, pixels="charted 0 %", reads="open water reads", name="floor", notes=notes)
        ceiling = _end(self.ice, at=1.0, pixels="charted 100 %", reads="full ice reads", name="ceiling", notes=notes)
        return SICCalibration(floor, ceiling), notes


def _end(histogram: np.ndarray, *, at: float, pixels: str, reads: str, name: str, notes: list[str]) -> float:
    """The median output of one end, or ``at`` itself (with a note) when too few pixels hold it or the
    median lies further than :data:`MAX_END_OFFSET` from it."""
    total = int(histogram.sum())
    if total < MIN_END_PIXELS:
        notes.append(f"SIC calibration: {total} validation pixels {pixels}, {MIN_END_PIXELS} needed: "
                     f"the {name} is left at {at:g}")
        return at
    median = (int(np.searchsorted(np.cumsum(histogram), (total + 1) / 2)) + 0.5) / BINS  # at its bin's centre
    if abs(median - at) > MAX_END_OFFSET:
        notes.append(f"SIC calibration: {reads} {median:.3f} on validation, more than {MAX_END_OFFSET} from "
                     f"{at:g}: the model has not learnt it; the {name} is left at {at:g}")
        return at
    return median


__all__ = ["CONFIG_KEY", "EndHistograms", "MAX_END_OFFSET", "MIN_END_PIXELS", "SICCalibration"]
