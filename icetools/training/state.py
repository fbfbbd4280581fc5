"""What a run directory holds besides the model: the resumable state, the history and its rules.

The run directory *is* the model directory (``model.safetensors`` + ``config.json``, see
:mod:`icetools.modeldir`). Every epoch also rewrites ``history.csv`` and the resumable state:
``last_state.safetensors`` holds the model and optimiser tensors, ``last_state.json`` everything
else. Nothing is pickled, so a run directory can be shared without the risk that opening it runs code.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from icetools import __version__
from icetools.errors import InputFileError, OutputExistsError
from icetools.inputs import recorded_input_units
from icetools.io.atomic import atomic_path, committed_together
from icetools.io.paths import refuse_overwriting_inputs
from icetools.jsonsafe import json_safe
from icetools.modeldir import CONFIG_FILE, WEIGHTS_FILE
from icetools.tasks import task_spec
from icetools.training.options import TrainOptions
from icetools.training.schedule import LearningRate, StoppingRule, smoothed
from icetools.training.setup import Setup

STATE_WEIGHTS = "last_state.safetensors"
STATE_JSON = "last_state.json"
HISTORY_FILE = "history.csv"
CURVES_FILE = "curves.png"
STATE_FORMAT = "icetools-train-state/1"
# What a run writes in its folder (replaced by an overwriting run, never an input of it).
RUN_FILES = (WEIGHTS_FILE, CONFIG_FILE, HISTORY_FILE, CURVES_FILE, STATE_JSON, STATE_WEIGHTS)


# --------------------------------------------------------------------------- run directory rules


def prepare_dir(out_dir: Path, *, resume: bool, overwrite: bool, inputs: Iterable[str | Path] = ()) -> None:
    """Check that the run may start (or resume) in ``out_dir``; clear what an earlier run wrote.

    ``out_dir`` may neither be one of ``inputs`` nor hold one among the files a run replaces.
    """
    refuse_overwriting_inputs([out_dir, *(out_dir / name for name in RUN_FILES)], inputs)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputFileError(f"{out_dir} exists and is a file: choose a folder for the run")
    if resume:
        if not (out_dir / STATE_JSON).is_file():
            raise InputFileError(f"{out_dir / STATE_JSON} does not exist: nothing to resume; start a new run")
        return
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise OutputExistsError(
                f"{out_dir} exists: set overwrite to replace the run, or resume to continue it"
            )
        # Remove only what a run writes: the user may keep notes or configs in the same folder. A
        # refiner's crude/ mosaics stay: they are remade only if their scene or model changed.
        for name in RUN_FILES:
            (out_dir / name).unlink(missing_ok=True)
        for folder in out_dir.glob("at_*pct"):
            if folder.is_dir():
                shutil.rmtree(folder)
    out_dir.mkdir(parents=True, exist_ok=True)


def patches_digest(path: str | Path | None) -> str | None:
    """The patches file's content hash: a resume learns from the very patches its run started on."""
    if path is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def finished_reason(out_dir: Path) -> str | None:
    """Why the run in ``out_dir`` ended, when it ended by itself (config.json says so); else None."""
    try:
        config = json.loads((out_dir / CONFIG_FILE).read_text(encoding="utf-8"))
        reason = (config.get("training") or {}).get("stopped_because")
    except (OSError, ValueError, AttributeError):
        return None
    return None if reason in (None, "interrupted") else str(reason)


def save_at_name(fraction: float) -> str:
    """Folder for the model saved at a fraction of the epoch budget: 0.4 -> at_40pct."""
    return f"at_{round(fraction * 100):d}pct"


def save_at_epoch(fraction: float, epochs: int) -> int:
    """The first epoch whose end reaches ``fraction`` of an epoch budget (where save-at saves)."""
    return max(1, math.ceil(fraction * epochs - 1e-9))


# --------------------------------------------------------------------------- the run's bookkeeping


@dataclass
class RunState:
    """Mutable bookkeeping of one training run (what last_state.json stores).

    The best epoch is chosen on the raw validation loss (``best_*``, ``bad_epochs``); early stopping
    watches its exponential moving average (``smooth_*``), which one lucky or unlucky epoch moves
    little. ``samples`` and ``budget_fraction`` are where the learning rate schedule stands.
    """

    epoch: int = 0
    global_step: int = 0
    samples: int = 0
    budget_fraction: float = 0.0
    best_val_loss: float = math.inf
    best_epoch: int | None = None
    best_train_loss: float | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    bad_epochs: int = 0
    smooth_val_loss: float | None = None
    best_smooth_val_loss: float = math.inf
    smooth_bad_epochs: int = 0
    seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)

    STORED = ("epoch", "global_step", "samples", "budget_fraction", "best_val_loss", "best_epoch",
              "best_train_loss", "best_metrics", "bad_epochs", "smooth_val_loss", "best_smooth_val_loss",
              "smooth_bad_epochs", "seconds")

    def stored(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.STORED}

    @classmethod
    def from_stored(cls, values: Mapping[str, Any], history: list[dict[str, Any]]) -> RunState:
        run = cls(**{key: values.get(key) for key in cls.STORED if values.get(key) is not None})
        run.history = history
        return run

    def record_epoch(self, row: dict[str, Any], *, metrics: Mapping[str, float], smoothing: float = 0.0) -> bool:
        """Add the epoch's history row (with ``val_loss_smooth``); whether its validation loss is the
        best so far."""
        self.history.append(row)
        val_loss, train_loss = row["val_loss"], row["train_loss"]
        if math.isfinite(val_loss):
            self.smooth_val_loss = smoothed(self.smooth_val_loss, val_loss, smoothing)
        row["val_loss_smooth"] = self.smooth_val_loss if self.smooth_val_loss is not None else math.nan
        if math.isfinite(val_loss) and self.smooth_val_loss < self.best_smooth_val_loss:
            self.best_smooth_val_loss, self.smooth_bad_epochs = self.smooth_val_loss, 0
        else:
            self.smooth_bad_epochs += 1
        improved = math.isfinite(val_loss) and (val_loss < self.best_val_loss or self.best_epoch is None)
        if improved:
            self.best_val_loss, self.best_epoch, self.best_train_loss = val_loss, row["epoch"], train_loss
            self.best_metrics = dict(metrics)
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        return improved


