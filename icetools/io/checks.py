"""Sanity of inputs: valid files holding absurd values are caught before they are mapped.

A float that is not NaN passes every reader, so a band of 3e38 fill values, an int16 band of dB x 100
or a phase in degrees would be predicted on, or learnt from, without a word. Per band, a small sample
of values (a grid of small windows, never a pass over the whole scene) is compared with the plausible
range of what the band is: SAR backscatter in dB about -60..+30 (linear 0..1000), a wrapped phase
-pi..pi, sea-ice concentration 0..1. Any implausible value gives a warning with its share; a band
whose sample is mostly implausible is an error. Integer SAR bands must carry an explicit scale (GDAL
scale/offset, netCDF ``scale_factor``): without one their numbers have no unit. A SIC band of whole
numbers beyond 1 (percent 0..100, tenths 0..10) is refused with the scale that would make it a
fraction: a unit mistake, which no share of good values makes right.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

from icetools.errors import DataError, MissingVariableError
from icetools.io.bands import AI4ARCTIC_SAR, DB, LINEAR, sar_polarisation
from icetools.io.scene import GeoTiffScene, NetCDFScene, Scene, open_scene

MOSTLY = 0.5
"""Above this share of implausible sampled values a band is refused, not only warned about."""
SAMPLE_WINDOWS = 6  # a 6 x 6 grid of windows ...
SAMPLE_SIDE = 48  # ... of 48 px: 83 thousand values per band at most
_PHASE_SLACK = 1e-3  # float rounding at +-pi
SIC_NAMES = ("sic", "sea_ice_concentration")


def plausible_range(scene: Scene, name: str) -> tuple[str, float, float] | None:
    """What band ``name`` is and the range its values can take; None for bands without a known range."""
    lower = name.lower()
    if "phase" in lower:
        return "phase", -math.pi - _PHASE_SLACK, math.pi + _PHASE_SLACK
    if name in AI4ARCTIC_SAR or sar_polarisation(name) is not None:
        unit = scene.band_unit(name)
        if unit == DB:
            return "SAR backscatter in dB", -60.0, 30.0
        if unit == LINEAR:
            return "linear SAR backscatter", 0.0, 1000.0
        return "SAR backscatter", -60.0, 1000.0  # unknown unit (e.g. standard-scaled): only the absurd
    if lower in SIC_NAMES:
        return "sea-ice concentration", 0.0, 1.0
    return None


def _stored_integers(scene: Scene, name: str) -> tuple[bool, bool]:
    """(stored as integers, with an explicit scale or offset) for band ``name`` as the file holds it."""
    if isinstance(scene, GeoTiffScene):
        index = scene.band_names.index(name)
        integer = np.dtype(scene.dtypes[index]).kind in "iu"
        return integer, scene.scales[index] != 1.0 or scene.offsets[index] != 0.0
    if isinstance(scene, NetCDFScene) and name in scene.handle.variables:
        var = scene.handle.variables[name]
        scaled = any(hasattr(var, key) for key in ("scale_factor", "add_offset"))
        return np.dtype(var.dtype).kind in "iu", scaled
    return False, False


def check_scene_values(scene: Scene, names: Sequence[str]) -> list[str]:
    """Check the bands ``names`` of ``scene`` on a sample; warn (and return the warnings) or raise DataError."""
    messages: list[str] = []
    for name in scene.resolve(names):
        if sar_polarisation(name) is not None or name in AI4ARCTIC_SAR:
            integer, scaled = _stored_integers(scene, name)
            if integer and not scaled:
                raise DataError(
                    f"{scene.path}: SAR band {name!r} holds integers without a scale, so its values have no "
                    "unit: give the band a scale (GDAL scale/offset or netCDF scale_factor, e.g. 0.01 for "
                    "dB x 100) or store it as float dB"
                )
        expected = plausible_range(scene, name)
        if expected is None:
            continue
        what, low, high = expected
        values = scene._sample(name, windows=SAMPLE_WINDOWS, side=SAMPLE_SIDE)
        values = values[~np.isnan(values)]
        if not values.size:
            continue
        if name.lower() in SIC_NAMES:
            _refuse_sic_in_other_units(scene, name, values)
        share = float(np.mean((values < low) | (values > high)))
        if share == 0.0:
            continue
        where = f"{scene.path}: {share:.1%} of the sampled values of band {name!r} lie outside {low:g}..{high:g}, " \
                f"the plausible range of {what}"
        if share > MOSTLY:
            raise DataError(f"{where}: most of the scene is implausible; check its units and fill values, or "
                            "skip the input checks to use it anyway")
        message = f"{where}: they will be used as they are (fill values? units?)"
        warnings.warn(message, UserWarning, stacklevel=2)
        messages.append(message)
    return messages


def _refuse_sic_in_other_units(scene: Scene, name: str, values: np.ndarray) -> None:
    """Whole numbers beyond 1 in a SIC band: percent (up to 100) or tenths (up to 10), not fill values."""
    top = float(values.max())
    if not (1.0 < top <= 100.0 and float(values.min()) >= 0.0 and np.array_equal(values, np.round(values))):
        return
    unit, scale = ("percent (0..100)", 0.01) if top > 10.0 else ("tenths (0..10) or percent", 0.1)
    raise DataError(
        f"{scene.path}: band {name!r} holds whole numbers up to {top:g}, which look like {unit}, but sea-ice "
        f"concentration is a fraction 0..1: give the band a scale (GDAL scale {scale:g}, e.g. "
        f"`gdal_edit.py -scale {scale:g} {scene.path.name}`) or burn the chart with `icetools rasterize`"
    )


def check_labels(paths: Sequence[str | None]) -> list[str]:
    """The SIC band of each labels raster (``None`` entries, a scene's own chart, are skipped) against
    0..1: a labels file in percent or tenths is refused, stray values are warned about."""
    messages: list[str] = []
    for path in dict.fromkeys(str(p) for p in paths if p):
        with open_scene(path) as labels:
            present = [n for n in labels.band_names if n.lower() in SIC_NAMES]
            messages += check_scene_values(labels, present)
    return messages


def check_scenes(paths: Sequence[str], names: Sequence[str] | None = None) -> list[str]:
    """:func:`check_scene_values` for each scene file (its default inputs when ``names`` is None).

    A named band a scene lacks is left to the caller, whose own error names the fix.
    """
    messages: list[str] = []
    for path in dict.fromkeys(str(p) for p in paths):
        with open_scene(path) as scene:
            present = scene.default_inputs if not names else [n for n in names if _has(scene, n)]
            messages += check_scene_values(scene, present)
    return messages


def _has(scene: Scene, name: str) -> bool:
    try:
        scene.resolve([name])
    except MissingVariableError:
        return False
    return True


__all__ = ["MOSTLY", "SIC_NAMES", "check_labels", "check_scene_values", "check_scenes", "plausible_range"]
