"""Synthetic ultra-high-resolution land-cover scenes (aerial RGB at 0.5 m) with a known class raster.

Land cover is multi-scale: large regions from the argmax of smooth per-class suitability fields
(every class is given one region it surely wins, so all classes are present), small patches
inside them (tree clumps, ponds), and thin linear features (rivers, roads). Each class has its
own texture: striped field parcels, blobby tree crowns with dark shadows, blocky buildings and
streets, smooth dark water, mottled bare soil, wetland puddles. Some colours overlap on purpose
(shadowed forest vs water, bare soil vs roofs, crops vs grassland), so a model needs context,
which is what ultra-high-resolution segmentation methods (FCtL, GLNet) are about.

Outputs: ``OUT.tif`` (uint8 bands red, green, blue; UTM; nodata 0) and ``<name>.classes.tif``
(uint8 band "class", nodata 255 outside the acquisition footprint, names in tag ``class_names``).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Transformer

from icetools.errors import ConfigError
from icetools.grid import WGS84, Grid
from icetools.io.atomic import check_output
from icetools.io.raster import iter_strips, open_raster_writer
from icetools.progress import Progress, report
from icetools.synth import fields as F

PIXEL_M = 0.5
MIN_SIZE = 64
CLASS_NAMES = ("water", "forest", "field", "urban", "bare", "wetland", "grassland", "road")
MIN_CLASSES, MAX_CLASSES = 2, len(CLASS_NAMES)
NODATA_CLASS = 255
# Share-setting offsets of the suitability fields (water and wetland rarer, fields and forest common).
BIAS = {"water": -0.45, "forest": 0.15, "field": 0.25, "urban": -0.1, "bare": -0.3, "wetland": -0.35, "grassland": 0.0}
SITES = ((10.5, 59.9), (-1.5, 52.0), (24.0, 61.5), (-73.5, 45.5), (13.4, 52.5), (5.3, 51.7), (-122.9, 49.2))
CROPS = np.array([(95, 130, 60), (190, 170, 100), (125, 100, 75), (130, 150, 85), (170, 150, 110)], dtype=np.float32)
ROOFS = np.array([(130, 130, 135), (150, 82, 66), (82, 82, 88), (200, 198, 190), (165, 145, 120)], dtype=np.float32)
_LAYOUT, _FIELDS, _NOISE, _HASH = range(4)


@dataclass
class LandcoverScene:
    size: int
    names: tuple[str, ...]
    grid: Grid
    low: F.Upsampler
    mid: F.Upsampler
    suitability: list[np.ndarray]  # low, one per area class (roads excluded)
    area_classes: list[int]
    wobble: tuple[np.ndarray, np.ndarray]  # mid, boundary irregularity
    crowns: np.ndarray  # mid
    clumps: np.ndarray  # mid
    ponds: np.ndarray  # mid
    puddles: np.ndarray  # mid
    shade: np.ndarray  # low, illumination / haze
    tone: np.ndarray  # low, regional colour variation (turbidity, crop vigour)
    farm_split: np.ndarray  # low, picks one of two parcel orientations
    rivers: F.Burner
    roads: F.Burner
    road_class: int | None
    field_angles: tuple[float, float]
    urban_angle: float
    parcel: tuple[float, float]
    block: float
    footprint: tuple[float, float, float]  # nodata where a*x + b*y > c
    seed: int

    def index(self, name: str) -> int | None:
        return self.names.index(name) if name in self.names else None


def build_scene(size: int, seed: int, n_classes: int) -> LandcoverScene:
    rng = F.rng_for(seed, _LAYOUT)
    names = CLASS_NAMES[:n_classes]
    lon, lat = SITES[int(rng.integers(len(SITES)))]
    zone = int((lon + 180) // 6) + 1
    crs = CRS.from_epsg(32600 + zone if lat >= 0 else 32700 + zone)
    east, north = Transformer.from_crs(WGS84, crs, always_xy=True).transform(lon + rng.uniform(-0.1, 0.1), lat)
    transform = Affine(PIXEL_M, 0.0, float(round(east)), 0.0, -PIXEL_M, float(round(north)))
    grid = Grid(size, size, crs=crs, transform=transform)

    frng = F.rng_for(seed, _FIELDS)
    low = F.Upsampler.for_scene(size, size, F.reduction_factor(size, target=128, most=16))
    mid = F.Upsampler.for_scene(size, size, F.reduction_factor(size, target=64, most=4))
    fl, fm = low.factor, mid.factor
    area_classes = [i for i, n in enumerate(names) if n != "road"]
    # One guaranteed region per class: a bump at a jittered anchor, so every class is present.
    anchors = _anchors(frng, len(area_classes), size)
    ys, xs = np.meshgrid((np.arange(low.coarse_shape[0]) + 0.5) * fl, (np.arange(low.coarse_shape[1]) + 0.5) * fl, indexing="ij")
    suitability = []
    for k, (ax, ay) in zip(area_classes, anchors):
        s = F.smooth_noise(low.coarse_shape, sigma=size / 7 / fl, rng=frng) + 0.45 * F.smooth_noise(
            low.coarse_shape, sigma=max(size / 25 / fl, 1.0), rng=frng
        )
        bump = 3.0 * np.exp(-((xs - ax) ** 2 + (ys - ay) ** 2) / (2 * (size / 14) ** 2))
        suitability.append((s + BIAS.get(names[k], 0.0) + bump).astype(np.float32))
    wobble = (
        F.smooth_noise(mid.coarse_shape, sigma=max(6.0 / fm, 0.8), rng=frng),
        F.smooth_noise(mid.coarse_shape, sigma=max(6.0 / fm, 0.8), rng=frng),
    )
    crowns = F.smooth_noise(mid.coarse_shape, sigma=max(4.0 / fm, 0.6), rng=frng)
    clumps = F.smooth_noise(mid.coarse_shape, sigma=max(14.0 / fm, 0.8), rng=frng)
    ponds = F.smooth_noise(mid.coarse_shape, sigma=max(12.0 / fm, 0.8), rng=frng)
    puddles = F.smooth_noise(mid.coarse_shape, sigma=max(6.0 / fm, 0.8), rng=frng)
    shade = F.smooth_noise(low.coarse_shape, sigma=size / 6 / fl, rng=frng)
    tone = F.smooth_noise(low.coarse_shape, sigma=max(size / 15 / fl, 1.0), rng=frng)
    farm_split = F.smooth_noise(low.coarse_shape, sigma=size / 5 / fl, rng=frng)

    # Linear features: 1-2 rivers (water), 2-4 roads.
    rivers = []
    for _ in range(int(rng.integers(1, 3))):
        curve = F.meander(
            rng, centre=tuple(rng.uniform(0.2, 0.8, 2) * size), angle=rng.uniform(0, np.pi), half_length=0.9 * size,
            amplitude=0.15 * size, shortest_wave=max(size / 10, 40.0),
        )
        rivers.append((shapely.LineString(curve).buffer(rng.uniform(4, 12), quad_segs=4), 1))
    roads = []
    for _ in range(int(rng.integers(2, 5))):
        curve = F.meander(
            rng, centre=tuple(rng.uniform(0.1, 0.9, 2) * size), angle=rng.uniform(0, np.pi), half_length=0.9 * size,
            amplitude=0.03 * size, shortest_wave=max(size / 3, 60.0),
        )
        roads.append((shapely.LineString(curve).buffer(rng.uniform(2.5, 4.5), quad_segs=2, cap_style="flat"), 1))
    road_class = names.index("road") if "road" in names else names.index("urban") if "urban" in names else None

    corner = int(rng.integers(4))
    cut = rng.uniform(0.08, 0.16) * size  # a triangle of this leg length is outside the footprint
    a, b = (1.0 if corner in (1, 3) else -1.0), (1.0 if corner in (2, 3) else -1.0)
    c = a * (size if a > 0 else 0) + b * (size if b > 0 else 0) - cut
    field_angle = rng.uniform(0, np.pi / 2)
    return LandcoverScene(
        size=size, names=names, grid=grid, low=low, mid=mid, suitability=suitability, area_classes=area_classes,
        wobble=wobble, crowns=crowns, clumps=clumps, ponds=ponds, puddles=puddles, shade=shade, tone=tone,
        farm_split=farm_split, rivers=F.Burner(rivers), roads=F.Burner(roads), road_class=road_class,
        field_angles=(field_angle, field_angle + rng.uniform(0.3, 1.2)), urban_angle=rng.uniform(0, np.pi / 2),
        parcel=(rng.uniform(150, 300), rng.uniform(90, 180)), block=rng.uniform(40, 70),
        footprint=(a, b, c), seed=seed,
    )


def _anchors(rng: np.random.Generator, count: int, size: int) -> list[tuple[float, float]]:
    """``count`` points spread over the scene: cells of a near-square grid, shuffled, jittered."""
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    cells = [(i, j) for i in range(rows) for j in range(cols)]
    rng.shuffle(cells)
    out = []
    for i, j in cells[:count]:
        out.append(((j + rng.uniform(0.3, 0.7)) * size / cols, (i + rng.uniform(0.3, 0.7)) * size / rows))
    return out


def _rotated(x: np.ndarray, y: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    ca, sa = math.cos(angle), math.sin(angle)
    return x * ca + y * sa, -x * sa + y * ca


def render_strip(scene: LandcoverScene, row0: int, row1: int, *, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows row0..row1-1: (rgb uint8 (3, h, w), classes uint8 (h, w))."""
    size, low, mid = scene.size, scene.low, scene.mid
    n = row1 - row0
    y = np.arange(row0, row1, dtype=np.float32)[:, None] + 0.5
    x = np.arange(size, dtype=np.float32)[None, :] + 0.5
    wob1, wob2 = mid.rows(scene.wobble[0], row0, row1), mid.rows(scene.wobble[1], row0, row1)

    # Large regions, then small patches, then linear features on top.
    best = np.full((n, size), -np.inf, dtype=np.float32)
    classes = np.zeros((n, size), dtype=np.uint8)
    for j, (k, field) in enumerate(zip(scene.area_classes, scene.suitability)):
        angle = 2 * np.pi * j / max(len(scene.area_classes), 1)
        value = low.rows(field, row0, row1) + 0.12 * (math.cos(angle) * wob1 + math.sin(angle) * wob2)
        better = value > best
        best = np.where(better, value, best)
        classes[better] = k
    del best, wob1, wob2
    forest, water = scene.index("forest"), scene.index("water")
    open_land = np.isin(classes, [i for i in (scene.index(n) for n in ("field", "grassland", "bare", "urban")) if i is not None])
    if forest is not None:
        classes[open_land & (mid.rows(scene.clumps, row0, row1) > 2.0)] = forest
    pond_land = np.isin(classes, [i for i in (scene.index(n) for n in ("forest", "field", "grassland", "wetland")) if i is not None])
    if water is not None:
        classes[pond_land & (mid.rows(scene.ponds, row0, row1) > 2.4)] = water
        classes[scene.rivers.strip(row0, n, size, dtype="uint8").astype(bool)] = water
    if scene.road_class is not None:
        classes[scene.roads.strip(row0, n, size, dtype="uint8").astype(bool)] = scene.road_class

    rgb = _colours(scene, classes, x, y, row0, row1)
    rng = F.rng_for(scene.seed, _NOISE, index)
    shade = 1.0 + 0.08 * low.rows(scene.shade, row0, row1)
    rgb = rgb * shade[None] + rng.normal(0.0, 3.0, size=rgb.shape).astype(np.float32)
    rgb = np.clip(np.rint(rgb), 1, 255).astype(np.uint8)  # 0 is the image's nodata

    a, b, c = scene.footprint
    outside = a * x + b * y > c
    classes = np.where(outside, np.uint8(NODATA_CLASS), classes)
    rgb[:, outside] = 0
    return rgb, classes


