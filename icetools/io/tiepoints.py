"""Smooth scalars known at tie points (the incidence angle of AI4Arctic files), read onto any window."""

from __future__ import annotations

import numpy as np
from rasterio.windows import Window

from icetools.errors import MissingVariableError


class TiePointField:
    """A smooth scalar known at tie points (the incidence angle), read onto any window of pixels.

    Tie points sit at pixel centres given as (line, sample) indices. On a full regular tie grid (the
    AI4Arctic layouts) values are bilinear between tie points, exact at them, and extrapolated
    linearly from the outermost tie points (the incidence angle changes nearly linearly across the
    swath); the window is computed as two small matrix products. Scattered tie points fall back to
    linear interpolation over their triangulation, nearest value outside it.
    """

    def __init__(self, lines: np.ndarray, samples: np.ndarray, values: np.ndarray):
        lines, samples, values = (np.asarray(a, dtype="float64").ravel() for a in (lines, samples, values))
        keep = np.isfinite(values) & np.isfinite(lines) & np.isfinite(samples)
        lines, samples, values = lines[keep], samples[keep], values[keep]
        if values.size == 0:
            raise MissingVariableError("the incidence angle tie points hold no finite value")
        self._lines, self._samples = np.unique(lines), np.unique(samples)
        self._grid: np.ndarray | None = None
        if self._lines.size * self._samples.size == values.size:
            grid = np.full((self._lines.size, self._samples.size), np.nan)
            grid[np.searchsorted(self._lines, lines), np.searchsorted(self._samples, samples)] = values
            if np.isfinite(grid).all():
                self._grid = grid
        self._points = (lines, samples, values)

    @staticmethod
    def _weights(nodes: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """(positions, nodes) linear interpolation weights, extrapolating from the end segments."""
        weights = np.zeros((positions.size, nodes.size))
        if nodes.size == 1:
            weights[:, 0] = 1.0
            return weights
        k = np.clip(np.searchsorted(nodes, positions, side="right") - 1, 0, nodes.size - 2)
        t = (positions - nodes[k]) / (nodes[k + 1] - nodes[k])
        rows = np.arange(positions.size)
        weights[rows, k] = 1.0 - t
        weights[rows, k + 1] = t
        return weights

    def read(self, window: Window) -> np.ndarray:
        """The field on the pixels of ``window`` (inside the scene), float32 (h, w)."""
        rows = np.arange(int(window.row_off), int(window.row_off + window.height), dtype="float64")
        cols = np.arange(int(window.col_off), int(window.col_off + window.width), dtype="float64")
        if self._grid is not None:
            out = self._weights(self._lines, rows) @ self._grid @ self._weights(self._samples, cols).T
            return out.astype("float32")
        from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator

        lines, samples, values = self._points
        r, c = np.meshgrid(rows, cols, indexing="ij")
        query = np.stack([r.ravel(), c.ravel()], axis=-1)
        out = np.full(query.shape[0], np.nan)
        if values.size >= 3:
            try:
                out = LinearNDInterpolator(np.stack([lines, samples], axis=-1), values)(query)
            except Exception:  # collinear tie points (scipy's Qhull error): nearest values below
                pass
        missing = ~np.isfinite(out)
        if missing.any():
            out[missing] = NearestNDInterpolator(np.stack([lines, samples], axis=-1), values)(query[missing])
        return out.reshape(r.shape).astype("float32")
