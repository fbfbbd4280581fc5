"""What a band's name, metadata or values say about it: Sentinel-1 polarisations and sigma0 units.

Users' Sentinel-1 files name the same two bands many ways: ``HH``/``HV``, ``sigma0_HH``,
``Sigma0_HH_db`` (ESA SNAP), ``nersc_sar_primary``/``nersc_sar_secondary`` (AI4Arctic), in any case.
:func:`sar_polarisation` maps each to its polarisation, so a model trained on one spelling reads the
others. A two-band file without band descriptions is HH then HV (:data:`POSITIONAL_SAR`).

Backscatter comes in decibels or as linear power (sigma0). The units are read, in this order, from
the file's own word (GDAL unit type, netCDF ``units``), the band name (``_db`` -> dB; ``linear`` or
SNAP's ``Sigma0_HH`` without ``_db`` -> linear) and finally the values (:func:`units_from_values`).
"""

from __future__ import annotations

import re

import numpy as np

DB = "dB"
LINEAR = "linear"
SAR_UNITS = (DB, LINEAR)
"""The two backscatter units icetools converts between: 10 log10(linear) = dB."""

AI4ARCTIC_SAR = {"nersc_sar_primary": "HH", "nersc_sar_secondary": "HV"}
POSITIONAL_SAR = ("HH", "HV")
"""The order of the bands of a two-band file that describes none of them (the Sentinel-1 EW convention)."""

_POLARISATION = re.compile(r"^(?:sigma0_?|s0_?)?(hh|hv)(?:_?db|_?linear|_lin)?$")
_DB_WORDS = {"db", "decibel", "decibels"}
_LINEAR_WORDS = {"linear", "lin", "1", "m2/m2", "m2 m-2", "m^2/m^2", "power", "intensity"}


def sar_polarisation(name: str) -> str | None:
    """``"HH"`` or ``"HV"`` for any usual spelling of a Sentinel-1 band (case-insensitive), else None."""
    lowered = name.strip().lower()
    if lowered in AI4ARCTIC_SAR:
        return AI4ARCTIC_SAR[lowered]
    match = _POLARISATION.match(lowered)
    return match.group(1).upper() if match else None


def units_from_text(text: object) -> str | None:
    """A file's own unit word (GDAL unit type, netCDF ``units``): ``dB``, ``linear`` or None."""
    lowered = str(text or "").strip().lower()
    if lowered in _DB_WORDS:
        return DB
    if lowered in _LINEAR_WORDS:
        return LINEAR
    return None


def units_from_name(name: str) -> str | None:
    """What a band name says: ``*_db`` -> dB; ``*linear*`` or SNAP's ``Sigma0_*`` without ``_db`` -> linear."""
    tokens = re.split(r"[^a-z0-9]+", name.strip().lower())
    if "db" in tokens:
        return DB
    if "linear" in tokens or "lin" in tokens:
        return LINEAR
    if tokens and tokens[0] == "sigma0" and sar_polarisation(name) is not None:
        return LINEAR  # SNAP writes Sigma0_HH in linear power and Sigma0_HH_db in decibels
    return None


def units_from_values(values: np.ndarray) -> str | None:
    """Backscatter units that sampled values leave no doubt about, else None.

    Linear sigma0 is non-negative and mostly at most 1 (90 % of the values, median below 0.5); sigma0
    in dB is mostly negative (median below -3 dB) within -60..+15 dB. Standard-scaled values (median
    near 0, both signs) or anything else say nothing.
    """
    finite = np.asarray(values, dtype="float64")
    finite = finite[np.isfinite(finite)]
    if finite.size < 16:
        return None
    median = float(np.median(finite))
    if finite.min() >= 0 and np.mean(finite <= 1.0) >= 0.9 and median < 0.5 and np.mean(finite > 0) >= 0.5:
        return LINEAR
    low, high = np.percentile(finite, [5, 95])
    if median < -3 and low > -60 and high < 15:
        return DB
    return None


def conversion(have: str | None, want: str | None) -> str:
    """``"linear->dB"`` or ``"dB->linear"`` when both units are known backscatter units and differ; else ``""``."""
    if have in SAR_UNITS and want in SAR_UNITS and have != want:
        return f"{have}->{want}"
    return ""


def convert(values: np.ndarray, how: str) -> np.ndarray:
    """Apply a :func:`conversion`; linear values at or below 0 have no dB value and become NaN."""
    if not how:
        return values
    if how == f"{LINEAR}->{DB}":
        with np.errstate(divide="ignore", invalid="ignore"):
            out = 10.0 * np.log10(np.where(values > 0, values, np.nan))
        return out.astype("float32", copy=False)
    if how == f"{DB}->{LINEAR}":
        return np.power(np.float32(10.0), values / np.float32(10.0)).astype("float32", copy=False)
    raise ValueError(f"unknown unit conversion {how!r}")


__all__ = [
    "AI4ARCTIC_SAR", "DB", "LINEAR", "POSITIONAL_SAR", "SAR_UNITS", "conversion", "convert", "sar_polarisation",
    "units_from_name", "units_from_text", "units_from_values",
]
