"""``icetools sweep``: short training runs over a grid of architectures and loss options."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from icetools.cli.app import app
from icetools.cli.common import STATE, console, guarded, info, usage_error, warn
from icetools.cli.options import LOSS_NAMES, Overwrite, Quiet, Verbose, above_zero, name_list
from icetools.models import MODEL_NAMES
from icetools.tasks import REFINER_MODEL
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

DEFAULT_EPOCHS = 3
SWEPT_MODELS = tuple(name for name in MODEL_NAMES if name != REFINER_MODEL)  # a refiner trains with train --from


def _grid(pairs: list[str] | None, *, flag: str) -> dict[str, list[Any]]:
    """Repeatable ``KEY=V1,V2``: the values each key takes in the grid."""
    from icetools.sweep import split_values

    grid: dict[str, list[Any]] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip() or not text.strip():
            raise usage_error(f"{flag} {pair!r}: write KEY=V1,V2, e.g. {flag} gamma=1.33,2")
        grid[key.strip()] = split_values(text)
    return grid


def _names(text: str | None) -> list[str | None]:
    return [name.strip() for name in text.split(",") if name.strip()] if text else [None]


def _ds_weights(text: str | None) -> list[list[float]] | None:
    from icetools.training import parse_weights

    if not text:
        return None
    return [parse_weights(part) for part in text.split(";") if part.strip()]


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
        table.add_row(str(rank), row["run"], *(fmt(row.get(c)) for c in scores), fmt(row.get("seconds")))
    console.print(table)


@app.command("sweep")
@guarded
def sweep_command(
    patches: Patches,
    output: Annotated[Path, typer.Option("-o", "--output", help="Sweep folder: one run directory per configuration + sweep.csv.", file_okay=False)],
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML file of base training options; flags override it.", dir_okay=False)] = None,
    model: Annotated[Optional[str], typer.Option("--model", metavar="NAME[,NAME...]", callback=name_list(SWEPT_MODELS), help=f"Architectures to try, comma-separated, of {', '.join(SWEPT_MODELS)} (default: the task's).")] = None,
    loss: Annotated[Optional[str], typer.Option("--loss", metavar="NAME[,NAME...]", callback=name_list(LOSS_NAMES), help=f"Losses to try, comma-separated, of {', '.join(LOSS_NAMES)} (default: the task's).")] = None,
    loss_arg: Annotated[Optional[list[str]], typer.Option("--loss-arg", help="Loss option and its values, KEY=V1,V2; repeatable.")] = None,
    model_arg: Annotated[Optional[list[str]], typer.Option("--model-arg", help="Model argument and its values, KEY=V1,V2 (lists in brackets); repeatable.")] = None,
    ds_weights: Annotated[Optional[str], typer.Option("--ds-weights", help='unet++ deep supervision weight sets, ";"-separated, e.g. "0.1,0.2,0.3,0.4;0.25,0.25,0.25,0.25".')] = None,
    model_size: ModelSize = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help=f"Epochs per configuration (default {DEFAULT_EPOCHS}; with --time-limit, as many as fit).")] = None,
    time_limit: Annotated[Optional[float], typer.Option("--time-limit", callback=above_zero, help="Minutes per configuration: each run's budget, over which its learning rate decays.")] = None,
    batch_size: BatchSize = None,
    samples_per_epoch: SamplesPerEpoch = None,
    lr: Lr = None,
    patience: Patience = None,
    steps_per_epoch: StepsPerEpoch = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed, the same for every configuration (default 0).")] = None,
    device: TrainDevice = None,
    workers: Workers = None,
    pool: Pool = None,
    inputs: Inputs = None,
    overwrite: Overwrite = False,
    verbose: Verbose = 0,
    quiet: Quiet = False,
) -> None:
    """Train every combination of --model, --loss, --loss-arg, --model-arg and --ds-weights for a
    few epochs, each in its own folder, and rank them by validation loss (table + sweep.csv)."""
    from icetools.sweep import expand_grid, run_sweep
    from icetools.training import build_options, read_yaml_options

    yaml_names = {str(k).replace("-", "_") for k in read_yaml_options(config)} if config else set()
    # Short runs by default: a few epochs, unless the epochs or a time budget are given.
    bounded = "epochs" in yaml_names or "time_limit" in yaml_names or time_limit is not None
    defaults = {} if bounded else {"epochs": DEFAULT_EPOCHS}
    flags = {
        "model_size": model_size, "epochs": epochs, "time_limit": time_limit, "batch_size": batch_size,
        "samples_per_epoch": samples_per_epoch, "lr": lr, "patience": patience, "steps_per_epoch": steps_per_epoch,
        "seed": seed, "device": device, "workers": workers, "pool": pool, "inputs": inputs, "overwrite": overwrite,
    }
    base = build_options(config, flags, defaults=defaults)
    configs = expand_grid(
        models=_names(model), losses=_names(loss), loss_args=_grid(loss_arg, flag="--loss-arg"),
        model_args=_grid(model_arg, flag="--model-arg"), ds_weights=_ds_weights(ds_weights),
    )
    if len({c.loss for c in configs}) > 1:
        warn("the sweep compares different losses: their validation losses are on different scales, "
             "so compare the val metrics columns as well")
    budget = f"{base.epochs} epochs" if base.epochs is not None else "as many epochs as fit"
    if base.time_limit is not None:
        budget += f" in {base.time_limit:g} minutes"
    info(f"sweep: {len(configs)} configurations x {budget} into {output}")

    with training_bars(indent="  ", runs=True, details=False) as bars:
        result = run_sweep(patches, output, base, configs, progress=bars)
    if STATE["verbosity"] >= 0:
        print_ranking(result["rows"], f"sweep ranked by validation loss ({result['csv']})")
    if result["stopped_because"] == "interrupted":
        raise typer.Exit(EXIT_INTERRUPTED)
