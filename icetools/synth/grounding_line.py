"""Synthetic DInSAR double-difference interferograms of an Antarctic grounding zone, with the true line.

Seaward of a sinuous grounding line (and around an optional grounded ice rise) the floating ice
flexes with the tide like an elastic beam clamped at the line,
w(d) = A (1 - exp(-beta d) (cos beta d + sin beta d)), so the fringes crowd within a few km of
the line and flatten out seaward; landward the double difference is ~0. The interferogram is
simulated from its statistics: L-look products of correlated circular Gaussian pairs with a
coherence map (high on the ice sheet, lower in crevassed hinge zones, nothing in decorrelated
patches or open water), giving the right phase noise and a speckled magnitude.

Outputs: ``OUT.tif`` (bands ``phase`` in [-pi, pi] and ``magnitude``, float32, EPSG:3031, 50 m) and
``<name>.lines.gpkg`` (layer "grounding_line", LineStrings in EPSG:3031, drawn in pixel space and
moved with the raster's affine transform, so they sit exactly where the raster puts them).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio.features
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from scipy import ndimage

from icetools.errors import ConfigError
from icetools.grid import WGS84, Grid
from icetools.io.atomic import atomic_path, check_output
from icetools.io.raster import iter_strips, open_raster_writer
from icetools.progress import Progress, report
from icetools.synth import fields as F

PIXEL_M = 50.0
WAVELENGTH_M = 0.0556  # Sentinel-1 C band
LOOKS = 4
MIN_SIZE = 64
EPSG_3031 = CRS.from_epsg(3031)
COARSE = 4  # the far-field distance map's reduction
# Grounding zones (lon, lat) the scenes are placed near.
SITES = (
    (-100.5, -75.1),  # Pine Island
    (-106.5, -75.3),  # Thwaites
    (-125.0, -74.6),  # Getz
    (116.3, -67.0),  # Totten
    (71.0, -73.2),  # Amery
    (-50.0, -82.0),  # Filchner
    (-150.0, -83.5),  # Siple Coast
    (145.0, -67.6),  # Mertz
)
_LAYOUT, _FIELDS, _NOISE = range(3)


@dataclass(frozen=True)
class Flexure:
    amplitude_m: float  # double-difference tide range A
    beta_per_km: float

    def displacement(self, distance_km: np.ndarray) -> np.ndarray:
        bd = self.beta_per_km * distance_km
        return (self.amplitude_m * (1.0 - np.exp(-bd) * (np.cos(bd) + np.sin(bd)))).astype(np.float32)


@dataclass
class GroundingZone:
    """Everything the strips are made from: geometry in pixel space and smooth fields."""

    size: int
    grid: Grid
    flexure: Flexure
    lines: list[shapely.LineString]  # pixel space, clipped to the scene
    kinds: list[str]
    grounded: F.Burner  # 1 where grounded (pixel space polygons)
    line_pixels: F.Burner  # the lines, all touched, for exact distances
    far_distance: np.ndarray  # coarse distance to the nearest line, in full pixels
    coarse: F.Upsampler
    low: F.Upsampler
    coherence: np.ndarray  # low
    backscatter: np.ndarray  # low, log-amplitude texture
    atmosphere: np.ndarray  # low, radians
    decorrelated: np.ndarray  # low, >0 inside decorrelated patches
    crevasses: np.ndarray  # low, >0 where the hinge zone is crevassed
    front_noise: np.ndarray  # low, pixels
    front_distance: float | None  # open water beyond this distance from the line (pixels), or None
    ramp: tuple[float, float]  # radians per pixel along x and y
    halo: int


def _ice_rise(rng: np.random.Generator, size: int, grounded: shapely.Geometry, main: shapely.LineString):
    """A closed grounded loop on the floating side, clear of the main line; None if none fits."""
    floating = shapely.box(0, 0, size, size).difference(grounded)
    for _ in range(20):
        radius = rng.uniform(0.06, 0.12) * size
        cx, cy = rng.uniform(0.1, 0.9, 2) * size
        if not floating.contains(shapely.Point(cx, cy)):
            continue
        phi = np.linspace(0, 2 * np.pi, 181)[:-1]
        r = radius * (1 + sum(rng.uniform(-0.12, 0.12) * np.cos(k * phi + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)))
        ring = shapely.LinearRing(np.stack([cx + r * np.cos(phi), cy + r * np.sin(phi)], axis=-1))
        if ring.distance(main) > 0.08 * size and shapely.box(0, 0, size, size).contains(shapely.Polygon(ring).centroid):
            return ring
    return None


def _pieces(geom: shapely.Geometry) -> list[shapely.LineString]:
    if geom.is_empty:
        return []
    if geom.geom_type == "LineString":
        return [geom]
    if geom.geom_type == "LinearRing":
        return [shapely.LineString(geom.coords)]
    out = []
    for g in getattr(geom, "geoms", []):
        out.extend(_pieces(g))
    return [g for g in out if g.length > 0]


def build_zone(size: int, seed: int) -> GroundingZone:
    rng = F.rng_for(seed, _LAYOUT)
    lon, lat = SITES[int(rng.integers(len(SITES)))]
    x0, y0 = Transformer.from_crs(WGS84, EPSG_3031, always_xy=True).transform(lon, lat)
    x0 += rng.uniform(-20e3, 20e3)
    y0 += rng.uniform(-20e3, 20e3)
    left = round((x0 - size / 2 * PIXEL_M) / PIXEL_M) * PIXEL_M
    top = round((y0 + size / 2 * PIXEL_M) / PIXEL_M) * PIXEL_M
    grid = Grid(size, size, crs=EPSG_3031, transform=Affine(PIXEL_M, 0.0, left, 0.0, -PIXEL_M, top))

    beta = rng.uniform(0.2, 0.5)
    flexure = Flexure(amplitude_m=float(rng.uniform(0.3, min(1.0, 0.17 / beta))), beta_per_km=float(beta))

    # The main line: a sinuous graph across the scene; the grounded side is closed far away.
    angle = rng.uniform(0, np.pi)
    centre = (size / 2 + rng.uniform(-0.15, 0.15) * size, size / 2 + rng.uniform(-0.15, 0.15) * size)
    curve = F.meander(
        rng, centre=centre, angle=angle, half_length=1.1 * size, amplitude=0.12 * size,
        shortest_wave=max(size / 8, 30.0), spacing=1.0,
    )
    side = 1.0 if rng.random() < 0.5 else -1.0
    normal = np.array([-math.sin(angle), math.cos(angle)]) * side * 3 * size
    grounded_poly = shapely.make_valid(shapely.Polygon(np.vstack([curve, curve[-1] + normal, curve[0] + normal])))
    main = shapely.LineString(curve)
    scene = shapely.box(0, 0, size, size)
    lines = [(g, "grounding_line") for g in _pieces(main.intersection(scene))]
    grounded_shapes = [grounded_poly]
    if size >= 128 and rng.random() < 0.6:
        ring = _ice_rise(rng, size, grounded_poly, main)
        if ring is not None:
            grounded_shapes.append(shapely.Polygon(ring))
            lines += [(g, "ice_rise") for g in _pieces(shapely.LineString(ring.coords).intersection(scene))]

    # Far-field distances on a coarse grid (exact distances come per strip, near the lines).
    coarse = F.Upsampler.for_scene(size, size, min(COARSE, max(1, size // 64)))
    cq = coarse.factor
    burnt = rasterio.features.rasterize(
        [(g, 1) for g, _ in lines], out_shape=coarse.coarse_shape, transform=Affine.scale(cq), all_touched=True,
        dtype="uint8",
    )
    far = ndimage.distance_transform_edt(burnt == 0).astype(np.float32) * cq if burnt.any() else np.full(coarse.coarse_shape, 1e6, np.float32)

    frng = F.rng_for(seed, _FIELDS)
    low = F.Upsampler.for_scene(size, size, F.reduction_factor(size, target=96, most=16))
    fl, shape = low.factor, low.coarse_shape
    coherence = np.clip(0.85 + 0.06 * F.smooth_noise(shape, sigma=size / 8 / fl, rng=frng), 0.6, 0.95).astype(np.float32)
    backscatter = F.multiscale_noise(shape, sigmas=(size / 10 / fl, max(12.0 / fl, 0.8)), weights=(1.0, 0.6), rng=frng)
    atmosphere = (0.5 * F.smooth_noise(shape, sigma=size / 5 / fl, rng=frng)).astype(np.float32)
    dec = F.smooth_noise(shape, sigma=max(size / 25 / fl, 1.0), rng=frng)
    decorrelated = (dec - np.quantile(dec, 0.95)).astype(np.float32)
    crev = F.smooth_noise(shape, sigma=max(size / 20 / fl, 1.0), rng=frng)
    crevasses = (crev - np.quantile(crev, 0.7)).astype(np.float32)
    front_noise = (0.08 * size * F.smooth_noise(shape, sigma=max(size / 12 / fl, 1.0), rng=frng)).astype(np.float32)
    front = float(frng.uniform(0.35, 0.6) * size) if frng.random() < 0.4 else None
    cycles = frng.uniform(-0.5, 0.5, 2)
    ramp = (float(2 * np.pi * cycles[0] / size), float(2 * np.pi * cycles[1] / size))

    # Beyond 4 / beta the flexure has flattened to ~2% of A: a coarse distance is good enough there.
    halo = int(min(size, max(64, round(4.0 / flexure.beta_per_km / (PIXEL_M / 1000)))))
    return GroundingZone(
        size=size, grid=grid, flexure=flexure, lines=[g for g, _ in lines], kinds=[k for _, k in lines],
        grounded=F.Burner([(g, 1) for g in grounded_shapes]), line_pixels=F.Burner([(g, 1) for g, _ in lines]),
        far_distance=far, coarse=coarse, low=low, coherence=coherence, backscatter=backscatter,
        atmosphere=atmosphere, decorrelated=decorrelated, crevasses=crevasses, front_noise=front_noise,
        front_distance=front, ramp=ramp, halo=halo,
    )


def distance_to_lines(zone: GroundingZone, row0: int, row1: int) -> np.ndarray:
    """Distance (pixels) from each pixel centre to the nearest line pixel, exact within the halo.

    An exact distance transform on the strip plus ``halo`` rows each side; pixels whose nearest
    line lies beyond the band take the coarse far-field distance (the flexure has flattened
    out there, so its few-pixel error does not show).
    """
    size, halo = zone.size, zone.halo
    b0, b1 = max(row0 - halo, 0), min(row1 + halo, size)
    band = zone.line_pixels.strip(b0, b1 - b0, size, dtype="uint8", all_touched=True)
    far = zone.coarse.rows(zone.far_distance, row0, row1)
    if not band.any():
        return np.maximum(far, halo)
    exact = ndimage.distance_transform_edt(band == 0).astype(np.float32)[row0 - b0 : row1 - b0]
    # Exact where no line outside the band could be nearer: within the halo, or the band reaches the scene edge.
    reach = np.full(row1 - row0, np.inf, dtype=np.float32)
    rows = np.arange(row0, row1)
    if b0 > 0:
        reach = np.minimum(reach, rows - b0 + 1)
    if b1 < size:
        reach = np.minimum(reach, b1 - rows)
    # Elsewhere the true distance lies between the reach and the band's answer; the coarse map picks it.
    bounded = np.clip(far, reach[:, None], exact)
    return np.where(exact <= reach[:, None], exact, bounded).astype(np.float32)


def render_strip(zone: GroundingZone, row0: int, row1: int, *, seed: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows row0..row1-1 of (phase, magnitude)."""
    size, low = zone.size, zone.low
    rows = np.arange(row0, row1)
    grounded = zone.grounded.strip(row0, row1 - row0, size, dtype="uint8").astype(bool)
    distance = distance_to_lines(zone, row0, row1)
    distance_km = np.where(grounded, 0.0, distance * (PIXEL_M / 1000)).astype(np.float32)
    incidence = np.radians(30.0 + 15.0 * (np.arange(size) + 0.5) / size).astype(np.float32)[None, :]
    los = zone.flexure.displacement(distance_km) * np.cos(incidence)
    cols = np.arange(size, dtype=np.float32)[None, :]
    phase = (
        (4 * np.pi / WAVELENGTH_M) * los
        + zone.ramp[0] * cols + zone.ramp[1] * rows.astype(np.float32)[:, None]
        + low.rows(zone.atmosphere, row0, row1)
    )

    coherence = low.rows(zone.coherence, row0, row1)
    amplitude = np.exp(0.35 * low.rows(zone.backscatter, row0, row1))
    hinge = ~grounded & (distance_km < 2.0 / zone.flexure.beta_per_km)
    crevassed = hinge & (low.rows(zone.crevasses, row0, row1) > 0)
    coherence = np.where(crevassed, np.float32(0.35), coherence)
    amplitude = np.where(crevassed, amplitude * 1.8, amplitude)
    patches = low.rows(zone.decorrelated, row0, row1) > 0
    coherence = np.where(patches, np.float32(0.05), coherence)
    amplitude = np.where(patches, amplitude * 0.5, amplitude)
    if zone.front_distance is not None:
        water = ~grounded & (distance + low.rows(zone.front_noise, row0, row1) > zone.front_distance)
        coherence = np.where(water, np.float32(0.0), coherence)
        amplitude = np.where(water, np.float32(0.15), amplitude)

    rng = F.rng_for(seed, _NOISE, index)
    z = _interferogram(rng, phase.astype(np.float32), coherence.astype(np.float32), amplitude.astype(np.float32))
    return np.angle(z).astype(np.float32), (np.abs(z) / LOOKS).astype(np.float32)


