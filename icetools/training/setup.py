"""What a run trains: the model, loss, inputs, classes and normalisation for these patches.

:func:`resolve_setup` turns the options and the patches into a :class:`Setup` (plain names and
numbers, stored in the resumable state) and raises every mistake it can find before any training;
:func:`build_parts` turns a setup into the torch objects a run steps through.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import nn

from icetools.data import PatchDataset, compute_normalization, label_class_names, make_loader, max_class
from icetools.errors import ConfigError, DataError
from icetools.inputs import InputSpec
from icetools.io.scene import open_scene
from icetools.losses import TASK_LOSSES, build_loss, deep_supervision, loss_options
from icetools.models import MODEL_NAMES, build_model, model_class, size_args
from icetools.refine import RefineSource, identity_normalization
from icetools.patches_io import read_patches
from icetools.tasks import REFINER_MODEL, TASKS, task_spec, training_defaults
from icetools.training.options import TrainOptions, parse_weights
from icetools.train_windows import make_train_loader
from icetools.training.distributed import World, share_of
from icetools.training.samples import fixed_samples_loader

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch.utils.data import DataLoader

FCTL_FOCAL_GAMMA = 3.0  # FCtL's own recipe: focal loss gamma 3 (lr and schedule: icetools.tasks)
DEFAULT_DS_WEIGHTS = [0.1, 0.2, 0.3, 0.4]  # UNet++'s four heads, the deepest weighted most


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
    input_transforms: dict[str, str] = field(default_factory=dict)  # band -> transform; absent = identity
    samples_per_epoch: int | None = None  # None only in states written before epochs counted samples


def load_patches(patches: str | Path | pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """The patches frame and its file path (None for a frame passed in directly)."""
    if isinstance(patches, pd.DataFrame):
        return patches, None
    return read_patches(patches), str(Path(patches).resolve())


def resolve_setup(frame: pd.DataFrame, options: TrainOptions, *, refines: RefineSource | None = None) -> Setup:
    """Model, loss, inputs and output classes for these patches; every mistake before any training.

    With ``refines`` (the from_model model) the model is a refiner whose inputs are that model's crude
    probability bands; task and classes must match the patches.
    """
    task, patch_size = _check_patches(frame)
    model = _choose_model(task, options, refines)
    is_fctl = model == "fctl"
    loss = _choose_loss(task, options, refines, is_fctl=is_fctl)
    loss_args = dict(options.loss_args)
    ds_value = loss_args.pop("ds_weights", None)
    if (is_fctl or refines is not None) and loss == "focal":
        loss_args.setdefault("gamma", FCTL_FOCAL_GAMMA)
    if loss == "regional":  # config.json then says which loss trained the model, not only what was given
        loss_args = {**loss_options("regional"), **loss_args}
    build_loss(loss, **loss_args)  # checks the names and values of the loss options now
    ds_weights = _ds_weights(model, options, ds_value)
    inputs = _inputs(frame, options, refines)
    # Phase bands enter as (cos, sin) unless told otherwise; a refiner's crude probabilities as they are.
    spec = InputSpec.identity(inputs) if refines is not None else InputSpec.default(inputs, options.input_transforms)
    n_classes, class_names = _classes(frame, task, refines)
    defaults = training_defaults(task, model)
    return Setup(
        task=task,
        inputs=inputs,
        input_transforms=spec.record(),
        model=model,
        model_args=_model_args(options, model, size=options.model_size or defaults.model_size,
                               in_channels=spec.n_channels, out_channels=n_classes),
        loss=loss,
        loss_args=loss_args,
        ds_weights=ds_weights,
        lr=options.lr if options.lr is not None else defaults.lr,
        lr_schedule=options.lr_schedule or defaults.lr_schedule,
        samples_per_epoch=options.epoch_samples(defaults.samples_per_epoch),
        pool=options.pool or ("scene" if loss == "regional" else "patch"),
        patch_size=patch_size,
        n_classes=n_classes,
        class_names=class_names,
        refines=refines.record() if refines is not None else None,
    )


def _single(frame: pd.DataFrame, column: str, what: str) -> Any:
    values = frame[column].dropna().unique()
    if len(values) != 1:
        raise ConfigError(
            f"the patches mix {what} ({', '.join(map(str, values)) or 'none'}): train on one {what} at a time"
        )
    return values[0]


def _check_patches(frame: pd.DataFrame) -> tuple[str, int]:
    """The patches' one task and one patch size; train and val patches must both exist."""
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
    return task, patch_size


