"""Train a segmentation model on sampled patches and leave a complete model directory behind.

:func:`train_model` only wires the parts together: the options (:mod:`.options`), what to train
(:mod:`.setup`), the run directory and its resumable state (:mod:`.state`), the epoch loop and its
callbacks (:mod:`.loop`) and validation with the threshold sweep (:mod:`.validate`).

The run directory *is* the model directory: at every improvement of the validation loss the model
is saved (``model.safetensors`` + ``config.json``), so an interrupted or time-limited run always
leaves its best model ready for ``predict``.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from icetools.calibration import CONFIG_KEY as CALIBRATION_KEY
from icetools.data import scene_paths
from icetools.device import seed_everything
from icetools.errors import ConfigError
from icetools.io.checks import check_scenes
from icetools.jsonsafe import json_safe
from icetools.modeldir import CONFIG_FILE, WEIGHTS_FILE, load_model_dir, read_config, save_model_dir
from icetools.patches_io import read_blocks
from icetools.progress import Progress, report
from icetools.refine import (
    CRUDE_DIR,
    RefineSource,
    RefinerData,
    held_out_splits,
    open_refine_source,
    prepare_crude_inputs,
    refiner_data,
)
from icetools.tasks import training_defaults
from icetools.training.loop import (
    Budget,
    Callback,
    Clock,
    DrawCurves,
    EarlyStopping,
    SaveAt,
    SaveBest,
    TrainingLoop,
    WriteHistory,
    WriteState,
)
from icetools.training.distributed import World
from icetools.training.options import TrainOptions, resume_options
from icetools.training.refiner_gate import choose_gate
from icetools.training.setup import Setup, build_parts, initial_normalization, load_patches, resolve_setup
from icetools.training.state import (
    CURVES_FILE,
    HISTORY_FILE,
    STATE_JSON,
    RunRecord,
    RunState,
    finished_reason,
    patches_digest,
    prepare_dir,
    read_history,
    read_state,
    restore_state,
)
from icetools.training.validate import DEFAULT_THRESHOLDS, sweep_threshold, validate


@dataclass
class _Start:
    """Where a run starts: fresh from the options and data, or from the stored state of a resumed run."""

    options: TrainOptions
    setup: Setup
    normalization: dict[str, list[float]]
    run: RunState
    source: RefineSource | None
    stored: dict[str, Any] | None = None  # last_state.json of a resumed run
    tensors: dict[str, torch.Tensor] | None = None  # and its tensors
    finished: str | None = None  # why a resumed run already ended, when a resume has nothing to add


def train_model(
    patches: str | Path | pd.DataFrame,
    out_dir: str | Path,
    options: TrainOptions,
    *,
    checks: bool = True,
    progress: Progress | None = None,
    world: World | None = None,
) -> dict[str, Any]:
    """Train on the train patches, select on the val patches, write the model directory; a summary.

    ``patches`` is a patches GeoPackage or its frame. With ``options.resume`` the run continues
    from ``out_dir``'s last finished epoch with the stored settings (see RESUME_MAY_CHANGE).
    Ctrl-C (KeyboardInterrupt) stops cleanly: the best model so far stays, the summary says
    ``stopped_because: "interrupted"`` and the caller decides the exit code.

    A refiner (``options.from_model``) learns where that model did not: on the patches' val blocks,
    validated on the test blocks (see :func:`icetools.refine.refiner_data`). It first gets the crude
    mosaic and image channels of every such scene from that model, under ``out_dir/crude/`` (kept
    across runs and remade only when the scene or the model changed), and learns from those with the
    inputs fed as they are (identity normalisation). After training, the confidence gate is chosen on
    validation (:func:`icetools.training.refiner_gate.choose_gate`).

    ``progress`` gets Events: "epoch" (done = epochs finished; info = the history row and
    ``improved`` at each epoch's end), "step" (within an epoch; info ``epoch``), "threshold" (info
    ``threshold``, ``mean_dice``) and, for a refiner, "crude" while its crude mosaics are made.
    ``checks`` samples the scenes' input bands against their plausible ranges (:mod:`icetools.io.checks`).

    ``world`` (:func:`icetools.training.distributed.training_world`) trains in several processes
    under torchrun: each steps on its part of every batch, and rank 0 alone writes ``out_dir``, which
    then holds the same files as a one-process run's (config.json records ``training.world_size``).
    ``options.batch_size`` is per process; an epoch has ``samples_per_epoch`` samples in all. The
    summary's ``data_wait_share`` is the share of the steps' time spent waiting for batches.
    """
    world = world if world is not None else World()
    options.validate()
    out_dir = Path(out_dir)
    with world.together():  # every process reads the patches; rank 0 alone checks the scenes
        loaded = _load(patches, options, checks=checks and world.is_main, world=world)
    with _removed_if_start_fails(out_dir, world):
        with world.together():
            if world.is_main:
                prepare_dir(out_dir, resume=options.resume, overwrite=options.overwrite, inputs=loaded.inputs)
        with world.together():
            start = _start(out_dir, options, loaded, world)
        if start.finished is not None:
            return _already_finished(out_dir, start)
        loop, record = _loop(out_dir, start, loaded, world, progress=progress)
        stopped_because = loop.fit()
    with world.together():  # rank 0 chooses the threshold and writes the config; the others wait
        if world.is_main:
            return _finish(loop, record, out_dir, stopped_because, progress=progress)
    return _summary(loop, record, out_dir, stopped_because)


@dataclass
class _Loaded:
    """The patches and what they say before the run directory is touched."""

    frame: pd.DataFrame
    patches_path: str | None
    digest: str | None
    source: RefineSource | None  # a fresh refiner's from_model
    held_out: RefinerData | None
    inputs: list[str | Path]  # files the run directory may not replace


def _load(patches: str | Path | pd.DataFrame, options: TrainOptions, *, checks: bool, world: World) -> _Loaded:
    frame, patches_path = load_patches(patches)
    if checks and options.from_model is None:
        check_scenes(scene_paths(frame), options.inputs)
    source = held_out = None
    if options.from_model is not None and not options.resume:  # a wrong from_model fails before the run dir exists
        held_out = refiner_data(frame, read_config(options.from_model), patches_path=patches_path)
        source = open_refine_source(options.from_model, device=world.device(options.device))
    from_files = [Path(options.from_model) / n for n in (WEIGHTS_FILE, CONFIG_FILE)] if options.from_model else []
    return _Loaded(frame, patches_path, patches_digest(patches_path), source, held_out, [patches_path, *from_files])


def _start(out_dir: Path, options: TrainOptions, loaded: _Loaded, world: World) -> _Start:
    if options.resume:
        return _resumed(out_dir, options, frame=loaded.frame, patches_path=loaded.patches_path, digest=loaded.digest,
                        world=world)
    return _fresh(loaded.frame, options, loaded.source, loaded.held_out)


def _loop(
    out_dir: Path, start: _Start, loaded: _Loaded, world: World, *, progress: Progress | None
) -> tuple[TrainingLoop, RunRecord]:
    """The torch parts, the run's record and the loop (wrapping the model for several processes)."""
    options, setup = start.options, start.setup
    frame = _refiner_frame(loaded.frame, setup)
    patches_path = loaded.patches_path
    with world.together():
        input_scenes = None
        if start.source is not None and world.is_main:  # rank 0 makes the crude inputs; all read them
            input_scenes = prepare_crude_inputs(frame, start.source, out_dir / CRUDE_DIR, batch=options.batch_size,
                                                progress=progress)
    if start.source is not None:
        input_scenes = world.broadcast(input_scenes)
    with world.together():
        agreed = {"now": world.now} if world.distributed else {}  # several processes read rank 0's clock
        clock = Clock(seconds_before=start.run.seconds, time_limit_minutes=options.time_limit, **agreed)
        device = world.device(options.device)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # every batch has the same shape: tune kernels once
        seed_everything(options.seed)
        blocks = read_blocks(patches_path) if patches_path else None
        parts = build_parts(frame, setup, options, normalization=start.normalization, device=device,
                            input_scenes=input_scenes, world=world,
                            blocks=_refiner_frame(blocks, setup) if blocks is not None else None)
        provenance: dict[str, Any] = {"patches": patches_path, "patches_sha256": loaded.digest,
                                      "scenes": scene_paths(frame)}
        if input_scenes:
            provenance["crude_inputs"] = dict(input_scenes)
        record = RunRecord(setup, options, start.normalization, parts.context_scales, provenance,
                           world_size=world.world_size)
        if start.tensors is not None:
            restore_state(start.tensors, start.stored["optimizer"], parts.model, parts.optimizer)
        budget = Budget(options.epoch_cap, setup.samples_per_epoch, clock, start_fraction=start.run.budget_fraction)
    loop = TrainingLoop(
        parts, task=setup.task, n_classes=setup.n_classes, budget=budget, grad_clip=options.grad_clip,
        seed=options.seed, learning_rate=record.learning_rate(), smoothing=options.smoothing, run=start.run,
        device=device, callbacks=_callbacks(out_dir, record, world), progress=progress, world=world,
    )
    return loop, record


