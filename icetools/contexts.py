"""Context windows for multi-context models (FCtL, the refiner): one place for train and predict.

For a local window, a context at scale s is the window s times larger centred on it, read from the
scene at its true size (clipped at the scene edge and padded by reflection in memory) and resized
to the local window's size by area averaging. Scale 1 is the local window itself.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from rasterio.windows import Window

Reader = Callable[[Window], np.ndarray]  # returns (C, h, w) for any window, padded beyond the edge


def context_window(window: Window, scale: float) -> Window:
    """The window ``scale`` times larger than ``window`` with the same centre (whole pixels)."""
    height = int(round(window.height * scale))
    width = int(round(window.width * scale))
    row = int(window.row_off) + (int(window.height) - height) // 2
    col = int(window.col_off) + (int(window.width) - width) // 2
    return Window(col, row, width, height)


def resize(stack: np.ndarray, size: tuple[int, int], *, mode: str = "area") -> np.ndarray:
    """Resize (C, h, w) to (C, *size); NaNs are averaged out where a neighbour is finite."""
    if stack.shape[-2:] == tuple(size):
        return stack
    data = torch.from_numpy(np.ascontiguousarray(stack, dtype="float32"))[None]
    finite = torch.isfinite(data)
    filled = torch.where(finite, data, torch.zeros((), dtype=data.dtype))
    if mode == "area":
        num = F.interpolate(filled, size=size, mode="area")
        den = F.interpolate(finite.float(), size=size, mode="area")
        out = torch.where(den > 0, num / den.clamp_min(1e-12), torch.full_like(num, float("nan")))
    else:
        out = F.interpolate(filled, size=size, mode=mode, align_corners=False)
        keep = F.interpolate(finite.float(), size=size, mode="nearest") > 0
        out = torch.where(keep, out, torch.full_like(out, float("nan")))
    return out[0].numpy()


def read_contexts(read: Reader, window: Window, scales: Sequence[float]) -> np.ndarray:
    """(T, C, h, w): the local window and each context resized to its size, in the order of ``scales``."""
    size = (int(window.height), int(window.width))
    layers = []
    for scale in scales:
        if scale == 1:
            layers.append(read(window))
        else:
            layers.append(resize(read(context_window(window, scale)), size))
    return np.stack(layers).astype("float32", copy=False)
