"""The model directory: ``model.safetensors`` (weights) + ``config.json`` (everything else).

The architecture is rebuilt from ``config["model"]`` ({"name", "args"}) alone and the weights come
from safetensors, which holds raw tensors only: opening a model directory someone sent you can
never run code (``torch.load`` unpickles, so it is never used here).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icetools.errors import ConfigError, InputFileError
from icetools.io.atomic import atomic_path
from icetools.models.registry import MODEL_NAMES, WEIGHT_INIT_ARGS, build_model, model_spec

if TYPE_CHECKING:
    import torch
    from torch import nn

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def save_model_dir(directory: str | Path, model: nn.Module, config: dict[str, Any]) -> None:
    """Write the weights, then the config, each atomically; create ``directory`` if needed.

    ``config["model"]`` defaults to the model's own spec; one given by the caller must describe
    the same architecture. The caller's dict is not modified.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise InputFileError(f"model directory {directory} exists and is not a folder: choose another path")
    config = dict(config)
    if "model" in config:
        _check_same_architecture(config["model"], model)
    else:
        config["model"] = model_spec(model)
    text = _to_json(config)  # before any file is written: a bad config leaves nothing behind
    tensors = {key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()}
    directory.mkdir(parents=True, exist_ok=True)

    from safetensors.torch import save_file

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
    spec = config.get("model")
    if not (isinstance(spec, dict) and isinstance(spec.get("name"), str) and isinstance(spec.get("args", {}), dict)):
        raise ConfigError(f'{path} lacks a "model" entry of the form {{"name": ..., "args": {{...}}}}')
    if spec["name"] not in MODEL_NAMES:
        raise ConfigError(
            f"{path} names unknown model {spec['name']!r}; known models: {', '.join(MODEL_NAMES)}"
        )
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


def _json_default(value: object) -> object:
    """Let numpy scalars/arrays and paths through; anything else is a caller bug made visible."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays, torch tensors
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _to_json(config: dict[str, Any]) -> str:
    """Strict JSON (no NaN/Infinity), indented; ConfigError naming the problem otherwise."""
    try:
        return json.dumps(config, indent=2, allow_nan=False, default=_json_default) + "\n"
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"the model config cannot be written as JSON: {exc}") from None


__all__ = ["CONFIG_FILE", "WEIGHTS_FILE", "load_model_dir", "read_config", "save_model_dir"]
