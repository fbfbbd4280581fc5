"""A scene's grid: its shape and how its pixels sit on the Earth.

Map-projected scenes carry a CRS and an affine transform. Scenes in radar geometry (AI4Arctic
netCDF, Sentinel-1 GRD GeoTIFFs) carry only ground control points (tie points): lon/lat at a
sparse set of pixels. Both kinds are kept as they are, all the way to the output GeoTIFF; vectors
are moved into pixel space instead of warping the scene.

Pixel space follows GDAL: x = column, y = row, (0, 0) is the outer corner of the first pixel and
(0.5, 0.5) its centre.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import numpy as np
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.control import GroundControlPoint
from rasterio.windows import Window
from scipy.interpolate import LinearNDInterpolator, RegularGridInterpolator

from icetools.errors import CRSError

WGS84 = CRS.from_epsg(4326)
_POLY_DEGREE = 3


def _poly_terms(u: np.ndarray, v: np.ndarray, degree: int) -> np.ndarray:
    """Design matrix of the 2-D polynomial terms u^i v^j with i + j <= degree."""
    return np.stack([u**i * v**j for i in range(degree + 1) for j in range(degree + 1 - i)], axis=-1)


@dataclass(frozen=True)
class _Scaler:
    """Maps coordinates to about [-1, 1] so polynomial fits stay well conditioned."""

    centre: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, a: np.ndarray, b: np.ndarray) -> "_Scaler":
        pts = np.stack([a, b], axis=-1)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        return cls(centre=(lo + hi) / 2, scale=np.maximum((hi - lo) / 2, 1e-9))

    def __call__(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (a - self.centre[0]) / self.scale[0], (b - self.centre[1]) / self.scale[1]


class TiePointMapping:
    """Pixel space <-> lon/lat through tie points.

    Forward (pixel -> local metres): a cubic polynomial fitted to all tie points plus the
    residuals interpolated linearly between them, so the mapping is exact at every tie point,
    smooth, and extrapolates sensibly for geometries that reach beyond the swath. GDAL's own GCP
    transformer uses the polynomial alone, which misses tie points by tens of metres on a full
    Sentinel-1 scene. Inverse: a cubic polynomial guess refined by Newton steps on the forward
    mapping, so pixel -> lon/lat -> pixel closes to far below a pixel.

    Coordinates are handled in a local azimuthal equidistant projection centred on the scene,
    which avoids the date line and the poles.
    """

    def __init__(self, cols: np.ndarray, rows: np.ndarray, lons: np.ndarray, lats: np.ndarray):
        cols, rows, lons, lats = (np.asarray(a, dtype="float64").ravel() for a in (cols, rows, lons, lats))
        if cols.size < 3:
            raise CRSError("the scene has fewer than 3 tie points: cannot geolocate it")
        lon0 = float(np.degrees(np.arctan2(np.sin(np.radians(lons)).mean(), np.cos(np.radians(lons)).mean())))
        lat0 = float(np.mean(lats))
        self.local_crs = CRS.from_proj4(f"+proj=aeqd +lat_0={lat0:.6f} +lon_0={lon0:.6f} +datum=WGS84 +units=m")
        self._to_local = Transformer.from_crs(WGS84, self.local_crs, always_xy=True)
        self._to_lonlat = Transformer.from_crs(self.local_crs, WGS84, always_xy=True)
        x, y = self._to_local.transform(lons, lats)
        self._pix_scaler = _Scaler.fit(cols, rows)
        self._xy_scaler = _Scaler.fit(x, y)
        degree = min(_POLY_DEGREE, max(1, int(np.sqrt(cols.size)) - 1))
        self._degree = degree
        design = _poly_terms(*self._pix_scaler(cols, rows), degree)
        self._fwd_coef, *_ = np.linalg.lstsq(design, np.stack([x, y], axis=-1), rcond=None)
        inv_design = _poly_terms(*self._xy_scaler(x, y), degree)
        self._inv_coef, *_ = np.linalg.lstsq(inv_design, np.stack([cols, rows], axis=-1), rcond=None)
        residual = np.stack([x, y], axis=-1) - design @ self._fwd_coef
        self._residual = self._residual_interpolator(cols, rows, residual)

    @staticmethod
    def _residual_interpolator(cols: np.ndarray, rows: np.ndarray, residual: np.ndarray):
        """Linear interpolation of the polynomial's misfit; regular tie grids get the fast path."""
        ucols, urows = np.unique(cols), np.unique(rows)
        if ucols.size * urows.size == cols.size and ucols.size > 1 and urows.size > 1:
            grid = np.full((urows.size, ucols.size, 2), np.nan)
            grid[np.searchsorted(urows, rows), np.searchsorted(ucols, cols)] = residual
            if np.isfinite(grid).all():
                interp = RegularGridInterpolator((urows, ucols), grid, bounds_error=False, fill_value=None)
                lo, hi = np.array([urows[0], ucols[0]]), np.array([urows[-1], ucols[-1]])
                # Beyond the tie grid hold the edge residual rather than extrapolating it.
                return lambda c, r: interp(np.clip(np.stack([r, c], axis=-1), lo, hi))
        interp = LinearNDInterpolator(np.stack([cols, rows], axis=-1), residual, fill_value=0.0)
        return lambda c, r: interp(np.stack([c, r], axis=-1))

    def pixel_to_local(self, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cols, rows = np.asarray(cols, dtype="float64"), np.asarray(rows, dtype="float64")
        shape = cols.shape
        c, r = cols.ravel(), rows.ravel()
        xy = _poly_terms(*self._pix_scaler(c, r), self._degree) @ self._fwd_coef + self._residual(c, r)
        return xy[:, 0].reshape(shape), xy[:, 1].reshape(shape)

    def local_to_pixel(self, x: np.ndarray, y: np.ndarray, *, iterations: int = 4) -> tuple[np.ndarray, np.ndarray]:
        x, y = np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64")
        shape = x.shape
        tx, ty = x.ravel(), y.ravel()
        guess = _poly_terms(*self._xy_scaler(tx, ty), self._degree) @ self._inv_coef
        c, r = guess[:, 0].copy(), guess[:, 1].copy()
        step = 0.5
        for _ in range(iterations):
            fx, fy = self.pixel_to_local(c, r)
            xc, yc = self.pixel_to_local(c + step, r)
            xr, yr = self.pixel_to_local(c, r + step)
            j11, j21 = (xc - fx) / step, (yc - fy) / step
            j12, j22 = (xr - fx) / step, (yr - fy) / step
            det = j11 * j22 - j12 * j21
            det = np.where(np.abs(det) < 1e-12, 1e-12, det)
            dx, dy = tx - fx, ty - fy
            c = c + (j22 * dx - j12 * dy) / det
            r = r + (-j21 * dx + j11 * dy) / det
        return c.reshape(shape), r.reshape(shape)

    def pixel_to_lonlat(self, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._to_lonlat.transform(*self.pixel_to_local(cols, rows))

    def lonlat_to_pixel(self, lons: np.ndarray, lats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.local_to_pixel(*self._to_local.transform(np.asarray(lons), np.asarray(lats)))


@dataclass(frozen=True)
class Grid:
    """Shape plus georeferencing: a CRS with an affine transform, or GCPs (usually lon/lat)."""

    height: int
    width: int
    crs: CRS | None = None
    transform: Affine | None = None
    gcps: tuple[GroundControlPoint, ...] = ()
    gcp_crs: CRS | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def has_gcps(self) -> bool:
        return bool(self.gcps) and self.transform is None

    @property
    def is_georeferenced(self) -> bool:
        return self.has_gcps or (self.crs is not None and self.transform is not None)

    @property
    def output_crs(self) -> CRS | None:
        """The CRS written to outputs: the map CRS, or that of the GCPs."""
        return self.gcp_crs if self.has_gcps else self.crs

    @cached_property
    def tie_points(self) -> TiePointMapping:
        if not self.has_gcps:
            raise CRSError("this grid has an affine transform, not tie points")
        gcp_crs = self.gcp_crs or WGS84
        lon = np.array([g.x for g in self.gcps])
        lat = np.array([g.y for g in self.gcps])
        if not CRS(gcp_crs).equals(WGS84):
            lon, lat = Transformer.from_crs(gcp_crs, WGS84, always_xy=True).transform(lon, lat)
        return TiePointMapping(np.array([g.col for g in self.gcps]), np.array([g.row for g in self.gcps]), lon, lat)

    def require_georeference(self, what: str) -> None:
        if not self.is_georeferenced:
            raise CRSError(f"{what} has neither a CRS with a transform nor ground control points")

    def pixel_size(self) -> float:
        """Approximate pixel size in metres (CRS units for projected affine grids)."""
        if self.has_gcps:
            m = self.tie_points
            c, r = np.array([self.width / 2]), np.array([self.height / 2])
            x0, y0 = m.pixel_to_local(c, r)
            x1, y1 = m.pixel_to_local(c + 1, r)
            x2, y2 = m.pixel_to_local(c, r + 1)
            return float((np.hypot(x1 - x0, y1 - y0)[0] + np.hypot(x2 - x0, y2 - y0)[0]) / 2)
        if self.transform is None:
            return 1.0
        size = float(np.sqrt(abs(self.transform.a * self.transform.e - self.transform.b * self.transform.d)))
        if self.crs is not None and self.crs.is_geographic:
            return size * 111_320.0
        return size

    def lonlat_bounds(self) -> tuple[float, float, float, float] | None:
        """(west, south, east, north) of the scene, from its edges."""
        n = 64
        cols = np.concatenate([np.linspace(0, self.width, n), np.full(n, self.width), np.linspace(0, self.width, n), np.zeros(n)])
        rows = np.concatenate([np.zeros(n), np.linspace(0, self.height, n), np.full(n, self.height), np.linspace(0, self.height, n)])
        if self.has_gcps:
            lon, lat = self.tie_points.pixel_to_lonlat(cols, rows)
        elif self.crs is not None and self.transform is not None:
            x, y = self.transform @ (cols, rows)
            lon, lat = Transformer.from_crs(self.crs, WGS84, always_xy=True).transform(x, y)
        else:
            return None
        return float(np.min(lon)), float(np.min(lat)), float(np.max(lon)), float(np.max(lat))

    def window_transform(self, window: Window) -> Affine | None:
        if self.transform is None:
            return None
        return self.transform @ Affine.translation(window.col_off, window.row_off)

    def full_window(self) -> Window:
        return Window(0, 0, self.width, self.height)

    def same_pixels_as(self, other: "Grid", *, tolerance: float = 1e-6) -> bool:
        """Whether two grids put the same pixels at the same places (for labels vs scenes)."""
        if self.shape != other.shape:
            return False
        if self.has_gcps or other.has_gcps:
            if len(self.gcps) != len(other.gcps):
                return False
            a = np.array([(g.row, g.col, g.x, g.y) for g in self.gcps])
            b = np.array([(g.row, g.col, g.x, g.y) for g in other.gcps])
            return bool(np.allclose(a, b, atol=tolerance))
        if self.transform is None or other.transform is None:
            return self.transform is None and other.transform is None
        if (self.crs is None) != (other.crs is None) or (self.crs is not None and not CRS(self.crs).equals(other.crs)):
            return False
        return self.transform.almost_equals(other.transform, precision=tolerance * abs(self.transform.a or 1))


def gcps_from_tie_points(
    lines: Sequence[float], samples: Sequence[float], lats: Sequence[float], lons: Sequence[float]
) -> tuple[GroundControlPoint, ...]:
    """GDAL GCPs from tie points given at pixel centres as (line, sample) indices."""
    return tuple(
        GroundControlPoint(row=float(r) + 0.5, col=float(c) + 0.5, x=float(lo), y=float(la), id=str(i))
        for i, (r, c, la, lo) in enumerate(zip(lines, samples, lats, lons))
    )
