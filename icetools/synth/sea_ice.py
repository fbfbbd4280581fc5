"""Synthetic Sentinel-1 EW sea-ice scenes (AI4Arctic raw netCDF or GeoTIFF) with a known concentration.

The truth is a smooth concentration field C in [0, 1]. The radar sees a binary ice/water field
at pixel level whose local ice fraction follows C (a floe texture thresholded at the local
quantile 1 - C), plus thin leads in the pack, land in a corner, wind-roughened water as bright as
ice in HH (the classic ambiguity, resolved by HV and context), an incidence-angle trend, HV
noise-floor banding at the EW sub-swath seams, a slight point-spread blur and gamma speckle.
The ice chart is drawn the way an analyst draws one: regions where the concentration changes,
each fairly homogeneous, coded with SIGRID-3 from the region's mean true concentration.

Outputs: the scene (``.nc``: AI4Arctic raw layout with tie points; ``.tif``: EPSG:3413 affine),
``<stem>_chart.gpkg`` (layer "chart") and ``<stem>_truth.tif`` (band "SIC", NaN on land).
Memory is bounded by a strip of rows: a full 10000-row scene peaks at about 1 GB.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from scipy import ndimage
from scipy.special import ndtr, ndtri

from icetools.errors import ConfigError
from icetools.grid import WGS84, Grid, gcps_from_tie_points
from icetools.io.atomic import atomic_path, check_output
from icetools.io.raster import iter_strips, open_raster_writer
from icetools.sigrid import CODE_FIELDS, encode_ct, format_polygon_codes
from icetools.synth import fields as F

if TYPE_CHECKING:
    import geopandas as gpd

Progress = Callable[[float], None]

PIXEL_M = 40.0
INCIDENCE_NEAR, INCIDENCE_FAR = 19.0, 47.0
INCIDENCE_MID = 33.0
ENL = 4.4  # Sentinel-1 EW GRDM equivalent number of looks
SUBSWATH_SEAMS = (24.5, 29.5, 34.0, 38.5)  # EW1..EW5 boundaries in incidence, for HV noise banding
TIE_POINTS_PER_AXIS = 21
AMSR_BLOCK = 50
STRIP_HALO = 2  # rows for the point-spread blur
PSF_SIGMA = 0.6
LEAD_MIN_CONCENTRATION = 0.85
MIN_SIZE = 64
EPSG_3413 = CRS.from_epsg(3413)
CIS_LCC = CRS.from_proj4(
    "+proj=lcc +lat_0=40 +lon_0=-100 +lat_1=49 +lat_2=77 +x_0=0 +y_0=0 +datum=WGS84 +units=m +no_defs"
)
# Concentration classes an analyst separates; polygons never straddle a class boundary by much.
CHART_BINS = (0.05, 0.2, 0.4, 0.6, 0.75, 0.87, 0.95)
HEADER_FIELDS = CODE_FIELDS + ("POLY_TYPE",)

# Independent random streams of one seed.
_LAYOUT, _FIELDS, _SPECKLE, _CHART, _CODES, _PASSIVE = range(6)


@dataclass(frozen=True)
class SceneLayout:
    """Where and when the scene is, and its shape (size rows, ~4% more columns, like AI4Arctic's 9985 x 10372)."""

    height: int
    width: int
    ice_service: str
    centre_lon: float
    centre_lat: float
    heading_offset_deg: float
    descending: bool
    start: dt.datetime

    @classmethod
    def draw(cls, size: int, seed: int) -> "SceneLayout":
        rng = F.rng_for(seed, _LAYOUT)
        service = "cis" if rng.random() < 0.4 else "dmi"
        if service == "cis":  # Baffin Bay / Davis Strait
            lat, lon = rng.uniform(66.0, 75.0), rng.uniform(-72.0, -56.0)
        else:  # East Greenland
            lat, lon = rng.uniform(72.0, 78.0), rng.uniform(-25.0, 0.0)
        start = dt.datetime(2018, 1, 1) + dt.timedelta(seconds=int(rng.integers(0, 3 * 365 * 86400)))
        return cls(
            height=int(size), width=int(size) + int(size) // 25, ice_service=service, centre_lon=float(lon),
            centre_lat=float(lat), heading_offset_deg=float(rng.uniform(8.0, 22.0)), descending=bool(rng.random() < 0.5),
            start=start,
        )

    @property
    def chart_crs(self) -> CRS:
        return CIS_LCC if self.ice_service == "cis" else EPSG_3413

    def incidence(self, cols: np.ndarray) -> np.ndarray:
        """Incidence angle (degrees) at GDAL pixel x positions: near range at column 0."""
        return (INCIDENCE_NEAR + (INCIDENCE_FAR - INCIDENCE_NEAR) * np.asarray(cols, dtype=np.float64) / self.width)

    def ids(self, seed: int) -> dict[str, str]:
        """AI4Arctic-style identifiers (scene_id, original_id, icechart_id), so tools that parse them work."""
        t0 = self.start
        t1 = t0 + dt.timedelta(seconds=60)
        stamp = f"{t0:%Y%m%dT%H%M%S}"
        rng = F.rng_for(seed, _LAYOUT, 1)
        mission = "S1A" if rng.random() < 0.6 else "S1B"
        original = (
            f"{mission}_EW_GRDM_1SDH_{stamp}_{t1:%Y%m%dT%H%M%S}_{int(rng.integers(1, 40000)):06d}_"
            f"{int(rng.integers(0, 0xFFFFFF)):06X}_{int(rng.integers(0, 0xFFFF)):04X}"
        )
        chart_time = t0.replace(hour=18 if self.ice_service == "cis" else 12, minute=0, second=0)
        return {
            "scene_id": f"{stamp}_{self.ice_service}_prep",
            "original_id": original,
            "icechart_id": f"{self.ice_service}_{chart_time:%Y%m%dT%H%MZ}_synth",
        }

    # --- geolocation -------------------------------------------------------------------------
    def pixel_to_map(self, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Radar-like geometry in EPSG:3413: rows along a curved ground track, columns to the right of it.

        Ground range is stretched slightly towards far range and the track bends, so the mapping
        is not affine (as in real SAR geometry); the tie points sample it.
        """
        to_map = Transformer.from_crs(WGS84, EPSG_3413, always_xy=True)
        x0, y0 = to_map.transform(self.centre_lon, self.centre_lat)
        delta = math.radians(self.centre_lon + 45.0)  # EPSG:3413 central meridian is -45
        towards_pole = np.array([-math.sin(delta), math.cos(delta)])
        turn = math.radians(-self.heading_offset_deg)
        along = np.array(
            [towards_pole[0] * math.cos(turn) - towards_pole[1] * math.sin(turn),
             towards_pole[0] * math.sin(turn) + towards_pole[1] * math.cos(turn)]
        )
        if self.descending:
            along = -along
        across = np.array([along[1], -along[0]])  # right-looking radar
        a = (np.asarray(rows, dtype=np.float64) - self.height / 2) * PIXEL_M
        r = (np.asarray(cols, dtype=np.float64) - self.width / 2) * PIXEL_M
        span_a, span_r = self.height * PIXEL_M, self.width * PIXEL_M
        r = r * (1.0 + 0.004 * r / span_r)
        bend = 0.003 * a**2 / span_a
        x = x0 + a * along[0] + (r + bend) * across[0]
        y = y0 + a * along[1] + (r + bend) * across[1]
        return x, y

    def tie_points(self) -> dict[str, np.ndarray]:
        """21 x 21 tie points in the AI4Arctic layout (line-major, at pixel centres)."""
        lines = np.round(np.linspace(0, self.height - 1, TIE_POINTS_PER_AXIS))
        samples = np.round(np.linspace(0, self.width - 1, TIE_POINTS_PER_AXIS))
        ll, ss = np.meshgrid(lines, samples, indexing="ij")
        x, y = self.pixel_to_map(ss.ravel() + 0.5, ll.ravel() + 0.5)
        lon, lat = Transformer.from_crs(EPSG_3413, WGS84, always_xy=True).transform(x, y)
        return {
            "sar_grid_line": ll.ravel().astype(np.float64),
            "sar_grid_sample": ss.ravel().astype(np.float64),
            "sar_grid_latitude": np.asarray(lat, dtype=np.float64),
            "sar_grid_longitude": np.asarray(lon, dtype=np.float64),
            "sar_grid_incidenceangle": self.incidence(ss.ravel() + 0.5),
            "sar_grid_height": np.zeros(ll.size, dtype=np.float64),
        }

    def gcp_grid(self, ties: dict[str, np.ndarray]) -> Grid:
        gcps = gcps_from_tie_points(
            ties["sar_grid_line"], ties["sar_grid_sample"], ties["sar_grid_latitude"], ties["sar_grid_longitude"]
        )
        return Grid(self.height, self.width, gcps=gcps, gcp_crs=WGS84)

    def affine_grid(self) -> Grid:
        """North-up EPSG:3413 grid with 40 m pixels, centred on the scene centre."""
        x0, y0 = Transformer.from_crs(WGS84, EPSG_3413, always_xy=True).transform(self.centre_lon, self.centre_lat)
        left = round(x0 - self.width / 2 * PIXEL_M)
        top = round(y0 + self.height / 2 * PIXEL_M)
        transform = Affine(PIXEL_M, 0.0, float(left), 0.0, -PIXEL_M, float(top))
        return Grid(self.height, self.width, crs=EPSG_3413, transform=transform)


@dataclass
class SeaIceFields:
    """The scene's smooth fields at reduced resolution; full-resolution strips are made from them."""

    layout: SceneLayout
    low: F.Upsampler
    mid: F.Upsampler
    concentration: np.ndarray  # low, 0..1
    wind: np.ndarray  # low, 0..1 (share of the strongest roughening)
    ice_type: np.ndarray  # low, ~N(0, 1): rough/old ice high, thin/young ice low
    land_score: np.ndarray  # low, pixels (a signed-distance-like score)
    land_detail: np.ndarray  # mid, pixels
    land_threshold: float
    floe_small: np.ndarray  # mid, std 1 after upsampling
    floe_cracks: np.ndarray  # mid, std 1 after upsampling; its zero lines become cracks
    floe_tone: np.ndarray  # mid, ~N(0, 1) brightness of individual floes
    leads: F.Burner  # thin leads, pixel space

    @property
    def height(self) -> int:
        return self.layout.height

    @property
    def width(self) -> int:
        return self.layout.width

    def land_at(self, rows: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
        score = self.low.sample(self.land_score, rows, cols) + self.mid.sample(self.land_detail, rows, cols)
        return score > self.land_threshold

    def concentration_at(self, rows: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
        return np.clip(self.low.sample(self.concentration, rows, cols), 0.0, 1.0)


def local_scale(size: int) -> float:
    """Pixel scale of the concentration's finer structure: 90 px at 1024, ~280 px at 10000.

    Growing with the square root of the size gives a few dozen chart polygons at 1024 and a few
    hundred on a full 10k scene, as in real charts, rather than the same count at every size.
    """
    return 90.0 * (size / 1024) ** 0.3


def _centred_coords(up: F.Upsampler) -> tuple[np.ndarray, np.ndarray]:
    """Full-resolution pixel coordinates (x, y) of the coarse cell centres."""
    f = up.factor
    rows = (np.arange(up.coarse_shape[0]) + 0.5) * f
    cols = (np.arange(up.coarse_shape[1]) + 0.5) * f
    return np.meshgrid(cols, rows)


def build_fields(layout: SceneLayout, seed: int) -> SeaIceFields:
    """Draw the concentration, wind, ice-type and land fields at low resolution, floe textures at 1/4."""
    rng = F.rng_for(seed, _FIELDS)
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

    # Wind: a smooth field over part of the scene; it roughens open water only.
    wind = np.clip(0.45 + 0.55 * F.smooth_noise(low.coarse_shape, sigma=size / 5 / fl, rng=rng), 0, 1).astype(np.float32)

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
    return SeaIceFields(
        layout=layout, low=low, mid=mid, concentration=concentration, wind=wind, ice_type=ice_type,
        land_score=land_score, land_detail=land_detail, land_threshold=land_threshold, floe_small=floe_small,
        floe_cracks=floe_cracks, floe_tone=floe_tone, leads=leads,
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


def _noise_floor_db(incidence: np.ndarray) -> np.ndarray:
    """HV noise-equivalent sigma0 residual: scalloped within each EW sub-swath, so seams show as bands."""
    edges = np.array((INCIDENCE_NEAR,) + SUBSWATH_SEAMS + (INCIDENCE_FAR,))
    k = np.clip(np.searchsorted(edges, incidence) - 1, 0, len(edges) - 2)
    frac = (incidence - edges[k]) / (edges[k + 1] - edges[k])
    return (-32.8 + 1.4 * (2 * frac - 1) ** 2 + 0.3 * (k % 2)).astype(np.float32)


@dataclass
class Strip:
    """One strip's bands and the masks behind them (the masks are for charts and tests, not written)."""

    hh: np.ndarray
    hv: np.ndarray
    truth: np.ndarray
    land: np.ndarray
    ice: np.ndarray
    ice_type: np.ndarray
    roughening: np.ndarray  # 0..1 share of the strongest wind roughening of open water


def render_strip(fields: SeaIceFields, row0: int, row1: int, *, seed: int, index: int) -> Strip:
    """Rows row0..row1-1 of HH/HV (dB, NaN on land), truth and masks; speckle seeded by (seed, strip)."""
    lay, low, mid = fields.layout, fields.low, fields.mid
    a0, a1 = row0 - STRIP_HALO, row1 + STRIP_HALO
    rows = np.arange(a0, a1)
    conc = fields.concentration_at(rows)
    land = fields.land_at(rows)

    # Both textures are standard normal per pixel and independent, so their mix with weights
    # sqrt(1 - C) and sqrt(C) is too: thresholding it at the (1 - C) quantile leaves an ice share C.
    cracks = _crack_normal(mid.rows(fields.floe_cracks, a0, a1))
    texture = np.sqrt(1.0 - conc) * mid.rows(fields.floe_small, a0, a1) + np.sqrt(conc) * cracks
    ice = texture > _ice_threshold(conc)
    del texture, cracks
    in_lead = fields.leads.strip(a0, a1 - a0, lay.width, dtype="uint8").astype(bool)
    ice &= ~(in_lead & (conc >= LEAD_MIN_CONCENTRATION))

    inc = lay.incidence(np.arange(lay.width) + 0.5).astype(np.float32)[None, :]
    dinc = inc - np.float32(INCIDENCE_MID)
    kind = low.rows(fields.ice_type, a0, a1)
    tone = mid.rows(fields.floe_tone, a0, a1)
    roughening = low.rows(fields.wind, a0, a1) * np.clip(1.0 - conc / 0.6, 0.0, 1.0)

    # Rough water is bright (as bright as ice) and falls off with incidence less steeply than calm water.
    hh = np.where(
        ice, -14.0 + 2.5 * kind + 1.0 * tone - 0.2 * dinc, -24.0 + 10.5 * roughening - (0.6 - 0.25 * roughening) * dinc
    )
    hv = np.where(ice, -24.0 + 2.0 * kind + 0.7 * tone - 0.1 * dinc, -36.0 + 4.0 * roughening - 0.25 * dinc)
    hh = np.where(land, np.float32(-9.0), hh).astype(np.float32)
    hv = np.where(land, np.float32(-17.0), hv).astype(np.float32)
    del tone

    rng = F.rng_for(seed, _SPECKLE, index)
    core = slice(STRIP_HALO, STRIP_HALO + (row1 - row0))
    out = []
    for band, floor_db in ((hh, np.full_like(inc, -35.0)), (hv, _noise_floor_db(inc))):
        power = ndimage.gaussian_filter(F.db_to_linear(band), PSF_SIGMA, mode="nearest", truncate=3.0)[core]
        power += F.db_to_linear(floor_db)
        power *= F.gamma_speckle(rng, power.shape, ENL)
        out.append(F.linear_to_db(power))
    land_core = land[core]
    for band in out:
        band[land_core] = np.nan
    truth = np.where(land_core, np.float32(np.nan), conc[core]).astype(np.float32)
    return Strip(
        hh=out[0], hv=out[1], truth=truth, land=land_core, ice=ice[core], ice_type=kind[core], roughening=roughening[core]
    )


# --- the analyst's chart -------------------------------------------------------------------------


@dataclass
class ChartRegion:
    """One chart polygon in pixel space, before it has codes."""

    poly_id: int
    geometry: shapely.Geometry  # pixel space (x = column, y = row)
    is_land: bool


def _merge_small_regions(labels: np.ndarray, region_class: np.ndarray, min_cells: int, *, land_class: int) -> np.ndarray:
    """Absorb regions smaller than ``min_cells`` into a neighbour, as an analyst would.

    A sea region joins the neighbouring sea region of the nearest concentration class (the
    longest shared boundary breaks ties), so merged polygons stay homogeneous; land specks join
    the neighbour they share most boundary with. Smallest first, each inside its bounding box,
    so thousands of specks cost little. ``region_class`` (class per label) is updated in place.
    """
    cross = ndimage.generate_binary_structure(2, 1)
    areas = np.bincount(labels.ravel())
    boxes = {i + 1: s for i, s in enumerate(ndimage.find_objects(labels)) if s is not None}
    height, width = labels.shape
    while True:
        changed = False
        for region in np.argsort(areas, kind="stable"):
            if areas[region] >= min_cells:
                break
            if region == 0 or areas[region] == 0:
                continue
            rows, cols = boxes[region]
            r0, r1 = max(rows.start - 1, 0), min(rows.stop + 1, height)
            c0, c1 = max(cols.start - 1, 0), min(cols.stop + 1, width)
            window = labels[r0:r1, c0:c1]
            mask = window == region
            neighbours = window[ndimage.binary_dilation(mask, structure=cross) & ~mask]
            if neighbours.size == 0:
                continue  # the only region in the scene stays
            values, counts = np.unique(neighbours, return_counts=True)
            own = region_class[region]
            if own != land_class and (region_class[values] != land_class).any():
                sea = region_class[values] != land_class
                values, counts = values[sea], counts[sea]
                gap = np.abs(region_class[values].astype(np.int64) - int(own))
                counts = np.where(gap == gap.min(), counts, -1)
            target = int(values[counts.argmax()])
            region_class[region] = region_class[target]
            window[mask] = target
            areas[target] += areas[region]
            areas[region] = 0
            tr, tc = boxes[target]
            boxes[target] = (slice(min(tr.start, rows.start), max(tr.stop, rows.stop)),
                             slice(min(tc.start, cols.start), max(tc.stop, cols.stop)))
            changed = True
        if not changed:
            return labels


def draw_chart(fields: SeaIceFields, seed: int) -> list[ChartRegion]:
    """Analyst-like regions: smoothed C quantised into classes, connected regions, small ones absorbed."""
    lay = fields.layout
    h, w = lay.height, lay.width
    fc = F.reduction_factor(min(h, w), target=64, most=8)
    rows = (np.arange(math.ceil(h / fc)) + 0.5) * fc - 0.5
    cols = (np.arange(math.ceil(w / fc)) + 0.5) * fc - 0.5
    rows_c, cols_c = np.minimum(rows, h - 1), np.minimum(cols, w - 1)
    conc = fields.concentration_at(rows_c, cols_c)
    land = fields.land_at(rows_c, cols_c)
    smooth = ndimage.gaussian_filter(conc, max(0.1 * local_scale(min(h, w)) / fc, 1.0), mode="nearest")
    classes_map = np.digitize(smooth, CHART_BINS).astype(np.int32)
    land_class = len(CHART_BINS) + 1
    classes_map[land] = land_class

    labels = np.zeros(classes_map.shape, dtype=np.int32)
    region_class = [0]
    for cls in np.unique(classes_map):
        lab, n = ndimage.label(classes_map == cls)
        labels[lab > 0] = lab[lab > 0] + len(region_class) - 1
        region_class += [int(cls)] * n
    region_class = np.array(region_class, dtype=np.int32)
    min_px = max(64.0, 0.2 * local_scale(min(h, w)) ** 2)
    labels = _merge_small_regions(labels, region_class, max(2, int(round(min_px / fc**2))), land_class=land_class)

    polys, region_ids = [], []
    for geom, value in rasterio.features.shapes(labels, connectivity=4, transform=Affine.scale(fc)):
        polys.append(shapely.geometry.shape(geom))
        region_ids.append(int(value))
    simplified = shapely.coverage_simplify(np.array(polys, dtype=object), tolerance=2.0 * fc, simplify_boundary=False)
    scene_box = shapely.box(0, 0, w, h)
    rng = F.rng_for(seed, _CHART)
    pool = rng.choice(np.arange(1, 8 * len(polys) + 16), size=len(polys), replace=False)
    regions = []
    for pid, geom, region in zip(pool, simplified, region_ids):
        geom = shapely.intersection(shapely.make_valid(geom), scene_box)
        geom = _largest_polygonal(geom)
        if geom is None:
            continue
        regions.append(ChartRegion(poly_id=int(pid), geometry=geom, is_land=bool(region_class[region] == land_class)))
    return regions


def _largest_polygonal(geom: shapely.Geometry) -> shapely.Geometry | None:
    """Keep the polygonal part of a geometry (clipping can leave stray lines or points)."""
    if geom.is_empty:
        return None
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    parts = [g for g in getattr(geom, "geoms", []) if g.geom_type in ("Polygon", "MultiPolygon") and not g.is_empty]
    return shapely.union_all(parts) if parts else None


class PolygonStats:
    """Per-polygon sums gathered strip by strip (arrays indexed by polygon id)."""

    def __init__(self, size: int):
        self.size = size
        zeros = lambda: np.zeros(size, dtype=np.float64)  # noqa: E731
        self.valid, self.conc_sum, self.conc_sq = zeros(), zeros(), zeros()
        self.all_sum, self.pixels, self.type_sum, self.ice_pixels = zeros(), zeros(), zeros(), zeros()

    def add(self, ids: np.ndarray, strip: Strip, conc_all: np.ndarray) -> None:
        ids = ids.ravel()
        valid = ~strip.land.ravel()
        truth = strip.truth.ravel()
        n = self.size
        self.valid += np.bincount(ids[valid], minlength=n)
        self.conc_sum += np.bincount(ids[valid], weights=truth[valid], minlength=n)
        self.conc_sq += np.bincount(ids[valid], weights=truth[valid].astype(np.float64) ** 2, minlength=n)
        self.all_sum += np.bincount(ids, weights=conc_all.ravel(), minlength=n)
        self.pixels += np.bincount(ids, minlength=n)
        ice = strip.ice.ravel() & valid
        self.ice_pixels += np.bincount(ids[ice], minlength=n)
        self.type_sum += np.bincount(ids[ice], weights=strip.ice_type.ravel()[ice], minlength=n)

    def mean_std(self, pid: int) -> tuple[float, float]:
        if self.valid[pid] > 0:
            mean = self.conc_sum[pid] / self.valid[pid]
            var = max(self.conc_sq[pid] / self.valid[pid] - mean**2, 0.0)
            return float(mean), float(math.sqrt(var))
        return float(self.all_sum[pid] / max(self.pixels[pid], 1)), 0.0

    def mean_type(self, pid: int) -> float:
        return float(self.type_sum[pid] / self.ice_pixels[pid]) if self.ice_pixels[pid] > 0 else -1.0


_STAGES = ("87", "91", "93", "95")  # thin, medium, thick first-year, old ice
_FORMS = ("02", "03", "04", "05", "06", "07")  # brash, cakes, small, medium, big, vast floes


def sigrid_codes(mean: float, std: float, ice_type: float, rng: np.random.Generator) -> dict[str, str]:
    """SIGRID-3 codes an analyst would write for a polygon of mean concentration ``mean``."""
    codes = {k: "-9" for k in HEADER_FIELDS}
    if mean < 0.05:
        codes.update(CT="01", SA="98", POLY_TYPE="W")
        return codes
    interval = 0.15 < mean < 0.9 and (std > 0.07 or rng.random() < 0.3)
    ct = encode_ct(mean, spread=2.0 if interval else 0.0)
    stage = int(np.clip(np.digitize(ice_type, (-0.7, 0.0, 0.7)), 0, 3))
    form = int(np.clip(np.digitize(mean, (0.25, 0.45, 0.7, 0.9, 0.97)), 0, 5))
    codes.update(CT=ct, SA=_STAGES[stage], FA=_FORMS[form], CF=f"{_FORMS[form]}-9", POLY_TYPE="I")
    tenths = int(round(mean * 10))
    if tenths >= 5 and stage > 0 and rng.random() < 0.5:
        older = max(1, int(round(tenths * rng.uniform(0.3, 0.7))))
        younger = max(1, tenths - older)
        fb = _FORMS[max(form - 1, 0)]
        codes.update(
            CA=f"{older * 10:02d}", CB=f"{younger * 10:02d}", SB=_STAGES[stage - 1], FB=fb, CF=f"{_FORMS[form]}{fb}"
        )
    return codes


def chart_codes(regions: list[ChartRegion], stats: PolygonStats, seed: int) -> dict[int, dict[str, str | None]]:
    """Codes per polygon id; land polygons get None (NULL in the GeoPackage, -9 in polygon_codes)."""
    rng = F.rng_for(seed, _CODES)
    out: dict[int, dict[str, str | None]] = {}
    for region in regions:
        if region.is_land:
            out[region.poly_id] = {k: None for k in CODE_FIELDS} | {"POLY_TYPE": "L"}
            continue
        mean, std = stats.mean_std(region.poly_id)
        out[region.poly_id] = sigrid_codes(mean, std, stats.mean_type(region.poly_id), rng)
    return out


def polygon_code_rows(codes: dict[int, dict[str, str | None]]) -> list[str]:
    """AI4Arctic ``polygon_codes`` rows (header first); NULL is written as -9 there."""
    rows = [{"poly_id": pid, **{k: ("-9" if v is None else v) for k, v in c.items()}} for pid, c in sorted(codes.items())]
    return format_polygon_codes(rows)


def chart_frame(
    regions: list[ChartRegion],
    codes: dict[int, dict[str, str | None]],
    to_map: Callable[[np.ndarray], np.ndarray],
    crs: CRS,
    *,
    step: float,
) -> "gpd.GeoDataFrame":
    """The chart as a CIS-style GeoDataFrame: poly_id, text codes (NULL on land), AREA, PERIMETER.

    Edges are densified to ``step`` pixels first, so they stay where they were drawn after the
    nonlinear move from pixel space to the chart's CRS.
    """
    import geopandas as gpd

    geoms = shapely.segmentize(np.array([r.geometry for r in regions], dtype=object), step)
    geoms = shapely.transform(geoms, to_map)
    geoms = shapely.make_valid(geoms)
    records = {"poly_id": np.array([r.poly_id for r in regions], dtype=np.int64)}
    for key in HEADER_FIELDS:
        records[key] = [codes[r.poly_id][key] for r in regions]
    records["AREA"] = shapely.area(geoms)
    records["PERIMETER"] = shapely.length(shapely.boundary(geoms))
    return gpd.GeoDataFrame(records, geometry=list(geoms), crs=crs)


# --- passive microwave and reanalysis on the 2 km grid -------------------------------------------


def passive_microwave(fields: SeaIceFields, seed: int) -> dict[str, np.ndarray]:
    """AMSR2-like brightness temperatures and ERA5-like winds, one value per 50 x 50 pixels."""
    lay = fields.layout
    hc, wc = math.ceil(lay.height / AMSR_BLOCK), math.ceil(lay.width / AMSR_BLOCK)
    sub = 5
    offsets = (np.arange(sub) + 0.5) * AMSR_BLOCK / sub - 0.5
    rows = np.minimum((np.arange(hc)[:, None] * AMSR_BLOCK + offsets).ravel(), lay.height - 1)
    cols = np.minimum((np.arange(wc)[:, None] * AMSR_BLOCK + offsets).ravel(), lay.width - 1)

    def block_mean(values: np.ndarray) -> np.ndarray:
        return values.reshape(hc, sub, wc, sub).mean(axis=(1, 3))

    land = block_mean(fields.land_at(rows, cols).astype(np.float32))
    conc = block_mean(fields.concentration_at(rows, cols))
    wind = block_mean(fields.low.sample(fields.wind, rows, cols))
    rng = F.rng_for(seed, _PASSIVE)
    tb18h = land * 252.0 + (1 - land) * (conc * 238.0 + (1 - conc) * (98.0 + 22.0 * wind))
    tb36v = land * 258.0 + (1 - land) * (conc * 246.0 + (1 - conc) * (204.0 + 12.0 * wind))
    speed = 2.0 + 13.0 * wind
    direction = rng.uniform(0, 2 * np.pi) + 0.4 * ndimage.gaussian_filter(rng.standard_normal((hc, wc)), 3, mode="nearest")
    out = {
        "btemp_18_7h": ndimage.gaussian_filter(tb18h, 4.0, mode="nearest") + rng.normal(0, 0.7, (hc, wc)),
        "btemp_36_5v": ndimage.gaussian_filter(tb36v, 2.0, mode="nearest") + rng.normal(0, 0.5, (hc, wc)),
        "u10m_rotated": speed * np.cos(direction),
        "v10m_rotated": speed * np.sin(direction),
    }
    return {k: v.astype(np.float32) for k, v in out.items()}


# --- the writers -------------------------------------------------------------------------------


def output_paths(path: Path) -> dict[str, Path]:
    return {
        "scene": path,
        "chart": path.with_name(path.stem + "_chart.gpkg"),
        "truth": path.with_name(path.stem + "_truth.tif"),
    }


def _open_netcdf(tmp: Path, lay: SceneLayout, ties: dict[str, np.ndarray], ids: dict[str, str], seed: int):
    import netCDF4

    ds = netCDF4.Dataset(tmp, "w", format="NETCDF4")
    ds.createDimension("sar_lines", lay.height)
    ds.createDimension("sar_samples", lay.width)
    ds.createDimension("sar_grid_points", TIE_POINTS_PER_AXIS**2)
    ds.createDimension("2km_grid_lines", math.ceil(lay.height / AMSR_BLOCK))
    ds.createDimension("2km_grid_samples", math.ceil(lay.width / AMSR_BLOCK))
    chunks = (min(512, lay.height), min(512, lay.width))
    for name in ("nersc_sar_primary", "nersc_sar_secondary", "polygon_icechart"):
        ds.createVariable(
            name, "f4", ("sar_lines", "sar_samples"), zlib=True, complevel=1, shuffle=True, chunksizes=chunks,
            fill_value=np.float32(np.nan),
        )
    ds["nersc_sar_primary"].setncatts({"long_name": "HH backscatter", "units": "dB"})
    ds["nersc_sar_secondary"].setncatts({"long_name": "HV backscatter", "units": "dB"})
    ds["polygon_icechart"].setncatts({"long_name": "ice chart polygon id (rows of polygon_codes)"})
    for name, values in ties.items():
        var = ds.createVariable(name, "f8", ("sar_grid_points",))
        var[:] = values
    ds.setncatts(
        {
            "scene_id": ids["scene_id"],
            "original_id": ids["original_id"],
            "ice_service": lay.ice_service,
            "pixel_spacing": np.int32(int(PIXEL_M)),
            "icetools_synth_seed": np.int64(seed),
            "comment": "synthetic scene from icetools synth sea-ice; the truth is in the _truth.tif beside it",
        }
    )
    return ds


def _write_codes(ds, rows: list[str], icechart_id: str) -> None:
    ds.createDimension("polygon_codes", len(rows))
    var = ds.createVariable("polygon_codes", str, ("polygon_codes",))
    var[:] = np.array(rows, dtype=object)
    var.setncattr("icechart_id", icechart_id)


def make_sea_ice_scene(
    path: str | Path, *, size: int = 1024, seed: int = 0, overwrite: bool = False, progress: Progress | None = None
) -> dict[str, Path]:
    """Write a synthetic sea-ice scene (``.nc`` AI4Arctic raw layout, or ``.tif``), its chart and its truth."""
    path = Path(path)
    F.check_size(size, minimum=MIN_SIZE, what="sea-ice")
    suffix = path.suffix.lower()
    if suffix not in (".nc", ".tif", ".tiff"):
        raise ConfigError(f"{path}: a sea-ice scene is written as .nc (AI4Arctic layout) or .tif (GeoTIFF)")
    outputs = output_paths(path)
    for out in outputs.values():
        check_output(out, overwrite=overwrite)

    lay = SceneLayout.draw(size, seed)
    ids = lay.ids(seed)
    fields = build_fields(lay, seed)
    regions = draw_chart(fields, seed)
    burn = F.Burner([(r.geometry, r.poly_id) for r in regions])
    stats = PolygonStats(size=max(r.poly_id for r in regions) + 1)
    is_netcdf = suffix == ".nc"
    ties = lay.tie_points() if is_netcdf else None
    grid = lay.gcp_grid(ties) if is_netcdf else lay.affine_grid()
    tags = {"scene_id": ids["scene_id"], "ice_service": lay.ice_service, "icetools_synth_seed": seed}
    windows = list(iter_strips(lay.height, lay.width))

    with contextlib.ExitStack() as stack:
        truth_writer = stack.enter_context(
            open_raster_writer(
                outputs["truth"], grid, count=1, dtype="float32", nodata=float("nan"), band_names=["SIC"],
                tags=tags | {"description": "true sea ice concentration (0..1), NaN on land"}, overwrite=overwrite,
            )
        )
        if is_netcdf:
            nc_tmp = stack.enter_context(atomic_path(path, overwrite=overwrite))
            ds = stack.enter_context(_open_netcdf(nc_tmp, lay, ties, ids, seed))
        else:
            sar_writer = stack.enter_context(
                open_raster_writer(
                    path, grid, count=2, dtype="float32", nodata=float("nan"),
                    band_names=["nersc_sar_primary", "nersc_sar_secondary"], tags=tags | {"units": "dB"},
                    overwrite=overwrite,
                )
            )
        for index, window in enumerate(windows):
            r0, r1 = int(window.row_off), int(window.row_off + window.height)
            strip = render_strip(fields, r0, r1, seed=seed, index=index)
            poly_ids = burn.strip(r0, r1 - r0, lay.width, fill=0, dtype="int32")
            stats.add(poly_ids, strip, fields.concentration_at(np.arange(r0, r1)))
            truth_writer.write(strip.truth, window)
            if is_netcdf:
                ds["nersc_sar_primary"][r0:r1, :] = strip.hh
                ds["nersc_sar_secondary"][r0:r1, :] = strip.hv
                ds["polygon_icechart"][r0:r1, :] = np.where(poly_ids > 0, poly_ids, np.nan).astype(np.float32)
            else:
                sar_writer.write(np.stack([strip.hh, strip.hv]), window)
            if progress is not None:
                progress(0.9 * (index + 1) / len(windows))

        codes = chart_codes(regions, stats, seed)
        if is_netcdf:
            _write_codes(ds, polygon_code_rows(codes), ids["icechart_id"])
            for name, values in passive_microwave(fields, seed).items():
                ds.createVariable(name, "f4", ("2km_grid_lines", "2km_grid_samples"), zlib=True, complevel=1)[:] = values
            to_lonlat = grid.tie_points.pixel_to_lonlat
        else:
            to_lonlat = None
        frame = chart_frame(regions, codes, _pixel_to_chart_crs(lay, grid, to_lonlat), lay.chart_crs, step=4.0)
        from icetools.io.vector import write_layer

        with atomic_path(outputs["chart"], overwrite=overwrite) as chart_tmp:
            write_layer(frame, chart_tmp, layer="chart", overwrite=True)
    if progress is not None:
        progress(1.0)
    return outputs


def _pixel_to_chart_crs(
    lay: SceneLayout, grid: Grid, to_lonlat: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None
) -> Callable[[np.ndarray], np.ndarray]:
    """Pixel (x, y) -> chart CRS: through the tie points for GCP grids, the affine transform otherwise."""
    crs = lay.chart_crs

    def apply(xy: np.ndarray) -> np.ndarray:
        if to_lonlat is not None:
            lon, lat = to_lonlat(xy[:, 0], xy[:, 1])
            x, y = Transformer.from_crs(WGS84, crs, always_xy=True).transform(lon, lat)
        else:
            x, y = grid.transform @ (xy[:, 0], xy[:, 1])
            if not crs.equals(grid.crs):
                x, y = Transformer.from_crs(grid.crs, crs, always_xy=True).transform(x, y)
        return np.stack([np.asarray(x), np.asarray(y)], axis=-1)

    return apply
