"""The task table: what each kind of map is, in one place.

Every stage that needs to know what a task means (its default model and loss, the metrics it is
scored by, how it trains when the options leave it open) reads it here, so adding a task or
changing a default is a one-line change.
"""

from __future__ import annotations

from dataclasses import dataclass

from icetools.errors import ConfigError

SIC = "sic"
BINARY = "binary"
MULTICLASS = "multiclass"
TASKS: tuple[str, ...] = (SIC, BINARY, MULTICLASS)

REFINER_MODEL = "refiner"
"""The model name of FCtL's contextual refinement net: a model trained on another model's masks."""


@dataclass(frozen=True)
class TrainingDefaults:
    """How a run trains when its options leave it open: sized for a laptop CPU (2 cores).

    Measured here (2 CPU cores shared with other jobs): a step of the default sea-ice U-Net (widths
    16-32-64-128) on 8 windows of 128 px with the regional loss costs 0.67 CPU-seconds (0.3-0.4 s of
    wall time on 2 free cores), the window reads 0.014 s; an epoch of 512 samples (64 steps) is
    then 25-45 s (the README's throughput bench, 2.4 patches/s at 256 px, suggests up to 55 s), and a
    10-minute budget 10-25 epochs, some 700-1500 steps. So few steps call for Adam at 1e-3 decayed
    over the budget; the constant 1e-4 used before comes from GPU recipes of hundreds of epochs.
    ``model_size`` "laptop" is each model's own default widths; "paper" the source papers' (see
    icetools.models.SIZE_PRESETS).
    """

    lr: float = 1e-3
    lr_schedule: str = "cosine"
    samples_per_epoch: int = 512
    model_size: str = "laptop"


LAPTOP = TrainingDefaults()


@dataclass(frozen=True)
class TaskSpec:
    """The defaults and the scoring of one task."""

    name: str
    default_model: str
    default_loss: str
    refiner_loss: str
    metric_keys: tuple[str, ...]
    training: TrainingDefaults = LAPTOP


TASK_SPECS: dict[str, TaskSpec] = {
    # The refiner redraws masks: focal (gamma 3, as FCtL) for classes and lines; for SIC a plain pixel
    # MSE, since its crude SIC is already a per-pixel concentration (no chart polygons to pool over).
    SIC: TaskSpec(SIC, "unet", "regional", "pixel-mse", ("r2", "rmse", "polygon_r2")),
    BINARY: TaskSpec(BINARY, "unet-aspp", "bce-ftl", "focal", ("dice", "precision", "recall", "patch_dice")),
    MULTICLASS: TaskSpec(MULTICLASS, "unet", "focal", "focal", ("miou", "accuracy")),
}


MODEL_TRAINING: dict[str, TrainingDefaults] = {
    # None at present. FCtL's own recipe (Adam 5e-5, poly decay, hundreds of GPU epochs) barely moves in
    # a CPU budget; the land-cover example trains fctl at 1e-3 with a decay to mIoU 0.907 in minutes.
}
"""Training defaults of a model where they differ from its task's."""


def training_defaults(task: object, model: str | None = None) -> TrainingDefaults:
    """The defaults a run of ``model`` on ``task`` uses: the model's own, else the task's."""
    spec = task_spec(task)
    return MODEL_TRAINING.get(model or spec.default_model, spec.training)


def check_task(task: object, *, what: str = "task") -> str:
    """The task name, or a ConfigError that lists the valid ones."""
    if task not in TASK_SPECS:
        raise ConfigError(f"unknown {what} {task!r}; valid tasks: {', '.join(TASKS)}")
    return str(task)


def task_spec(task: object) -> TaskSpec:
    return TASK_SPECS[check_task(task)]