@contextlib.contextmanager
def _removed_if_start_fails(out_dir: Path, world: World):
    """A run that fails before its first epoch is committed leaves no folder it created (an earlier
    run's stays; once an epoch's files exist, they are a run that ``--resume`` continues); rank 0
    alone made it."""
    created = world.is_main and not out_dir.exists()
    try:
        yield
    except BaseException:
        if created and not (out_dir / STATE_JSON).exists():
            shutil.rmtree(out_dir, ignore_errors=True)
        raise


def _already_finished(out_dir: Path, start: _Start) -> dict[str, Any]:
    """The summary of a resume with nothing to add: the run ended by itself and its budget is unchanged."""
    run = start.run
    return {
        "run_dir": str(out_dir), "already_finished": True, "stopped_because": f"{start.finished} (already complete)",
        "task": start.setup.task, "model": start.setup.model, "loss": start.setup.loss,
        "epochs_run": run.epoch, "best_epoch": run.best_epoch, "best_val_loss": run.best_val_loss,
        "seconds": round(run.seconds, 1), "warnings": [],
    }


def _fresh(
    frame: pd.DataFrame, options: TrainOptions, source: RefineSource | None, held_out: RefinerData | None
) -> _Start:
    if held_out is not None:
        frame = held_out.apply(frame)
    setup = resolve_setup(frame, options, refines=source)
    if setup.refines is not None and held_out is not None:
        setup.refines["training_data"] = held_out.record()
    normalization = initial_normalization(frame, setup, options, refiner=source is not None)
    return _Start(options, setup, normalization, RunState(), source)


