"""Synthetic scenes with known truth: every test, example and benchmark of icetools runs on them.

- :func:`make_sea_ice_scene`: Sentinel-1 EW HH/HV in the AI4Arctic raw layout (or a GeoTIFF), an
  analyst-like SIGRID-3 chart and the true pixel concentration.
- :func:`make_grounding_line_scene`: a DInSAR double-difference interferogram of a tidal flexure
  zone and its true grounding lines.
- :func:`make_landcover_scene`: an ultra-high-resolution RGB image and its class raster.

The same seed gives the same files; memory is bounded by a strip of rows at any size.
"""

from __future__ import annotations

from icetools.synth.grounding_line import make_grounding_line_scene
from icetools.synth.landcover import CLASS_NAMES, make_landcover_scene
from icetools.synth.sea_ice import make_sea_ice_scene

__all__ = ["CLASS_NAMES", "make_grounding_line_scene", "make_landcover_scene", "make_sea_ice_scene"]
