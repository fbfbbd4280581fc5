"""Train a segmentation model on sampled patches and leave a complete model directory behind.

The run directory *is* the model directory: at every improvement of the validation loss the
model is saved (``model.safetensors`` + ``config.json``), so an interrupted or time-limited run
always leaves its best model ready for ``predict``. Every epoch also rewrites ``history.csv`` and
the resumable state (``last_state.safetensors`` with the model and optimiser tensors,
``last_state.json`` with everything else), and ``curves.png`` (at most every few seconds, always
at the end): nothing is pickled, so a run directory can be shared without the risk that opening
it runs code.

Each epoch reseeds torch from ``(seed, epoch)`` and the batch sampler draws batch order and
augmentations from the same pair, so a resumed run repeats what an uninterrupted one would have
done (on the CPU exactly; cuDNN may differ in the last bits).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import random
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from icetools.errors import ConfigError, DataError, InputFileError, OutputExistsError

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from torch import nn

    from icetools.refine import RefineSource

STATE_WEIGHTS = "last_state.safetensors"
STATE_JSON = "last_state.json"
HISTORY_FILE = "history.csv"
CURVES_FILE = "curves.png"
CURVES_EVERY_S = 5.0  # drawing the PNG costs ~0.2 s: tiny epochs would spend most of their time on it
STATE_FORMAT = "icetools-train-state/1"

DEFAULT_MODEL = {"sic": "unet", "binary": "unet-aspp", "multiclass": "unet"}
DEFAULT_LOSS = {"sic": "regional", "binary": "bce-ftl", "multiclass": "focal"}
DEFAULT_LR = 1e-4
FCTL_LR = 5e-5  # FCtL's own recipe: Adam 5e-5 with poly decay (power 0.9) and focal loss gamma 3
FCTL_FOCAL_GAMMA = 3.0
REFINER = "refiner"
# The refiner redraws masks: focal (gamma 3, as FCtL) for classes and lines; for SIC a plain pixel
# MSE, since its crude SIC is already a per-pixel concentration (no chart polygons to pool over).
REFINER_LOSS = {"sic": "pixel-mse", "binary": "focal", "multiclass": "focal"}
DEFAULT_THRESHOLDS = tuple(round(0.1 + 0.05 * i, 2) for i in range(17))  # 0.10, 0.15, ... 0.90
LR_SCHEDULES = ("constant", "poly")
METRIC_KEYS = {
    "sic": ("r2", "rmse", "polygon_r2"),
    "binary": ("dice", "precision", "recall", "patch_dice"),
    "multiclass": ("miou", "accuracy"),
}
# Options a --resume may change; everything else comes from the stored run.
RESUME_MAY_CHANGE = ("epochs", "time_limit", "patience", "workers", "device", "save_at", "thresholds")

Progress = Callable[[dict[str, Any]], None]
"""progress(event): ``{"event": "epoch_start"|"step"|"epoch_end"|"threshold", "epoch", ...}``; a refiner
run first reports ``{"event": "crude", "scene", "done", "total", ...}`` while it makes the crude mosaics."""


# --------------------------------------------------------------------------- options


_KINDS: dict[str, str] = {
    "model": "str?", "from_model": "str?", "loss": "str?", "epochs": "int", "time_limit": "float?", "batch_size": "int",
    "lr": "float?", "weight_decay": "float", "lr_schedule": "str?", "poly_power": "float",
    "patience": "int", "grad_clip": "float", "seed": "int", "device": "str", "workers": "int",
    "pool": "str?", "inputs": "strlist?", "model_args": "dict", "loss_args": "dict",
    "steps_per_epoch": "int?", "save_at": "float?", "thresholds": "floatlist?", "augment": "bool",
    "normalization_patches": "int", "resume": "bool", "overwrite": "bool",
}


@dataclass
class TrainOptions:
    """Everything ``icetools train`` can be told, from flags or a YAML file (same names, - or _).

    ``None`` means "the default for this task/model": model and loss per task, lr 1e-4 (5e-5 for
    fctl), schedule constant (poly for fctl), pool "scene" for the regional loss else "patch",
    inputs the scene's default bands, the binary threshold sweep 0.10..0.90 in steps of 0.05.
    ``from_model`` (``--from``) trains a refiner on the crude masks of that model directory.
    """

    model: str | None = None
    from_model: str | None = None
    loss: str | None = None
    epochs: int = 50
    time_limit: float | None = None  # minutes
    batch_size: int = 8
    lr: float | None = None
    weight_decay: float = 1e-5
    lr_schedule: str | None = None
    poly_power: float = 0.9
    patience: int = 10
    grad_clip: float = 1.0  # 0 = no clipping
    seed: int = 0
    device: str = "auto"
    workers: int = 1
    pool: str | None = None
    inputs: list[str] | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    loss_args: dict[str, Any] = field(default_factory=dict)
    steps_per_epoch: int | None = None
    save_at: float | None = None
    thresholds: list[float] | None = None
    augment: bool = True
    normalization_patches: int = 256
    resume: bool = False
    overwrite: bool = False

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
        from icetools.data import POOLS

        def bad(name: str, rule: str) -> ConfigError:
            return ConfigError(f"--{name.replace('_', '-')} {rule}, got {getattr(self, name)!r}")

        for name in ("epochs", "batch_size", "patience", "normalization_patches"):
            if getattr(self, name) < 1:
                raise bad(name, "must be >= 1")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise bad("steps_per_epoch", "must be >= 1")
        if self.workers < 0:
            raise bad("workers", "must be >= 0")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise bad("lr", "must be > 0")
        for name in ("weight_decay", "grad_clip"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise bad(name, "must be >= 0")
        if not (math.isfinite(self.poly_power) and self.poly_power > 0):
            raise bad("poly_power", "must be > 0")
        if self.time_limit is not None and not self.time_limit > 0:
            raise bad("time_limit", "must be > 0 minutes")
        if self.save_at is not None and not 0 < self.save_at < 1:
            raise bad("save_at", "must lie strictly between 0 and 1 (a fraction of --epochs)")
        if self.pool is not None and self.pool not in POOLS:
            raise bad("pool", f"must be one of {', '.join(POOLS)}")
        if self.lr_schedule is not None and self.lr_schedule not in LR_SCHEDULES:
            raise bad("lr_schedule", f"must be one of {', '.join(LR_SCHEDULES)}")
        if self.thresholds is not None and (
            not self.thresholds or not all(0 < t < 1 for t in self.thresholds)
        ):
            raise bad("thresholds", "must be one or more numbers strictly between 0 and 1")
        if self.device != "auto" and self.device != "cpu" and not self.device.startswith("cuda"):
            raise bad("device", "must be auto, cpu, cuda or cuda:N")
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other: give one of them")
        if self.from_model is not None and self.model not in (None, REFINER):
            raise ConfigError(f"--from trains a refiner, not {self.model!r}: drop --model or give --model refiner")
        if self.model == REFINER and self.from_model is None:
            raise ConfigError("--model refiner needs --from MODEL_DIR: the segmentation model whose crude masks it refines")
        if self.from_model is not None and self.inputs is not None:
            raise ConfigError("--inputs does not apply to a refiner: it reads the crude masks of the --from model")


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


# --------------------------------------------------------------------------- the plan


@dataclass
class Setup:
    """What a run trains, resolved from the options and the data (stored in last_state.json)."""

    task: str
    inputs: list[str]
    model: str
    model_args: dict[str, Any]
    loss: str
    loss_args: dict[str, Any]
    ds_weights: list[float] | None
    lr: float
    lr_schedule: str
    pool: str
    patch_size: int
    n_classes: int
    class_names: list[str] | None
    refines: dict[str, Any] | None = None  # a refiner's segmentation model (see RefineSource.record)


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


def _single(frame: pd.DataFrame, column: str, what: str) -> Any:
    values = frame[column].dropna().unique()
    if len(values) != 1:
        raise ConfigError(
            f"the patches mix {what} ({', '.join(map(str, values)) or 'none'}): train on one {what} at a time"
        )
    return values[0]


def resolve_setup(frame: pd.DataFrame, options: TrainOptions, *, refines: RefineSource | None = None) -> Setup:
    """Model, loss, inputs and output classes for these patches; every mistake before any training.

    With ``refines`` (the --from model) the model is a refiner whose inputs are that model's crude
    probability bands; task and classes must match the patches.
    """
    from icetools.data import TASKS, label_class_names, max_class
    from icetools.io.scene import open_scene
    from icetools.losses import TASK_LOSSES, build_loss
    from icetools.models import MODEL_NAMES, model_class

    if len(frame) == 0:
        raise DataError("the patches file holds no patch: run `icetools sample-patches` first")
    task = str(_single(frame, "task", "tasks"))
    if task not in TASKS:
        raise DataError(f"unknown task {task!r} in the patches; valid tasks: {', '.join(TASKS)}")
    patch_size = int(_single(frame, "size", "patch sizes"))
    for split in ("train", "val"):
        if not (frame["split"] == split).any():
            raise DataError(
                f"the patches have no {split!r} patches: sample patches with train and val splits "
                "(validation picks the best epoch and stops training)"
            )

    model = options.model or (REFINER if refines is not None else DEFAULT_MODEL[task])
    if model not in MODEL_NAMES:
        raise ConfigError(f"unknown model {model!r}; known models: {', '.join(MODEL_NAMES)}")
    if (model == REFINER) != (refines is not None):
        raise ConfigError("--model refiner needs --from MODEL_DIR: the segmentation model whose crude masks it refines")
    is_fctl = model == "fctl"
    valid_losses = TASK_LOSSES[task]
    if refines is not None:
        default_loss = REFINER_LOSS[task]
    else:
        default_loss = "focal" if is_fctl and "focal" in valid_losses else DEFAULT_LOSS[task]
    loss = options.loss or default_loss
    if loss not in valid_losses:
        raise ConfigError(
            f"loss {loss!r} does not suit the {task} task; valid losses for {task}: {', '.join(valid_losses)}"
        )
    loss_args = dict(options.loss_args)
    ds_value = loss_args.pop("ds_weights", None)
    if (is_fctl or refines is not None) and loss == "focal":
        loss_args.setdefault("gamma", FCTL_FOCAL_GAMMA)
    build_loss(loss, **loss_args)  # checks the names and values of the loss options now

    has_heads = hasattr(model_class(model), "forward_heads")
    deep = has_heads and options.model_args.get("deep_supervision", True) is not False
    if ds_value is not None and not deep:
        raise ConfigError(
            f"ds_weights applies to models with deep supervision heads (unet++), not {model!r}: drop it"
        )
    ds_weights = parse_weights(ds_value) if ds_value is not None else (
        [0.1, 0.2, 0.3, 0.4] if deep else None
    )

    scenes = list(dict.fromkeys(str(p) for p in frame["scene"]))
    if refines is not None:
        inputs = list(refines.band_names)  # the crude mosaics, written on each scene's grid later
        for path in scenes:
            open_scene(path).close()  # InputFileError naming a scene that is gone
    else:
        with open_scene(scenes[0]) as first:
            inputs = list(options.inputs or first.default_inputs)
        for path in scenes:
            with open_scene(path) as scene:
                scene.resolve(inputs)  # MissingVariableError naming the scene and its bands

    class_names = None
    if task == "multiclass":
        class_names = label_class_names(frame)
        n_classes = len(class_names) if class_names else max_class(frame) + 1
        if n_classes < 2:
            raise DataError(
                "the class labels hold fewer than 2 classes over the train patches: nothing to learn"
            )
    else:
        n_classes = 1
    if refines is not None:
        if refines.task != task:
            raise ConfigError(
                f"--from {refines.model_dir} is a {refines.task} model but the patches are {task}: "
                "refine a model trained on this task"
            )
        if refines.n_classes != n_classes:
            raise ConfigError(
                f"--from {refines.model_dir} tells {refines.n_classes} classes apart but the labels hold {n_classes}: "
                "refine a model trained on these labels"
            )

    model_args = dict(options.model_args)
    for key, value in (("in_channels", len(inputs)), ("out_channels", n_classes)):
        if key in model_args and model_args[key] != value:
            raise ConfigError(
                f"--model-arg {key}={model_args[key]} contradicts the data ({value}): leave it out, it is set from the data"
            )
        model_args[key] = value

    return Setup(
        task=task,
        inputs=inputs,
        model=model,
        model_args=model_args,
        loss=loss,
        loss_args=loss_args,
        ds_weights=ds_weights,
        lr=options.lr if options.lr is not None else (FCTL_LR if is_fctl else DEFAULT_LR),
        lr_schedule=options.lr_schedule or ("poly" if is_fctl else "constant"),
        pool=options.pool or ("scene" if loss == "regional" else "patch"),
        patch_size=patch_size,
        n_classes=n_classes,
        class_names=class_names,
        refines=refines.record() if refines is not None else None,
    )


# --------------------------------------------------------------------------- small helpers


def pick_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a device torch knows; use auto, cpu or cuda:N") from None


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    import torch

    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None (config.json is strict JSON), numpy scalars -> Python numbers."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def save_at_name(fraction: float) -> str:
    """Folder for the model saved at a fraction of the epoch budget: 0.4 -> at_40pct."""
    return f"at_{round(fraction * 100):d}pct"


def save_at_epoch(fraction: float, epochs: int) -> int:
    return max(1, round(fraction * epochs))


# --------------------------------------------------------------------------- validation metrics


def threshold_counts(
    prob: np.ndarray, truth: np.ndarray, valid: np.ndarray, thresholds: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives and predicted pixels (T, B) at every threshold, true pixels (B,), valid pixels only."""
    thresholds = np.asarray(thresholds, dtype="float32").reshape(-1, 1, 1, 1)
    truth = (truth > 0.5) & valid
    pred = (prob[None] >= thresholds) & valid[None]
    true_pos = (pred & truth[None]).sum(axis=(2, 3))
    return true_pos, pred.sum(axis=(2, 3)), truth.sum(axis=(1, 2))