def _refiner_frame(frame: pd.DataFrame, setup: Setup) -> pd.DataFrame:
    """A refiner's splits (as its setup records them, so a resumed run keeps them); others as they are."""
    if setup.refines is not None and (setup.refines.get("training_data") or {}).get("shifted"):
        return held_out_splits(frame)
    return frame


# Options whose change gives a finished run more to do; with none changed, a resume has nothing to add.
_EXTENDING = ("epochs", "time_limit", "patience", "min_steps")


def _resumed(
    out_dir: Path, options: TrainOptions, *, frame: pd.DataFrame, patches_path: str | None, digest: str | None,
    world: World,
) -> _Start:
    """The stored run, with the few options a resume may change taken from ``options``."""
    stored, tensors = read_state(out_dir)
    _check_same_patches(stored, out_dir, frame=frame, patches_path=patches_path, digest=digest)
    options = resume_options(stored["options"], stored["setup"], options)
    setup = Setup(**stored["setup"])
    finished = finished_reason(out_dir)
    if any(getattr(options, name) != stored["options"].get(name) for name in _EXTENDING):
        finished = None
    if setup.samples_per_epoch is None:  # a state from before epochs were counted in samples
        setup.samples_per_epoch = options.epoch_samples(training_defaults(setup.task, setup.model).samples_per_epoch)
    run = RunState.from_stored(stored["run"], read_history(out_dir / HISTORY_FILE, stored["run"]["epoch"]))
    source = None
    if options.from_model is not None:
        source = open_refine_source(options.from_model, device=world.device(options.device))
        if list(source.input_names) != setup.inputs:
            raise ConfigError(
                f"from_model {options.from_model} now returns {', '.join(source.input_names)} instead of the "
                f"{', '.join(setup.inputs)} this run learnt from: start again with overwrite"
            )
    return _Start(options, setup, stored["normalization"], run, source, stored, tensors, finished)


