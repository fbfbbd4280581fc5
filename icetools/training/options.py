"""What a training run can be told, from Python, a YAML file or the command line, and how it is checked.

One :class:`TrainOptions` for every way in: ``icetools train`` and ``icetools sweep`` build it from
their flags and an optional YAML file (:func:`build_options`), Python callers from a mapping. Every
value is coerced and checked here, so a typo fails before any data is read. Messages name the
option as Python and YAML spell it (``batch_size``); the command line spells it with dashes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from icetools.data import POOLS
from icetools.errors import ConfigError, InputFileError
from icetools.inputs import check_transform
from icetools.models import MODEL_SIZES
from icetools.tasks import REFINER_MODEL

LR_SCHEDULES = ("cosine", "poly", "constant")
RESUME_MAY_CHANGE = (
    "epochs", "time_limit", "patience", "min_steps", "workers", "device", "save_at", "thresholds",
)
"""Options a resumed run may change; everything else comes from the stored run."""
DEFAULT_EPOCHS = 50
"""The epoch cap of a run without a time limit (with one, epochs are capped only when given)."""

_KINDS: dict[str, str] = {
    "model": "str?", "from_model": "str?", "loss": "str?", "model_size": "str?", "epochs": "int?",
    "time_limit": "float?", "batch_size": "int", "samples_per_epoch": "int?", "lr": "float?",
    "weight_decay": "float", "lr_schedule": "str?", "poly_power": "float", "patience": "int",
    "smoothing": "float", "min_steps": "int?", "grad_clip": "float", "seed": "int", "device": "str", "workers": "int",
    "pool": "str?", "inputs": "strlist?", "input_transforms": "dict", "model_args": "dict", "loss_args": "dict",
    "steps_per_epoch": "int?", "save_at": "float?", "thresholds": "floatlist?", "augment": "bool",
    "normalization_patches": "int", "resume": "bool", "overwrite": "bool",
}


@dataclass
class TrainOptions:
    """Everything ``icetools train`` can be told, from flags or a YAML file (same names, - or _).

    ``None`` means "the default for this task/model" (:func:`icetools.tasks.training_defaults`):
    model and loss per task, model size "laptop", lr 1e-3 with a cosine decay over the budget,
    512 samples per epoch, pool "scene" for the regional loss else "patch", inputs the scene's
    default bands, the binary threshold sweep 0.10..0.90 in steps of 0.05, then 0.93, 0.95, 0.97, 0.99.
    ``from_model`` (``--from``) trains a refiner on the crude masks of that model directory.

    The budget is ``epochs`` and/or ``time_limit``: with a time limit, epochs are capped only when
    given; without, at :data:`DEFAULT_EPOCHS`. The learning rate decays over the fraction of the
    budget used. ``steps_per_epoch`` is the older way to size an epoch: ``steps_per_epoch x
    batch_size`` samples. Early stopping watches the validation loss smoothed by an exponential
    moving average (``smoothing`` = the weight of the past) and waits ``min_steps`` optimiser steps,
    or, when that is None, three quarters of the budget.
    ``input_transforms`` maps an input band to ``cos-sin`` or ``identity`` (default: ``cos-sin`` for
    bands named like a wrapped phase, see :mod:`icetools.inputs`).
    """

    model: str | None = None
    from_model: str | None = None
    loss: str | None = None
    model_size: str | None = None
    epochs: int | None = None
    time_limit: float | None = None  # minutes
    batch_size: int = 8
    samples_per_epoch: int | None = None
    lr: float | None = None
    weight_decay: float = 1e-5
    lr_schedule: str | None = None
    poly_power: float = 0.9
    patience: int = 10
    smoothing: float = 0.6
    min_steps: int | None = None
    grad_clip: float = 1.0  # 0 = no clipping
    seed: int = 0
    device: str = "auto"
    workers: int = 1
    pool: str | None = None
    inputs: list[str] | None = None
    input_transforms: dict[str, str] = field(default_factory=dict)
    model_args: dict[str, Any] = field(default_factory=dict)
    loss_args: dict[str, Any] = field(default_factory=dict)
    steps_per_epoch: int | None = None
    save_at: float | None = None
    thresholds: list[float] | None = None
    augment: bool = True
    normalization_patches: int = 256
    resume: bool = False
    overwrite: bool = False
    given: ClassVar[frozenset[str] | None] = None
    """The options set explicitly (flags, YAML), even to their default value: what a resume takes over
    the run's own. Set by :func:`build_options`; None for options built in code, where a value other
    than the default counts as given. Not a field: it is no option, and copies do not keep it."""

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], *, source: str = "the config") -> TrainOptions:
        """Options from a dict (a parsed YAML file); unknown keys and wrong types are ConfigErrors."""
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"{source} must be a mapping of option names to values, got {type(mapping).__name__}")
        values: dict[str, Any] = {}
        for key, value in mapping.items():
            name = str(key).replace("-", "_")
            if name not in _KINDS:
                raise ConfigError(
                    f"{source} has unknown option {key!r}; valid options: {', '.join(k.replace('_', '-') for k in _KINDS)}"
                )
            values[name] = _coerce(name, value, source=source)
        options = cls(**values)
        options.validate()
        return options

    def updated(self, **changes: Any) -> TrainOptions:
        """A copy with ``changes`` applied (dict options merged key by key) and checked."""
        values = asdict(self)
        for name, value in changes.items():
            if name not in _KINDS:
                raise ConfigError(f"unknown option {name!r}")
            value = _coerce(name, value, source="the options")
            if name in ("model_args", "loss_args"):
                value = {**values[name], **value}
            values[name] = value
        options = TrainOptions(**values)
        options.validate()
        return options

    def validate(self) -> None:
        """One line per mistake, naming the option and the accepted range."""
        self._check_ranges()
        self._check_choices()
        if self.resume and self.overwrite:
            raise ConfigError("resume and overwrite contradict each other: set one of them")
        if self.from_model is not None and self.model not in (None, REFINER_MODEL):
            raise ConfigError(
                f"from_model trains a refiner, not {self.model!r}: leave model unset or set it to {REFINER_MODEL!r}"
            )
        if self.model == REFINER_MODEL and self.from_model is None:
            raise ConfigError(
                f"model {REFINER_MODEL!r} needs from_model, a model directory: "
                "the segmentation model whose crude masks it refines"
            )
        if self.from_model is not None and self.inputs is not None:
            raise ConfigError("inputs do not apply to a refiner: it reads the crude masks of the from_model model")
        if self.from_model is not None and self.input_transforms:
            raise ConfigError("input_transforms do not apply to a refiner: it reads the crude masks as they are")
        for band, transform in self.input_transforms.items():
            check_transform(transform, band=band)

    @property
    def epoch_cap(self) -> int | None:
        """The epochs the run may take: as given; without, :data:`DEFAULT_EPOCHS` unless a time limit
        bounds the run (then as many as fit)."""
        if self.epochs is not None or self.time_limit is not None:
            return self.epochs
        return DEFAULT_EPOCHS

    def epoch_samples(self, default: int) -> int:
        """Samples per epoch: given, else ``steps_per_epoch x batch_size``, else ``default``."""
        if self.samples_per_epoch is not None:
            return self.samples_per_epoch
        if self.steps_per_epoch is not None:
            return self.steps_per_epoch * self.batch_size
        return default

    def _bad(self, name: str, rule: str) -> ConfigError:
        return ConfigError(f"{name} {rule}, got {getattr(self, name)!r}")

    def _check_ranges(self) -> None:
        for name in ("batch_size", "patience", "normalization_patches"):
            if getattr(self, name) < 1:
                raise self._bad(name, "must be >= 1")
        for name in ("epochs", "samples_per_epoch", "steps_per_epoch", "min_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise self._bad(name, "must be >= 1")
        if self.samples_per_epoch is not None and self.steps_per_epoch is not None:
            raise ConfigError(
                "samples_per_epoch and steps_per_epoch both size an epoch: give one "
                "(steps_per_epoch means steps_per_epoch x batch_size samples)"
            )
        if not (math.isfinite(self.smoothing) and 0 <= self.smoothing < 1):
            raise self._bad("smoothing", "must be >= 0 and < 1 (the weight of the past; 0 = the raw value)")
        if self.workers < 0:
            raise self._bad("workers", "must be >= 0")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise self._bad("lr", "must be > 0")
        for name in ("weight_decay", "grad_clip"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise self._bad(name, "must be >= 0")
        if not (math.isfinite(self.poly_power) and self.poly_power > 0):
            raise self._bad("poly_power", "must be > 0")
        if self.time_limit is not None and not self.time_limit > 0:
            raise self._bad("time_limit", "must be > 0 minutes")
        if self.save_at is not None and not 0 < self.save_at < 1:
            raise self._bad("save_at", "must lie strictly between 0 and 1 (a fraction of the budget)")
        if self.thresholds is not None and (
            not self.thresholds or not all(0 < t < 1 for t in self.thresholds)
        ):
            raise self._bad("thresholds", "must be one or more numbers strictly between 0 and 1")

    def _check_choices(self) -> None:
        if self.pool is not None and self.pool not in POOLS:
            raise self._bad("pool", f"must be one of {', '.join(POOLS)}")
        if self.lr_schedule is not None and self.lr_schedule not in LR_SCHEDULES:
            raise self._bad("lr_schedule", f"must be one of {', '.join(LR_SCHEDULES)}")
        if self.model_size is not None and self.model_size not in MODEL_SIZES:
            raise self._bad("model_size", f"must be one of {', '.join(MODEL_SIZES)}")
        if self.device != "auto" and self.device != "cpu" and not self.device.startswith("cuda"):
            raise self._bad("device", "must be auto, cpu, cuda or cuda:N")


def _coerce(name: str, value: Any, *, source: str) -> Any:
    """YAML and CLI values into the option's type; lists also from comma-separated strings."""
    kind = _KINDS[name]
    optional = kind.endswith("?")
    kind = kind.rstrip("?")

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{source}: option {name.replace('_', '-')!r} must be {expected}, got {value!r}")

    if value is None:
        if optional:
            return None
        raise bad(f"a value ({kind})")
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise bad("an integer")
        return int(value)
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if kind == "str":
        if not isinstance(value, str) or not value:
            raise bad("a non-empty string")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if kind == "dict":
        if not isinstance(value, Mapping):
            raise bad("a mapping of names to values")
        return {str(k): v for k, v in value.items()}
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise bad("a list")
    if kind == "strlist":
        items = [str(item).strip() for item in items]
        if not items or not all(items):
            raise bad("a non-empty list of names")
        return items
    try:
        return [float(item) for item in items]
    except (TypeError, ValueError):
        raise bad("a list of numbers") from None


