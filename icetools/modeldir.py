"""The model directory: ``model.safetensors`` (weights) + ``config.json`` (everything else).

The architecture is rebuilt from ``config["model"]`` ({"name", "args"}) alone and the weights come
from safetensors, which holds raw tensors only: opening a model directory someone sent you can
never run code (``torch.load`` unpickles, so it is never used here).

:class:`ModelConfig` is the schema of ``config.json``: what ``train`` writes and what predict, refine
and evaluate read. ``save_model_dir``/``read_config`` keep working on plain dicts;
:func:`read_model_config` returns the validated dataclass.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from icetools.errors import ConfigError, InputFileError
from icetools.inputs import InputSpec
from icetools.io.atomic import atomic_path, committed_together
from icetools.jsonsafe import json_safe
from icetools.models.registry import MODEL_NAMES, WEIGHT_INIT_ARGS, build_model, model_spec
from icetools.tasks import SIC, check_task

if TYPE_CHECKING:
    import torch
    from torch import nn

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def save_model_dir(directory: str | Path, model: nn.Module, config: Mapping[str, Any] | ModelConfig) -> None:
    """Write the weights and the config as one unit (both move into place, or neither); create
    ``directory`` if needed.

    ``config["model"]`` defaults to the model's own spec; one given by the caller must describe
    the same architecture. The caller's dict is not modified.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InputFileError(f"model directory {directory} exists and is not a folder: choose another path")
    config = config.to_dict() if isinstance(config, ModelConfig) else dict(config)
    if "model" in config:
        _check_same_architecture(config["model"], model)
    else:
        config["model"] = model_spec(model)
    text = _to_json(config)  # before any file is written: a bad config leaves nothing behind
    tensors = {key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()}
    directory.mkdir(parents=True, exist_ok=True)

    from safetensors.torch import save_file

    with committed_together():
        with atomic_path(directory / WEIGHTS_FILE, overwrite=True) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt"})
        with atomic_path(directory / CONFIG_FILE, overwrite=True) as tmp:
            tmp.write_text(text, encoding="utf-8")


def read_config(directory: str | Path) -> dict[str, Any]:
    """The parsed ``config.json``, checked to name a known model with an argument dict."""
    directory = _existing_directory(directory)
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise InputFileError(f"{path} does not exist: {directory} is not an icetools model directory")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}): fix or re-create the model directory") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} must hold a JSON object, found {type(config).__name__}")
    try:
        _check_model_entry(config.get("model"))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config


def load_model_dir(directory: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from ``config.json``, load ``model.safetensors`` into it, return it in eval mode."""
    directory = _existing_directory(directory)
    config = read_config(directory)
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise InputFileError(f"{weights_path} does not exist: the model directory is incomplete")
    model = _build_for_loading(config["model"], where=directory / CONFIG_FILE)

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise InputFileError(f"{weights_path} is not a readable safetensors file: {exc}") from None
    problem = _state_mismatch(model.state_dict(), state)
    if problem:
        raise ConfigError(
            f"weights in {weights_path} do not match the {config['model']['name']!r} architecture "
            f"in config.json ({problem}): the files come from different models"
        )
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, config


# ---------------------------------------------------------------------------------------------
# config.json as a dataclass: the schema, and one validator for everyone who reads it


@dataclass
class ModelConfig:
    """What a model directory's ``config.json`` holds (all but ``model`` optional).

    - ``model``: ``{"name", "args"}``, enough to rebuild the network (:func:`save_model_dir` fills it
      in from the model when absent).
    - ``task`` (sic, binary, multiclass; a config without one is read as sic), ``inputs`` (band
      names, in order), ``input_transforms`` (band -> ``identity`` or ``cos-sin``, see
      :mod:`icetools.inputs`; absent = identity), ``input_units`` (band -> ``dB`` or ``linear``: the
      backscatter units it learned from, so linear sigma0 is converted on reading; absent: Sentinel-1
      bands with a normalisation mean below -1 are dB), ``normalization`` (``{"mean": [...], "std": [...]}``
      per model channel, i.e. after the transforms),
      ``patch_size`` (the training patch side, in pixels), ``n_classes``, ``context_scales`` (the
      windows a context model reads), ``class_names`` (multiclass), ``threshold`` (binary) and
      ``threshold_sweep`` (how it was chosen).
    - ``refines``: set on a refiner: the model whose crude masks it redraws (a mapping).
    - ``training``, ``provenance``, ``icetools_version``: a record of the run, for people
      (``training.world_size``: the processes it trained in, 1 without torchrun).
    - ``extra``: any other key, kept as found so that newer files survive a read-write round trip.

    A key that is absent in the file is None here and absent again in :meth:`to_dict`.
    """

    model: dict[str, Any] | None = None
    task: str = SIC
    inputs: list[str] | None = None
    input_transforms: dict[str, str] | None = None
    input_units: dict[str, str] | None = None
    normalization: dict[str, list[float]] | None = None
    patch_size: int | None = None
    n_classes: int | None = None
    context_scales: list[float] | None = None
    class_names: list[str] | None = None
    threshold: float | None = None
    threshold_sweep: dict[str, Any] | None = None
    refines: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    provenance: dict[str, Any] | None = None
    icetools_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str | Path = "the model config") -> ModelConfig:
        """Validate a parsed config.json; ConfigError naming ``where`` and the key otherwise."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where} must hold a JSON object, found {type(data).__name__}")
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known and v is not None}
        extra = {k: v for k, v in data.items() if k not in known}
        try:
            return cls(**values, extra=extra)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object to write: set keys in schema order, then the extra ones."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out = {k: v for k, v in out.items() if v is not None}
        return {**out, **self.extra}

    @property
    def model_name(self) -> str | None:
        return None if self.model is None else self.model["name"]


