"""The model side of inference: a model in eval mode plus what its ``config.json`` promises.

A :class:`Predictor` turns normalised windows into probabilities; it is also how a refiner and the
segmentation model it refines are checked to fit together (:func:`check_pairing`), so predict never
needs the refiner's training code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from icetools.device import autocast, resolve_device
from icetools.errors import ConfigError, DataError
from icetools.inputs import InputSpec, bind_inputs, check_band_map, model_input_units
from icetools.io.scene import Scene
from icetools.models.base import IcetoolsModel
from icetools.tasks import MULTICLASS, check_task

if TYPE_CHECKING:
    import torch
    from torch import nn

DEFAULT_TILE = 256


@dataclass
class Predictor:
    """A model in eval mode plus what ``config.json`` says about its inputs and outputs."""

    model: nn.Module
    config: dict[str, Any]
    device: torch.device
    task: str
    inputs: tuple[str, ...] | None
    mean: np.ndarray | None
    std: np.ndarray | None
    context_scales: tuple[float, ...]
    patch_size: int
    in_channels: int | None
    source: str = ""
    window_axis: bool = False  # a context model: (B, T, C, H, W) even when T = 1
    input_spec: InputSpec | None = None  # bands and their transforms (config inputs / input_transforms)
    input_units: dict[str, str] = field(default_factory=dict)  # band -> dB / linear the model learned from
    band_map: dict[str, str] = field(default_factory=dict)  # model band -> band of the user's files
    fingerprint: str = ""  # sha256 of config.json and the weights, for tags
    _out_channels: int | None = field(default=None, repr=False)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(B, [T,] C, H, W) normalised inputs -> (B, K, H, W) float32 probabilities."""
        import torch

        if self.window_axis and batch.ndim == 4:
            batch = batch[:, None]  # the engine stacks windows only for T > 1
        x = torch.from_numpy(batch).to(self.device)  # a plain copy: pinning a fresh buffer per batch costs more
        with torch.inference_mode(), autocast(self.device):
            logits = self.model(x)
            if isinstance(logits, (tuple, list)):  # a bare nn.Module may return several heads
                logits = logits[0]
            logits = logits.float()
            probs = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
        return probs.cpu().numpy()

    @property
    def label(self) -> str:
        """The model for tags and messages: its directory's name and content hash, never a local path
        (``default_sic_model@sha256:0123abcd4567ef89``)."""
        if not self.source:
            return "(in memory)"
        path = Path(self.source)
        name = path.name or path.resolve().name
        return f"{name}@sha256:{self.fingerprint}" if self.fingerprint else name

    def out_channels(self) -> int:
        """Channels the model returns: from its spec, else from one small forward pass (any nn.Module)."""
        if self._out_channels is None:
            declared = _spec_args(self.model).get("out_channels")
            if isinstance(declared, int):
                self._out_channels = declared
            else:
                channels = self.input_spec.n_channels if self.input_spec is not None else 1
                shape: tuple[int, ...] = (self.in_channels or channels, 32, 32)
                if self.context_scales != (1.0,):
                    shape = (len(self.context_scales), *shape)
                self._out_channels = int(self(np.zeros((1, *shape), dtype="float32")).shape[1])
        return self._out_channels


def _spec_args(model: nn.Module) -> dict[str, Any]:
    """The constructor arguments a registered model records; none for a bare nn.Module."""
    spec = getattr(model, "spec", None)  # set by IcetoolsModel.record_spec, absent on a bare module
    return dict(spec.get("args") or {}) if isinstance(spec, Mapping) else {}


def _model_in_channels(model: nn.Module, config: Mapping[str, Any]) -> int | None:
    args = (config.get("model") or {}).get("args") or _spec_args(model)
    if isinstance(args.get("in_channels"), int):
        return int(args["in_channels"])
    value = getattr(model, "in_channels", None)  # a bare nn.Conv2d, e.g. in tests
    return int(value) if isinstance(value, int) else None


def _windows_of(model: nn.Module) -> tuple[tuple[float, ...], bool]:
    """(context scales, takes windows): what an icetools model declares; a bare module is plain."""
    if isinstance(model, IcetoolsModel):
        return tuple(float(s) for s in model.context_scales), model.takes_windows
    return (1.0,), False


