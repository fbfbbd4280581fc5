"""``icetools train``: train a model on sampled patches; the run directory becomes the model directory."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from icetools.cli.app import app
from icetools.cli.common import STATE, console, guarded, info, make_progress, warn
from icetools.cli.options import Overwrite
from icetools.errors import ConfigError, InputFileError

if TYPE_CHECKING:
    from icetools.train import TrainOptions

EXIT_INTERRUPTED = 130


def parse_key_values(pairs: list[str] | None, *, flag: str) -> dict[str, Any]:
    """Repeatable ``KEY=VAL``; values parsed as JSON (2, 0.5, true, [4,8,8,8]) or kept as text."""
    values: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {pair!r}: write KEY=VALUE, e.g. {flag} gamma=2")
        try:
            values[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            values[key.strip()] = text
    return values


def read_yaml_options(path: Path) -> dict[str, Any]:
    """The mapping in a YAML config file (empty file -> no options)."""
    import yaml

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
    config: Path | None, flags: dict[str, Any], *, defaults: dict[str, Any] | None = None
) -> TrainOptions:
    """``defaults``, then the YAML file, then every flag given on the command line (None = not given)."""
    from icetools.train import TrainOptions

    base = read_yaml_options(config) if config else {}
    source = str(config) if config else "the options"
    merged = {**(defaults or {}), **{str(k).replace("-", "_"): v for k, v in base.items()}}
    options = TrainOptions.from_mapping(merged, source=source)
    # resume/overwrite are plain switches: only "on" can be told on the command line.
    given = {
        k: v for k, v in flags.items()
        if v is not None and v != {} and not (k in ("resume", "overwrite") and v is False)
    }
    return options.updated(**given)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def print_summary(summary: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table("", "", title=f"training summary: {summary['run_dir']}", title_justify="left", show_header=False)
    table.add_row("model / loss", f"{summary['model']} / {summary['loss']}")
    table.add_row("epochs run", _fmt(summary["epochs_run"]))
    table.add_row("best epoch", _fmt(summary["best_epoch"]))
    table.add_row("train loss (best epoch)", _fmt(summary.get("train_loss")))
    table.add_row("val loss (best epoch)", _fmt(summary.get("best_val_loss")))
    for key, value in (summary.get("val_metrics") or {}).items():
        table.add_row(f"val {key}", _fmt(value))
    if summary.get("threshold") is not None:
        table.add_row("threshold", _fmt(summary["threshold"]))
    table.add_row("stopped because", summary["stopped_because"])
    table.add_row("time", f"{summary.get('seconds') or 0:.1f} s")
    console.print(table)


def epoch_line(event: dict[str, Any]) -> str:
    row = event["row"]
    metrics = "  ".join(f"{k[4:]} {_fmt(v)}" for k, v in row.items() if k.startswith("val_") and k != "val_loss")
    mark = "  *best*" if event.get("improved") else ""
    return (
        f"epoch {row['epoch']}/{event['epochs']}  train {_fmt(row['train_loss'])}  val {_fmt(row['val_loss'])}  "
        f"{metrics}  ({row['seconds']:.1f} s){mark}"
    )


def run_training(patches: Path, output: Path, options: TrainOptions) -> dict[str, Any]:
    """Train with a progress bar per epoch and one line per finished epoch on stderr."""
    from icetools.train import train_model

    with make_progress() as bar:
        current: dict[str, Any] = {}

        def on_event(event: dict[str, Any]) -> None:
            kind = event["event"]
            if kind == "epoch_start":
                if "task" in current:
                    bar.remove_task(current["task"])
                current["task"] = bar.add_task(f"epoch {event['epoch']}/{event['epochs']}", total=event["steps"])
            elif kind == "step":
                bar.update(current["task"], completed=event["step"])
            elif kind == "epoch_end":
                info(epoch_line(event))
            elif kind == "threshold":
                info(f"threshold sweep: best {event['threshold']:g} (mean patch Dice {event['mean_dice']:.4f})")
            elif kind == "crude":
                if event.get("finished"):
                    if "task" in current:
                        bar.remove_task(current.pop("task"))
                    state = "reused" if event["reused"] else "written"
                    info(f"crude mosaic {event['index'] + 1}/{event['scenes']} {state}: {event['path']}")
                    return
                if "task" not in current:
                    current["task"] = bar.add_task(f"crude mosaic of {event['scene']}", total=event["total"])
                bar.update(current["task"], completed=event["done"], total=event["total"])

        return train_model(patches, output, options, progress=on_event)


@app.command("train")
@guarded
def train_command(
    patches: Annotated[Path, typer.Option("--patches", help="Patches GeoPackage from `icetools sample-patches`.", dir_okay=False)],
    output: Annotated[Path, typer.Option("-o", "--output", help="Run directory; it becomes the model directory.", file_okay=False)],
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML file of options (flag names, - or _); flags override it.", dir_okay=False)] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Architecture (default per task: sic unet, binary unet-aspp, multiclass unet; refiner with --from).")] = None,
    from_model: Annotated[Optional[Path], typer.Option("--from", help="Train a refiner on the crude masks of this model directory (an early checkpoint such as RUN/at_40pct).", file_okay=False)] = None,
    loss: Annotated[Optional[str], typer.Option("--loss", help="Loss (default per task: sic regional, binary bce-ftl, multiclass focal).")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Most epochs (default 50).")] = None,
    time_limit: Annotated[Optional[float], typer.Option("--time-limit", help="Stop cleanly after this many minutes.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Patches per batch (default 8).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Adam learning rate (default 1e-4; fctl 5e-5).")] = None,
    lr_schedule: Annotated[Optional[str], typer.Option("--lr-schedule", help="constant or poly (power 0.9); default constant, fctl poly.")] = None,
    weight_decay: Annotated[Optional[float], typer.Option("--weight-decay", help="Adam weight decay (default 1e-5).")] = None,
    patience: Annotated[Optional[int], typer.Option("--patience", help="Epochs without a better val loss before stopping (default 10).")] = None,
    grad_clip: Annotated[Optional[float], typer.Option("--grad-clip", help="Gradient norm clip, 0 = off (default 1.0).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed (default 0); the same seed repeats the run.")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N (default auto).")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Data loading processes, 0 = in the main process (default 1).")] = None,
    pool: Annotated[Optional[str], typer.Option("--pool", help="Regional loss groups: scene (pool a polygon over a batch drawn from one scene; default) or patch.")] = None,
    inputs: Annotated[Optional[str], typer.Option("--inputs", help="Input bands, comma-separated, e.g. HH,HV (default: the scene's).")] = None,
    model_arg: Annotated[Optional[list[str]], typer.Option("--model-arg", help="Model argument KEY=VAL (JSON value), repeatable.")] = None,
    loss_arg: Annotated[Optional[list[str]], typer.Option("--loss-arg", help="Loss option KEY=VAL, repeatable; ds_weights=0.1,0.2,0.3,0.4 for unet++.")] = None,
    steps_per_epoch: Annotated[Optional[int], typer.Option("--steps-per-epoch", help="Optimiser steps per epoch (default: one pass over the train patches).")] = None,
    save_at: Annotated[Optional[float], typer.Option("--save-at", help="Also save the model at this fraction of --epochs (e.g. 0.4 -> at_40pct/).")] = None,
    thresholds: Annotated[Optional[str], typer.Option("--thresholds", help="Binary: thresholds to sweep, comma-separated (default 0.10..0.90 by 0.05).")] = None,
    augment: Annotated[Optional[bool], typer.Option("--augment/--no-augment", help="Random flips and 90-degree rotations (default on).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --output from its last epoch (only --epochs, --time-limit, --patience, --workers, --device may change).")] = False,
    overwrite: Overwrite = False,
) -> None:
    """Train a model on the train patches, keep the best on the val patches (early stopping).

    The run directory gets model.safetensors + config.json at every improvement, and
    history.csv, curves.png and a resumable state every epoch. Ctrl-C stops cleanly (exit 130).
    With --from MODEL_DIR it trains FCtL's refiner on that model's crude masks (kept in OUT/crude/).
    """
    flags = {
        "model": model, "from_model": str(from_model) if from_model is not None else None, "loss": loss, "epochs": epochs, "time_limit": time_limit, "batch_size": batch_size,
        "lr": lr, "lr_schedule": lr_schedule, "weight_decay": weight_decay, "patience": patience,
        "grad_clip": grad_clip, "seed": seed, "device": device, "workers": workers, "pool": pool,
        "inputs": inputs, "model_args": parse_key_values(model_arg, flag="--model-arg"),
        "loss_args": parse_key_values(loss_arg, flag="--loss-arg"), "steps_per_epoch": steps_per_epoch,
        "save_at": save_at, "thresholds": thresholds, "augment": augment, "resume": resume, "overwrite": overwrite,
    }
    options = build_options(config, flags)
    summary = run_training(patches, output, options)
    for message in summary["warnings"]:
        warn(message)
    if STATE["verbosity"] >= 0:
        print_summary(summary)
    if summary["stopped_because"] == "interrupted":
        raise typer.Exit(EXIT_INTERRUPTED)
