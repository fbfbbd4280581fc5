"""``icetools train``: train a model on sampled patches; the run directory becomes the model directory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from icetools.cli.app import app
from icetools.cli.common import STATE, console, guarded, info, warn
from icetools.cli.options import (
    LossName,
    LrScheduleName,
    ModelName,
    NoChecks,
    Overwrite,
    Quiet,
    Verbose,
    above_zero,
    key_values,
    open_fraction,
)
from icetools.cli.train_common import (
    EXIT_INTERRUPTED,
    BatchSize,
    Inputs,
    Lr,
    ModelSize,
    Patches,
    Patience,
    Pool,
    SamplesPerEpoch,
    StepsPerEpoch,
    TrainDevice,
    Workers,
    fmt,
    training_bars,
)

if TYPE_CHECKING:
    from icetools.training import TrainOptions


def _smoothing(value: float | None) -> float | None:
    if value is not None and not 0 <= value < 1:
        raise typer.BadParameter(f"{value} must be >= 0 and < 1 (the weight of the past; 0 = the raw value)")
    return value


def print_summary(summary: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table("", "", title=f"training summary: {summary['run_dir']}", title_justify="left", show_header=False)
    table.add_row("model / loss", f"{summary['model']} / {summary['loss']}")
    table.add_row("epochs run", fmt(summary["epochs_run"]))
    table.add_row("best epoch", fmt(summary["best_epoch"]))
    table.add_row("train loss (best epoch)", fmt(summary.get("train_loss")))
    table.add_row("val loss (best epoch)", fmt(summary.get("best_val_loss")))
    for key, value in (summary.get("val_metrics") or {}).items():
        table.add_row(f"val {key}", fmt(value))
    if summary.get("threshold") is not None:
        table.add_row("threshold", fmt(summary["threshold"]))
    calibration = summary.get("sic_calibration")
    if calibration:  # the stretch predict applies (icetools.calibration)
        table.add_row("SIC calibration", f"floor {fmt(calibration['floor'])} -> 0, ceiling {fmt(calibration['ceiling'])} -> 1")
    gate = summary.get("refine_gate")
    if gate:  # a refiner: where it applies, and whether predict uses it at all
        where = "everywhere" if gate["threshold"] is None else f"confidence < {fmt(gate['threshold'])}"
        table.add_row(f"refiner gate (val {gate['metric']})",
                      f"{where}: {fmt(gate['crude'])} -> {fmt(gate['refined'])}"
                      + ("" if gate["beats_crude"] else " (not better: predict falls back to averaging)"))
    table.add_row("stopped because", summary["stopped_because"])
    table.add_row("time", f"{summary.get('seconds') or 0:.1f} s")
    if (summary.get("world_size") or 1) > 1:
        table.add_row("processes (torchrun)", str(summary["world_size"]))
    if summary.get("data_wait_share") is not None:  # high: the loader, not the model, sets the pace
        table.add_row("steps waiting for data", f"{summary['data_wait_share']:.1%} of their time")
    console.print(table)


def run_training(patches: Path, output: Path, options: TrainOptions, *, checks: bool = True) -> dict[str, Any]:
    """Train with progress bars (epochs, steps) and one line per finished epoch on stderr.

    Under torchrun every process trains; rank 0 alone shows progress, warnings and the summary. A
    failure on any process ends them all: the first process with an error prints its one line, the
    others (:class:`PeerFailed`) end quietly with exit 1, and only rank 0 reports an interruption.
    """
    from icetools.training import train_model
    from icetools.training.distributed import Launch, PeerFailed, training_world

    main = Launch.from_environment().rank == 0
    if not main:
        STATE["verbosity"] = -1  # the same warnings and lines would come once per process
    try:
        with training_world() as world:
            if not main:
                return train_model(patches, output, options, checks=checks, world=world)
            with training_bars() as bars:
                return train_model(patches, output, options, checks=checks, progress=bars, world=world)
    except PeerFailed:
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        if main:
            raise
        raise typer.Exit(EXIT_INTERRUPTED) from None


@app.command("train")
@guarded
def train_command(
    patches: Patches,
    output: Annotated[Path, typer.Option("-o", "--output", help="Run directory; it becomes the model directory.", file_okay=False)],
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML file of options (flag names, - or _); flags override it.", dir_okay=False)] = None,
    model: Annotated[Optional[ModelName], typer.Option("--model", help="Architecture (default per task: sic unet, binary unet-aspp, multiclass unet; refiner with --from).")] = None,
    from_model: Annotated[Optional[Path], typer.Option("--from", "--from-model", help="Train a refiner on the crude masks of this model directory (the model you will predict with); it learns on the val blocks and is validated on the test blocks of the patches.", file_okay=False)] = None,
    loss: Annotated[Optional[LossName], typer.Option("--loss", help="Loss (default per task: sic regional, binary bce-ftl, multiclass focal).")] = None,
    model_size: ModelSize = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Most epochs (default 50; with --time-limit, as many as fit).")] = None,
    time_limit: Annotated[Optional[float], typer.Option("--time-limit", callback=above_zero, help="Training budget in minutes: the learning rate decays over it and the run stops cleanly at its end.")] = None,
    batch_size: BatchSize = None,
    samples_per_epoch: SamplesPerEpoch = None,
    lr: Lr = None,
    lr_schedule: Annotated[Optional[LrScheduleName], typer.Option("--lr-schedule", help="cosine (to 1% of --lr), poly (power 0.9, to 0) or constant, over the budget used: the larger of the epoch and time fractions (default cosine).")] = None,
    weight_decay: Annotated[Optional[float], typer.Option("--weight-decay", min=0.0, help="Adam weight decay (default 1e-5).")] = None,
    patience: Patience = None,
    smoothing: Annotated[Optional[float], typer.Option("--smoothing", callback=_smoothing, help="Weight of the past in the moving average of the val loss that early stopping watches, 0..1 (default 0.6; 0 = raw).")] = None,
    min_steps: Annotated[Optional[int], typer.Option("--min-steps", min=1, help="Optimiser steps before early stopping may act (default: three quarters of the budget).")] = None,
    grad_clip: Annotated[Optional[float], typer.Option("--grad-clip", min=0.0, help="Gradient norm clip, 0 = off (default 1.0).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed (default 0); the same seed repeats the run.")] = None,
    device: TrainDevice = None,
    workers: Workers = None,
    pool: Pool = None,
    inputs: Inputs = None,
    input_transform: Annotated[Optional[list[str]], typer.Option("--input-transform", metavar="BAND=TRANSFORM", callback=key_values, help="How an input band enters the model, BAND=cos-sin|identity, repeatable (default: cos-sin for wrapped phase bands such as phase or *_phase, identity otherwise).")] = None,
    model_arg: Annotated[Optional[list[str]], typer.Option("--model-arg", callback=key_values, help="Model argument KEY=VAL (JSON value), repeatable.")] = None,
    loss_arg: Annotated[Optional[list[str]], typer.Option("--loss-arg", callback=key_values, help="Loss option KEY=VAL, repeatable; ds_weights=0.1,0.2,0.3,0.4 for unet++.")] = None,
    steps_per_epoch: StepsPerEpoch = None,
    save_at: Annotated[Optional[float], typer.Option("--save-at", callback=open_fraction, help="Also save the model of the epoch that ends at this fraction of the budget (e.g. 0.4 -> at_40pct/).")] = None,
    thresholds: Annotated[Optional[str], typer.Option("--thresholds", help="Binary: thresholds to sweep, comma-separated (default 0.10..0.90 by 0.05, then 0.93, 0.95, 0.97, 0.99).")] = None,
    augment: Annotated[Optional[bool], typer.Option("--augment/--no-augment", help="Random flips and 90-degree rotations (default on).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --output from its last epoch and its place in the schedule (only --epochs, --time-limit, --patience, --min-steps, --workers, --device, --save-at, --thresholds may change).")] = False,
    no_checks: NoChecks = False,
    overwrite: Overwrite = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Train a model on the train patches, keep the best on the val patches (early stopping).

    The budget is --epochs and/or --time-limit; each epoch draws --samples-per-epoch samples, and
    the learning rate decays to its floor when the budget ends. The run directory gets model.safetensors + config.json at every improvement, and
    history.csv, curves.png and a resumable state every epoch. Ctrl-C stops cleanly (exit 130).
    With --from MODEL_DIR it trains FCtL's refiner on that model's crude masks (kept in OUT/crude/).
    """
    from icetools.training import build_options, parse_key_values

    flags = {
        "model": model, "from_model": str(from_model) if from_model is not None else None, "loss": loss,
        "model_size": model_size, "epochs": epochs, "time_limit": time_limit, "batch_size": batch_size,
        "samples_per_epoch": samples_per_epoch, "lr": lr, "lr_schedule": lr_schedule, "weight_decay": weight_decay,
        "patience": patience, "smoothing": smoothing, "min_steps": min_steps,
        "grad_clip": grad_clip, "seed": seed, "device": device, "workers": workers, "pool": pool,
        "inputs": inputs, "input_transforms": parse_key_values(input_transform, what="--input-transform"),
        "model_args": parse_key_values(model_arg, what="--model-arg"),
        "loss_args": parse_key_values(loss_arg, what="--loss-arg"), "steps_per_epoch": steps_per_epoch,
        "save_at": save_at, "thresholds": thresholds, "augment": augment, "resume": resume, "overwrite": overwrite,
    }
    options = build_options(config, flags)
    summary = run_training(patches, output, options, checks=not no_checks)
    if summary.get("already_finished"):  # a resume with nothing to add is no error
        info(
            f"{output}: the run already finished, {summary['stopped_because']}, after {summary['epochs_run']} "
            "epochs; nothing to do (give more epochs or a longer time limit to train on)"
        )
        return
    for message in summary["warnings"]:
        warn(message)
    if STATE["verbosity"] >= 0:
        print_summary(summary)
    if summary["stopped_because"] == "interrupted":
        raise typer.Exit(EXIT_INTERRUPTED)