def _interferogram(rng: np.random.Generator, phase: np.ndarray, coherence: np.ndarray, amplitude: np.ndarray) -> np.ndarray:
    """Sum over L looks of s1 conj(s2) for circular Gaussian pairs with correlation ``coherence``.

    This draws the interferometric phase and magnitude from their true joint distribution, so
    phase noise grows as coherence drops, as in real interferograms. With s1 = a and
    s2 = g a + sqrt(1 - g^2) b, the sum is g X + sqrt(1 - g^2) sqrt(X) n, where X = sum |a|^2 is
    Gamma(L, 1) and n is CN(0, 1) given X: three draws per pixel instead of 4 L.
    """
    shape = phase.shape
    power = rng.standard_gamma(LOOKS, size=shape, dtype=np.float32)
    noise = (rng.standard_normal(shape, dtype=np.float32) + 1j * rng.standard_normal(shape, dtype=np.float32)) * np.float32(
        np.sqrt(0.5)
    )
    other = np.sqrt(np.maximum(1.0 - coherence**2, 0.0))
    total = coherence * power + other * np.sqrt(power) * noise
    return (total * amplitude * np.exp(1j * phase)).astype(np.complex64)


def output_paths(path: Path, *, lines: str | Path | None = None) -> dict[str, Path]:
    return {"interferogram": path, "lines": F.companion_path(path, "lines", ".gpkg", lines)}