def parse_weights(value: Any) -> list[float]:
    """Deep supervision weights from a list or a comma-separated string."""
    items = value.split(",") if isinstance(value, str) else value
    try:
        weights = [float(w) for w in items]
    except (TypeError, ValueError):
        raise ConfigError(f"ds_weights must be numbers such as 0.1,0.2,0.3,0.4, got {value!r}") from None
    if not weights or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"ds_weights must be non-negative with a positive sum, got {value!r}")
    return weights


def resume_options(stored: Mapping[str, Any], setup: Mapping[str, Any], current: TrainOptions) -> TrainOptions:
    """The stored options with the few a resume may change; a changed other option is an error
    (silently training on with the old settings would surprise).

    The run's own options are the defaults of a resume: one of RESUME_MAY_CHANGE replaces the stored
    value only when ``current`` gives it (``current.given``, so ``patience=10`` counts even though 10
    is the default; for options built in code, a value other than the default), so a bare resume of
    a 6-epoch run stays a 6-epoch run.
    """
    defaults = asdict(TrainOptions())

    def was_given(name: str, value: Any) -> bool:  # "--patience 10" counts even when 10 is the default
        return name in current.given if current.given is not None else value != defaults[name]

    for name, value in asdict(current).items():
        if name in RESUME_MAY_CHANGE or name in ("resume", "overwrite") or not was_given(name, value):
            continue
        # Options left to their defaults were resolved into the setup (model, loss, lr, pool...).
        used = stored.get(name) if stored.get(name) is not None else setup.get(name)
        if name in ("model_args", "loss_args"):
            used = {**setup.get(name, {}), **(stored.get(name) or {})}
            if all(used.get(k) == v for k, v in value.items()):
                continue
        if value != used:
            raise ConfigError(
                f"resume continues with the run's own settings, but {name}={value!r} "
                f"differs from the run's {used!r}: drop it, or start a new run with overwrite"
            )
    values = dict(stored)
    for name in RESUME_MAY_CHANGE:  # the run's own value unless given again
        if was_given(name, getattr(current, name)):
            values[name] = getattr(current, name)
    values["resume"], values["overwrite"] = True, False
    return TrainOptions.from_mapping(values, source="the stored run options")