def _colours(scene: LandcoverScene, classes: np.ndarray, x: np.ndarray, y: np.ndarray, row0: int, row1: int) -> np.ndarray:
    """Per-class textures: each is computed only where its class is."""
    low, mid, seed = scene.low, scene.mid, scene.seed
    shape = classes.shape
    rgb = np.zeros((3,) + shape, dtype=np.float32)
    tone = low.rows(scene.tone, row0, row1)
    names = scene.names
    xs, ys = np.broadcast_arrays(x, y)

    def paint(name: str, colour_fn) -> None:
        if name not in names:
            return
        where = classes == names.index(name)
        if where.any():
            rgb[:, where] = colour_fn(where)

    crowns = mid.rows(scene.crowns, row0, row1)
    puddles = mid.rows(scene.puddles, row0, row1)

    def water(where):
        t = np.clip(0.5 + 0.3 * tone[where], 0, 1)
        return np.stack([30 + 30 * t, 48 + 28 * t, 58 + 8 * t]) + 2.0 * puddles[where]

    def forest(where):
        crown = np.clip(0.5 + 0.45 * crowns[where], 0, 1) ** 1.4  # gaps between crowns fall into shadow
        base = np.array([48, 80, 42], dtype=np.float32)[:, None] * (1 + 0.12 * tone[where])
        return base * (0.45 + 0.8 * crown)

    def field(where):
        split = low.rows(scene.farm_split, row0, row1)[where] > 0
        angle = np.where(split, scene.field_angles[1], scene.field_angles[0])
        ca, sa = np.cos(angle), np.sin(angle)
        u = xs[where] * ca + ys[where] * sa
        v = -xs[where] * sa + ys[where] * ca
        pu, pv = scene.parcel
        iu, iv = np.floor(u / pu), np.floor(v / pv)
        h = F.hash_uniform(iu, iv, split.astype(np.int64), seed=seed + 1)
        crop = CROPS[(h * len(CROPS)).astype(int) % len(CROPS)].T
        period = 5.0 + 8.0 * F.hash_uniform(iu, iv, 7, seed=seed)
        along = np.where(F.hash_uniform(iu, iv, 3, seed=seed) < 0.5, u, v)
        stripes = 1.0 + (0.05 + 0.1 * h) * np.sin(2 * np.pi * along / period)
        edge = np.minimum(np.minimum(u - iu * pu, (iu + 1) * pu - u), np.minimum(v - iv * pv, (iv + 1) * pv - v))
        hedge = np.where(edge < 1.5, 0.7, 1.0)
        return crop * (stripes * hedge * (1 + 0.08 * tone[where]))[None]

    def urban(where):
        u, v = _rotated(xs[where], ys[where], scene.urban_angle)
        b = scene.block
        iu, iv = np.floor(u / b), np.floor(v / b)
        fu, fv = u - iu * b, v - iv * b
        h = F.hash_uniform(iu, iv, seed=seed + 2)
        inset = 5.0 + 8.0 * F.hash_uniform(iu, iv, 1, seed=seed + 2)
        building = (fu > inset) & (fu < b - inset * 0.6) & (fv > inset * 0.8) & (fv < b - inset)
        street = (fu < 4.0) | (fv < 4.0)
        roof = ROOFS[(h * len(ROOFS)).astype(int) % len(ROOFS)].T
        yard = np.array([92, 112, 72], dtype=np.float32)[:, None]
        asphalt = np.array([104, 104, 104], dtype=np.float32)[:, None]
        out = np.where(building[None], roof, np.where(street[None], asphalt, yard))
        # Roof ridges: one half of each roof a little darker (sun from one side).
        ridge = building & (fu - inset > (b - 1.6 * inset) / 2)
        return out * np.where(ridge, 0.85, 1.0)[None]

    def bare(where):
        mottle = 14.0 * crowns[where] + 8.0 * puddles[where]
        return np.stack([165 + mottle, 146 + mottle, 118 + 0.8 * mottle]) * (1 + 0.06 * tone[where])

    def wetland(where):
        wet = np.clip((puddles[where] - 0.3) * 2.0, 0, 1)
        reed = np.stack([88 + 10 * crowns[where], 100 + 8 * crowns[where], 66 + 0 * crowns[where]])
        pool = np.array([40, 58, 60], dtype=np.float32)[:, None]
        return reed * (1 - wet) + pool * wet

    def grassland(where):
        return np.stack([122 + 6 * crowns[where], 146 + 6 * crowns[where], 82 + 4 * crowns[where]]) * (1 + 0.1 * tone[where])

    def road(where):
        return np.array([110, 110, 108], dtype=np.float32)[:, None] + 4.0 * puddles[where][None]

    for name, fn in (("water", water), ("forest", forest), ("field", field), ("urban", urban), ("bare", bare),
                     ("wetland", wetland), ("grassland", grassland), ("road", road)):
        paint(name, fn)
    if scene.road_class is not None and names[scene.road_class] == "urban":
        on_road = scene.roads.strip(row0, row1 - row0, scene.size, dtype="uint8").astype(bool)
        if on_road.any():
            rgb[:, on_road] = road(on_road)
    return rgb


