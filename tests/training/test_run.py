"""Tests for icetools.training.run (train_model end to end): learning, the model directory it leaves,
the binary threshold sweep and multiclass labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import affine_grid
from test_data import grid_windows, patch_frame

from icetools.data import PatchDataset, make_loader
from icetools.io.raster import write_raster
from icetools.losses import build_loss
from icetools.modeldir import load_model_dir, read_config
from icetools.progress import Event
from icetools.training import train_model, validate

from .helpers import TINY_UNET, history, tiny


def test_training_lowers_val_loss_and_leaves_a_model_directory(trained_sic, sic_frame) -> None:
    run_dir, summary = trained_sic
    rows = history(run_dir)
    val_losses = [float(row["val_loss"]) for row in rows]
    assert [int(row["epoch"]) for row in rows] == list(range(1, 9))
    assert min(val_losses[-3:]) < 0.7 * val_losses[0]
    assert summary["best_epoch"] == 1 + int(np.argmin(val_losses))
    assert {"val_r2", "val_rmse", "val_polygon_r2"} <= set(rows[0])
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


def test_binary_run_sweeps_the_threshold_and_warns_at_the_edge(binary_frame, tmp_path: Path) -> None:
    options = tiny(epochs=2, thresholds=[0.3, 0.7], model="unet")  # both ends of a 2-value sweep are edges
    events: list[Event] = []
    summary = train_model(binary_frame, tmp_path / "lines", options, progress=events.append)
    config = read_config(tmp_path / "lines")
    assert summary["threshold"] in (0.3, 0.7) and config["threshold"] == summary["threshold"]
    assert config["threshold_sweep"]["thresholds"] == [0.3, 0.7]
    assert config["training"]["loss"] == "bce-ftl"
    assert {"dice", "precision", "recall", "patch_dice"} == set(config["training"]["val_metrics"])
    assert any("edge of the sweep" in w for w in summary["warnings"])
    chosen = [e.info for e in events if e.stage == "threshold"]
    assert len(chosen) == 1 and chosen[0]["threshold"] == summary["threshold"]
    assert chosen[0]["mean_dice"] == max(config["threshold_sweep"]["mean_dice"])


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