# --------------------------------------------------------------------------- options from files and flags


def parse_key_values(pairs: list[str] | None, *, what: str) -> dict[str, Any]:
    """Repeatable ``KEY=VAL`` (``what`` names them in errors); values parsed as JSON (2, 0.5, true,
    [4,8,8,8]) or kept as text."""
    values: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what} {pair!r}: write KEY=VALUE, e.g. {what} gamma=2")
        try:
            values[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            values[key.strip()] = text
    return values


def read_yaml_options(path: Path) -> dict[str, Any]:
    """The mapping in a YAML config file (empty file -> no options)."""
    if not path.is_file():
        raise InputFileError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of option names to values, found {type(data).__name__}")
    return data


def build_options(
    config: Path | None, flags: Mapping[str, Any], *, defaults: Mapping[str, Any] | None = None
) -> TrainOptions:
    """``defaults``, then the YAML file, then every flag given (None = not given; ``resume`` and
    ``overwrite`` are switches, so only True counts as given)."""
    base = read_yaml_options(config) if config else {}
    source = str(config) if config else "the options"
    merged = {**(defaults or {}), **{str(k).replace("-", "_"): v for k, v in base.items()}}
    options = TrainOptions.from_mapping(merged, source=source)
    given = {
        k: v for k, v in flags.items()
        if v is not None and v != {} and not (k in ("resume", "overwrite") and v is False)
    }
    options = options.updated(**given)
    options.given = frozenset(given) | frozenset(str(k).replace("-", "_") for k in base)
    return options


__all__ = [
    "DEFAULT_EPOCHS", "LR_SCHEDULES", "RESUME_MAY_CHANGE", "TrainOptions", "build_options", "parse_key_values",
    "parse_weights", "read_yaml_options", "resume_options",
]