def patch_dice(
    prob: np.ndarray, truth: np.ndarray, valid: np.ndarray, thresholds: Sequence[float]
) -> np.ndarray:
    """Dice of every patch at every threshold, (T, B); a patch with no true and no predicted
    foreground scores 1 (nothing to find, nothing wrongly found), as metrics.BinaryCounts does."""
    true_pos, n_pred, n_truth = threshold_counts(prob, truth, valid, thresholds)
    denominator = n_pred + n_truth[None]
    return np.where(denominator > 0, 2 * true_pos / np.maximum(denominator, 1), 1.0)


def pick_threshold(thresholds: Sequence[float], mean_dice: Sequence[float]) -> tuple[float, bool]:
    """The threshold of best mean Dice (the lowest of equals), and whether it is at the range's edge."""
    scores = np.asarray(mean_dice, dtype="float64")
    if scores.size != len(thresholds) or scores.size == 0:
        raise ValueError("one mean Dice per threshold is needed")
    scores = np.where(np.isfinite(scores), scores, -np.inf)
    order = np.argsort(thresholds, kind="stable")
    best = order[int(np.argmax(scores[order]))]
    at_edge = len(thresholds) > 1 and best in (order[0], order[-1])
    return float(thresholds[best]), bool(at_edge)


class ValidationResult:
    """Loss and task metrics over the validation loader, accumulated batch by batch.

    Binary masks are scored at every threshold of ``thresholds`` in the same pass (pooled
    TP/FP/FN and the per-patch Dice), so the threshold sweep costs one pass over the data.
    """

    def __init__(self, task: str, n_classes: int, *, thresholds: Sequence[float] = (0.5,)) -> None:
        from icetools.metrics import ConfusionAccumulator, PolygonAccumulator, SICAccumulator

        self.task = task
        self.thresholds = [float(t) for t in thresholds]
        self.loss_sum = 0.0
        self.n = 0
        if task == "sic":
            self.pixels = SICAccumulator()
            self.polygons = PolygonAccumulator()
            self.polygon_key: dict[tuple[int, int], int] = {}
            self.polygon_sic: dict[int, float] = {}
        elif task == "binary":
            count = len(self.thresholds)
            self.true_pos = np.zeros(count, dtype="int64")
            self.n_pred = np.zeros(count, dtype="int64")
            self.n_truth = 0
            self.n_valid = 0
            self.dice_sum = np.zeros(count)
            self.n_foreground_patches = 0
        else:
            self.confusion = ConfusionAccumulator(n_classes)

    def update(self, logits: torch.Tensor, batch: Mapping[str, torch.Tensor], loss: float) -> None:
        import torch

        size = int(batch["target"].shape[0])
        self.loss_sum += loss * size
        self.n += size
        valid = batch["valid"].cpu().numpy()
        target = batch["target"].cpu().numpy()
        logits = logits.float()
        if self.task == "multiclass":
            self.confusion.update(logits.argmax(dim=1).cpu().numpy(), target, valid)
            return
        prob = torch.sigmoid(logits[:, 0]).cpu().numpy()
        if self.task == "sic":
            self.pixels.update(prob, target, valid)
            self._update_polygons(prob, batch["polygon_ids"].cpu().numpy(), batch["scene_index"].cpu().numpy(),
                                  target, valid)
            return
        true_pos, n_pred, n_truth = threshold_counts(prob, target, valid, self.thresholds)
        self.true_pos += true_pos.sum(axis=1)
        self.n_pred += n_pred.sum(axis=1)
        self.n_truth += int(n_truth.sum())
        self.n_valid += int(valid.sum())
        # Mean Dice over the patches that hold a line: empty patches would score 1 for predicting
        # nothing and pull the chosen threshold up (their false positives still count in 'dice').
        has_line = n_truth > 0
        self.n_foreground_patches += int(has_line.sum())
        denominator = n_pred + n_truth[None]
        dice = np.where(denominator > 0, 2 * true_pos / np.maximum(denominator, 1), 1.0)
        self.dice_sum += dice[:, has_line].sum(axis=1)

    def _update_polygons(self, prob, ids, scenes, target, valid) -> None:
        """Polygon ids repeat across scenes: number each (scene, id) pair once, compactly."""
        compact = np.zeros(ids.shape, dtype="int64")
        for b in range(ids.shape[0]):
            keep = valid[b] & (ids[b] > 0)
            present, first = np.unique(ids[b][keep], return_index=True)
            if present.size == 0:
                continue
            chart = target[b][keep][first]
            numbers = np.empty(present.size, dtype="int64")
            for i, pid in enumerate(present):
                key = (int(scenes[b]), int(pid))
                if key not in self.polygon_key:
                    self.polygon_key[key] = len(self.polygon_key) + 1
                    self.polygon_sic[self.polygon_key[key]] = float(chart[i])
                numbers[i] = self.polygon_key[key]
            compact[b][keep] = numbers[np.searchsorted(present, ids[b][keep])]
        self.polygons.update(prob, compact, valid)

    @property
    def loss(self) -> float:
        return self.loss_sum / self.n if self.n else float("nan")

    def mean_dice(self) -> list[float]:
        """Mean Dice at every threshold over the patches with foreground (binary tasks); the pooled
        Dice when no validation patch has any."""
        if self.n_foreground_patches == 0:
            denominator = self.n_pred + self.n_truth
            return [float(v) for v in np.where(denominator > 0, 2 * self.true_pos / np.maximum(denominator, 1), 1.0)]
        return [float(v) for v in self.dice_sum / self.n_foreground_patches]

    def metrics(self, threshold: float | None = None) -> dict[str, float]:
        """The task's metrics; binary ones at ``threshold`` (default: the first of the sweep)."""
        if self.task == "sic":
            pixels = self.pixels.result()
            polygons = self.polygons.result(self.polygon_sic)
            return {"r2": pixels["r2"], "rmse": pixels["rmse"], "polygon_r2": polygons["r2"]}
        if self.task == "binary":
            from icetools.metrics import BinaryCounts

            index = self.thresholds.index(float(threshold)) if threshold is not None else 0
            counts = BinaryCounts()
            counts.tp = int(self.true_pos[index])
            counts.fp = int(self.n_pred[index]) - counts.tp
            counts.fn = self.n_truth - counts.tp
            counts.tn = self.n_valid - counts.tp - counts.fp - counts.fn
            result = counts.result()
            return {
                "dice": result["dice"],
                "precision": result["precision"],
                "recall": result["recall"],
                "patch_dice": self.mean_dice()[index] if self.n else float("nan"),
            }
        result = self.confusion.result()
        return {"miou": float(result["miou"]), "accuracy": float(result["accuracy"])}