def _check_same_patches(
    stored: dict[str, Any], out_dir: Path, *, frame: pd.DataFrame, patches_path: str | None, digest: str | None
) -> None:
    """A resume learns from the patches its run started on: same task, same content (when recorded)."""
    task = stored["setup"]["task"]
    tasks = sorted({str(t) for t in frame["task"].unique()}) if "task" in frame else []
    named = patches_path or "the patches"
    if tasks and tasks != [task]:
        raise ConfigError(
            f"{named} hold {', '.join(tasks)} patches, but the run in {out_dir} learns {task}: resume with the "
            "run's own patches, or start a new run in another folder"
        )
    recorded = stored.get("patches_sha256")
    if recorded and digest and recorded != digest:
        raise ConfigError(
            f"{named} are not the patches the run in {out_dir} started on (their content differs): resume with "
            "the run's own patches, or start a new run with overwrite"
        )


def _callbacks(out_dir: Path, record: RunRecord, world: World) -> list[Callback]:
    """What each epoch leaves behind, in this order (rank 0 alone writes), and early stopping."""
    options, setup = record.options, record.setup
    if not world.is_main:
        return [EarlyStopping(record.stopping_rule())]
    callbacks: list[Callback] = [SaveBest(out_dir, record)]
    if options.save_at is not None:
        callbacks.append(SaveAt(out_dir, record, fraction=options.save_at))
    callbacks += [
        WriteHistory(out_dir / HISTORY_FILE, setup.task),
        DrawCurves(out_dir / CURVES_FILE, title=f"{setup.model} / {setup.loss}"),
        WriteState(out_dir, record),
        EarlyStopping(record.stopping_rule()),
    ]
    return callbacks


def _finish(
    loop: TrainingLoop, record: RunRecord, out_dir: Path, stopped_because: str, *, progress: Progress | None
) -> dict[str, Any]:
    """Reload the best model, choose a refiner's gate, sweep the binary threshold, write the config; the summary."""
    run, setup = loop.run, record.setup
    summary = _summary(loop, record, out_dir, stopped_because)
    warnings: list[str] = summary["warnings"]
    if run.best_epoch is None:
        warnings.append("no epoch finished with a finite validation loss: no model was written")
        summary.update(stopped_because=stopped_because, seconds=round(loop.clock.elapsed(), 1))
        return summary

    best_model, _ = load_model_dir(out_dir)
    metrics = dict(run.best_metrics)
    config = record.model_config(run, metrics, stopped_because=stopped_because)
    if setup.refines is not None and stopped_because != "interrupted":
        try:
            metrics = _refiner_gate(best_model, loop, config, summary)
        except KeyboardInterrupt:
            stopped_because = "interrupted"
    threshold = None
    if setup.task == "binary":
        threshold = 0.5
        if stopped_because != "interrupted":
            try:
                choice = sweep_threshold(best_model.to(loop.device), loop.parts.val_loader, loop.parts.loss_fn,
                                         thresholds=record.options.thresholds or DEFAULT_THRESHOLDS,
                                         device=loop.device)
                report(progress, "threshold", 1, 1, threshold=choice.threshold, mean_dice=choice.best_mean_dice)
                threshold, metrics = choice.threshold, choice.metrics
                config["threshold_sweep"] = choice.sweep
                warnings.extend([choice.warning] if choice.warning else [])
            except KeyboardInterrupt:
                stopped_because = "interrupted"
        config["threshold"] = threshold
    if setup.task == "sic" and setup.n_classes == 1 and setup.refines is None and stopped_because != "interrupted":
        try:
            metrics = _calibrate_sic(best_model, loop, config, metrics, summary, progress=progress)
        except KeyboardInterrupt:
            stopped_because = "interrupted"
    run.seconds = loop.clock.elapsed()
    config["training"].update(json_safe({"val_metrics": metrics, "stopped_because": stopped_because,
                                         "seconds": round(run.seconds, 1)}))
    save_model_dir(out_dir, best_model.to("cpu"), config)
    summary.update(best_val_loss=run.best_val_loss, train_loss=run.best_train_loss, val_metrics=metrics,
                   threshold=threshold, seconds=round(run.seconds, 1), stopped_because=stopped_because)
    return summary