def make_grounding_line_scene(
    path: str | Path,
    *,
    size: int = 512,
    seed: int = 0,
    lines_path: str | Path | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict[str, Path]:
    """Write a synthetic double-difference interferogram (phase, magnitude) and its grounding lines
    (at ``lines_path``, by default named from the image's whole file name)."""
    import geopandas as gpd

    from icetools.io.vector import write_layer

    path = Path(path)
    F.check_size(size, minimum=MIN_SIZE, what="grounding-line")
    if path.suffix.lower() not in (".tif", ".tiff"):
        raise ConfigError(f"{path}: the interferogram is written as a GeoTIFF: use a .tif name")
    outputs = output_paths(path, lines=lines_path)
    F.check_distinct(outputs)
    for out in outputs.values():
        check_output(out, overwrite=overwrite)
    zone = build_zone(int(size), seed)
    tags = {
        "description": "synthetic DInSAR double difference (icetools synth grounding-line)",
        "wavelength_m": WAVELENGTH_M,
        "tide_amplitude_m": round(zone.flexure.amplitude_m, 4),
        "flexure_beta_per_km": round(zone.flexure.beta_per_km, 4),
        "icetools_synth_seed": seed,
    }
    windows = list(iter_strips(zone.size, zone.size))
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(
            open_raster_writer(
                path, zone.grid, count=2, dtype="float32", nodata=float("nan"), band_names=["phase", "magnitude"],
                tags=tags, overwrite=overwrite,
            )
        )
        for index, window in enumerate(windows):
            r0, r1 = int(window.row_off), int(window.row_off + window.height)
            phase, magnitude = render_strip(zone, r0, r1, seed=seed, index=index)
            writer.write(np.stack([phase, magnitude]), window)
            report(progress, "scene", 0.95 * (index + 1) / len(windows), 1.0)
        transform = zone.grid.transform
        geoms = shapely.transform(
            np.array(zone.lines, dtype=object),
            lambda xy: np.stack(transform @ (xy[:, 0], xy[:, 1]), axis=-1),
        )
        frame = gpd.GeoDataFrame(
            {"id": np.arange(1, len(zone.lines) + 1, dtype=np.int64), "kind": zone.kinds}, geometry=list(geoms),
            crs=EPSG_3031,
        )
        with atomic_path(outputs["lines"], overwrite=overwrite) as tmp:
            write_layer(frame, tmp, layer="grounding_line", overwrite=True)
    report(progress, "scene", 1.0, 1.0)
    return outputs
