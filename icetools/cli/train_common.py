"""What ``icetools train`` and ``icetools sweep`` share (no command imports another): the options
they both take, how a training run looks on the terminal (bars, one line per finished epoch), and
the exit code of Ctrl-C."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from icetools.cli.common import info
from icetools.cli.options import ModelSizeName, PoolName, above_zero
from icetools.cli.progress import EventBars
from icetools.progress import Event

EXIT_INTERRUPTED = 130

Patches = Annotated[Path, typer.Option("--patches", help="Patches GeoPackage from `icetools sample-patches`.", dir_okay=False)]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Patches per batch (default 8).")]
Lr = Annotated[Optional[float], typer.Option("--lr", callback=above_zero, help="Adam learning rate (default 1e-3, decayed over the budget by --lr-schedule).")]
Patience = Annotated[Optional[int], typer.Option("--patience", min=1, help="Epochs without a better smoothed val loss before stopping, never before three quarters of the budget or --min-steps (default 10).")]
SamplesPerEpoch = Annotated[Optional[int], typer.Option("--samples-per-epoch", min=1, help="Training samples per epoch, drawn again from the train windows every epoch (default 512: 25-55 s of the default U-Net at 128 px on 2 CPU cores).")]
StepsPerEpoch = Annotated[Optional[int], typer.Option("--steps-per-epoch", min=1, help="Older way to size an epoch: steps x --batch-size samples (use --samples-per-epoch).")]
ModelSize = Annotated[Optional[ModelSizeName], typer.Option("--model-size", help="laptop (default: trains in minutes on a CPU) or paper (the source paper's widths); --model-arg overrides.")]
TrainDevice = Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N (default auto).")]
Workers = Annotated[Optional[int], typer.Option("--workers", min=0, help="Data loading processes, 0 = in the main process (default 1).")]
Pool = Annotated[Optional[PoolName], typer.Option("--pool", help="Regional loss groups: scene (pool a polygon over a batch drawn from one scene; default) or patch.")]
Inputs = Annotated[Optional[str], typer.Option("--inputs", help="Input bands, comma-separated, e.g. HH,HV (default: the scene's).")]
LABELS = {
    "run": "sweep runs",
    "crude": "crude mosaics",
    "epoch": "epochs",
    "step": "steps this epoch",
    "threshold": "threshold sweep",
    "calibration": "SIC calibration",
}


def fmt(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def epoch_line(event: Event) -> str:
    """``epoch 3/50  train 0.12  val 0.15 (0.16)  r2 0.8 ...  lr 9e-4  (1.2 s)  *best*`` from an epoch's
    end Event; the val loss in brackets is the smoothed one early stopping watches."""
    row = event.info
    skip = ("val_loss", "val_loss_smooth")
    metrics = "  ".join(f"{k[4:]} {fmt(v)}" for k, v in row.items() if k.startswith("val_") and k not in skip)
    mark = "  *best*" if row.get("improved") else ""
    of = f"/{fmt(event.total)}" if event.total is not None else ""
    smooth = f" ({fmt(row['val_loss_smooth'])})" if "val_loss_smooth" in row else ""
    lr = f"  lr {row['lr']:.2g}" if isinstance(row.get("lr"), float) else ""
    return (
        f"epoch {row['epoch']}{of}  train {fmt(row['train_loss'])}  val {fmt(row['val_loss'])}{smooth}  "
        f"{metrics}{lr}  ({row['seconds']:.1f} s){mark}"
    )


def crude_line(event: Event) -> str:
    state = "reused" if event.info.get("reused") else "written"
    return f"crude mosaic {event.info['index'] + 1}/{event.info['scenes']} {state}: {event.info['path']}"


def training_lines(event: Event, *, indent: str = "", runs: bool = False, details: bool = True) -> None:
    """The lines a run prints beside its bars: finished epochs (and, with ``details``, crude mosaics
    and the chosen threshold; with ``runs``, each sweep run as it starts)."""
    if event.stage == "epoch" and "val_loss" in event.info:  # an epoch's end, not the bar's start
        info(indent + epoch_line(event))
    elif event.stage == "run" and runs and "name" in event.info:
        info(f"[bold]run {event.info['index']}/{fmt(event.total)}: {event.info['name']}[/]")
    elif event.stage == "crude" and details and event.info.get("finished"):
        info(indent + crude_line(event))
    elif event.stage == "threshold" and details and "threshold" in event.info:
        info(f"{indent}threshold sweep: best {event.info['threshold']:g} "
             f"(mean patch Dice {event.info['mean_dice']:.4f})")
    elif event.stage == "calibration" and details and "floor" in event.info:
        info(f"{indent}SIC calibration: floor {event.info['floor']:.4f}, ceiling {event.info['ceiling']:.4f} "
             f"(validation {event.info['score']} {event.info['before']:.4f} -> {event.info['after']:.4f})")


def training_bars(*, indent: str = "", runs: bool = False, details: bool = True) -> EventBars:
    """EventBars for train_model's (and run_sweep's) Events, printing :func:`training_lines`."""

    def lines(event: Event) -> None:
        training_lines(event, indent=indent, runs=runs, details=details)

    return EventBars(LABELS, also=lines)
