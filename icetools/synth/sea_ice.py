"""Synthetic Sentinel-1 EW sea-ice scenes (AI4Arctic raw netCDF or GeoTIFF) with a known concentration.

The truth is a concentration field C in [0, 1]: a smooth large-scale field with meso-scale structure of a
few km inside it (floe clusters, bands at the edge, polynyas); the radar sees floes, leads, land and fast
ice with the ambiguity of real EW scenes: level, new and fast ice as dark as calm water in HH,
wind-roughened water as bright as ice, so HV, texture and context are the cues
(:mod:`icetools.synth.sea_ice_surface`). The ice chart is drawn the way an analyst draws one:
large generalised regions where the concentration changes, coded with SIGRID-3 from the region's
mean true concentration, blind to the structure inside them (:mod:`icetools.synth.sea_ice_chart`),
so the chart alone is a baseline a model can beat. The files' attributes say what was drawn
(``icetools_synth_version``, shares of dark ice and bright water, ``icetools_chart_generalisation_km``).

Outputs: the scene (``.nc``: AI4Arctic raw layout with tie points; ``.tif``: EPSG:3413 affine),
``<name>.chart.gpkg`` (layer "chart") and ``<name>.truth.tif`` (band "SIC", NaN on land), named
from the whole file name (scene.nc -> scene.nc.chart.gpkg) unless given.
Memory is bounded by a strip of rows: a full 10000-row scene peaks at about 1.2 GB.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from affine import Affine
from pyproj import CRS, Transformer
from scipy import ndimage

from icetools.errors import ConfigError
from icetools.grid import WGS84, Grid, gcps_from_tie_points
from icetools.io.atomic import atomic_path, check_output
from icetools.io.raster import iter_strips, open_raster_writer
from icetools.progress import Progress, report
from icetools.synth import fields as F
from icetools.synth.sea_ice_chart import (
    PolygonStats,
    chart_codes,
    chart_frame,
    draw_chart,
    generalisation_px,
    min_polygon_px,
    polygon_code_rows,
)
from icetools.synth.sea_ice_surface import (
    INCIDENCE_FAR,
    INCIDENCE_NEAR,
    LAYOUT_STREAM,
    PASSIVE_STREAM,
    AmbiguityTally,
    SeaIceFields,
    build_fields,
    render_strip,
)


# 3: meso-scale structure in the truth and generalised charts (chart alone R2 ~0.7-0.8, was ~0.99);
# 2: level, new and fast ice as dark as calm water in HH, wind water as bright as ice (issue 9);
# 1: dark always meant water. Recorded in the files, so a model can say what it was trained on.
SYNTH_VERSION = 3
PIXEL_M = 40.0
TIE_POINTS_PER_AXIS = 21
AMSR_BLOCK = 50
MIN_SIZE = 64
EPSG_3413 = CRS.from_epsg(3413)
CIS_LCC = CRS.from_proj4(
    "+proj=lcc +lat_0=40 +lon_0=-100 +lat_1=49 +lat_2=77 +x_0=0 +y_0=0 +datum=WGS84 +units=m +no_defs"
)

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
        rng = F.rng_for(seed, LAYOUT_STREAM)
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
        rng = F.rng_for(seed, LAYOUT_STREAM, 1)
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


# --- passive microwave and reanalysis on the 2 km grid -------------------------------------------


def passive_microwave(fields: SeaIceFields, seed: int) -> dict[str, np.ndarray]:
    """AMSR2-like brightness temperatures and ERA5-like winds, one value per 50 x 50 pixels.

    The winds blow along the wind streaks on the water (u along columns, v up the rows).
    """
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
    rng = F.rng_for(seed, PASSIVE_STREAM)
    tb18h = land * 252.0 + (1 - land) * (conc * 238.0 + (1 - conc) * (98.0 + 22.0 * wind))
    tb36v = land * 258.0 + (1 - land) * (conc * 246.0 + (1 - conc) * (204.0 + 12.0 * wind))
    speed = 2.0 + 13.0 * wind
    direction = fields.ambiguity.wind_angle + 0.4 * ndimage.gaussian_filter(rng.standard_normal((hc, wc)), 3, mode="nearest")
    out = {
        "btemp_18_7h": ndimage.gaussian_filter(tb18h, 4.0, mode="nearest") + rng.normal(0, 0.7, (hc, wc)),
        "btemp_36_5v": ndimage.gaussian_filter(tb36v, 2.0, mode="nearest") + rng.normal(0, 0.5, (hc, wc)),
        "u10m_rotated": speed * np.cos(direction),
        "v10m_rotated": speed * np.sin(direction),
    }
    return {k: v.astype(np.float32) for k, v in out.items()}


# --- the writers -------------------------------------------------------------------------------


def output_paths(path: Path, *, chart: str | Path | None = None, truth: str | Path | None = None) -> dict[str, Path]:
    return {
        "scene": path,
        "chart": F.companion_path(path, "chart", ".gpkg", chart),
        "truth": F.companion_path(path, "truth", ".tif", truth),
    }


def drawn_attributes(fields: SeaIceFields) -> dict[str, object]:
    """What the generator drew for a scene, known before rendering: recorded in every file it writes."""
    amb = fields.ambiguity
    size = min(fields.height, fields.width)
    return {
        "icetools_synth_version": SYNTH_VERSION,
        # The chart's smoothing scale (Gaussian sigma) and its smallest polygon's side: finer structure is not charted.
        "icetools_chart_generalisation_km": round(generalisation_px(size) * PIXEL_M / 1000, 2),
        "icetools_chart_min_polygon_km": round(min_polygon_px(size) * PIXEL_M / 1000, 2),
        "icetools_synth_dark_ice_target": round(amb.dark_ice_target, 4),
        "icetools_synth_wind_level": round(amb.wind_level, 4),
        "icetools_synth_fast_ice_width_m": round(amb.fast_ice_width * PIXEL_M, 1),
    }


def measured_attributes(tally: AmbiguityTally) -> dict[str, float]:
    """Shares of the scene's pixels: ice that is dark (level, new or fast), fast ice, bright wind water."""
    return {f"icetools_synth_{name}": round(value, 4) for name, value in tally.fractions().items()}