def _choose_model(task: str, options: TrainOptions, refines: RefineSource | None) -> str:
    model = options.model or (REFINER_MODEL if refines is not None else task_spec(task).default_model)
    if model not in MODEL_NAMES:
        raise ConfigError(f"unknown model {model!r}; known models: {', '.join(MODEL_NAMES)}")
    if (model == REFINER_MODEL) != (refines is not None):
        raise ConfigError(
            f"model {REFINER_MODEL!r} needs from_model, a model directory: "
            "the segmentation model whose crude masks it refines"
        )
    return model


def _choose_loss(task: str, options: TrainOptions, refines: RefineSource | None, *, is_fctl: bool) -> str:
    spec = task_spec(task)
    valid_losses = TASK_LOSSES[task]
    if refines is not None:
        default_loss = spec.refiner_loss
    else:
        default_loss = "focal" if is_fctl and "focal" in valid_losses else spec.default_loss
    loss = options.loss or default_loss
    if loss not in valid_losses:
        raise ConfigError(
            f"loss {loss!r} does not suit the {task} task; valid losses for {task}: {', '.join(valid_losses)}"
        )
    return loss


def _ds_weights(model: str, options: TrainOptions, ds_value: Any) -> list[float] | None:
    """Deep supervision weights: given, the default for a model with heads, or None."""
    deep = model_class(model).can_deep_supervise and options.model_args.get("deep_supervision", True) is not False
    if ds_value is not None and not deep:
        raise ConfigError(
            f"ds_weights applies to models with deep supervision heads (unet++), not {model!r}: drop it"
        )
    if ds_value is not None:
        return parse_weights(ds_value)
    return list(DEFAULT_DS_WEIGHTS) if deep else None


def _inputs(frame: pd.DataFrame, options: TrainOptions, refines: RefineSource | None) -> list[str]:
    """The input bands, checked to exist in every scene (a refiner's come from its crude mosaics)."""
    scenes = list(dict.fromkeys(str(p) for p in frame["scene"]))
    if refines is not None:
        for path in scenes:
            open_scene(path).close()  # InputFileError naming a scene that is gone
        return list(refines.input_names)  # crude bands + image channels, written on each scene's grid later
    with open_scene(scenes[0]) as first:
        inputs = list(options.inputs or first.default_inputs)
    for path in scenes:
        with open_scene(path) as scene:
            scene.resolve(inputs)  # MissingVariableError naming the scene and its bands
    return inputs


def _classes(frame: pd.DataFrame, task: str, refines: RefineSource | None) -> tuple[int, list[str] | None]:
    """Output classes and their names; a refiner must tell as many classes apart as the labels hold."""
    class_names = None
    if task == "multiclass":
        class_names = label_class_names(frame)
        n_classes = len(class_names) if class_names else max_class(frame) + 1
        if refines is not None and not class_names and n_classes < refines.n_classes:
            n_classes = refines.n_classes  # a class absent from the refiner's (held-out) train blocks
        if n_classes < 2:
            raise DataError(
                "the class labels hold fewer than 2 classes over the train patches: nothing to learn"
            )
    else:
        n_classes = 1
    if refines is not None:
        if refines.task != task:
            raise ConfigError(
                f"from_model {refines.model_dir} is a {refines.task} model but the patches are {task}: "
                "refine a model trained on this task"
            )
        if refines.n_classes != n_classes:
            raise ConfigError(
                f"from_model {refines.model_dir} tells {refines.n_classes} classes apart but the labels hold "
                f"{n_classes}: refine a model trained on these labels"
            )
    return n_classes, class_names


def _model_args(options: TrainOptions, model: str, *, size: str, in_channels: int, out_channels: int) -> dict[str, Any]:
    """The named size's arguments, overridden by the model_args given, and the data's channels."""
    model_args = {**size_args(model, size), **options.model_args}
    for key, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if key in model_args and model_args[key] != value:
            raise ConfigError(
                f"model_args {key}={model_args[key]} contradicts the data ({value}): "
                "leave it out, it is set from the data"
            )
        model_args[key] = value
    return model_args


