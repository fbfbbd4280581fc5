"""Tests for icetools.train / icetools.sweep and their commands: learning, the model directory,
resume, thresholds, time limits, interruption, options precedence and errors."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from scenes import affine_grid
from test_data import grid_windows, patch_frame, write_sic_scene
from typer.testing import CliRunner

import icetools.train as train_module
from icetools.checkpoint import load_model_dir, read_config
from icetools.cli.app import app
from icetools.data import PatchDataset, make_loader
from icetools.errors import ConfigError
from icetools.io.raster import write_raster
from icetools.losses import build_loss
from icetools.train import (
    ValidationResult,
    TrainOptions,
    patch_dice,
    pick_threshold,
    resolve_setup,
    train_model,
    validate,
)

runner = CliRunner()
TINY_UNET = {"widths": [4, 8, 8, 8]}


def tiny(**changes: object) -> TrainOptions:
    values = {"epochs": 2, "batch_size": 4, "workers": 0, "lr": 3e-3, "model_args": TINY_UNET}
    values.update(changes)
    return TrainOptions.from_mapping(values)


def split_by_column(row: int, col: int) -> str:
    return "val" if col >= 64 else "train"


@pytest.fixture(scope="module")
def sic_frame(tmp_path_factory):
    scene, labels, _ = write_sic_scene(tmp_path_factory.mktemp("sic"))
    return patch_frame(scene, labels, grid_windows(96, 32, 16, split_by_column))


@pytest.fixture(scope="module")
def binary_frame(tmp_path_factory):
    """A line mask the HH band shows plainly: an easy binary task."""
    folder = tmp_path_factory.mktemp("binary")
    rng = np.random.default_rng(2)
    line = np.zeros((96, 96), "uint8")
    line[20:23, :] = 1
    line[:, 50:53] = 1
    line[70:73, 10:90] = 1
    image = np.stack([line * 2.0 + rng.normal(0, 0.3, line.shape), rng.normal(0, 1, line.shape)]).astype("float32")
    grid = affine_grid(96, 96)
    scene = write_raster(folder / "scene.tif", image, grid, nodata=float("nan"), band_names=["phase", "magnitude"])
    labels = write_raster(folder / "lines.tif", line, grid, nodata=None, band_names=["line"], categorical=True)
    return patch_frame(scene, labels, grid_windows(96, 32, 16, split_by_column), task="binary")


@pytest.fixture(scope="module")
def trained_sic(sic_frame, tmp_path_factory):
    """8 epochs of a tiny U-Net with the regional loss (shared by several tests)."""
    run_dir = tmp_path_factory.mktemp("runs") / "sic"
    summary = train_model(sic_frame, run_dir, tiny(epochs=8, seed=1))
    return run_dir, summary


def _history(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "history.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_training_lowers_val_loss_and_leaves_a_model_directory(trained_sic, sic_frame) -> None:
    run_dir, summary = trained_sic
    history = _history(run_dir)
    val_losses = [float(row["val_loss"]) for row in history]
    assert [int(row["epoch"]) for row in history] == list(range(1, 9))
    assert min(val_losses[-3:]) < 0.7 * val_losses[0]
    assert summary["best_epoch"] == 1 + int(np.argmin(val_losses))
    assert {"val_r2", "val_rmse", "val_polygon_r2"} <= set(history[0])
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    model, config = load_model_dir(run_dir)
    assert config["task"] == "sic" and config["inputs"] == ["HH", "HV"] and config["patch_size"] == 32
    assert config["n_classes"] == 1 and config["context_scales"] == [1.0]
    assert config["model"]["name"] == "unet" and config["model"]["args"]["widths"] == TINY_UNET["widths"]
    assert len(config["normalization"]["mean"]) == 2
    training = config["training"]
    assert training["loss"] == "regional" and training["pool"] == "scene"
    assert training["best_epoch"] == summary["best_epoch"] and training["stopped_because"] == "epochs"
    assert config["provenance"]["scenes"] == [str(sic_frame["scene"].iloc[0])]

    # The reloaded model reproduces the validation loss recorded for its epoch.
    dataset = PatchDataset(sic_frame, "val", inputs=config["inputs"], normalization=config["normalization"],
                           task="sic")
    loader = make_loader(dataset, batch_size=4, pool="scene", shuffle=False, workers=0)
    again = validate(model, loader, build_loss("regional"), task="sic", n_classes=1, device=torch.device("cpu"))
    assert again.loss == pytest.approx(training["best_val_loss"], rel=1e-5)
    assert again.metrics()["r2"] == pytest.approx(training["val_metrics"]["r2"], rel=1e-5)


def test_resume_continues_where_the_run_stopped(sic_frame, tmp_path: Path) -> None:
    run_dir = tmp_path / "resumed"
    train_model(sic_frame, run_dir, tiny(epochs=1))
    header_size = struct.unpack("<Q", (run_dir / "last_state.safetensors").read_bytes()[:8])[0]
    assert (run_dir / "last_state.safetensors").read_bytes()[8 : 8 + header_size].startswith(b"{")
    state = json.loads((run_dir / "last_state.json").read_text())
    assert state["epoch"] == 1 and state["run"]["global_step"] == 5

    summary = train_model(sic_frame, run_dir, tiny(epochs=3, resume=True))
    assert [int(row["epoch"]) for row in _history(run_dir)] == [1, 2, 3]
    assert summary["epochs_run"] == 3

    straight = tmp_path / "straight"
    train_model(sic_frame, straight, tiny(epochs=3))
    resumed_state = load_file(str(run_dir / "last_state.safetensors"))
    straight_state = load_file(str(straight / "last_state.safetensors"))
    assert resumed_state.keys() == straight_state.keys()
    assert any(key.startswith("optimizer.") for key in resumed_state)
    for key in straight_state:  # resuming repeats the uninterrupted run (same batches, same augmentations)
        torch.testing.assert_close(resumed_state[key], straight_state[key], rtol=1e-5, atol=1e-6)

    with pytest.raises(ConfigError, match="differs from the run's 'unet'"):
        train_model(sic_frame, run_dir, tiny(epochs=5, resume=True, model="unet++"))
    same = train_model(sic_frame, run_dir, tiny(epochs=3, resume=True, model="unet"))  # the same as before: fine
    assert same["stopped_because"] == "epochs (already complete)" and same["epochs_run"] == 3
    with pytest.raises(Exception, match="nothing to resume"):
        train_model(sic_frame, tmp_path / "never", tiny(resume=True))


def test_an_existing_run_needs_overwrite_or_resume(sic_frame, trained_sic) -> None:
    run_dir, _ = trained_sic
    with pytest.raises(Exception, match="--overwrite"):
        train_model(sic_frame, run_dir, tiny())


def _fake_batch(prob: np.ndarray, truth: np.ndarray) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    logits = torch.logit(torch.as_tensor(prob, dtype=torch.float32))[:, None]
    batch = {"target": torch.as_tensor(truth, dtype=torch.float32), "valid": torch.ones(truth.shape, dtype=torch.bool)}
    return logits, batch


def test_threshold_sweep_picks_the_separating_threshold() -> None:
    truth = np.zeros((3, 8, 8))
    truth[0, 2:4, :] = 1
    truth[1, :, 5] = 1  # patch 2 stays empty
    prob = np.where(truth > 0, 0.68, 0.57)  # only thresholds in (0.57, 0.68] separate
    thresholds = [round(0.1 + 0.05 * i, 2) for i in range(17)]
    result = ValidationResult("binary", 1, thresholds=thresholds)
    result.update(*_fake_batch(prob, truth), loss=0.0)
    mean_dice = result.mean_dice()
    best, at_edge = pick_threshold(thresholds, mean_dice)
    assert best == 0.6 and not at_edge  # 0.6 and 0.65 both score 1: the lower wins
    assert mean_dice[thresholds.index(0.6)] == pytest.approx(1.0)
    # at 0.5 every pixel is predicted: Dice 2*16/(64+16) and 2*8/(64+8); the empty patch is left out
    # of the mean (it would reward predicting nothing), its false positives count in the pooled dice
    assert mean_dice[thresholds.index(0.5)] == pytest.approx((32 / 80 + 16 / 72) / 2)
    assert result.metrics(0.6) == {"dice": 1.0, "precision": 1.0, "recall": 1.0, "patch_dice": 1.0}

    edge_prob = np.where(truth > 0, 0.97, 0.88)  # only 0.9, the top of the range, separates
    best, at_edge = pick_threshold(thresholds, mean_dice_of(edge_prob, truth, thresholds))
    assert best == 0.9 and at_edge

    # empty truth and empty prediction: 1 (nothing to find); one empty: 0
    dice = patch_dice(np.array([[[0.1]], [[0.9]]]), np.array([[[0.0]], [[0.0]]]), np.ones((2, 1, 1), bool), [0.5])
    np.testing.assert_array_equal(dice, [[1.0, 0.0]])


def mean_dice_of(prob: np.ndarray, truth: np.ndarray, thresholds: list[float]) -> list[float]:
    result = ValidationResult("binary", 1, thresholds=thresholds)
    result.update(*_fake_batch(prob, truth), loss=0.0)
    return result.mean_dice()


def test_binary_run_sweeps_the_threshold_and_warns_at_the_edge(binary_frame, tmp_path: Path) -> None:
    options = tiny(epochs=2, thresholds=[0.3, 0.7], model="unet")  # both ends of a 2-value sweep are edges
    summary = train_model(binary_frame, tmp_path / "lines", options)
    config = read_config(tmp_path / "lines")
    assert summary["threshold"] in (0.3, 0.7) and config["threshold"] == summary["threshold"]
    assert config["threshold_sweep"]["thresholds"] == [0.3, 0.7]
    assert config["training"]["loss"] == "bce-ftl"
    assert {"dice", "precision", "recall", "patch_dice"} == set(config["training"]["val_metrics"])
    assert any("edge of the sweep" in w for w in summary["warnings"])


def test_time_limit_stops_after_the_current_step(sic_frame, tmp_path: Path) -> None:
    summary = train_model(sic_frame, tmp_path / "short", tiny(epochs=50, time_limit=1e-5))
    assert summary["stopped_because"] == "time limit" and summary["epochs_run"] == 1
    assert [row["steps"] for row in _history(tmp_path / "short")] == ["1"]
    assert (tmp_path / "short" / "model.safetensors").is_file()


def test_ctrl_c_keeps_the_best_model(sic_frame, tmp_path: Path) -> None:
    def interrupt(event: dict) -> None:
        if event["event"] == "step" and event["epoch"] == 2:
            raise KeyboardInterrupt

    summary = train_model(sic_frame, tmp_path / "stopped", tiny(epochs=5), progress=interrupt)
    assert summary["stopped_because"] == "interrupted" and summary["best_epoch"] == 1
    model, config = load_model_dir(tmp_path / "stopped")
    assert config["training"]["stopped_because"] == "interrupted"


def test_save_at_keeps_an_early_model(sic_frame, tmp_path: Path) -> None:
    train_model(sic_frame, tmp_path / "run", tiny(epochs=4, save_at=0.5, steps_per_epoch=1))
    early = read_config(tmp_path / "run" / "at_50pct")
    assert early["training"]["epochs_run"] == 2
    assert read_config(tmp_path / "run")["training"]["epochs_run"] == 4
    assert [row["steps"] for row in _history(tmp_path / "run")] == ["1"] * 4


def test_defaults_follow_task_and_model(sic_frame, binary_frame) -> None:
    sic = resolve_setup(sic_frame, TrainOptions())
    assert (sic.model, sic.loss, sic.pool, sic.lr, sic.lr_schedule) == ("unet", "regional", "scene", 1e-4, "constant")
    binary = resolve_setup(binary_frame, TrainOptions())
    assert (binary.model, binary.loss, binary.pool) == ("unet-aspp", "bce-ftl", "patch")
    fctl = resolve_setup(binary_frame, TrainOptions(model="fctl"))
    assert (fctl.loss, fctl.loss_args, fctl.lr, fctl.lr_schedule) == ("focal", {"gamma": 3.0}, 5e-5, "poly")
    mine = resolve_setup(binary_frame, TrainOptions(model="fctl", lr=1e-3, lr_schedule="constant"))
    assert (mine.lr, mine.lr_schedule) == (1e-3, "constant")
    unetpp = resolve_setup(sic_frame, TrainOptions(model="unet++"))
    assert unetpp.ds_weights == [0.1, 0.2, 0.3, 0.4]
    assert sic.model_args == {"in_channels": 2, "out_channels": 1}

    with pytest.raises(ConfigError, match="valid losses for sic: regional, pixel-mse, pixel-ce"):
        resolve_setup(sic_frame, TrainOptions(loss="focal"))
    with pytest.raises(ConfigError, match="ds_weights"):
        resolve_setup(sic_frame, TrainOptions(loss_args={"ds_weights": "0.5,0.5"}))
    with pytest.raises(ConfigError, match="no option"):
        resolve_setup(binary_frame, TrainOptions(loss_args={"alpah": 0.5}))


def test_deep_supervision_and_context_models_train(sic_frame, tmp_path: Path) -> None:
    unetpp = tiny(epochs=1, steps_per_epoch=2, model="unet++", model_args={"widths": [2, 2, 4, 4, 4]},
                  loss_args={"ds_weights": [0.25, 0.25, 0.25, 0.25]})
    summary = train_model(sic_frame, tmp_path / "pp", unetpp)
    assert np.isfinite(summary["best_val_loss"])
    assert read_config(tmp_path / "pp")["training"]["ds_weights"] == [0.25, 0.25, 0.25, 0.25]
    with pytest.raises(ConfigError, match="one weight per head"):
        train_model(sic_frame, tmp_path / "pp3", unetpp.updated(loss_args={"ds_weights": [0.5, 0.5]}))

    fctl = tiny(epochs=1, steps_per_epoch=2, model="fctl", model_args={"width": 1 / 32, "context_scales": [1.0, 2.0]})
    train_model(sic_frame, tmp_path / "fctl", fctl)
    config = read_config(tmp_path / "fctl")
    assert config["context_scales"] == [1.0, 2.0] and config["training"]["lr_schedule"] == "poly"


def test_multiclass_takes_classes_from_the_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    classes = np.zeros((64, 64), "uint8")
    classes[:, 20:40] = 1
    classes[:, 40:] = 2
    classes[:4, :4] = 255  # nodata
    image = np.stack([classes.astype("float32") + rng.normal(0, 0.2, classes.shape)]).astype("float32")
    grid = affine_grid(64, 64)
    scene = write_raster(tmp_path / "scene.tif", image, grid, nodata=float("nan"), band_names=["HH"])
    labels = write_raster(tmp_path / "classes.tif", classes, grid, nodata=255, band_names=["class"],
                          tags={"class_names": "water,young ice,old ice"}, categorical=True)
    frame = patch_frame(scene, labels, grid_windows(64, 32, 16, lambda r, c: "val" if c == 32 else "train"),
                        task="multiclass")
    summary = train_model(frame, tmp_path / "run", tiny(epochs=1))
    config = read_config(tmp_path / "run")
    assert config["n_classes"] == 3 and config["class_names"] == ["water", "young ice", "old ice"]
    assert config["model"]["args"]["out_channels"] == 3 and config["training"]["loss"] == "focal"
    assert 0 <= summary["val_metrics"]["miou"] <= 1


def test_options_reject_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ConfigError, match="unknown option 'epoch'"):
        TrainOptions.from_mapping({"epoch": 3})
    with pytest.raises(ConfigError, match="must be an integer"):
        TrainOptions.from_mapping({"epochs": "many"})
    with pytest.raises(ConfigError, match="between 0 and 1"):
        TrainOptions.from_mapping({"save_at": 1.5})
    options = TrainOptions.from_mapping({"batch-size": 2, "inputs": "HH,HV", "thresholds": [0.4, 0.6]})
    assert (options.batch_size, options.inputs, options.thresholds) == (2, ["HH", "HV"], [0.4, 0.6])
    merged = options.updated(model_args={"widths": [4, 8, 8, 8]}).updated(model_args={"x": 1})
    assert merged.model_args == {"widths": [4, 8, 8, 8], "x": 1}


# --------------------------------------------------------------------------- the commands


def _write_patches(frame, path: Path) -> Path:
    from icetools.sampling import write_patches

    return write_patches(frame, path)


def _one_line_error(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_cli_flags_override_the_yaml_config(sic_frame, tmp_path: Path) -> None:
    patches = _write_patches(sic_frame, tmp_path / "patches.gpkg")
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"epochs": 3, "batch-size": 2, "lr": 0.002, "workers": 0,
                                      "model_args": {"widths": [4, 8, 8, 8]}}))
    result = runner.invoke(app, ["train", "--patches", str(patches), "-o", str(tmp_path / "run"),
                                 "--config", str(config), "--epochs", "1", "--model-arg", "widths=[2,4,4,4]"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    options = read_config(tmp_path / "run")["training"]["options"]
    assert (options["epochs"], options["batch_size"], options["lr"]) == (1, 2, 0.002)
    assert options["model_args"] == {"widths": [2, 4, 4, 4]}
    assert "training summary" in result.stderr and "best epoch" in result.stderr


def test_cli_errors_are_one_line(sic_frame, tmp_path: Path) -> None:
    patches = _write_patches(sic_frame, tmp_path / "patches.gpkg")
    bad_loss = runner.invoke(app, ["train", "--patches", str(patches), "-o", str(tmp_path / "a"), "--loss", "focal"])
    assert bad_loss.exit_code == 1
    assert "valid losses for sic: regional, pixel-mse, pixel-ce" in _one_line_error(bad_loss)

    config = tmp_path / "bad.yaml"
    config.write_text("epochs: 2\nlearning_rate: 0.1\n")
    bad_key = runner.invoke(app, ["train", "--patches", str(patches), "-o", str(tmp_path / "b"), "--config", str(config)])
    assert bad_key.exit_code == 1 and "unknown option 'learning_rate'" in _one_line_error(bad_key)


def test_cli_exits_130_when_interrupted(sic_frame, tmp_path: Path, monkeypatch) -> None:
    patches = _write_patches(sic_frame, tmp_path / "patches.gpkg")
    summary = {"run_dir": "r", "model": "unet", "loss": "regional", "epochs_run": 1, "best_epoch": 1,
               "stopped_because": "interrupted", "warnings": [], "val_metrics": {}, "seconds": 1.0}
    monkeypatch.setattr(train_module, "train_model", lambda *args, **kwargs: summary)
    result = runner.invoke(app, ["train", "--patches", str(patches), "-o", str(tmp_path / "r")])
    assert result.exit_code == 130 and "interrupted" in result.stderr


def test_sweep_ranks_runs_by_validation_loss(sic_frame, tmp_path: Path) -> None:
    patches = _write_patches(sic_frame, tmp_path / "patches.gpkg")
    result = runner.invoke(app, [
        "sweep", "--patches", str(patches), "-o", str(tmp_path / "sweep"), "--model", "unet",
        "--model-arg", "widths=[2,2,2,2],[4,8,8,8]", "--epochs", "1", "--workers", "0", "--batch-size", "4",
        "--lr", "0.003",
    ])
    assert result.exit_code == 0, result.stderr
    with (tmp_path / "sweep" / "sweep.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {row["model.widths"] for row in rows} == {"2,2,2,2", "4,8,8,8"}
    losses = [float(row["best_val_loss"]) for row in rows]
    assert losses == sorted(losses)
    for row in rows:
        assert read_config(tmp_path / "sweep" / row["run"])["model"]["args"]["widths"] == [
            int(w) for w in row["model.widths"].split(",")
        ]
    assert "sweep ranked by validation loss" in result.stderr