def _open_netcdf(
    tmp: Path, lay: SceneLayout, ties: dict[str, np.ndarray], ids: dict[str, str], attributes: dict[str, object]
):
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
            "comment": "synthetic scene from icetools synth sea-ice; the truth is in the .truth.tif beside it",
        }
        | attributes
    )
    return ds


def _write_codes(ds, rows: list[str], icechart_id: str) -> None:
    ds.createDimension("polygon_codes", len(rows))
    var = ds.createVariable("polygon_codes", str, ("polygon_codes",))
    var[:] = np.array(rows, dtype=object)
    var.setncattr("icechart_id", icechart_id)


def make_sea_ice_scene(
    path: str | Path,
    *,
    size: int = 1024,
    seed: int = 0,
    chart_path: str | Path | None = None,
    truth_path: str | Path | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict[str, Path]:
    """Write a synthetic sea-ice scene (``.nc`` AI4Arctic raw layout, or ``.tif``), its chart and its truth
    (at ``chart_path`` and ``truth_path``, by default named from the scene's whole file name)."""
    path = Path(path)
    F.check_size(size, minimum=MIN_SIZE, what="sea-ice")
    suffix = path.suffix.lower()
    if suffix not in (".nc", ".tif", ".tiff"):
        raise ConfigError(f"{path}: a sea-ice scene is written as .nc (AI4Arctic layout) or .tif (GeoTIFF)")
    outputs = output_paths(path, chart=chart_path, truth=truth_path)
    F.check_distinct(outputs)
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
    drawn = {"icetools_synth_seed": np.int64(seed)} | drawn_attributes(fields)
    tags = {"scene_id": ids["scene_id"], "ice_service": lay.ice_service} | drawn
    tally = AmbiguityTally()
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
            ds = stack.enter_context(_open_netcdf(nc_tmp, lay, ties, ids, drawn))
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
            stats.add(poly_ids, strip)
            tally.add(strip)
            truth_writer.write(strip.truth, window)
            if is_netcdf:
                ds["nersc_sar_primary"][r0:r1, :] = strip.hh
                ds["nersc_sar_secondary"][r0:r1, :] = strip.hv
                ds["polygon_icechart"][r0:r1, :] = np.where(poly_ids > 0, poly_ids, np.nan).astype(np.float32)
            else:
                sar_writer.write(np.stack([strip.hh, strip.hv]), window)
            report(progress, "scene", 0.9 * (index + 1) / len(windows), 1.0)

        codes = chart_codes(regions, stats, seed)
        if is_netcdf:
            ds.setncatts(measured_attributes(tally))
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
    report(progress, "scene", 1.0, 1.0)
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