@dataclass
class RunRecord:
    """The fixed facts of a run that config.json and last_state.json write down."""

    setup: Setup
    options: TrainOptions
    normalization: dict[str, list[float]]
    context_scales: tuple[float, ...]
    provenance: dict[str, Any]
    world_size: int = 1  # the processes it trains in (torchrun)

    def learning_rate(self) -> LearningRate:
        return LearningRate(self.setup.lr, self.setup.lr_schedule, self.options.poly_power)

    def stopping_rule(self) -> StoppingRule:
        return StoppingRule(self.options.patience, self.options.smoothing, self.options.min_steps)

    def model_config(self, run: RunState, metrics: Mapping[str, Any], *, stopped_because: str | None) -> dict[str, Any]:
        """config.json of the model directory (the model entry is added by save_model_dir)."""
        setup = self.setup
        config: dict[str, Any] = {
            "icetools_version": __version__,
            "task": setup.task,
            "inputs": setup.inputs,
            "input_transforms": setup.input_transforms,
            "input_units": recorded_input_units(self.provenance.get("scenes") or [], setup.inputs),
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
                "schedule": self.learning_rate().record(),
                "samples_per_epoch": setup.samples_per_epoch,
                "budget": {"epochs": self.options.epoch_cap, "time_limit_minutes": self.options.time_limit},
                "early_stopping": self.stopping_rule().record(),
                "pool": setup.pool,
                "world_size": self.world_size,
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
        return json_safe(config)

    def state_info(self, run: RunState) -> dict[str, Any]:
        """last_state.json, less the optimiser settings that write_state adds."""
        return {
            "format": STATE_FORMAT, "epoch": run.epoch, "options": asdict(self.options), "setup": asdict(self.setup),
            "normalization": self.normalization, "run": run.stored(),
            "patches_sha256": self.provenance.get("patches_sha256"),
            "rng": {"seed": self.options.seed, "scheme": "torch and the batch sampler reseeded from (seed, epoch)"},
        }


def history_columns(task: str) -> list[str]:
    return ["epoch", "steps", "samples", "train_loss", "val_loss", "val_loss_smooth",
            *(f"val_{k}" for k in task_spec(task).metric_keys), "lr", "seconds"]


# --------------------------------------------------------------------------- resumable state


def _flatten_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Model and optimiser tensors under flat names; the optimiser's other settings as JSON."""
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


def restore_state(
    tensors: dict[str, torch.Tensor], settings: Mapping[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer
) -> None:
    """Load what write_state stored into a freshly built model and optimiser."""
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


def write_state(out_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, info: dict[str, Any]) -> None:
    """last_state.safetensors (tensors) and last_state.json (``info`` + optimiser settings), as one unit."""
    tensors, settings = _flatten_state(model, optimizer)
    info = {**info, "optimizer": settings}
    text = json.dumps(json_safe(info), indent=2, allow_nan=False) + "\n"
    with committed_together():
        with atomic_path(out_dir / STATE_WEIGHTS, overwrite=True) as tmp:
            save_file(tensors, str(tmp), metadata={"format": STATE_FORMAT, "epoch": str(info["epoch"])})
        with atomic_path(out_dir / STATE_JSON, overwrite=True) as tmp:
            tmp.write_text(text, encoding="utf-8")


def read_state(out_dir: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The stored info and tensors; InputFileError when they are missing or from different epochs."""
    json_path, weights_path = out_dir / STATE_JSON, out_dir / STATE_WEIGHTS
    if not json_path.is_file() or not weights_path.is_file():
        raise InputFileError(
            f"{out_dir} holds no resumable state ({STATE_JSON} + {STATE_WEIGHTS}): start a new run"
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
            "different epochs or another tool): start again with overwrite"
        )
    return info, tensors


# --------------------------------------------------------------------------- history.csv


def read_history(path: Path, up_to_epoch: int) -> list[dict[str, Any]]:
    """The history rows of epochs 1..up_to_epoch (a resumed run rewrites the later ones)."""
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


def write_history(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
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


__all__ = [
    "CURVES_FILE", "HISTORY_FILE", "STATE_FORMAT", "STATE_JSON", "STATE_WEIGHTS", "RunRecord", "RunState",
    "history_columns", "prepare_dir", "read_history", "read_state", "restore_state", "save_at_epoch",
    "save_at_name", "write_history", "write_state",
]