def output_paths(path: Path, *, classes: str | Path | None = None) -> dict[str, Path]:
    return {"image": path, "classes": F.companion_path(path, "classes", ".tif", classes)}


def make_landcover_scene(
    path: str | Path,
    *,
    size: int = 2048,
    seed: int = 0,
    n_classes: int = 6,
    classes_path: str | Path | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict[str, Path]:
    """Write a synthetic RGB land-cover image and its class raster (at ``classes_path``, by default
    named from the image's whole file name)."""
    path = Path(path)
    F.check_size(size, minimum=MIN_SIZE, what="landcover")
    if not MIN_CLASSES <= int(n_classes) <= MAX_CLASSES:
        raise ConfigError(f"--classes {n_classes}: choose {MIN_CLASSES} to {MAX_CLASSES} ({', '.join(CLASS_NAMES)})")
    if path.suffix.lower() not in (".tif", ".tiff"):
        raise ConfigError(f"{path}: the land-cover image is written as a GeoTIFF: use a .tif name")
    outputs = output_paths(path, classes=classes_path)
    F.check_distinct(outputs)
    for out in outputs.values():
        check_output(out, overwrite=overwrite)
    scene = build_scene(int(size), seed, int(n_classes))
    names = ",".join(scene.names)
    tags = {"icetools_synth_seed": seed, "pixel_size_m": PIXEL_M}
    windows = list(iter_strips(scene.size, scene.size))
    with contextlib.ExitStack() as stack:
        image = stack.enter_context(
            open_raster_writer(
                path, scene.grid, count=3, dtype="uint8", nodata=0, band_names=["red", "green", "blue"],
                tags=tags | {"description": "synthetic aerial RGB (icetools synth landcover)"}, overwrite=overwrite,
            )
        )
        labels = stack.enter_context(
            open_raster_writer(
                outputs["classes"], scene.grid, count=1, dtype="uint8", nodata=NODATA_CLASS, band_names=["class"],
                tags=tags | {"class_names": names}, overwrite=overwrite, categorical=True,
            )
        )
        for index, window in enumerate(windows):
            r0, r1 = int(window.row_off), int(window.row_off + window.height)
            rgb, classes = render_strip(scene, r0, r1, index=index)
            image.write(rgb, window)
            labels.write(classes, window)
            report(progress, "scene", 0.95 * (index + 1) / len(windows), 1.0)
    report(progress, "scene", 1.0, 1.0)
    return outputs