def validate(
    model: nn.Module,
    loader: Any,
    loss_fn: Callable,
    *,
    task: str,
    n_classes: int,
    device: torch.device,
    thresholds: Sequence[float] = (0.5,),
) -> ValidationResult:
    """Validation loss and metrics on ``model(x)`` (for UNet++ the last head)."""
    import torch

    model.eval()
    result = ValidationResult(task, n_classes, thresholds=thresholds)
    with torch.no_grad():
        for batch in loader:
            batch = _to_device(batch, device)
            with _autocast(device):
                logits = model(batch["image"])
                loss = loss_fn(logits, batch)
            result.update(logits, batch, float(loss))
    return result


# --------------------------------------------------------------------------- resumable state


def _flatten_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Model and optimiser tensors under flat names; the optimiser's other settings as JSON."""
    import torch

    tensors = {f"model.{k}": v.detach().to("cpu").clone().contiguous() for k, v in model.state_dict().items()}
    state = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().to("cpu").clone().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _restore_state(
    tensors: dict[str, torch.Tensor], settings: Mapping[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer
) -> None:
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    entries: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            entries.setdefault(int(index), {})[key] = value
    for index, scalars in settings.get("scalars", {}).items():
        entries.setdefault(int(index), {}).update(scalars)
    groups = [dict(group) for group in settings["param_groups"]]
    for group in groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": entries, "param_groups": groups})


def _write_state(out_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, info: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    from icetools.io.atomic import atomic_path

    tensors, settings = _flatten_state(model, optimizer)
    info = {**info, "optimizer": settings}
    text = json.dumps(_clean(info), indent=2, allow_nan=False) + "\n"
    with atomic_path(out_dir / STATE_WEIGHTS, overwrite=True) as tmp:
        save_file(tensors, str(tmp), metadata={"format": STATE_FORMAT, "epoch": str(info["epoch"])})
    with atomic_path(out_dir / STATE_JSON, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _read_state(out_dir: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    json_path, weights_path = out_dir / STATE_JSON, out_dir / STATE_WEIGHTS
    if not json_path.is_file() or not weights_path.is_file():
        raise InputFileError(
            f"{out_dir} holds no resumable state ({STATE_JSON} + {STATE_WEIGHTS}): run without --resume"
        )
    try:
        info = json.loads(json_path.read_text(encoding="utf-8"))
        tensors = load_file(str(weights_path))
        with safe_open(str(weights_path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (json.JSONDecodeError, UnicodeDecodeError, SafetensorError, OSError) as exc:
        raise InputFileError(f"cannot read the resumable state in {out_dir}: {exc}") from None
    if info.get("format") != STATE_FORMAT or metadata.get("epoch") != str(info.get("epoch")):
        raise InputFileError(
            f"the resumable state in {out_dir} is inconsistent ({STATE_JSON} and {STATE_WEIGHTS} are from "
            "different epochs or another tool): start again with --overwrite"
        )
    return info, tensors


# --------------------------------------------------------------------------- history files


def _read_history(path: Path, up_to_epoch: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [dict(row) for row in csv.DictReader(handle)]
    kept = []
    for row in rows:
        epoch = int(row["epoch"])
        if epoch <= up_to_epoch:
            kept.append({k: (epoch if k == "epoch" else _number(v)) for k, v in row.items()})
    return kept


def _number(text: Any) -> Any:
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def _write_history(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    from icetools.io.atomic import atomic_path

    with atomic_path(path, overwrite=True) as tmp:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _format(row.get(k)) for k in columns})


def _format(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


# --------------------------------------------------------------------------- the run


def _prepare_dir(out_dir: Path, *, resume: bool, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputFileError(f"{out_dir} exists and is a file: choose a folder for the run")
    if resume:
        if not (out_dir / STATE_JSON).is_file():
            raise InputFileError(f"{out_dir / STATE_JSON} does not exist: nothing to resume; run without --resume")
        return
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise OutputExistsError(
                f"{out_dir} exists: pass --overwrite to replace the run, or --resume to continue it"
            )
        # Remove only what a run writes: the user may keep notes or configs in the same folder. A
        # refiner's crude/ mosaics stay: they are remade only if their scene or model changed.
        from icetools.checkpoint import CONFIG_FILE, WEIGHTS_FILE

        for name in (WEIGHTS_FILE, CONFIG_FILE, HISTORY_FILE, CURVES_FILE, STATE_JSON, STATE_WEIGHTS):
            (out_dir / name).unlink(missing_ok=True)
        for folder in out_dir.glob("at_*pct"):
            if folder.is_dir():
                shutil.rmtree(folder)
    out_dir.mkdir(parents=True, exist_ok=True)


def load_patches(patches: str | Path | pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """The patches frame and its file path (None for a frame passed in directly)."""
    import pandas as pd

    if isinstance(patches, pd.DataFrame):
        return patches, None
    from icetools.sampling import read_patches

    return read_patches(patches), str(Path(patches).resolve())


def _resume_options(stored: Mapping[str, Any], setup: Mapping[str, Any], current: TrainOptions) -> TrainOptions:
    """The stored options with the few a resume may change; a changed other option is an error
    (silently training on with the old settings would surprise)."""
    defaults = asdict(TrainOptions())
    for name, value in asdict(current).items():
        if name in RESUME_MAY_CHANGE or name in ("resume", "overwrite") or value == defaults[name]:
            continue
        # Options left to their defaults were resolved into the setup (model, loss, lr, pool...).
        used = stored.get(name) if stored.get(name) is not None else setup.get(name)
        if name in ("model_args", "loss_args"):
            used = {**setup.get(name, {}), **(stored.get(name) or {})}
            if all(used.get(k) == v for k, v in value.items()):
                continue
        if value != used:
            raise ConfigError(
                f"--resume continues with the run's own settings, but {name.replace('_', '-')}={value!r} "
                f"differs from the run's {used!r}: drop it, or start a new run with --overwrite"
            )
    values = dict(stored)
    for name in RESUME_MAY_CHANGE:
        values[name] = getattr(current, name)
    values["resume"], values["overwrite"] = True, False
    return TrainOptions.from_mapping(values, source="the stored run options")


@dataclass
class _Run:
    """Mutable bookkeeping of one training run (what last_state.json stores)."""

    epoch: int = 0
    global_step: int = 0
    best_val_loss: float = math.inf
    best_epoch: int | None = None
    best_train_loss: float | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    bad_epochs: int = 0
    seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)

    STORED = ("epoch", "global_step", "best_val_loss", "best_epoch", "best_train_loss", "best_metrics",
              "bad_epochs", "seconds")

    def stored(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.STORED}

    @classmethod
    def from_stored(cls, values: Mapping[str, Any], history: list[dict[str, Any]]) -> _Run:
        run = cls(**{key: values.get(key) for key in cls.STORED if values.get(key) is not None})
        run.history = history
        return run


class _Trainer:
    """One training run: the model, its loaders and optimiser, and what happens at each epoch."""

    def __init__(
        self,
        frame: pd.DataFrame,
        out_dir: Path,
        options: TrainOptions,
        *,
        setup: Setup,
        normalization: dict[str, list[float]],
        run: _Run,
        patches_path: str | None,
        progress: Progress | None,
        input_scenes: dict[str, str] | None = None,
    ) -> None:
        import torch

        from icetools.data import PatchDataset, make_loader, scene_paths
        from icetools.losses import build_loss, deep_supervision
        from icetools.models import build_model, context_scales_of

        self.started = time.monotonic()
        self.frame, self.out_dir, self.options = frame, out_dir, options
        self.setup, self.normalization, self.run = setup, normalization, run
        self.provenance = {"patches": patches_path, "scenes": scene_paths(frame)}
        if input_scenes:
            self.provenance["crude_inputs"] = dict(input_scenes)
        self.notify = progress or (lambda event: None)
        self.device = pick_device(options.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # every batch has the same shape: tune kernels once
        seed_everything(options.seed)

        self.model = build_model(setup.model, **setup.model_args).to(self.device)
        self.context_scales = context_scales_of(self.model)
        n_heads = int(getattr(self.model, "n_heads", 1))
        self.loss_fn = build_loss(setup.loss, **setup.loss_args)
        self.deep = setup.ds_weights is not None and n_heads > 1
        if self.deep:
            if len(setup.ds_weights) != n_heads:
                raise ConfigError(
                    f"{setup.model} has {n_heads} deep supervision heads but {len(setup.ds_weights)} ds_weights "
                    "were given: give one weight per head"
                )
            self.loss_fn = deep_supervision(self.loss_fn, setup.ds_weights)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=setup.lr, weight_decay=options.weight_decay)

        common = dict(inputs=setup.inputs, normalization=normalization, task=setup.task,
                      context_scales=self.context_scales, seed=options.seed, input_scenes=input_scenes,
                      window_axis=hasattr(self.model, "context_scales"))  # context models take (B, T, C, H, W)
        loader = dict(batch_size=options.batch_size, pool=setup.pool, workers=options.workers, seed=options.seed,
                      pin_memory=self.device.type == "cuda")
        self.train_loader = make_loader(PatchDataset(frame, "train", augment=options.augment, **common),
                                        shuffle=True, **loader)
        self.val_loader = make_loader(PatchDataset(frame, "val", augment=False, **common), shuffle=False, **loader)
        if len(self.train_loader) == 0 or len(self.val_loader) == 0:
            raise DataError("the patches need at least one train and one val patch")
        self.steps_per_epoch = options.steps_per_epoch or len(self.train_loader)
        self.total_steps = self.steps_per_epoch * options.epochs
        self.deadline = self.started + options.time_limit * 60 if options.time_limit else None
        self.columns = ["epoch", "steps", "train_loss", "val_loss",
                        *(f"val_{k}" for k in METRIC_KEYS[setup.task]), "lr", "seconds"]
        self.seconds_before = run.seconds
        self.plotted: dict[str, Any] = {"epoch": None, "at": -math.inf}

    # --- pieces -------------------------------------------------------------------------------

    def elapsed(self) -> float:
        return self.seconds_before + time.monotonic() - self.started

    def lr_at(self, step: int) -> float:
        if self.setup.lr_schedule == "poly":
            remaining = max(0.0, 1 - step / max(self.total_steps, 1))
            return self.setup.lr * remaining**self.options.poly_power
        return self.setup.lr

    def config(self, metrics: Mapping[str, Any], *, stopped_because: str | None) -> dict[str, Any]:
        """config.json of the model directory (the model entry is added by save_model_dir)."""
        from icetools import __version__

        setup, run = self.setup, self.run
        config: dict[str, Any] = {
            "icetools_version": __version__,
            "task": setup.task,
            "inputs": setup.inputs,
            "normalization": self.normalization,
            "patch_size": setup.patch_size,
            "n_classes": setup.n_classes,
            "context_scales": list(self.context_scales),
            "training": {
                "options": asdict(self.options),
                "loss": setup.loss,
                "loss_args": setup.loss_args,
                "ds_weights": setup.ds_weights,
                "lr": setup.lr,
                "lr_schedule": setup.lr_schedule,
                "pool": setup.pool,
                "best_epoch": run.best_epoch,
                "best_val_loss": run.best_val_loss,
                "train_loss": run.best_train_loss,
                "val_metrics": dict(metrics),
                "epochs_run": run.epoch,
                "stopped_because": stopped_because,
                "seconds": round(run.seconds, 1),
            },
            "provenance": self.provenance,
        }
        if setup.refines is not None:
            config["refines"] = setup.refines
        if setup.task == "multiclass":
            config["class_names"] = setup.class_names or [str(i) for i in range(setup.n_classes)]
        if setup.task == "binary":
            config["threshold"] = 0.5
        return _clean(config)

    def draw_curves(self) -> None:
        from icetools.plots import plot_training_curves

        plot_training_curves(self.run.history, self.out_dir / CURVES_FILE, best_epoch=self.run.best_epoch,
                             title=f"{self.setup.model} / {self.setup.loss}")
        self.plotted.update(epoch=self.run.epoch, at=time.monotonic())

    # --- an epoch -----------------------------------------------------------------------------

    def train_epoch(self, epoch: int) -> tuple[float, int, bool]:
        """Optimiser steps of one epoch: (mean training loss, steps, whether time ran out).

        The loss is summed on the device and read once at the end: no host sync per step.
        """
        import torch

        model, optimizer, device = self.model, self.optimizer, self.device
        torch.manual_seed(_epoch_seed(self.options.seed, epoch))
        self.train_loader.batch_sampler.set_epoch(epoch)
        self.notify({"event": "epoch_start", "epoch": epoch, "epochs": self.options.epochs,
                     "steps": self.steps_per_epoch})
        model.train()
        loss_total = torch.zeros((), device=device)
        seen = steps = 0
        while steps < self.steps_per_epoch:  # cycles the loader when --steps-per-epoch asks for more
            for batch in self.train_loader:
                batch = _to_device(batch, device)
                for group in optimizer.param_groups:
                    group["lr"] = self.lr_at(self.run.global_step)
                with _autocast(device):
                    outputs = model.forward_heads(batch["image"]) if self.deep else model(batch["image"])
                    loss = self.loss_fn(outputs, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.options.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), self.options.grad_clip)
                optimizer.step()
                size = int(batch["image"].shape[0])
                loss_total += loss.detach().float() * size
                seen += size
                steps += 1
                self.run.global_step += 1
                self.notify({"event": "step", "epoch": epoch, "step": steps, "steps": self.steps_per_epoch})
                if self.deadline is not None and time.monotonic() >= self.deadline:
                    return float(loss_total) / max(seen, 1), steps, True
                if steps >= self.steps_per_epoch:
                    break
        return float(loss_total) / max(seen, 1), steps, False

    def end_epoch(self, epoch: int, *, train_loss: float, steps: int, epoch_start: float) -> bool:
        """Validate, keep the model if it improved, write history, curves and the resumable state."""
        from icetools.checkpoint import save_model_dir

        run, options = self.run, self.options
        result = validate(self.model, self.val_loader, self.loss_fn, task=self.setup.task,
                          n_classes=self.setup.n_classes, device=self.device)
        val_loss, metrics = result.loss, result.metrics()
        run.epoch = epoch
        run.seconds = self.elapsed()
        row = {"epoch": epoch, "steps": steps, "train_loss": train_loss, "val_loss": val_loss,
               **{f"val_{k}": v for k, v in metrics.items()}, "lr": self.lr_at(run.global_step),
               "seconds": time.monotonic() - epoch_start}
        run.history.append(row)
        improved = math.isfinite(val_loss) and (val_loss < run.best_val_loss or run.best_epoch is None)
        if improved:
            run.best_val_loss, run.best_epoch, run.best_train_loss = val_loss, epoch, train_loss
            run.best_metrics = metrics
            run.bad_epochs = 0
            save_model_dir(self.out_dir, self.model, self.config(metrics, stopped_because=None))
        else:
            run.bad_epochs += 1
        if options.save_at is not None and epoch == save_at_epoch(options.save_at, options.epochs):
            save_model_dir(self.out_dir / save_at_name(options.save_at), self.model,
                           self.config(metrics, stopped_because=f"saved at epoch {epoch} of {options.epochs}"))
        _write_history(self.out_dir / HISTORY_FILE, run.history, self.columns)
        if epoch == options.epochs or time.monotonic() - self.plotted["at"] >= CURVES_EVERY_S:
            self.draw_curves()
        _write_state(self.out_dir, self.model, self.optimizer, {
            "format": STATE_FORMAT, "epoch": epoch, "options": asdict(options), "setup": asdict(self.setup),
            "normalization": self.normalization, "run": run.stored(),
            "rng": {"seed": options.seed, "scheme": "torch and the batch sampler reseeded from (seed, epoch)"},
        })
        self.notify({"event": "epoch_end", "epoch": epoch, "epochs": options.epochs, "row": row,
                     "improved": improved})
        return improved

    def fit(self) -> str:
        """Epochs until the budget, early stopping, the time limit or Ctrl-C; why it stopped."""
        run, options = self.run, self.options
        if run.epoch >= options.epochs:
            return "epochs (already complete)"
        if run.bad_epochs >= options.patience:
            return "early stopping (already stopped)"
        stopped_because = "epochs"
        try:
            while run.epoch < options.epochs:
                epoch = run.epoch + 1
                epoch_start = time.monotonic()
                train_loss, steps, out_of_time = self.train_epoch(epoch)
                self.end_epoch(epoch, train_loss=train_loss, steps=steps, epoch_start=epoch_start)
                if not math.isfinite(train_loss):
                    stopped_because = "non-finite training loss"
                    break
                if out_of_time:
                    stopped_because = "time limit"
                    break
                if run.bad_epochs >= options.patience:
                    stopped_because = "early stopping"
                    break
        except KeyboardInterrupt:
            stopped_because = "interrupted"
        if run.history and self.plotted["epoch"] != run.epoch:
            self.draw_curves()  # the curves always end at the last finished epoch
        return stopped_because

    # --- the end ------------------------------------------------------------------------------

    def finish(self, stopped_because: str) -> dict[str, Any]:
        """Reload the best model, sweep the binary threshold, write the final config; the summary."""
        from icetools.checkpoint import load_model_dir, save_model_dir

        run, setup = self.run, self.setup
        warnings: list[str] = []
        summary: dict[str, Any] = {
            "run_dir": str(self.out_dir), "task": setup.task, "model": setup.model, "loss": setup.loss,
            "epochs_run": run.epoch, "best_epoch": run.best_epoch, "warnings": warnings,
            "best_val_loss": None, "train_loss": None, "val_metrics": {}, "threshold": None,
        }
        if run.best_epoch is None:
            warnings.append("no epoch finished with a finite validation loss: no model was written")
            summary.update(stopped_because=stopped_because, seconds=round(self.elapsed(), 1))
            return summary

        best_model, _ = load_model_dir(self.out_dir)
        metrics = dict(run.best_metrics)
        config = self.config(metrics, stopped_because=stopped_because)
        threshold = None
        if setup.task == "binary":
            threshold = 0.5
            if stopped_because != "interrupted":
                try:
                    threshold, metrics, sweep, warning = self.sweep_threshold(best_model.to(self.device))
                    config["threshold_sweep"] = sweep
                    warnings.extend([warning] if warning else [])
                except KeyboardInterrupt:
                    stopped_because = "interrupted"
            config["threshold"] = threshold
        run.seconds = self.elapsed()
        config["training"].update(_clean({"val_metrics": metrics, "stopped_because": stopped_because,
                                          "seconds": round(run.seconds, 1)}))
        save_model_dir(self.out_dir, best_model.to("cpu"), config)
        summary.update(best_val_loss=run.best_val_loss, train_loss=run.best_train_loss, val_metrics=metrics,
                       threshold=threshold, seconds=round(run.seconds, 1), stopped_because=stopped_because)
        return summary

    def sweep_threshold(self, model: nn.Module) -> tuple[float, dict[str, float], dict[str, Any], str | None]:
        """Best per-patch mean Dice over the thresholds, on the validation patches, in one pass."""
        thresholds = self.options.thresholds or list(DEFAULT_THRESHOLDS)
        swept = validate(model, self.val_loader, self.loss_fn, task="binary", n_classes=1, device=self.device,
                         thresholds=thresholds)
        mean_dice = swept.mean_dice()
        threshold, at_edge = pick_threshold(thresholds, mean_dice)
        self.notify({"event": "threshold", "threshold": threshold, "mean_dice": max(mean_dice)})
        warning = None
        if at_edge:
            warning = (
                f"the best threshold {threshold:g} lies at the edge of the sweep "
                f"({min(thresholds):g}..{max(thresholds):g}): widen it with --thresholds"
            )
        sweep = _clean({"thresholds": thresholds, "mean_dice": mean_dice})
        return threshold, swept.metrics(threshold), sweep, warning


def train_model(
    patches: str | Path | pd.DataFrame,
    out_dir: str | Path,
    options: TrainOptions,
    *,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train on the train patches, select on the val patches, write the model directory; a summary.

    ``patches`` is a patches GeoPackage or its frame. With ``options.resume`` the run continues
    from ``out_dir``'s last finished epoch with the stored settings (see RESUME_MAY_CHANGE).
    Ctrl-C (KeyboardInterrupt) stops cleanly: the best model so far stays, the summary says
    ``stopped_because: "interrupted"`` and the caller decides the exit code.

    A refiner (``options.from_model``) first gets the crude mosaic of every train/val scene from
    that model, under ``out_dir/crude/`` (kept across runs and remade only when the scene or the
    model changed), and learns from those with the inputs fed as they are (identity normalisation).
    """
    from icetools.data import compute_normalization
    from icetools.refine import CRUDE_DIR, identity_normalization, open_refine_source, prepare_crude_inputs

    options.validate()
    out_dir = Path(out_dir)
    frame, patches_path = load_patches(patches)
    source = None
    if options.from_model is not None and not options.resume:  # a wrong --from fails before the run dir exists
        source = open_refine_source(options.from_model, device=options.device)
    _prepare_dir(out_dir, resume=options.resume, overwrite=options.overwrite)
    tensors: dict[str, Any] | None = None
    if options.resume:
        stored, tensors = _read_state(out_dir)
        options = _resume_options(stored["options"], stored["setup"], options)
        setup = Setup(**stored["setup"])
        normalization = stored["normalization"]
        run = _Run.from_stored(stored["run"], _read_history(out_dir / HISTORY_FILE, stored["run"]["epoch"]))
        if options.from_model is not None:
            source = open_refine_source(options.from_model, device=options.device)
            if list(source.band_names) != setup.inputs:
                raise ConfigError(
                    f"--from {options.from_model} now returns {', '.join(source.band_names)} instead of the "
                    f"{', '.join(setup.inputs)} this run learnt from: start again with --overwrite"
                )
    else:
        setup = resolve_setup(frame, options, refines=source)
        if source is not None:
            normalization = identity_normalization(len(setup.inputs))
        else:
            normalization = compute_normalization(
                frame, setup.inputs, max_patches=options.normalization_patches, seed=options.seed
            )
        run = _Run()
    input_scenes = None
    if source is not None:
        input_scenes = prepare_crude_inputs(frame, source, out_dir / CRUDE_DIR, batch=options.batch_size,
                                            progress=progress)
    trainer = _Trainer(frame, out_dir, options, setup=setup, normalization=normalization, run=run,
                       patches_path=patches_path, progress=progress, input_scenes=input_scenes)
    if tensors is not None:
        _restore_state(tensors, stored["optimizer"], trainer.model, trainer.optimizer)
    return trainer.finish(trainer.fit())


__all__ = [
    "DEFAULT_LOSS", "DEFAULT_MODEL", "DEFAULT_THRESHOLDS", "Setup", "TrainOptions", "ValidationResult",
    "load_patches", "patch_dice", "pick_threshold", "resolve_setup", "save_at_name", "train_model", "validate",
]
