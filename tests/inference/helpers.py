"""What the inference tests share: a fixed convolution as the model, its whole-image answer, scenes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from fixtures import corner_gcp_grid, write_scene

from icetools.inference import PredictJob, Predictor, load_predictor, make_predictor, predict_scene
from icetools.progress import Progress

MEAN = np.array([0.1, 0.2], dtype="float32")
STD = np.array([2.0, 3.0], dtype="float32")
CONFIG = {"task": "sic", "inputs": ["HH", "HV"], "normalization": {"mean": MEAN.tolist(), "std": STD.tolist()}, "patch_size": 32}


def fixed_conv(kernel: int = 1, *, out_channels: int = 1, padding_mode: str = "zeros") -> torch.nn.Conv2d:
    """A convolution with set weights: the engine sees its output as logits."""
    conv = torch.nn.Conv2d(2, out_channels, kernel, padding=kernel // 2, padding_mode=padding_mode)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * 0.5)
        conv.bias.copy_(torch.linspace(-0.2, 0.2, out_channels))
    return conv.eval()


def whole_image(conv: torch.nn.Conv2d, data: np.ndarray) -> np.ndarray:
    """The reference: the model on the whole normalised scene at once, NaN -> 0, sigmoid/softmax."""
    x = (data - MEAN[:, None, None]) / STD[:, None, None]
    x = np.where(np.isfinite(x), x, 0).astype("float32")
    with torch.no_grad():
        logits = conv(torch.from_numpy(x)[None])[0]
    probs = torch.sigmoid(logits) if logits.shape[0] == 1 else torch.softmax(logits, 0)
    return probs.numpy()


def scene_array(height: int, width: int, *, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(2, height, width)).astype("float32")


def write_test_scene(path: Path, data: np.ndarray, *, gcps: bool = False, names=("HH", "HV")) -> Path:
    """A GeoTIFF of ``data`` without nodata (NaN marks invalid pixels); GCPs instead of a transform if asked."""
    grid = corner_gcp_grid(*data.shape[1:]) if gcps else None
    return write_scene(path, grid, data=data, band_names=names, nodata=None)


def read(path: Path, band: int = 1) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(band)


def predict(
    scene: Path,
    model: torch.nn.Module | Predictor,
    config: dict[str, Any] | None,
    output: Path,
    *,
    refiner: Predictor | str | Path | None = None,
    progress: Progress | None = None,
    **options: Any,
) -> dict[str, Any]:
    """A model (with its config) or a Predictor over ``scene``: the job built as the CLI builds it."""
    predictor = model if isinstance(model, Predictor) else make_predictor(model, config or {}, device="cpu")
    options.setdefault("footprint_m", 0)  # the merge against its whole-image reference; test_footprint smooths
    if isinstance(refiner, (str, Path)):
        refiner = load_predictor(refiner, predictor.device)
    return predict_scene(PredictJob(scene, output, predictor, refiner=refiner, **options), progress=progress)


def run(tmp_path: Path, data: np.ndarray, conv: torch.nn.Module, name: str = "out.tif", config=CONFIG, **options) -> np.ndarray:
    """Predict ``data`` (written once as a scene) into ``name``; band 1 of the output."""
    scene = tmp_path / f"scene_{name}"
    if not scene.exists():
        write_test_scene(scene, data)
    predict(scene, conv, config, tmp_path / name, **options)
    return read(tmp_path / name)
