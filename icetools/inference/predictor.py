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

from icetools.calibration import SICCalibration
from icetools.device import autocast, resolve_device
from icetools.errors import ConfigError, DataError
from icetools.inputs import InputSpec, bind_inputs, check_band_map, model_input_units
from icetools.io.scene import Scene
from icetools.models.base import IcetoolsModel
from icetools.tasks import MULTICLASS, SIC, check_task

if TYPE_CHECKING:
    import torch
    from torch import nn

DEFAULT_TILE = 256
DEFAULT_BATCH = 8  # windows per forward pass on the CPU, where larger batches run no faster
MAX_AUTO_BATCH = 256  # more gains nothing: the engine batches the windows of one row (~50 on a 10k scene)
MEMORY_BUDGET = 0.5  # share of the free GPU memory a chosen batch may take (activations at peak)
PROBE_BATCHES = (1, 3)  # batch sizes whose peak memory gives the cost of one more window


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
    calibration: SICCalibration | None = None  # SIC models: the validated floor/ceiling stretch (icetools.calibration)
    _out_channels: int | None = field(default=None, repr=False)
    _staging: PinnedStaging | None = field(default=None, repr=False)  # CUDA only

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_staging": None}  # page-locked buffers belong to this process

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(B, [T,] C, H, W) normalised inputs -> (B, K, H, W) float32 probabilities.

        On CUDA: through reused page-locked buffers with asynchronous copies, channels-last, bf16
        autocast. Call from one thread at a time (the engine calls from its calling thread only).
        """
        import torch

        if self.window_axis and batch.ndim == 4:
            batch = batch[:, None]  # the engine stacks windows only for T > 1
        if self.device.type == "cuda":
            self._staging = self._staging or PinnedStaging()
            return self._staging.download(self._probabilities(self._staging.upload(batch, self.device)))
        return self._probabilities(torch.from_numpy(batch).to(self.device)).cpu().numpy()

    def _probabilities(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        with torch.inference_mode(), autocast(self.device):
            logits = self.model(x)
            if isinstance(logits, (tuple, list)):  # a bare nn.Module may return several heads
                logits = logits[0]
            logits = logits.float()
            if logits.shape[1] != 1:
                return torch.softmax(logits, dim=1)
            probabilities = torch.sigmoid(logits)
            return self.calibration.apply(probabilities) if self.calibration is not None else probabilities

    def input_shape(self, batch: int, tile: int) -> tuple[int, ...]:
        """The (B, [T,] C, H, W) shape of a batch of normalised windows for this model."""
        channels = self.in_channels or (self.input_spec.n_channels if self.input_spec is not None else 1)
        shape: tuple[int, ...] = (channels, tile, tile)
        if self.context_scales != (1.0,):
            shape = (len(self.context_scales), *shape)
        return (batch, *shape)

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
                self._out_channels = int(self(np.zeros(self.input_shape(1, 32), dtype="float32")).shape[1])
        return self._out_channels


class PinnedStaging:
    """Page-locked host buffers reused from batch to batch: copies from them run asynchronously at the
    bus's full speed, where allocating pinned memory for each batch would cost more than it saves.

    Reuse is safe because :meth:`download` waits for the stream, so an upload's copy has finished
    before the next batch overwrites its buffer.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def _buffer(self, which: str, shape: tuple[int, ...]) -> torch.Tensor:
        import torch

        buffer = self._buffers.get(which)
        if buffer is None or tuple(buffer.shape[1:]) != tuple(shape[1:]) or buffer.shape[0] < shape[0]:
            buffer = self._buffers[which] = torch.empty(tuple(shape), dtype=torch.float32, pin_memory=True)
        return buffer[: shape[0]]

    def upload(self, batch: np.ndarray, device: torch.device) -> torch.Tensor:
        """The batch on ``device``, copied without blocking; channels-last for (B, C, H, W)."""
        import torch

        host = self._buffer("inputs", batch.shape)
        host.copy_(torch.from_numpy(batch))
        x = host.to(device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x

    def download(self, probs: torch.Tensor) -> np.ndarray:
        """The probabilities as a fresh numpy array (the buffer is reused by the next batch)."""
        import torch

        host = self._buffer("outputs", tuple(probs.shape))
        host.copy_(probs, non_blocking=True)
        torch.cuda.current_stream(probs.device).synchronize()
        return host.numpy().copy()


def choose_batch(predictor: Predictor, tile: int, *, budget: float = MEMORY_BUDGET) -> int:
    """Windows per forward pass when none is given: :data:`DEFAULT_BATCH` on the CPU; on CUDA as many
    as fit ``budget`` of the free GPU memory, from the peak memory of two probe batches (their
    difference is the cost of one more window, whatever the weights and workspaces take)."""
    if predictor.device.type != "cuda":
        return DEFAULT_BATCH
    import torch

    device = predictor.device
    peaks = []
    for n in PROBE_BATCHES:
        probe = np.zeros(predictor.input_shape(n, tile), dtype="float32")
        predictor(probe)  # the first call at a shape may autotune kernels with scratch memory: not counted
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        predictor(probe)
        peaks.append(torch.cuda.max_memory_allocated(device))
    (n0, n1), (p0, p1) = PROBE_BATCHES, peaks
    per_window = max((p1 - p0) / (n1 - n0), 1.0)
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)  # cached by torch, reusable
    return int(min(MAX_AUTO_BATCH, max(1, budget * free // per_window)))


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
    model = model.to(torch_device).eval()
    if torch_device.type == "cuda":
        import torch

        model = model.to(memory_format=torch.channels_last)  # what bf16 convolutions run fastest in
        torch.backends.cudnn.benchmark = True  # a scene's batches share one shape: autotune it once
    return Predictor(
        model=model,
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
        calibration=SICCalibration.from_config(config) if task == SIC else None,
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
