"""SIC units: what a raster says it holds, or what its values leave no doubt about.

Scores are computed on SIC as a fraction 0..1. A raster's units come, in this order, from the
caller (``truth_units``), the band's or file's ``units`` tag / attribute, a band name that says
its units (``SIC_percent``), or the AI4Arctic convention (a netCDF ``SIC`` variable holds the
challenge's classes, tenths 0..10, whatever its ``polygon`` attribute's "[%]" suggests).
Without any of these:

* float values are a fraction (icetools' own convention), checked while scoring: a value above 1
  stops the run with an error that names the likely units;
* integers are read once: up to 100 (but above 10) they can only be percent, taken with a
  warning; 0..10 could be tenths or percent and >100 is no SIC unit, so both are refused.

Declared units are checked the same way: values beyond the declared range are an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from rasterio.windows import Window

from icetools.errors import ConfigError, DataError
from icetools.io.raster import iter_strips
from icetools.io.scene import Scene
from icetools.scoring.bands import BandInfo, BandReader, band_info, is_netcdf

SIC_UNITS: tuple[str, ...] = ("fraction", "percent", "tenths")
SCALE = {"fraction": 1.0, "percent": 0.01, "tenths": 0.1}
TOP = {"fraction": 1.0, "percent": 100.0, "tenths": 10.0}
# Looked for in this order: "0-100" holds "0-10", which holds "0-1".
_WORDS = (
    ("percent", ("percent", "%", "pct", "0-100", "0..100")),
    ("tenths", ("tenth", "1/10", "0-10", "0..10")),
    ("fraction", ("fraction", "0-1", "0..1")),
)
_TOLERANCE = 1e-4  # of the unit's top: float rounding, not worth a word
_OVERSHOOT = 0.1  # of the unit's top: a model's overshoot; beyond it, other units than assumed


def check_units(units: str | None, *, name: str = "truth_units") -> str | None:
    if units is not None and units not in SIC_UNITS:
        raise ConfigError(f"{name} must be one of {', '.join(SIC_UNITS)}; got {units!r}")
    return units


def units_from_text(text: str) -> str | None:
    """'percent', '%', 'fraction 0-1', CF's '1', 'tenths' ... -> a unit; None when it names none."""
    lowered = str(text).strip().lower()
    if lowered == "1":
        return "fraction"
    for units, words in _WORDS:
        if any(word in lowered for word in words):
            return units
    return None


def declared_units(scene: Scene, band: str, info: BandInfo) -> tuple[str, str] | None:
    """(units, where it was read) from the band's tags, then the file's, the band name, or the
    AI4Arctic convention; None when nothing says."""
    for where, attrs in (("band", info.attrs), ("file", info.file_attrs)):
        for key, value in attrs.items():
            if ("unit" in key.lower() or key.lower() == "scale") and (units := units_from_text(value)):
                return units, f"{where} tag {key}={value}"
    if units := units_from_text(band):
        return units, f"band name '{band}'"
    if is_netcdf(scene) and band.upper() == "SIC" and info.is_integer:
        return "tenths", "AI4Arctic SIC classes 0..10"
    return None


@dataclass
class SICReader:
    """A SIC band read by window as a fraction 0..1 (NaN for nodata), whose value range is checked
    against its units while scoring: call :meth:`finish` after the last window."""

    role: str  # "truth", "prediction", "polygons": for messages
    reader: BandReader
    units: str
    source: str
    guessed: bool = False  # float without units: a fraction unless a value says otherwise
    largest: float = -math.inf
    smallest: float = math.inf
    notes: list[str] = field(default_factory=list)

    def __call__(self, window: Window) -> np.ndarray:
        data = self.reader(window)
        finite = data[np.isfinite(data)]
        if finite.size:
            self.largest = max(self.largest, float(finite.max()))
            self.smallest = min(self.smallest, float(finite.min()))
        return data * np.float32(SCALE[self.units]) if self.units != "fraction" else data

    @property
    def name(self) -> str:
        return self.reader.scene.path.name

    def finish(self, *, fix: str) -> list[str]:
        """Warnings to show; raises DataError when the values do not fit the units.

        A model's overshoot (up to 10 % of the range beyond either end) is scored as it is, with a
        warning; further out the values are in other units than assumed.
        """
        top = TOP[self.units]
        found = f"values from {self.smallest:g} to {self.largest:g}"
        notes = list(self.notes)
        if self.largest > top * (1 + _OVERSHOOT) or self.smallest < -top * _OVERSHOOT:
            if self.guessed:
                raise DataError(
                    f"{self.role} {self.name} declares no SIC units and its float {found} are not a fraction "
                    f"0..1 ({_likely(self.largest)}); {fix}"
                )
            raise DataError(
                f"{self.role} {self.name} holds SIC {found}, outside 0..{top:g} {self.units} ({self.source}); {fix}"
            )
        if self.largest > top * (1 + _TOLERANCE) or self.smallest < -top * _TOLERANCE:
            notes.append(
                f"{self.role} {self.name} holds SIC {found}, a little outside 0..{top:g} {self.units}: "
                "scored as they are"
            )
        return self.reader.warnings(self.role) + notes


def _likely(largest: float) -> str:
    if largest <= 10:
        return "tenths or percent?"
    return "percent, by their range?" if largest <= 100 else "no SIC unit reaches that"


def _integer_range(reader: BandReader, height: int, width: int, strip_rows: int) -> float:
    """The largest value of an integer band (nodata and undeclared 255 left out): one read."""
    largest = -math.inf
    for window in iter_strips(height, width, strip_rows):
        strip = reader(window)
        if np.isfinite(strip).any():
            largest = max(largest, float(np.nanmax(strip)))
    reader.masked_255 = 0  # counted again while scoring
    return largest


def sic_reader(
    scene: Scene, band: str, *, role: str, units: str | None = None, given_as: str = "given", fix: str, strip_rows: int
) -> SICReader:
    """The reader of one SIC band with its units settled (see the module's rules).

    ``units`` is the caller's word (``given_as`` names it, e.g. "truth_units"); ``fix`` finishes a refusal's message
    with what the caller can do ("set truth_units ..." or "tag the band units=...").
    """
    info = band_info(scene, band)
    reader = BandReader(scene, band, info)
    if units is not None:
        return SICReader(role, reader, units, given_as)
    declared = declared_units(scene, band, info)
    if declared is not None:
        return SICReader(role, reader, *declared)
    if not info.is_integer:
        return SICReader(role, reader, "fraction", "float without units: a fraction", guessed=True)
    largest = _integer_range(reader, scene.height, scene.width, strip_rows)
    if math.isinf(largest):
        return SICReader(role, reader, "fraction", "no valid value")
    if 10 < largest <= 100:
        note = (
            f"{role} {scene.path.name} declares no SIC units; its integers reach {largest:g}, so they are taken as "
            f"percent (a guess from the value range; {fix} to say otherwise)"
        )
        return SICReader(role, reader, "percent", f"guessed from integers up to {largest:g}", notes=[note])
    if largest <= 1:
        doubt = "a fraction, tenths or percent"
    else:
        doubt = "tenths or percent" if largest <= 10 else "no SIC unit (percent stops at 100)"
    raise DataError(
        f"{role} {scene.path.name} declares no SIC units and its integers reach {largest:g}: {doubt}; {fix}"
    )
