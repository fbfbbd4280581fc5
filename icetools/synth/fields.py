"""Building blocks shared by the synthetic scenes: seeded noise, strip-wise upsampling, speckle, curves.

Every generator follows one pattern so that memory stays bounded at any size: smooth fields are
drawn at a reduced resolution and kept in memory (a 10k scene's 1/16 field is 625 x 650), the
full-resolution rows are produced one strip at a time by upsampling those fields, and per-pixel
randomness (speckle, sensor noise) comes from a generator seeded by (seed, stream, strip index), so
a scene is the same whatever the order of the work.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import rasterio.features
import scipy.fft
import shapely
from affine import Affine
from scipy import ndimage, sparse

from icetools.errors import ConfigError
from icetools.io.paths import same_file

STRIP_ROWS = 512
_SEED_MASK = (1 << 64) - 1


def rng_for(seed: int, *stream: int) -> np.random.Generator:
    """An independent generator per (seed, stream...): fields never share random numbers."""
    return np.random.default_rng([int(seed) & _SEED_MASK, *stream])


def check_size(size: int, *, minimum: int, what: str) -> None:
    if int(size) < minimum:
        raise ConfigError(f"--size {size} is too small for a {what} scene: use at least {minimum}")


def companion_path(path: Path, kind: str, suffix: str, given: str | Path | None = None) -> Path:
    """Where a generator's companion file goes: ``given``, else named from the WHOLE file name as
    GDAL names its sidecars (scene.nc -> scene.nc.chart.gpkg), so scene.nc and scene.tif beside it
    never share a chart or a truth."""
    return Path(given) if given is not None else path.with_name(f"{path.name}.{kind}{suffix}")


def check_distinct(outputs: dict[str, Path]) -> None:
    """No two files of one generator share a path (``--truth-out`` naming the scene itself, say)."""
    seen: list[tuple[Path, str]] = []
    for kind, path in outputs.items():
        for earlier, earlier_kind in seen:  # same real path, or hard links to one file
            if same_file(path, earlier):
                raise ConfigError(f"the {kind} and the {earlier_kind} would both be {path}: give them different names")
        seen.append((Path(path), kind))


def reduction_factor(size: int, *, target: int, most: int) -> int:
    """The coarse grid's reduction: about ``target`` coarse cells across, never more than ``most`` pixels per cell."""
    return int(max(1, min(most, size // target)))


def smooth_noise(shape: tuple[int, int], *, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """White noise low-passed by a Gaussian of ``sigma`` cells, standardised to mean 0, std 1.

    Standardising the realisation (not the process) keeps contrasts the same at every scene size.
    """
    white = rng.standard_normal(shape, dtype=np.float32)
    field = ndimage.gaussian_filter(white, float(sigma), mode="wrap", truncate=3.0)
    return standardize(field)


def standardize(field: np.ndarray) -> np.ndarray:
    field = field - field.mean(dtype=np.float64)
    std = float(field.std(dtype=np.float64))
    return (field / (std if std > 0 else 1.0)).astype(np.float32)


def multiscale_noise(
    shape: tuple[int, int], *, sigmas: Sequence[float], weights: Sequence[float], rng: np.random.Generator
) -> np.ndarray:
    """Weighted sum of standardised smooth noises (octaves), standardised again."""
    total = np.zeros(shape, dtype=np.float32)
    for sigma, weight in zip(sigmas, weights):
        total += np.float32(weight) * smooth_noise(shape, sigma=sigma, rng=rng)
    return standardize(total)


def streak_noise(
    shape: tuple[int, int], *, angle: float, spacing: float, length: float, rng: np.random.Generator
) -> np.ndarray:
    """Standardised noise whose crests run along ``angle``, about ``spacing`` cells apart and ``length`` long.

    Wind streaks (boundary-layer rolls) on open water: a band-pass across the wind and a low-pass
    along it, applied to white noise in the Fourier domain (periodic, like :func:`smooth_noise`;
    single precision, so a 10k scene's 1/4 grid costs about 100 MB for a moment).
    ``angle`` is in radians with x along columns and y up (rows run down).
    """
    white = rng.standard_normal(shape, dtype=np.float32)
    k_row = np.fft.fftfreq(shape[0]).astype(np.float32)[:, None]
    k_col = np.fft.rfftfreq(shape[1]).astype(np.float32)[None, :]
    ca, sa = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    along = k_col * ca - k_row * sa
    along *= np.float32(length)
    along *= along
    across = np.abs(-k_col * sa - k_row * ca)
    across -= np.float32(1.0 / spacing)
    across *= np.float32(spacing / 0.3)  # bandwidth 0.3 / spacing
    across *= across
    across += along
    del along
    spectrum = np.exp(np.float32(-0.5) * across)
    del across
    field = scipy.fft.irfft2(scipy.fft.rfft2(white) * spectrum, s=shape)
    return standardize(field)


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The value below which a share ``q`` of the total weight lies (plain quantile if all weights are 0)."""
    order = np.argsort(values, axis=None, kind="stable")
    sorted_values = values.ravel()[order]
    cumulative = np.cumsum(weights.ravel()[order], dtype=np.float64)
    if cumulative[-1] <= 0:
        return float(np.quantile(values, q))
    return float(sorted_values[min(int(np.searchsorted(cumulative, q * cumulative[-1])), sorted_values.size - 1)])


def _keys_weights(t: np.ndarray) -> np.ndarray:
    """Keys cubic-convolution weights (a = -0.5) for the 4 neighbours i-1..i+2 at fraction t."""
    t2, t3 = t * t, t * t * t
    return np.stack(
        [-0.5 * t3 + t2 - 0.5 * t, 1.5 * t3 - 2.5 * t2 + 1.0, -1.5 * t3 + 2.0 * t2 + 0.5 * t, 0.5 * t3 - 0.5 * t2],
        axis=-1,
    )


def interpolation_matrix(positions: np.ndarray, n_coarse: int, factor: int) -> sparse.csr_matrix:
    """Sparse (len(positions), n_coarse) matrix that samples a coarse axis at full-resolution pixel indices.

    Coarse cell i covers full pixels [i*factor, (i+1)*factor), so full pixel p sits at coarse
    coordinate (p + 0.5) / factor - 0.5. Separable sparse products evaluate 10^8 pixels in seconds,
    where ``ndimage.map_coordinates`` would need a coordinate pair stored for every pixel.
    """
    positions = np.asarray(positions, dtype=np.float64)
    u = (positions + 0.5) / factor - 0.5
    base = np.floor(u)
    weights = _keys_weights(u - base)
    cols = np.clip(base[:, None].astype(np.int64) + np.arange(-1, 3)[None, :], 0, n_coarse - 1)
    rows = np.repeat(np.arange(positions.size), 4)
    return sparse.csr_matrix((weights.ravel(), (rows, cols.ravel())), shape=(positions.size, n_coarse))


class Upsampler:
    """Cubic upsampling of coarse fields (one reduction factor) to full-resolution strips or any sample grid."""

    def __init__(self, coarse_shape: tuple[int, int], full_shape: tuple[int, int], factor: int):
        self.coarse_shape = coarse_shape
        self.full_shape = full_shape
        self.factor = factor
        self._full_cols = interpolation_matrix(np.arange(full_shape[1]), coarse_shape[1], factor)

    @classmethod
    def for_scene(cls, height: int, width: int, factor: int) -> "Upsampler":
        return cls((math.ceil(height / factor), math.ceil(width / factor)), (height, width), factor)

    def sample(self, field: np.ndarray, rows: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
        """The field at full-resolution row indices ``rows`` (may be fractional) and columns (default: all)."""
        row_matrix = interpolation_matrix(rows, self.coarse_shape[0], self.factor)
        col_matrix = self._full_cols if cols is None else interpolation_matrix(cols, self.coarse_shape[1], self.factor)
        used = np.unique(row_matrix.indices)
        # Columns first on the few coarse rows involved, then rows: the result comes out row-major.
        across = col_matrix @ field[used].astype(np.float32).T  # (n_cols, n_used)
        return np.asarray(row_matrix[:, used] @ np.ascontiguousarray(across.T), dtype=np.float32)

    def rows(self, field: np.ndarray, row0: int, row1: int) -> np.ndarray:
        """Full-resolution rows row0..row1-1 (indices beyond the scene are clamped at its edge)."""
        return self.sample(field, np.arange(row0, row1))


def upsampled_std(upsampler: Upsampler, field: np.ndarray, *, n_rows: int = 48) -> float:
    """Std of a field after cubic upsampling, from evenly spaced rows (interpolation smooths a little)."""
    height = upsampler.full_shape[0]
    rows = np.unique(np.linspace(0, height - 1, min(n_rows, height)).round().astype(int))
    return float(upsampler.sample(field, rows).std(dtype=np.float64))


def gamma_speckle(rng: np.random.Generator, shape: tuple[int, ...], looks: float) -> np.ndarray:
    """Multiplicative speckle of a multi-looked intensity: Gamma(looks, 1/looks), mean 1."""
    return rng.standard_gamma(looks, size=shape, dtype=np.float32) / np.float32(looks)


_DB = np.float32(math.log(10.0) / 10.0)


def db_to_linear(db: np.ndarray) -> np.ndarray:
    return np.exp(np.asarray(db, dtype=np.float32) * _DB)


def linear_to_db(power: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(power, np.float32(1e-12))) / _DB


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hash_uniform(*keys: np.ndarray | int, seed: int) -> np.ndarray:
    """Deterministic uniform [0, 1) values for integer keys (cell indices), without storing a table.

    Per-cell attributes (a parcel's crop, a roof's colour) for any scene size: SplitMix64 applied
    to the seed and each key in turn, vectorised.
    """
    with np.errstate(over="ignore"):
        h = _splitmix64(np.asarray(np.uint64(int(seed) & _SEED_MASK)))
        for key in keys:
            h = _splitmix64(h ^ np.asarray(key).astype(np.int64).astype(np.uint64))
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def meander(
    rng: np.random.Generator,
    *,
    centre: tuple[float, float],
    angle: float,
    half_length: float,
    amplitude: float,
    shortest_wave: float,
    spacing: float = 2.0,
) -> np.ndarray:
    """A sinuous curve (N, 2) in pixel space: a rotated graph y(t) made of a few random sinusoids.

    Being a graph in its own frame it never folds back on itself, so one side of it is well defined
    (land vs sea for a grounding line). ``shortest_wave`` bounds the sharpest bend.
    """
    t = np.arange(-half_length, half_length + spacing, spacing, dtype=np.float64)
    offset = np.zeros_like(t)
    longest = 4 * half_length
    n_waves = 6
    wavelengths = np.geomspace(longest, max(shortest_wave, 1.0), n_waves)
    raw = (wavelengths / longest) ** 1.2  # longer waves swing wider, like natural meanders
    amps = amplitude * raw / raw.sum() * rng.uniform(0.5, 1.5, n_waves)
    for wavelength, amp in zip(wavelengths, amps):
        offset += amp * np.sin(2 * np.pi * t / wavelength + rng.uniform(0, 2 * np.pi))
    offset -= offset[len(offset) // 2]
    ca, sa = math.cos(angle), math.sin(angle)
    x = centre[0] + t * ca - offset * sa
    y = centre[1] + t * sa + offset * ca
    return np.stack([x, y], axis=-1)


class Burner:
    """Pixel-space geometries (x = column, y = row) burnt strip by strip into rasters.

    Converts each geometry to GeoJSON once and skips those outside the strip by their bounds, so
    a chart of hundreds of polygons costs little per strip.
    """

    def __init__(self, shapes: Iterable[tuple[shapely.Geometry, float]]):
        pairs = [(g, v) for g, v in shapes if g is not None and not g.is_empty]
        self._mappings = [shapely.geometry.mapping(g) for g, _ in pairs]
        self._values = [v for _, v in pairs]
        self._bounds = shapely.bounds(np.array([g for g, _ in pairs], dtype=object)) if pairs else np.zeros((0, 4))

    def strip(
        self, row0: int, n_rows: int, width: int, *, fill: float = 0, dtype: str = "int32", all_touched: bool = False
    ) -> np.ndarray:
        """Rows row0..row0+n_rows-1 of the burnt raster (later shapes win where shapes overlap)."""
        hit = np.nonzero((self._bounds[:, 1] <= row0 + n_rows) & (self._bounds[:, 3] >= row0))[0]
        if hit.size == 0:
            return np.full((n_rows, width), fill, dtype=dtype)
        return rasterio.features.rasterize(
            [(self._mappings[i], self._values[i]) for i in hit], out_shape=(n_rows, width),
            transform=Affine.translation(0, row0), fill=fill, dtype=dtype, all_touched=all_touched,
        )
