"""``icetools sweep``: short training runs over a grid of architectures and loss options."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from icetools.cli.app import app
from icetools.cli.common import STATE, console, guarded, info, make_progress, warn
from icetools.cli.options import Overwrite
from icetools.cli.train import EXIT_INTERRUPTED, build_options, epoch_line, read_yaml_options
from icetools.errors import ConfigError

DEFAULT_EPOCHS = 3


def _grid(pairs: list[str] | None, *, flag: str) -> dict[str, list[Any]]:
    """Repeatable ``KEY=V1,V2``: the values each key takes in the grid."""
    from icetools.sweep import split_values

    grid: dict[str, list[Any]] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip() or not text.strip():
            raise ConfigError(f"{flag} {pair!r}: write KEY=V1,V2, e.g. {flag} gamma=1.33,2")
        grid[key.strip()] = split_values(text)
    return grid


def _names(text: str | None) -> list[str | None]:
    return [name.strip() for name in text.split(",") if name.strip()] if text else [None]


def _ds_weights(text: str | None) -> list[list[float]] | None:
    from icetools.train import parse_weights

    if not text:
        return None
    return [parse_weights(part) for part in text.split(";") if part.strip()]


def _fmt(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def print_ranking(rows: list[dict[str, Any]], title: str) -> None:
    """Rank, run folder (its name spells the configuration) and scores; sweep.csv has every column."""
    from rich.table import Table

    if not rows:
        return
    scores = [k for k in rows[0] if k in ("best_val_loss", "best_epoch") or k.startswith("val_")]
    if any(row.get("threshold") is not None for row in rows):
        scores.append("threshold")
    table = Table("rank", "run", *(s.replace("best_", "").replace("val_", "val ") for s in scores), "s",
                  title=title, title_justify="left")
    table.columns[1].overflow = "fold"  # run names spell the configuration: never cut them
    for rank, row in enumerate(rows, start=1):
        table.add_row(str(rank), row["run"], *(_fmt(row.get(c)) for c in scores), _fmt(row.get("seconds")))
    console.print(table)


@app.command("sweep")
@guarded
def sweep_command(
    patches: Annotated[Path, typer.Option("--patches", help="Patches GeoPackage from `icetools sample-patches`.", dir_okay=False)],
    output: Annotated[Path, typer.Option("-o", "--output", help="Sweep folder: one run directory per configuration + sweep.csv.", file_okay=False)],
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML file of base training options; flags override it.", dir_okay=False)] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Architectures to try, comma-separated (default: the task's).")] = None,
    loss: Annotated[Optional[str], typer.Option("--loss", help="Losses to try, comma-separated (default: the task's).")] = None,
    loss_arg: Annotated[Optional[list[str]], typer.Option("--loss-arg", help="Loss option and its values, KEY=V1,V2; repeatable.")] = None,
    model_arg: Annotated[Optional[list[str]], typer.Option("--model-arg", help="Model argument and its values, KEY=V1,V2 (lists in brackets); repeatable.")] = None,
    ds_weights: Annotated[Optional[str], typer.Option("--ds-weights", help='unet++ deep supervision weight sets, ";"-separated, e.g. "0.1,0.2,0.3,0.4;0.25,0.25,0.25,0.25".')] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help=f"Epochs per configuration (default {DEFAULT_EPOCHS}).")] = None,
    time_limit: Annotated[Optional[float], typer.Option("--time-limit", help="Minutes per configuration.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Patches per batch (default 8).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Adam learning rate (default 1e-4; fctl 5e-5).")] = None,
    patience: Annotated[Optional[int], typer.Option("--patience", help="Early stopping patience (default 10).")] = None,
    steps_per_epoch: Annotated[Optional[int], typer.Option("--steps-per-epoch", help="Optimiser steps per epoch.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed, the same for every configuration (default 0).")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N (default auto).")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Data loading processes (default 1).")] = None,
    pool: Annotated[Optional[str], typer.Option("--pool", help="Regional loss groups: scene or patch.")] = None,
    inputs: Annotated[Optional[str], typer.Option("--inputs", help="Input bands, comma-separated (default: the scene's).")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Train every combination of --model, --loss, --loss-arg, --model-arg and --ds-weights for a
    few epochs, each in its own folder, and rank them by validation loss (table + sweep.csv)."""
    from icetools.sweep import expand_grid, run_sweep

    yaml_options = read_yaml_options(config) if config else {}
    defaults = {} if "epochs" in {str(k).replace("-", "_") for k in yaml_options} else {"epochs": DEFAULT_EPOCHS}
    flags = {
        "epochs": epochs, "time_limit": time_limit, "batch_size": batch_size, "lr": lr, "patience": patience,
        "steps_per_epoch": steps_per_epoch, "seed": seed, "device": device, "workers": workers, "pool": pool,
        "inputs": inputs, "overwrite": overwrite,
    }
    base = build_options(config, flags, defaults=defaults)
    configs = expand_grid(
        models=_names(model), losses=_names(loss), loss_args=_grid(loss_arg, flag="--loss-arg"),
        model_args=_grid(model_arg, flag="--model-arg"), ds_weights=_ds_weights(ds_weights),
    )
    if len({c.loss for c in configs}) > 1:
        warn("the sweep compares different losses: their validation losses are on different scales, "
             "so compare the val metrics columns as well")
    info(f"sweep: {len(configs)} configurations x {base.epochs} epochs into {output}")

    with make_progress() as bar:
        current: dict[str, Any] = {}

        def on_event(event: dict[str, Any]) -> None:
            kind = event["event"]
            if kind == "run_start":
                info(f"[bold]run {event['index']}/{event['runs']}: {event['name']}[/]")
            elif kind == "epoch_start":
                if "task" in current:
                    bar.remove_task(current["task"])
                current["task"] = bar.add_task(f"epoch {event['epoch']}/{event['epochs']}", total=event["steps"])
            elif kind == "step":
                bar.update(current["task"], completed=event["step"])
            elif kind == "epoch_end":
                info("  " + epoch_line(event))

        result = run_sweep(patches, output, base, configs, progress=on_event)
    if STATE["verbosity"] >= 0:
        print_ranking(result["rows"], f"sweep ranked by validation loss ({result['csv']})")
    if result["stopped_because"] == "interrupted":
        raise typer.Exit(EXIT_INTERRUPTED)