def initial_normalization(
    frame: pd.DataFrame, setup: Setup, options: TrainOptions, *, refiner: bool
) -> dict[str, list[float]]:
    """Train-patch statistics of the inputs; a refiner's crude probabilities are fed as they are."""
    if refiner:
        return identity_normalization(len(setup.inputs))
    return compute_normalization(frame, setup.inputs, max_patches=options.normalization_patches, seed=options.seed,
                                 input_transforms=setup.input_transforms)


# --------------------------------------------------------------------------- the torch objects


@dataclass
class Parts:
    """The torch objects of a run: model, loss (wrapped for deep supervision), optimiser, loaders.

    ``train_loader`` gives this process its part of every step's samples; ``val_share`` is its share
    of the validation batches each epoch (all of ``val_loader`` in one process), and ``val_loader``
    the whole validation pass that rank 0 chooses the threshold on.
    """

    model: nn.Module
    loss_fn: Callable
    deep: bool  # the loss sees every head's logits (model.forward_heads)
    optimizer: torch.optim.Optimizer
    train_loader: DataLoader
    val_loader: DataLoader
    val_share: DataLoader | None = None

    def __post_init__(self) -> None:
        if self.val_share is None:
            self.val_share = self.val_loader

    @property
    def context_scales(self) -> tuple[float, ...]:
        return tuple(float(s) for s in self.model.context_scales)


def build_parts(
    frame: pd.DataFrame,
    setup: Setup,
    options: TrainOptions,
    *,
    normalization: Mapping[str, list[float]],
    device: torch.device,
    input_scenes: Mapping[str, str] | None = None,
    blocks: pd.DataFrame | None = None,
    world: World | None = None,
) -> Parts:
    """Build model, loss, optimiser and loaders (in that order: the seed set before fixes the weights).

    With the patches file's ``blocks`` layer, training draws fresh windows in the train blocks; without
    it, it cycles the fixed train windows. Under torchrun (``world``) each process gets its part of every
    step's samples and its share of the validation batches. On CUDA the model is channels_last."""
    world = world if world is not None else World()
    model = build_model(setup.model, **setup.model_args).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    loss_fn = build_loss(setup.loss, **setup.loss_args)
    deep = setup.ds_weights is not None and model.n_heads > 1
    if deep:
        if len(setup.ds_weights) != model.n_heads:
            raise ConfigError(
                f"{setup.model} has {model.n_heads} deep supervision heads but {len(setup.ds_weights)} ds_weights "
                "were given: give one weight per head"
            )
        loss_fn = deep_supervision(loss_fn, setup.ds_weights)
    optimizer = torch.optim.Adam(model.parameters(), lr=setup.lr, weight_decay=options.weight_decay)

    common = dict(inputs=setup.inputs, input_transforms=setup.input_transforms, normalization=normalization,
                  task=setup.task,
                  context_scales=tuple(float(s) for s in model.context_scales), seed=options.seed,
                  input_scenes=input_scenes, window_axis=model.takes_windows)
    loader = dict(batch_size=options.batch_size, pool=setup.pool, workers=options.workers, seed=options.seed,
                  pin_memory=device.type == "cuda")
    ranks = dict(rank=world.rank, world_size=world.world_size)
    if blocks is not None:
        # Fresh windows anywhere inside the train blocks every epoch: the data is not capped at the
        # fixed windows that sample-patches kept for validation and test.
        train_loader = make_train_loader(
            frame, blocks, samples_per_epoch=setup.samples_per_epoch, augment=options.augment, **loader, **ranks,
            **{k: v for k, v in common.items() if k != "seed"},
        )
    else:  # a patches file written before the blocks layer, or a frame made in memory
        train_dataset = PatchDataset(frame, "train", augment=options.augment, **common)
        train_loader = make_loader(train_dataset, shuffle=True, **{**loader, "batch_size": options.batch_size * world.world_size})
        train_loader = fixed_samples_loader(train_loader, setup.samples_per_epoch, **ranks)  # epochs of a fixed sample count
    val_loader = make_loader(PatchDataset(frame, "val", augment=False, **common), shuffle=False, **loader)
    if len(train_loader) == 0 or len(val_loader) == 0:
        raise DataError("the patches need at least one train and one val patch")
    return Parts(model, loss_fn, deep, optimizer, train_loader, val_loader, share_of(val_loader, world))


__all__ = ["Parts", "Setup", "build_parts", "initial_normalization", "load_patches", "resolve_setup"]