def _summary(loop: TrainingLoop, record: RunRecord, out_dir: Path, stopped_because: str) -> dict[str, Any]:
    """What every process knows of the run at its end (rank 0 adds what it chose and wrote)."""
    run, setup, share = loop.run, record.setup, loop.data_wait_share()
    return {
        "run_dir": str(out_dir), "task": setup.task, "model": setup.model, "loss": setup.loss,
        "epochs_run": run.epoch, "best_epoch": run.best_epoch, "warnings": [],
        "best_val_loss": None, "train_loss": None, "val_metrics": {}, "threshold": None,
        "stopped_because": stopped_because, "seconds": round(loop.clock.elapsed(), 1),
        "world_size": loop.world.world_size, "data_wait_share": None if share is None else round(share, 4),
    }


def _calibrate_sic(
    model: torch.nn.Module, loop: TrainingLoop, config: dict[str, Any], metrics: dict[str, float],
    summary: dict[str, Any], *, progress: Progress | None,
) -> dict[str, float]:
    """Measure the model's SIC floor and ceiling on validation (:mod:`icetools.calibration`); keep the
    stretch only if it scores at least as well there as the raw output. The metrics predict will match."""
    model = model.to(loop.device)
    raw = validate(model, loop.parts.val_loader, loop.parts.loss_fn, task="sic", n_classes=1, device=loop.device)
    calibration, notes = raw.ends.fit()
    summary["warnings"].extend(notes)
    if calibration.is_identity:
        return metrics
    stretched = validate(model, loop.parts.val_loader, loop.parts.loss_fn, task="sic", n_classes=1,
                         device=loop.device, calibration=calibration)
    before, after = raw.metrics(), stretched.metrics()
    key = "polygon_r2" if np.isfinite(before["polygon_r2"]) and np.isfinite(after["polygon_r2"]) else "r2"
    report(progress, "calibration", 1, 1, floor=calibration.floor, ceiling=calibration.ceiling,
           before=before[key], after=after[key], score=key)
    if not after[key] >= before[key]:
        summary["warnings"].append(
            f"SIC calibration ({calibration.describe()}) lowered validation {key} from {before[key]:.4f} "
            f"to {after[key]:.4f}: not applied"
        )
        return metrics
    config[CALIBRATION_KEY] = {**calibration.record(raw.ends.counts), "validation": {
        "score": key, "raw": round(before[key], 6), "calibrated": round(after[key], 6)}}
    summary["sic_calibration"] = config[CALIBRATION_KEY]
    return {**metrics, **after}


def _refiner_gate(
    model: torch.nn.Module, loop: TrainingLoop, config: dict[str, Any], summary: dict[str, Any]
) -> dict[str, float]:
    """Choose where the refiner applies (or that it must not) on validation; its metrics there."""
    choice = choose_gate(model.to(loop.device), loop.parts.val_loader, task=loop.task, n_classes=loop.n_classes,
                         device=loop.device)
    model.set_gate(choice.threshold)
    config["refines"] = {**config["refines"], "gate": choice.record}
    summary["refine_gate"] = choice.record
    summary["warnings"].extend(choice.warnings)
    return choice.metrics


__all__ = ["train_model"]
