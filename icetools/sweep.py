"""A grid of short training runs over architectures and loss options, ranked by validation loss.

Each configuration trains with :func:`icetools.training.train_model` into its own subdirectory (a full
model directory, so the winner can go straight to ``predict``); ``sweep.csv`` collects one row per
run. Every configuration is resolved against the data before the first run starts, so a typo in
the last one does not surface after an hour of training.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icetools.errors import ConfigError, InputFileError, OutputExistsError
from icetools.io.atomic import atomic_path
from icetools.models import build_model, model_class
from icetools.progress import Progress, report
from icetools.training import TrainOptions, load_patches, resolve_setup, train_model

if TYPE_CHECKING:
    import pandas as pd

SWEEP_FILE = "sweep.csv"


def split_values(text: str) -> list[Any]:
    """``0.5,0.7`` -> [0.5, 0.7]; commas inside brackets stay (``[4,8],[8,16]`` -> two lists).

    Each value is parsed as JSON when it can be (numbers, true/false, lists), else kept as text.
    """
    parts: list[str] = []
    depth = 0
    current = ""
    for char in text:
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    values: list[Any] = []
    for part in (p.strip() for p in parts):
        if not part:
            raise ConfigError(f"empty value in {text!r}: separate values with single commas")
        try:
            values.append(json.loads(part))
        except json.JSONDecodeError:
            values.append(part)
    return values


@dataclass
class SweepConfig:
    """One point of the grid: the option changes it makes and a short name for its folder."""

    name: str
    model: str | None
    loss: str | None
    loss_args: dict[str, Any] = field(default_factory=dict)
    model_args: dict[str, Any] = field(default_factory=dict)
    ds_weights: list[float] | None = None

    def columns(self) -> dict[str, Any]:
        row: dict[str, Any] = {"run": self.name, "model": self.model, "loss": self.loss}
        row.update({f"loss.{k}": _text(v) for k, v in self.loss_args.items()})
        row.update({f"model.{k}": _text(v) for k, v in self.model_args.items()})
        row["ds_weights"] = _text(self.ds_weights) if self.ds_weights is not None else ""
        return row


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=+-]+", "_", text).strip("_")


def expand_grid(
    *,
    models: Sequence[str | None] = (None,),
    losses: Sequence[str | None] = (None,),
    loss_args: Mapping[str, Sequence[Any]] | None = None,
    model_args: Mapping[str, Sequence[Any]] | None = None,
    ds_weights: Sequence[Sequence[float]] | None = None,
) -> list[SweepConfig]:
    """Every combination; ds_weights vary only for models with deep supervision heads (unet++)."""
    loss_args = dict(loss_args or {})
    model_args = dict(model_args or {})
    for what, grid in (("loss", loss_args), ("model", model_args)):
        for key, values in grid.items():
            if not values:
                raise ConfigError(f"{what}_args {key}: give at least one value")
    configs: list[SweepConfig] = []
    seen: set[str] = set()
    loss_keys, model_keys = list(loss_args), list(model_args)
    for model, loss, loss_values, model_values in itertools.product(
        models or (None,), losses or (None,),
        itertools.product(*(loss_args[k] for k in loss_keys)),
        itertools.product(*(model_args[k] for k in model_keys)),
    ):
        has_heads = model is not None and model_class(model).can_deep_supervise
        for weights in (ds_weights if ds_weights and has_heads else [None]):
            config = SweepConfig(
                name="",
                model=model,
                loss=loss,
                loss_args=dict(zip(loss_keys, loss_values)),
                model_args=dict(zip(model_keys, model_values)),
                ds_weights=[float(w) for w in weights] if weights is not None else None,
            )
            parts = [model or "default-model", loss or "default-loss"]
            parts += [f"{k}={_text(v)}" for k, v in {**config.loss_args, **config.model_args}.items()]
            if config.ds_weights is not None:
                parts.append("ds=" + "-".join(_text(w) for w in config.ds_weights))
            key = "_".join(parts)
            if key in seen:
                continue
            seen.add(key)
            config.name = f"{len(configs) + 1:02d}_{_slug(key)}"
            configs.append(config)
    return configs


def options_for(base: TrainOptions, config: SweepConfig) -> TrainOptions:
    """The base options with this configuration's changes."""
    changes: dict[str, Any] = {"overwrite": base.overwrite, "resume": False}
    if config.model is not None:
        changes["model"] = config.model
    if config.loss is not None:
        changes["loss"] = config.loss
    loss_args = dict(config.loss_args)
    if config.ds_weights is not None:
        loss_args["ds_weights"] = config.ds_weights
    changes["loss_args"] = loss_args
    changes["model_args"] = config.model_args
    return base.updated(**changes)


def _rank_key(row: Mapping[str, Any]) -> tuple[int, float]:
    loss = row.get("best_val_loss")
    usable = isinstance(loss, (int, float)) and math.isfinite(loss)
    return (0, float(loss)) if usable else (1, 0.0)


def run_sweep(
    patches: str | Path | pd.DataFrame,
    out_dir: str | Path,
    base: TrainOptions,
    configs: Sequence[SweepConfig],
    *,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Train every configuration into OUT_DIR/<name>/; rows ranked by best validation loss.

    Returns ``{"rows": [...], "stopped_because": "done" | "interrupted", "csv": path}``. An
    interrupted run (Ctrl-C) ends the sweep; the rows so far are still written.

    ``progress`` gets a "run" Event as each run starts (done = runs finished; info ``index``,
    ``name``) and one when the sweep ends, and every train_model Event in between.
    """
    if not configs:
        raise ConfigError("the sweep grid is empty: give at least one model or loss")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputFileError(f"{out_dir} exists and is a file: choose a folder for the sweep")
    if out_dir.exists() and any(out_dir.iterdir()) and not base.overwrite:
        raise OutputExistsError(f"{out_dir} exists: set overwrite to replace the sweep")
    frame, _ = load_patches(patches)
    planned = [(config, options_for(base, config)) for config in configs]
    for config, options in planned:  # fail fast: every configuration must make sense for the data
        try:
            setup = resolve_setup(frame, options)
            build_model(setup.model, **setup.model_args)  # model arguments are checked when it is built
        except ConfigError as exc:
            raise ConfigError(f"sweep run {config.name}: {exc}") from None
    out_dir.mkdir(parents=True, exist_ok=True)

    rows: list[dict[str, Any]] = []
    stopped = "done"
    for index, (config, options) in enumerate(planned, start=1):
        report(progress, "run", index - 1, len(planned), index=index, name=config.name)
        summary = train_model(frame, out_dir / config.name, options, progress=progress)
        row = config.columns()
        row.update({
            "best_val_loss": summary.get("best_val_loss"),
            "best_epoch": summary.get("best_epoch"),
            **{f"val_{k}": v for k, v in (summary.get("val_metrics") or {}).items()},
            "threshold": summary.get("threshold"),
            "stopped_because": summary["stopped_because"],
            "seconds": summary.get("seconds"),
        })
        rows.append(row)
        if summary["stopped_because"] == "interrupted":
            stopped = "interrupted"
            break
    report(progress, "run", len(rows), len(planned))
    rows.sort(key=_rank_key)
    path = write_sweep_csv(rows, out_dir / SWEEP_FILE)
    return {"rows": rows, "stopped_because": stopped, "csv": str(path)}


def write_sweep_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """One row per run, config columns first, then scores; written atomically."""
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    with atomic_path(path, overwrite=True) as tmp:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return path


__all__ = ["SWEEP_FILE", "SweepConfig", "expand_grid", "options_for", "run_sweep", "split_values", "write_sweep_csv"]