def read_model_config(directory: str | Path) -> ModelConfig:
    """The validated config.json of a model directory (ConfigError naming the file and the key)."""
    config = read_config(directory)
    return ModelConfig.from_dict(config, where=Path(directory) / CONFIG_FILE)


def _validate(config: ModelConfig) -> None:
    """Every key's type and range, and the ones that must agree (bands, statistics, class names)."""
    if config.model is not None:
        _check_model_entry(config.model)
    check_task(config.task)
    if config.inputs is not None and not (
        isinstance(config.inputs, list) and config.inputs and all(isinstance(n, str) and n for n in config.inputs)
    ):
        raise _bad("inputs", "a list of band names", config.inputs)
    if config.input_transforms is not None and not (
        isinstance(config.input_transforms, dict) and all(isinstance(k, str) for k in config.input_transforms)
    ):
        raise _bad("input_transforms", "a mapping of band names to transforms", config.input_transforms)
    spec = InputSpec.from_config({"inputs": config.inputs, "input_transforms": config.input_transforms})
    if config.input_units is not None:
        if not (isinstance(config.input_units, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in config.input_units.items())):
            raise _bad("input_units", "a mapping of band names to units (dB, linear)", config.input_units)
        unknown = [band for band in config.input_units if spec is None or band not in spec.bands]
        if unknown:
            raise _bad("input_units", "units of input bands only", config.input_units)
    n_channels = None if spec is None else spec.n_channels
    in_channels = (config.model or {}).get("args", {}).get("in_channels")
    if spec is not None and _is_int(in_channels) and n_channels != in_channels:
        given = (f"names {len(spec.bands)} bands" if spec.is_identity
                 else f"gives {n_channels} channels ({spec.describe()})")
        raise ConfigError(f"'inputs' {given} but the model takes {in_channels}: the model directory is inconsistent")
    if config.normalization is not None:
        what = "input bands" if spec is None or spec.is_identity else "input channels (after the input transforms)"
        _check_normalization(config.normalization, n_inputs=n_channels, what=what)
    for key in ("patch_size", "n_classes"):
        value = getattr(config, key)
        if value is not None and not (_is_int(value) and value >= 1):
            raise _bad(key, "a positive integer", value)
    if config.context_scales is not None and not (
        isinstance(config.context_scales, list) and config.context_scales
        and all(_is_number(s) and s > 0 for s in config.context_scales)
    ):
        raise _bad("context_scales", "a list of numbers > 0", config.context_scales)
    if config.class_names is not None:
        if not (isinstance(config.class_names, list) and all(isinstance(n, str) for n in config.class_names)):
            raise _bad("class_names", "a list of names", config.class_names)
        if config.n_classes is not None and len(config.class_names) != config.n_classes:
            raise _bad("class_names", f"{config.n_classes} names (one per class)", config.class_names)
    if config.threshold is not None and not (_is_number(config.threshold) and 0 <= config.threshold <= 1):
        raise _bad("threshold", "a number between 0 and 1", config.threshold)
    for key in ("threshold_sweep", "refines", "training", "provenance"):
        value = getattr(config, key)
        if value is not None and not isinstance(value, dict):
            raise _bad(key, "a JSON object", value)
    if config.icetools_version is not None and not isinstance(config.icetools_version, str):
        raise _bad("icetools_version", "a version string", config.icetools_version)
    if not isinstance(config.extra, dict):
        raise _bad("extra", "a dict of further keys", config.extra)


