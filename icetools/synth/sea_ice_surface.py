"""What lies on the sea of a synthetic sea-ice scene, and how Sentinel-1 EW sees it (HH/HV in dB).

The truth is a concentration field C in [0, 1], raised to 1 on fast ice along the coast: a smooth
large-scale field (the ice edge, the marginal zone, the pack) with meso-scale structure of a few km
inside it (floe clusters and openings, bands of ice at the edge, polynyas in the pack) that keeps
the large-scale mean, so the analyst's generalised chart misses it and the radar shows it. The
radar sees a binary ice/water field at pixel level whose local ice fraction follows C (a floe texture
thresholded at the local quantile 1 - C), with thin leads in the pack. As in real EW scenes,
brightness alone is not concentration:

- ordinary ice (deformed first-year and older ice) is bright in HH, with pressure ridges, floe-to-floe
  tone and a heavier-tailed texture than water;
- smooth level ice, nilas and new ice, and fast ice are as dark as calm water in HH (about -20 to
  -25 dB); volume scattering keeps their HV a few dB above water's, too little to tell one pixel
  from another under speckle, enough over a neighbourhood;
- wind-roughened open water is as bright as ice in HH (up to about -10 dB) with wind streaks and a
  steeper fall-off with incidence, while its HV stays near the noise floor (about -30 dB).

HV, texture and context (the coast, the pack around a level floe, the open sea beyond the ice edge)
separate them. The share of dark ice, the fast ice and the wind are drawn per seed. On top come an
incidence-angle trend, HV noise-floor banding at the EW sub-swath seams, a slight point-spread blur
and gamma speckle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import shapely
from scipy import ndimage
from scipy.special import ndtr, ndtri

from icetools.synth import fields as F

if TYPE_CHECKING:
    from icetools.synth.sea_ice import SceneLayout

# Independent random streams of one seed (every sea-ice module draws from its own).
(LAYOUT_STREAM, FIELDS_STREAM, SPECKLE_STREAM, CHART_STREAM, CODES_STREAM, PASSIVE_STREAM, SURFACE_STREAM,
 MESO_STREAM) = range(8)

INCIDENCE_NEAR, INCIDENCE_FAR = 19.0, 47.0
INCIDENCE_MID = 33.0
ENL = 4.4  # Sentinel-1 EW GRDM equivalent number of looks
SUBSWATH_SEAMS = (24.5, 29.5, 34.0, 38.5)  # EW1..EW5 boundaries in incidence, for HV noise banding
STRIP_HALO = 2  # rows for the point-spread blur
PSF_SIGMA = 0.6
LEAD_MIN_CONCENTRATION = 0.85
HH_NOISE_FLOOR_DB = -35.0



@dataclass(frozen=True)
class IceBackscatter:
    """One polarisation of one ice surface (dB): its level at mid incidence and what moves it."""

    at_mid: float
    per_kind: float  # per std of the ice-type field (older, rougher: brighter)
    per_tone: float  # per std of the floe-to-floe tone
    per_degree: float  # incidence trend
    ridge: float  # on a pressure ridge (or rafting, weaker, on level ice)


# (HH, HV). Ordinary ice and the brightest wind water overlap in HH; level, new and fast ice and
# calm water overlap in HH; HV keeps ice a little above water. Smooth surfaces fall off with
# incidence faster than rough ones.
ORDINARY_ICE = (IceBackscatter(-13.5, 2.2, 1.0, -0.2, 6.0), IceBackscatter(-23.5, 1.8, 0.7, -0.1, 4.0))
LEVEL_ICE = (IceBackscatter(-23.5, 0.6, 0.5, -0.45, 6.0), IceBackscatter(-28.5, 0.6, 0.4, -0.15, 4.0))
CALM_WATER_HH, CALM_WATER_HV = -24.0, -36.0  # HV below the noise floor, which then dominates
WIND_HH_GAIN, WIND_HV_GAIN = 13.5, 4.5  # added at full roughening
STREAK_HH_DB, STREAK_HV_DB = 1.2, 0.4  # wind-streak amplitude (1 std) at full roughening
LAND_HH, LAND_HV = -9.0, -17.0
ICE_TEXTURE_LOOKS = 6.0  # Gamma texture of ordinary ice (K-distributed with the speckle); water has none
BRIGHT_WATER_ROUGHENING = 0.6  # from here wind water's HH reaches ordinary ice's (about -15 dB and up)

# Where the ambiguous surfaces lie.
DARK_ICE_SHARE = (0.2, 0.35)  # share of the ice area that is level, new or fast ice, drawn per seed
FAST_ICE_CHANCE = 0.6
FAST_ICE_WIDTH = (0.025, 0.07)  # of the scene size, off the coast (wider in bays)
FAST_ICE_EDGE_PX = 3.0
FAST_ICE_DRIFT = (0.5, 0.7)  # fast ice holds where the drift ice beside it is this close (fades in between)
WIND_LEVEL = (0.25, 0.7)  # mean wind (0..1 of the strongest roughening), drawn per seed
RIDGE_PX, RIDGE_HALF_WIDTH = 6.0, 0.2  # ridges are the zero lines of a field of this scale
RIDGES_ON_LEVEL_ICE = 0.15  # a little rafting on level ice, far fewer ridges than on deformed ice
DARK_DETAIL = 0.2  # floe-scale wiggle of the level-ice boundaries

# Meso-scale structure of the drift ice (pixels are 40 m): what an analyst's chart generalises away.
MESO_CLUSTER_PX = (30.0, 12.0)  # Gaussian scales of floe clusters and openings (features of 1-5 km)
MESO_BAND_SPACING_PX = (60.0, 110.0)  # ice bands along the edge, 2.5-4.5 km apart, drawn per seed
MESO_BAND_WEIGHT = 1.3  # of the bands next to the clusters, in open drift ice (fading out in the pack)
MESO_CONTRAST = 1.8  # how far the structure pushes C from its large-scale value (0: none; large: ice or water)


def local_scale(size: int) -> float:
    """Pixel scale of the concentration's finer structure: 90 px at 1024, ~180 px at 10000.

    Growing slowly with the size gives a few dozen chart polygons at 1024 and a few hundred on a
    full 10k scene, as in real charts, rather than the same count at every size.
    """
    return 90.0 * (size / 1024) ** 0.3


@dataclass
class Ambiguity:
    """Where dark ice and wind streaks lie: the fields that make brightness differ from concentration."""

    dark_score: np.ndarray  # low: level/new ice where above dark_threshold
    dark_threshold: float
    fast_ice_width: float  # land-score units (about pixels) off the coast; 0: no fast ice
    ridges: np.ndarray  # mid, std 1 after upsampling; its zero lines are pressure ridges
    streaks: np.ndarray  # mid, std 1; crests along the wind
    wind_angle: float  # radians, where the wind blows to (x along columns, y up)
    dark_ice_target: float
    wind_level: float


@dataclass
class SeaIceFields:
    """The scene's smooth fields at reduced resolution; full-resolution strips are made from them."""

    layout: SceneLayout
    low: F.Upsampler
    mid: F.Upsampler
    concentration: np.ndarray  # low, 0..1: the large-scale drift ice (before fast ice and meso structure)
    drift: np.ndarray  # mid, 0..1: the drift ice with its meso-scale structure (the truth, before fast ice)
    wind: np.ndarray  # low, 0..1 (share of the strongest roughening)
    ice_type: np.ndarray  # low, ~N(0, 1): rough/old ice high, thin/young ice low
    land_score: np.ndarray  # low, pixels (a signed-distance-like score)
    land_detail: np.ndarray  # mid, pixels
    land_threshold: float
    floe_small: np.ndarray  # mid, std 1 after upsampling
    floe_cracks: np.ndarray  # mid, std 1 after upsampling; its zero lines become cracks
    floe_tone: np.ndarray  # mid, ~N(0, 1) brightness of individual floes
    leads: F.Burner  # thin leads, pixel space
    ambiguity: Ambiguity

    @property
    def height(self) -> int:
        return self.layout.height

    @property
    def width(self) -> int:
        return self.layout.width

    def land_score_at(self, rows: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
        return self.low.sample(self.land_score, rows, cols) + self.mid.sample(self.land_detail, rows, cols)

    def land_at(self, rows: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
        return self.land_score_at(rows, cols) > self.land_threshold

    def sea_at(self, rows: np.ndarray, cols: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Concentration (fast ice and meso structure included), land mask and fast-ice weight at the same samples."""
        return self.sea_parts_at(rows, cols)[:3]

    def sea_parts_at(
        self, rows: np.ndarray, cols: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`sea_at` and the large-scale drift concentration (without meso structure or fast ice).

        Fast ice follows the large-scale drift ice beside it, so openings in the pack do not fray its edge.
        """
        score = self.land_score_at(rows, cols)
        broad = np.clip(self.low.sample(self.concentration, rows, cols), 0.0, 1.0)
        fast = fast_ice_weight(score - self.land_threshold, broad, self.ambiguity.fast_ice_width)
        drift = np.clip(self.mid.sample(self.drift, rows, cols), 0.0, 1.0)
        return np.maximum(drift, fast), score > self.land_threshold, fast, broad

    def concentration_at(self, rows: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
        return self.sea_at(rows, cols)[0]


def fast_ice_weight(coast: np.ndarray, drift: np.ndarray, width: float) -> np.ndarray:
    """1 on fast ice, 0 off it: a band of ``width`` off the coast (wider in bays) with a crisp edge.

    ``coast`` is the land score minus its threshold (<= 0 at sea), ``drift`` the concentration of
    the drifting ice. Fast ice holds where the pack presses against it, not beside open water: its
    edge then separates 10/10 from 5/10 or more, which the chart's polygons can follow.
    """
    if width <= 0:
        return np.zeros_like(coast)
    band = np.clip((coast + np.float32(width)) / np.float32(FAST_ICE_EDGE_PX) + np.float32(0.5), 0.0, 1.0)
    low, high = FAST_ICE_DRIFT
    return band * np.clip((drift - np.float32(low)) / np.float32(high - low), 0.0, 1.0)


def _centred_coords(up: F.Upsampler) -> tuple[np.ndarray, np.ndarray]:
    """Full-resolution pixel coordinates (x, y) of the coarse cell centres."""
    f = up.factor
    rows = (np.arange(up.coarse_shape[0]) + 0.5) * f
    cols = (np.arange(up.coarse_shape[1]) + 0.5) * f
    return np.meshgrid(cols, rows)


def build_fields(layout: SceneLayout, seed: int) -> SeaIceFields:
    """Draw the concentration, wind, ice-type and land fields at low resolution, floe textures at 1/4."""
    rng = F.rng_for(seed, FIELDS_STREAM)
    surface_rng = F.rng_for(seed, SURFACE_STREAM)  # what was added later draws here, leaving the rest as it was
    h, w = layout.height, layout.width
    size = min(h, w)
    low = F.Upsampler.for_scene(h, w, F.reduction_factor(size, target=96, most=16))
    mid = F.Upsampler.for_scene(h, w, F.reduction_factor(size, target=64, most=4))
    fl, fm = low.factor, mid.factor
    xs, ys = _centred_coords(low)

    # Concentration: an ice edge across the scene, bent by noise at the scene's scale and at ~10 km.
    phi = rng.uniform(0, 2 * np.pi)
    ramp = ((xs - w / 2) * math.cos(phi) + (ys - h / 2) * math.sin(phi)) / size
    broad = F.smooth_noise(low.coarse_shape, sigma=size / 6 / fl, rng=rng)
    local = F.smooth_noise(low.coarse_shape, sigma=max(local_scale(size) / fl, 1.0), rng=rng)
    score = ramp + 0.22 * broad + 0.1 * local
    water_share, miz_share = rng.uniform(0.15, 0.4), rng.uniform(0.2, 0.35)
    edge, pack = np.quantile(score, [water_share, water_share + miz_share])
    ramp01 = np.clip((score - edge) / max(pack - edge, 1e-6), 0.0, 1.0) ** rng.uniform(0.75, 1.3)
    # The pack is not uniform: regions of 8/10 to 10/10 at ~10 km and at the scene's scale.
    pack_texture = F.multiscale_noise(
        low.coarse_shape, sigmas=(size / 10 / fl, max(local_scale(size) / fl, 1.0)), weights=(0.6, 0.8), rng=rng
    )
    pack_level = np.clip(0.93 + 0.07 * pack_texture, 0.72, 1.0)
    concentration = (ramp01 * pack_level).astype(np.float32)
    edge_angle = math.atan2(-math.cos(phi), -math.sin(phi))  # along the ice edge, y up (rows run down)
    drift = meso_structure(F.rng_for(seed, MESO_STREAM), low, mid, concentration, edge_angle=edge_angle)

    # Wind: a smooth field over part of the scene, with ~5 km cells; it roughens open water only.
    wind_level = float(surface_rng.uniform(*WIND_LEVEL))
    cells = F.smooth_noise(low.coarse_shape, sigma=max(60.0 / fl, 1.0), rng=surface_rng)
    wind_noise = F.smooth_noise(low.coarse_shape, sigma=size / 5 / fl, rng=rng)
    wind = np.clip(wind_level + 0.55 * wind_noise + 0.15 * cells, 0, 1).astype(np.float32)

    # Ice type: regional roughness/age, younger (darker) ice towards the ice edge.
    regional = F.multiscale_noise(low.coarse_shape, sigmas=(size / 10 / fl, max(0.45 * local_scale(size) / fl, 1.0)), weights=(1.0, 0.5), rng=rng)
    ice_type = F.standardize(0.8 * regional + 0.6 * F.standardize(concentration))

    # Land: a coast around a corner or an edge, self-similar (each octave moves it in proportion to its scale).
    anchors = [(0, 0), (w, 0), (0, h), (w, h), (w / 2, 0), (w / 2, h), (0, h / 2), (w, h / 2)]
    ax, ay = anchors[int(rng.integers(len(anchors)))]
    land_score = (
        -np.hypot(xs - ax, ys - ay)
        + 0.12 * size * F.smooth_noise(low.coarse_shape, sigma=size / 8 / fl, rng=rng)
        + 1.2 * 60.0 * F.smooth_noise(low.coarse_shape, sigma=max(60.0 / fl, 1.0), rng=rng)
    ).astype(np.float32)
    land_threshold = float(np.quantile(land_score, 1.0 - rng.uniform(0.05, 0.14)))
    land_detail = (
        1.0 * 24.0 * F.smooth_noise(mid.coarse_shape, sigma=max(24.0 / fm, 0.7), rng=rng)
        + 1.0 * 6.0 * F.smooth_noise(mid.coarse_shape, sigma=max(6.0 / fm, 0.7), rng=rng)
    ).astype(np.float32)

    # Floe textures: small floes in the marginal zone, a crack network between big floes in the pack.
    floe_small = F.multiscale_noise(mid.coarse_shape, sigmas=(max(5.0 / fm, 0.8), 0.7), weights=(0.85, 0.5), rng=rng)
    floe_cracks = F.multiscale_noise(mid.coarse_shape, sigmas=(max(25.0 / fm, 1.0), max(8.0 / fm, 0.8)), weights=(1.0, 0.35), rng=rng)
    floe_small /= np.float32(F.upsampled_std(mid, floe_small))
    floe_cracks /= np.float32(F.upsampled_std(mid, floe_cracks))
    floe_tone = F.smooth_noise(mid.coarse_shape, sigma=max(10.0 / fm, 0.8), rng=rng)

    leads = _draw_leads(rng, h, w)
    ambiguity = _draw_ambiguity(
        surface_rng, low, mid, concentration=concentration, ice_type=ice_type, coast=land_score - land_threshold,
        wind_level=wind_level,
    )
    return SeaIceFields(
        layout=layout, low=low, mid=mid, concentration=concentration, drift=drift, wind=wind, ice_type=ice_type,
        land_score=land_score, land_detail=land_detail, land_threshold=land_threshold, floe_small=floe_small,
        floe_cracks=floe_cracks, floe_tone=floe_tone, leads=leads, ambiguity=ambiguity,
    )


def meso_structure(
    rng: np.random.Generator, low: F.Upsampler, mid: F.Upsampler, concentration: np.ndarray, *, edge_angle: float
) -> np.ndarray:
    """The drift ice's concentration on the mid grid: the large-scale field with floe clusters, bands, openings.

    A standard-normal structure S pushes C through C' = Phi(Phi^-1(C) sqrt(1 + k^2 var S) + k S): the
    average of C' over the structure is C again (E Phi(a + b N) = Phi(a / sqrt(1 + b^2))), so the
    chart coded from a region's mean still says its large-scale concentration, while C' swings
    most in the marginal zone, rarely opens the pack (polynyas) and leaves open water and 10/10 as
    they are. Bands of ice run along the edge in open drift ice and fade out towards the pack.
    """
    fm = mid.factor
    clusters = F.multiscale_noise(
        mid.coarse_shape, sigmas=tuple(max(px / fm, 0.7) for px in MESO_CLUSTER_PX), weights=(1.0, 0.5), rng=rng
    )
    spacing = rng.uniform(*MESO_BAND_SPACING_PX) / fm
    bands = F.streak_noise(mid.coarse_shape, angle=edge_angle, spacing=spacing, length=4 * spacing, rng=rng)
    rows = np.minimum((np.arange(mid.coarse_shape[0]) + 0.5) * fm - 0.5, mid.full_shape[0] - 1)
    cols = np.minimum((np.arange(mid.coarse_shape[1]) + 0.5) * fm - 0.5, mid.full_shape[1] - 1)
    broad = np.clip(low.sample(concentration, rows, cols), 0.0, 1.0)
    band_weight = np.float32(MESO_BAND_WEIGHT) * np.clip(1.0 - broad / 0.8, 0.0, 1.0)
    k = np.float32(MESO_CONTRAST)
    spread = np.sqrt(1.0 + k * k * (1.0 + band_weight * band_weight))
    inside = (broad > 0.0) & (broad < 1.0)
    z = ndtri(np.clip(broad, 1e-6, 1.0 - 1e-6)) * spread + k * (clusters + band_weight * bands)
    return np.where(inside, ndtr(z), broad).astype(np.float32)


def _draw_ambiguity(
    rng: np.random.Generator,
    low: F.Upsampler,
    mid: F.Upsampler,
    *,
    concentration: np.ndarray,
    ice_type: np.ndarray,
    coast: np.ndarray,
    wind_level: float,
) -> Ambiguity:
    """Fast ice along the coast, level and new ice in the pack and at the edge, ridges, wind streaks.

    ``coast`` is the land score minus its threshold (<= 0 at sea); all fields on the low grid.
    """
    size = min(low.full_shape)
    fast_width = 0.0
    if rng.random() < FAST_ICE_CHANCE:
        # Never narrower than an analyst's smallest polygon, or the chart could not draw it.
        fast_width = max(rng.uniform(*FAST_ICE_WIDTH) * size, 0.5 * local_scale(size))
    target = float(rng.uniform(*DARK_ICE_SHARE))
    # Level floes and refrozen polynyas at a few km, and young ice where the ice type says so.
    patches = F.smooth_noise(low.coarse_shape, sigma=max(0.5 * local_scale(size) / low.factor, 1.0), rng=rng)
    dark_score = F.standardize(0.8 * patches - 0.55 * ice_type)

    # The threshold, on the coarse grid, that makes level + fast ice about ``target`` of the ice area.
    sea = coast <= 0
    drift = np.clip(concentration, 0.0, 1.0)
    fast = fast_ice_weight(coast, drift, fast_width) * sea
    ice = np.maximum(drift, fast) * sea
    pack = ice * (1.0 - fast)
    pack_share = np.clip((target * ice.sum() - fast.sum()) / max(float(pack.sum()), 1e-9), 0.05, 0.6)
    dark_threshold = F.weighted_quantile(dark_score, pack, 1.0 - pack_share)

    ridges = F.smooth_noise(mid.coarse_shape, sigma=max(RIDGE_PX / mid.factor, 0.7), rng=rng)
    ridges /= np.float32(F.upsampled_std(mid, ridges))
    wind_angle = float(rng.uniform(0, 2 * np.pi))
    spacing = rng.uniform(25.0, 50.0) / mid.factor  # 1-2 km between streaks
    streaks = F.streak_noise(mid.coarse_shape, angle=wind_angle, spacing=spacing, length=8 * spacing, rng=rng)
    return Ambiguity(
        dark_score=dark_score, dark_threshold=dark_threshold, fast_ice_width=fast_width, ridges=ridges,
        streaks=streaks, wind_angle=wind_angle, dark_ice_target=target, wind_level=wind_level,
    )


def _draw_leads(rng: np.random.Generator, h: int, w: int) -> F.Burner:
    """A few long, thin, gently curving leads (pixel-space polygons); they open only in the pack."""
    size = min(h, w)
    count = max(2, int(round(rng.uniform(3, 6) * h * w / 1024**2)))
    leads = []
    for _ in range(count):
        half = rng.uniform(0.15, 0.45) * min(size, 2500)
        curve = F.meander(
            rng, centre=(rng.uniform(0, w), rng.uniform(0, h)), angle=rng.uniform(0, np.pi), half_length=half,
            amplitude=0.08 * half, shortest_wave=half / 2,
        )
        leads.append((shapely.LineString(curve).buffer(rng.uniform(0.6, 1.8), quad_segs=2), 1))
    return F.Burner(leads)


_NDTRI_TABLE_SIZE = 4097
_NDTRI_TABLE = ndtri(np.clip(1.0 - np.linspace(0.0, 1.0, _NDTRI_TABLE_SIZE), 1e-9, 1 - 1e-9)).astype(np.float32)
_NDTRI_TABLE[0], _NDTRI_TABLE[-1] = np.inf, -np.inf  # C = 0: never ice; C = 1: always ice


def _ice_threshold(concentration: np.ndarray) -> np.ndarray:
    """Standard-normal quantile at 1 - C, by table lookup (ndtri per pixel costs seconds per strip at 10k)."""
    index = np.rint(concentration * (_NDTRI_TABLE_SIZE - 1)).astype(np.int32)
    return _NDTRI_TABLE[index]


_CRACK_STEP = 1e-3
_CRACK_TABLE = ndtri(np.clip(2.0 * ndtr(np.arange(0.0, 6.0, _CRACK_STEP) + _CRACK_STEP / 2) - 1.0, 1e-12, 1 - 1e-12))
_CRACK_TABLE = _CRACK_TABLE.astype(np.float32)


def _crack_normal(field: np.ndarray) -> np.ndarray:
    """|N| mapped back to a standard normal: its lowest values trace the zero lines of N (a crack network).

    For N standard normal, 2 Phi(|N|) - 1 is uniform, so ndtri of it is standard normal again.
    """
    index = np.minimum(np.abs(field) * np.float32(1 / _CRACK_STEP), np.float32(_CRACK_TABLE.size - 1))
    return _CRACK_TABLE[index.astype(np.int32)]


def noise_floor_db(incidence: np.ndarray) -> np.ndarray:
    """HV noise-equivalent sigma0 residual: scalloped within each EW sub-swath, so seams show as bands."""
    edges = np.array((INCIDENCE_NEAR,) + SUBSWATH_SEAMS + (INCIDENCE_FAR,))
    k = np.clip(np.searchsorted(edges, incidence) - 1, 0, len(edges) - 2)
    frac = (incidence - edges[k]) / (edges[k + 1] - edges[k])
    return (-32.8 + 1.4 * (2 * frac - 1) ** 2 + 0.3 * (k % 2)).astype(np.float32)


@dataclass
class Surface:
    """What lies on each pixel of a strip (halo rows included), before the radar sees it."""

    concentration: np.ndarray  # with fast ice; defined on land too
    land: np.ndarray
    fast: np.ndarray  # bool
    ice: np.ndarray
    dark: np.ndarray  # level, new or fast ice: as dark as calm water in HH
    kind: np.ndarray
    tone: np.ndarray
    ridge: np.ndarray  # 0..1
    roughening: np.ndarray  # 0..1 share of the strongest wind roughening of open water
    streaks: np.ndarray


def surface_rows(fields: SeaIceFields, a0: int, a1: int) -> Surface:
    """The surface of rows a0..a1-1 (masks and the smooth fields behind the backscatter)."""
    low, mid, amb = fields.low, fields.mid, fields.ambiguity
    conc, land, fast_weight, broad = fields.sea_parts_at(np.arange(a0, a1))
    fast = fast_weight >= 0.5

    # Both textures are standard normal per pixel and independent, so their mix with weights
    # sqrt(1 - C) and sqrt(C) is too: thresholding it at the (1 - C) quantile leaves an ice share C.
    small = mid.rows(fields.floe_small, a0, a1)
    cracks = _crack_normal(mid.rows(fields.floe_cracks, a0, a1))
    ice = np.sqrt(1.0 - conc) * small + np.sqrt(conc) * cracks > _ice_threshold(conc)
    del cracks
    in_lead = fields.leads.strip(a0, a1 - a0, fields.width, dtype="uint8").astype(bool)
    ice &= ~(in_lead & (conc >= LEAD_MIN_CONCENTRATION) & ~fast)  # fast ice does not open

    kind = low.rows(fields.ice_type, a0, a1)
    dark = ice & ((low.rows(amb.dark_score, a0, a1) + np.float32(DARK_DETAIL) * small > amb.dark_threshold) | fast)
    del small
    ridge = np.clip(1.0 - np.abs(mid.rows(amb.ridges, a0, a1)) / np.float32(RIDGE_HALF_WIDTH), 0.0, 1.0)
    ridge *= np.clip(0.5 + 0.5 * kind, 0.0, 1.0) * np.where(dark, np.float32(RIDGES_ON_LEVEL_ICE), np.float32(1.0))
    # The ice around damps the waves (short fetch): openings inside the pack stay calmer than the open sea.
    roughening = low.rows(fields.wind, a0, a1) * np.clip(1.0 - np.maximum(conc, broad) / 0.6, 0.0, 1.0)
    return Surface(
        concentration=conc, land=land, fast=fast, ice=ice, dark=dark, kind=kind, tone=mid.rows(fields.floe_tone, a0, a1),
        ridge=ridge, roughening=roughening, streaks=mid.rows(amb.streaks, a0, a1),
    )


def backscatter_db(s: Surface, dinc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free HH and HV (dB) of each surface at incidence INCIDENCE_MID + dinc.

    Each surface is computed on its own pixels only: a 10k strip holds two bands, not six.
    Rough water falls off with incidence less steeply than calm water.
    """
    dinc = np.broadcast_to(dinc, s.ice.shape)
    hh, hv = np.empty(s.ice.shape, dtype=np.float32), np.empty(s.ice.shape, dtype=np.float32)
    water = ~s.ice
    r, streaks, d = s.roughening[water], s.streaks[water], dinc[water]
    hh[water] = CALM_WATER_HH + (WIND_HH_GAIN + STREAK_HH_DB * streaks) * r - (0.6 - 0.25 * r) * d
    hv[water] = CALM_WATER_HV + (WIND_HV_GAIN + STREAK_HV_DB * streaks) * r - 0.25 * d
    for mask, models in ((s.ice & ~s.dark, ORDINARY_ICE), (s.dark, LEVEL_ICE)):
        kind, tone, d, ridge = s.kind[mask], s.tone[mask], dinc[mask], s.ridge[mask]
        for band, m in zip((hh, hv), models):
            band[mask] = m.at_mid + m.per_kind * kind + m.per_tone * tone + m.per_degree * d + m.ridge * ridge
    hh[s.land], hv[s.land] = LAND_HH, LAND_HV
    return hh, hv


@dataclass
class Strip:
    """One strip's bands and the masks behind them (the masks are for charts and tests, not written)."""

    hh: np.ndarray
    hv: np.ndarray
    truth: np.ndarray  # NaN on land
    concentration: np.ndarray  # the truth, defined on land too
    land: np.ndarray
    ice: np.ndarray
    ice_type: np.ndarray
    roughening: np.ndarray  # 0..1 share of the strongest wind roughening of open water
    dark: np.ndarray  # level, new or fast ice (HH as dark as calm water)
    fast: np.ndarray


def render_strip(fields: SeaIceFields, row0: int, row1: int, *, seed: int, index: int) -> Strip:
    """Rows row0..row1-1 of HH/HV (dB, NaN on land), truth and masks; speckle seeded by (seed, strip)."""
    lay = fields.layout
    s = surface_rows(fields, row0 - STRIP_HALO, row1 + STRIP_HALO)
    inc = lay.incidence(np.arange(lay.width) + 0.5).astype(np.float32)[None, :]
    hh, hv = backscatter_db(s, inc - np.float32(INCIDENCE_MID))

    rng = F.rng_for(seed, SPECKLE_STREAM, index)
    textured = s.ice & ~s.dark
    texture = F.gamma_speckle(rng, (int(textured.sum()),), ICE_TEXTURE_LOOKS)  # the same scatterers in both bands
    core = slice(STRIP_HALO, STRIP_HALO + (row1 - row0))
    land = s.land[core]
    out = []
    for band, floor_db in ((hh, np.full_like(inc, HH_NOISE_FLOOR_DB)), (hv, noise_floor_db(inc))):
        power = F.db_to_linear(band)
        power[textured] *= texture
        power = ndimage.gaussian_filter(power, PSF_SIGMA, mode="nearest", truncate=3.0)[core]
        power += F.db_to_linear(floor_db)
        power *= F.gamma_speckle(rng, power.shape, ENL)
        db = F.linear_to_db(power)
        db[land] = np.nan
        out.append(db)
    conc = s.concentration[core]
    return Strip(
        hh=out[0], hv=out[1], truth=np.where(land, np.float32(np.nan), conc).astype(np.float32), concentration=conc,
        land=land, ice=s.ice[core], ice_type=s.kind[core], roughening=s.roughening[core], dark=s.dark[core],
        fast=s.fast[core],
    )


class AmbiguityTally:
    """Pixel counts of the ambiguous surfaces, strip by strip: what a scene holds, for its attributes."""

    def __init__(self) -> None:
        self.ice = self.dark = self.fast = self.water = self.bright = 0

    def add(self, strip: Strip) -> None:
        sea = ~strip.land
        ice, water = strip.ice & sea, ~strip.ice & sea
        self.ice += int(ice.sum())
        self.dark += int((strip.dark & ice).sum())
        self.fast += int((strip.fast & ice).sum())
        self.water += int(water.sum())
        self.bright += int((water & (strip.roughening >= BRIGHT_WATER_ROUGHENING)).sum())

    def fractions(self) -> dict[str, float]:
        """Shares of the ice that is dark (level, new or fast) and fast, and of the open water that is bright."""
        return {
            "dark_ice_fraction": self.dark / max(self.ice, 1),
            "fast_ice_fraction": self.fast / max(self.ice, 1),
            "bright_water_fraction": self.bright / max(self.water, 1),
        }
