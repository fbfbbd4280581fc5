"""Build a model from a name and JSON arguments, and check those arguments.

A model directory's ``config.json`` holds ``{"name": ..., "args": {...}}``; this module turns that
back into a network. Model modules are imported only when asked for, so ``import icetools.models``
stays free of torch and the CLI can list the names quickly.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
from typing import TYPE_CHECKING, Any

from icetools.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from icetools.models.base import IcetoolsModel

# name -> (module, class). The order is the order users see in help texts and error messages.
_MODELS: dict[str, tuple[str, str]] = {
    "unet": ("icetools.models.unet", "UNet"),
    "unet-aspp": ("icetools.models.unet_aspp", "UNetASPP"),
    "attention-unet": ("icetools.models.attention_unet", "AttentionUNet"),
    "unet++": ("icetools.models.unetpp", "UNetPlusPlus"),
    "deeplabv3": ("icetools.models.deeplab", "DeepLabV3"),
    "pspnet": ("icetools.models.pspnet", "PSPNet"),
    "linknet": ("icetools.models.linknet", "LinkNet"),
    "fctl": ("icetools.models.fctl", "FCtL"),
    "refiner": ("icetools.models.refiner", "Refiner"),
}

MODEL_NAMES: tuple[str, ...] = tuple(_MODELS)

# Arguments that only seed the initial weights (a local pretrained file). A checkpoint's own
# weights replace them, so loading a model directory builds without them: the file they name need
# not exist on the machine that predicts.
WEIGHT_INIT_ARGS: frozenset[str] = frozenset({"encoder_weights"})

MODEL_SIZES: tuple[str, ...] = ("laptop", "paper")
"""Named model sizes: "laptop" is each model's default arguments (trains in minutes on a CPU);
"paper" the widths of the method's source paper (hours on a CPU; a GPU's size)."""

SIZE_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # Ronneberger et al.'s U-Net: 64-128-256-512 and a 1024 bottleneck, 16 times the compute of the
    # default 16..128 (0.3 s a step of 8 x 128 px on 2 CPU cores).
    "unet": {"paper": {"widths": [64, 128, 256, 512]}},
    # The source work's narrow widths; unet-aspp's defaults are wider (see icetools.models.unet_aspp).
    "unet-aspp": {"paper": {"encoder_widths": [4, 8, 16, 32], "decoder_widths": [16, 8, 4, 2], "bottleneck_width": 64}},
    "attention-unet": {"paper": {}},  # the narrow defaults are the source work's
    "unet++": {"paper": {"widths": [32, 64, 128, 256, 512]}},  # Zhou et al., as the defaults
    "deeplabv3": {"paper": {"base_width": 64}},  # a ResNet's 64..512 channels
    "pspnet": {"paper": {"base_width": 64}},
    "linknet": {"paper": {"base_width": 64}},
    "fctl": {"paper": {"width": 1.0}},  # the full VGG16 widths of FCtL's FCN-8s
}
"""Arguments each named size sets (model arguments given explicitly override them)."""


def size_args(name: str, size: str) -> dict[str, Any]:
    """The model arguments of a named size; ConfigError naming the sizes the model has."""
    if size not in MODEL_SIZES:
        raise ConfigError(f"unknown model size {size!r}; sizes: {', '.join(MODEL_SIZES)}")
    if size == "laptop":
        return {}
    presets = SIZE_PRESETS.get(name, {})
    if size not in presets:
        sizes = ["laptop", *presets]
        raise ConfigError(f"model {name!r} has no {size!r} size; its sizes: {', '.join(sizes)}")
    return json.loads(json.dumps(presets[size]))


def _known_names() -> str:
    return ", ".join(MODEL_NAMES)


def model_class(name: str) -> type[IcetoolsModel]:
    """The class registered under ``name``; ConfigError naming the known models otherwise."""
    if not isinstance(name, str) or name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; known models: {_known_names()}")
    module_name, class_name = _MODELS[name]
    return getattr(importlib.import_module(module_name), class_name)


def build_model(name: str, **args: Any) -> IcetoolsModel:
    """Build the model ``name`` from keyword arguments as found in ``config.json``.

    ``build_model(**model_spec(model))`` also works: a lone ``args`` dict is unpacked (no model has
    an argument called ``args``).
    """
    cls = model_class(name)
    if set(args) == {"args"} and isinstance(args["args"], dict):
        args = dict(args["args"])
    parameters = {
        p.name: p
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    unknown = sorted(set(args) - set(parameters))
    if unknown:
        raise ConfigError(
            f"model {name!r} has no argument {unknown[0]!r}; its arguments are: "
            + ", ".join(parameters)
        )
    missing = [p for p, spec in parameters.items() if spec.default is inspect.Parameter.empty and p not in args]
    if missing:
        raise ConfigError(f"model {name!r} needs argument {missing[0]!r}")
    try:
        return cls(**args)
    except ConfigError:
        raise
    except (TypeError, ValueError, RuntimeError) as exc:
        # Anything the argument checks missed but torch refused (e.g. a zero-sized layer).
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"cannot build model {name!r} from {args}: {first_line}") from None


def model_spec(model: nn.Module) -> dict[str, Any]:
    """``{"name": ..., "args": {...}}`` as plain JSON types (tuples become lists)."""
    spec = getattr(model, "spec", None)
    if not isinstance(spec, dict) or "name" not in spec or "args" not in spec:
        raise ConfigError(
            f"{type(model).__name__} does not record its name and arguments; "
            "build it with icetools.models.build_model"
        )
    return json.loads(json.dumps(spec))


# ---------------------------------------------------------------------------------------------
# Argument checks used by every model constructor, so a bad config.json fails with one line that
# names the model and the argument instead of a torch traceback.


def _fail(model: str, arg: str, expected: str, value: object) -> ConfigError:
    return ConfigError(f"model {model!r}: argument {arg!r} must be {expected}, got {value!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)) and math.isfinite(value)


def check_int(value: object, *, arg: str, model: str, minimum: int = 1, choices: tuple[int, ...] = ()) -> int:
    """An integer >= ``minimum`` (and one of ``choices`` when given)."""
    if choices:
        if not _is_int(value) or value not in choices:
            raise _fail(model, arg, "one of " + ", ".join(map(str, choices)), value)
        return int(value)
    if not _is_int(value) or value < minimum:
        raise _fail(model, arg, f"an integer >= {minimum}", value)
    return int(value)


def check_float(value: object, *, arg: str, model: str, above: float = 0.0) -> float:
    """A finite number strictly greater than ``above``."""
    if not _is_number(value) or value <= above:
        raise _fail(model, arg, f"a number > {above:g}", value)
    return float(value)


def check_bool(value: object, *, arg: str, model: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(model, arg, "true or false", value)
    return value


def check_int_tuple(
    value: object, *, arg: str, model: str, length: int | None = None, min_length: int = 1, minimum: int = 1
) -> tuple[int, ...]:
    """A list of integers >= ``minimum`` (exactly ``length`` of them, or at least ``min_length``)."""
    count = f"{length}" if length is not None else f"at least {min_length}"
    expected = f"a list of {count} integers >= {minimum}"
    if not isinstance(value, (list, tuple)) or not all(_is_int(v) and v >= minimum for v in value):
        raise _fail(model, arg, expected, value)
    if (length is not None and len(value) != length) or len(value) < min_length:
        raise _fail(model, arg, expected, value)
    return tuple(int(v) for v in value)


def check_float_tuple(
    value: object, *, arg: str, model: str, length: int | None = None, min_length: int = 1, above: float = 0.0
) -> tuple[float, ...]:
    """A list of finite numbers > ``above``."""
    count = f"{length}" if length is not None else f"at least {min_length}"
    expected = f"a list of {count} numbers > {above:g}"
    if not isinstance(value, (list, tuple)) or not all(_is_number(v) and v > above for v in value):
        raise _fail(model, arg, expected, value)
    if (length is not None and len(value) != length) or len(value) < min_length:
        raise _fail(model, arg, expected, value)
    return tuple(float(v) for v in value)


def check_optional_str(value: object, *, arg: str, model: str) -> str | None:
    if value is not None and not (isinstance(value, str) and value):
        raise _fail(model, arg, "a non-empty string or null", value)
    return value