def _check_model_entry(spec: object) -> None:
    if not (isinstance(spec, dict) and isinstance(spec.get("name"), str) and isinstance(spec.get("args", {}), dict)):
        raise ConfigError('"model" must be of the form {"name": ..., "args": {...}}')
    if spec["name"] not in MODEL_NAMES:
        raise ConfigError(f"\"model\" names unknown model {spec['name']!r}; known models: {', '.join(MODEL_NAMES)}")


def _check_normalization(norm: object, *, n_inputs: int | None, what: str = "input bands") -> None:
    shape = '{"mean": [...], "std": [...]}'
    if not (isinstance(norm, dict) and isinstance(norm.get("mean"), list) and isinstance(norm.get("std"), list)):
        raise _bad("normalization", shape, norm)
    mean, std = norm["mean"], norm["std"]
    if not all(_is_number(v) for v in mean + std) or not all(v > 0 for v in std):
        raise _bad("normalization", "finite statistics with std > 0", norm)
    if len(mean) != len(std) or (n_inputs is not None and len(mean) != n_inputs):
        raise ConfigError(
            f"'normalization' has {len(mean)} means and {len(std)} stds for {n_inputs} {what}: "
            "the model directory is inconsistent"
        )


def _bad(key: str, expected: str, value: object) -> ConfigError:
    return ConfigError(f"{key!r} must be {expected}, got {value!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _existing_directory(directory: str | Path) -> Path:
    directory = Path(directory)
    if not directory.exists():
        raise InputFileError(f"model directory {directory} does not exist")
    if not directory.is_dir():
        raise InputFileError(f"model directory {directory} is a file, not a folder")
    return directory


def _build_for_loading(spec: dict[str, Any], *, where: Path) -> nn.Module:
    """Build without the arguments that only seed initial weights: the checkpoint replaces them."""
    args = {key: value for key, value in spec.get("args", {}).items() if key not in WEIGHT_INIT_ARGS}
    try:
        return build_model(spec["name"], **args)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _state_mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str:
    """A short description of how two state dicts differ in names or shapes; empty if they fit."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(found) if tuple(expected[k].shape) != tuple(found[k].shape))
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing, e.g. {missing[0]!r}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]!r}")
    if reshaped:
        key = reshaped[0]
        parts.append(
            f"{len(reshaped)} of another shape, e.g. {key!r} {tuple(found[key].shape)} "
            f"instead of {tuple(expected[key].shape)}"
        )
    return "; ".join(parts)


def _check_same_architecture(spec: object, model: nn.Module) -> None:
    """A caller-supplied config["model"] must rebuild a network with this model's tensors."""
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise ConfigError(
            'config["model"] must be {"name": ..., "args": {...}}; leave it out to record the model\'s own'
        )
    rebuilt = _build_for_loading(spec, where=Path("config['model']"))
    problem = _state_mismatch(rebuilt.state_dict(), model.state_dict())
    if type(rebuilt) is not type(model) or problem:
        raise ConfigError(
            f"config['model'] ({spec['name']!r}) does not describe the model being saved "
            f"({problem or type(model).__name__}); leave it out to record the model's own"
        )


def _plain_json(value: object) -> object:
    """numpy values and paths as JSON types (jsonsafe's rules); NaN and anything else stay errors:
    config.json is a contract, so a bad value is a caller bug made visible, not a null."""
    if isinstance(value, np.floating) and not math.isfinite(value):
        raise ValueError(f"Out of range float values are not JSON compliant: {value!r}")
    if isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.isfinite(value).all():
        raise ValueError("Out of range float values are not JSON compliant: an array holds NaN or infinity")
    plain = json_safe(value)
    if plain is value:
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")
    return plain


def _to_json(config: dict[str, Any]) -> str:
    """Strict JSON (no NaN/Infinity), indented; ConfigError naming the problem otherwise."""
    try:
        return json.dumps(config, indent=2, allow_nan=False, default=_plain_json) + "\n"
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"the model config cannot be written as JSON: {exc}") from None


__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "ModelConfig",
    "load_model_dir",
    "read_config",
    "read_model_config",
    "save_model_dir",
]