def _normalization(config: Mapping[str, Any], expected: int | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    norm = config.get("normalization")
    if not norm:
        return None, None
    try:
        mean = np.asarray(norm["mean"], dtype="float32").reshape(-1)
        std = np.asarray(norm["std"], dtype="float32").reshape(-1)
    except (KeyError, TypeError, ValueError):
        raise ConfigError('config "normalization" must be {"mean": [...], "std": [...]}') from None
    if mean.size != std.size or (expected is not None and mean.size != expected):
        raise ConfigError(
            f"normalization has {mean.size} means and {std.size} stds for {expected} input channels: "
            "the model directory is inconsistent"
        )
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise ConfigError("normalization statistics must be finite with std > 0")
    return mean, std


def make_predictor(
    model: nn.Module, config: dict[str, Any], *, device: str | torch.device | None = "auto", source: str = ""
) -> Predictor:
    """Check ``config`` against the contract written by ``train`` and put the model on ``device``.

    Any ``nn.Module`` works: one that is not an icetools model is taken as a plain (B, C, H, W) model.
    """
    task = check_task(config.get("task", "sic"), what="model task")
    spec = InputSpec.from_config(config)  # old configs without input_transforms: every band as it is
    in_channels = _model_in_channels(model, config)
    if spec is not None and in_channels is not None and spec.n_channels != in_channels:
        given = f"names {len(spec.bands)} input bands" if spec.is_identity else (
            f"gives {spec.n_channels} input channels ({spec.describe()})")
        raise ConfigError(f"config.json {given} but the model takes {in_channels}: the model directory is inconsistent")
    mean, std = _normalization(config, spec.n_channels if spec is not None else in_channels)
    patch = config.get("patch_size", DEFAULT_TILE)
    if not isinstance(patch, int) or patch < 1:
        raise ConfigError(f'config "patch_size" must be a positive integer, got {patch!r}')
    torch_device = resolve_device(device)
    scales, takes_windows = _windows_of(model)
    units = model_input_units(config, spec)
    return Predictor(
        model=model.to(torch_device).eval(),
        config=config,
        device=torch_device,
        task=task,
        inputs=spec.bands if spec is not None else None,
        mean=mean,
        std=std,
        context_scales=scales,
        patch_size=patch,
        in_channels=in_channels,
        source=source,
        window_axis=takes_windows,
        input_spec=spec,
        input_units=units,
    )


def load_predictor(
    model_dir: str | Path, device: str | torch.device | None = "auto", *, band_map: Mapping[str, str] | None = None
) -> Predictor:
    """Rebuild the model of a model directory and ready it for inference.

    ``band_map`` (model band -> band of the user's files) names bands the scenes spell otherwise.
    """
    from icetools.modeldir import load_model_dir

    model, config = load_model_dir(model_dir)
    predictor = make_predictor(model, config, device=device, source=str(model_dir))
    predictor.fingerprint = model_fingerprint(model_dir)
    if band_map:
        check_band_map(band_map, predictor.inputs or ())
        predictor.band_map = dict(band_map)
    return predictor


def model_fingerprint(model_dir: str | Path) -> str:
    """The first 16 hex digits of the sha256 of a model directory's config.json and weights."""
    from icetools.modeldir import CONFIG_FILE, WEIGHTS_FILE

    digest = hashlib.sha256()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        with open(Path(model_dir) / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def default_model_dir() -> Path:
    """The sea-ice model shipped inside the package; ConfigError until one is installed."""
    import icetools

    path = Path(icetools.__file__).parent / "data" / "default_sic_model"
    if not (path / "config.json").is_file():
        raise ConfigError("no default model is installed: pass a model directory")
    return path


def scene_input_spec(scene: Scene, predictor: Predictor) -> InputSpec:
    """The bands the model reads from ``scene``, bound to it (see :func:`icetools.inputs.bind_inputs`:
    the predictor's band map, Sentinel-1 aliases, unit conversions), every missing band named at once.

    A model whose config names no inputs reads the scene's default bands as they are.
    """
    spec = predictor.input_spec or InputSpec.identity(scene.default_inputs)
    spec = bind_inputs(scene, spec, band_map=predictor.band_map, units=predictor.input_units)
    if predictor.in_channels is not None and spec.n_channels != predictor.in_channels:
        raise DataError(
            f"the model takes {predictor.in_channels} channels but {scene.path.name} offers {spec.n_channels} "
            f"({spec.describe()}): name the bands (band descriptions) or use a matching model"
        )
    return spec


def scene_inputs(scene: Scene, predictor: Predictor) -> list[str]:
    """The scene bands (real names) the model reads; see :func:`scene_input_spec`."""
    return list(scene_input_spec(scene, predictor).sources)


# --------------------------------------------------------------------------------------------
# A refiner and the model it refines


def model_classes(predictor: Predictor) -> int:
    """Classes a model tells apart: config n_classes (multiclass), else 1 (sic and binary maps)."""
    if predictor.task != MULTICLASS:
        return 1
    declared = predictor.config.get("n_classes")
    return int(declared) if isinstance(declared, int) else predictor.out_channels()


def check_pairing(model: Predictor, refiner: Predictor) -> None:
    """A refiner fits a segmentation model of the same task, classes and crude channels; else one line."""
    where = refiner.source or "the refiner"
    refines = refiner.config.get("refines")
    if not isinstance(refines, Mapping):
        raise ConfigError(
            f"{where} is not a refiner (its config has no 'refines' entry): train one with "
            "`icetools train --model refiner --from MODEL_DIR`"
        )
    if refiner.task != model.task:
        raise ConfigError(f"{where} refines {refiner.task} masks but the model's task is {model.task}: pair models of one task")
    model_n, refiner_n = model_classes(model), model_classes(refiner)
    if model_n != refiner_n:
        raise ConfigError(
            f"{where} refines {refiner_n} classes but the model has {model_n}: "
            "train a refiner from a model with these classes"
        )
    channels = model.out_channels()
    image = len(refines.get("image_inputs") or ())  # the image channels it reads after the crude bands
    if refiner.in_channels is not None and refiner.in_channels != channels + image:
        raise ConfigError(
            f"{where} reads {refiner.in_channels - image} crude probability bands but the model returns {channels}: "
            "train a refiner from a model with these outputs"
        )
