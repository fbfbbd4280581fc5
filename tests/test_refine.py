"""Tests for FCtL's refinement stage: the refiner's training on crude mosaics (train --from) and the
two-pass ``predict --merge refine`` (icetools.refine, icetools.predict, icetools.train).

The seam test plants stripes of the wrong class along window borders into a crude mosaic, trains a
tiny refiner on one such mosaic and refines a held-out one through ``predict_scene``: the stripes
must mostly go, the rest must stay right. A pass-through "segmentation model" (the scene holds log
probabilities, softmax gives them back) lets the planted mosaic be the crude pass exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from scenes import affine_grid
from scipy import ndimage
from test_data import grid_windows, patch_frame, write_sic_scene
from typer.testing import CliRunner

from icetools.checkpoint import read_config, save_model_dir
from icetools.cli.app import app
from icetools.data import PatchDataset
from icetools.errors import ConfigError
from icetools.io.raster import write_raster
from icetools.losses import build_loss
from icetools.models import build_model
from icetools.predict import load_predictor, make_predictor, predict_scene
from icetools.refine import RefineSource, crude_band_names, identity_normalization
from icetools.train import TrainOptions, resolve_setup, train_model

SIZE = 128
TILE = 32
SEAM_PERIOD = 32  # stripes where window borders fall with 32-px tiles
SEAM_WIDTH = 3
CLASSES = ["a", "b"]


def planted_mosaic(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(truth classes, crude probabilities (2, H, W), seam mask): blobs, noise, wrong-class stripes."""
    rng = np.random.default_rng(seed)
    truth = (ndimage.gaussian_filter(rng.normal(size=(SIZE, SIZE)), 5) > 0).astype("uint8")
    p_b = np.where(truth == 1, 0.8, 0.2) + rng.normal(0, 0.08, truth.shape)
    stripes = (np.arange(SIZE) % SEAM_PERIOD) < SEAM_WIDTH
    seam = stripes[:, None] | stripes[None, :]
    p_b = np.clip(np.where(seam, 1 - p_b, p_b), 0.02, 0.98).astype("float32")
    return truth, np.stack([1 - p_b, p_b]), seam


class PassThrough(torch.nn.Module):
    """A 'segmentation model' whose logits are its input: a scene of log-probabilities comes back as is."""

    in_channels = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


SEGMENTER_CONFIG = {"task": "multiclass", "inputs": ["x0", "x1"], "n_classes": 2, "class_names": CLASSES,
                    "patch_size": TILE}
REFINER_CONFIG = {
    "task": "multiclass", "inputs": list(crude_band_names(SEGMENTER_CONFIG, 2)), "normalization": identity_normalization(2),
    "n_classes": 2, "class_names": CLASSES, "patch_size": TILE, "context_scales": [1.0, 2.0],
    "refines": {"model": "pass-through", "task": "multiclass", "n_classes": 2},
}


def write_log_scene(path: Path, crude: np.ndarray) -> Path:
    return write_raster(path, np.log(crude), affine_grid(SIZE, SIZE), nodata=None, band_names=["x0", "x1"])


@pytest.fixture(scope="module")
def refiner_dir(tmp_path_factory) -> Path:
    """A tiny refiner trained for 120 steps on one planted mosaic, read as training reads it."""
    folder = tmp_path_factory.mktemp("refiner")
    truth, crude, _ = planted_mosaic(seed=0)
    grid = affine_grid(SIZE, SIZE)
    crude_path = write_raster(folder / "crude.tif", crude, grid, nodata=float("nan"), band_names=REFINER_CONFIG["inputs"])
    labels = write_raster(folder / "truth.tif", truth, grid, nodata=255, band_names=["class"])
    frame = patch_frame(crude_path, labels, grid_windows(SIZE, TILE, 8, lambda r, c: "train"), size=TILE,
                        task="multiclass")
    dataset = PatchDataset(frame, "train", inputs=REFINER_CONFIG["inputs"], normalization=identity_normalization(2),
                           task="multiclass", context_scales=(1.0, 2.0))
    samples = [dataset[i] for i in range(len(dataset))]
    images = torch.from_numpy(np.stack([s["image"] for s in samples]))
    targets = torch.from_numpy(np.stack([s["target"] for s in samples]))
    torch.manual_seed(0)
    model = build_model("refiner", in_channels=2, out_channels=2, widths=[6, 12, 24])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = build_loss("focal", gamma=2.0)
    generator = torch.Generator().manual_seed(0)
    for _ in range(120):
        pick = torch.randint(0, len(images), (12,), generator=generator)
        turns = int(torch.randint(0, 4, (1,), generator=generator))
        x, y = torch.rot90(images[pick], turns, (-2, -1)), torch.rot90(targets[pick], turns, (-2, -1))
        loss = loss_fn(model(x), {"target": y, "valid": torch.ones_like(y, dtype=torch.bool)})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    save_model_dir(folder / "model", model.eval(), REFINER_CONFIG)
    return folder / "model"


def test_refine_removes_planted_seams_and_keeps_the_rest(refiner_dir: Path, tmp_path: Path) -> None:
    truth, crude, seam = planted_mosaic(seed=1)
    scene = write_log_scene(tmp_path / "scene.tif", crude)
    summary = predict_scene(scene, PassThrough(), SEGMENTER_CONFIG, tmp_path / "out.tif", tile=TILE, overlap=0.5,
                            merge="refine", refiner=refiner_dir, probabilities=True, device="cpu")
    with rasterio.open(tmp_path / "out.tif") as ds:
        refined = ds.read(1)
        tags = ds.tags()
    with rasterio.open(tmp_path / "out_probs.tif") as ds:
        probabilities = ds.read()
    crude_classes = crude.argmax(axis=0)
    crude_seam, refined_seam = (crude_classes != truth)[seam].mean(), (refined != truth)[seam].mean()
    crude_rest, refined_rest = (crude_classes != truth)[~seam].mean(), (refined != truth)[~seam].mean()
    assert crude_seam == 1.0  # every planted pixel starts wrong
    assert refined_seam <= 0.5 * crude_seam
    assert refined_rest <= crude_rest + 0.03
    np.testing.assert_array_equal(refined, probabilities.argmax(axis=0))
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)
    assert tags["merge"] == "refine" and tags["refiner"] == str(refiner_dir)
    assert summary["merge"] == "refine" and summary["refiner"] == str(refiner_dir)
    # only the products remain: the temporary crude mosaic is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif", "out_probs.tif", "scene.tif"]


class Broken(torch.nn.Module):
    """A refiner that fails mid-run (a full crude mosaic is on disk by then)."""

    in_channels = 2
    context_scales = (1.0, 2.0)
    spec = {"name": "refiner", "args": {"in_channels": 2, "out_channels": 2}}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("refiner failed")


def test_a_failing_refine_pass_leaves_no_crude_file_and_no_output(tmp_path: Path) -> None:
    _, crude, _ = planted_mosaic(seed=2)
    scene = write_log_scene(tmp_path / "scene.tif", crude)
    broken = make_predictor(Broken(), REFINER_CONFIG, device="cpu")
    with pytest.raises(RuntimeError, match="refiner failed"):
        predict_scene(scene, PassThrough(), SEGMENTER_CONFIG, tmp_path / "out.tif", tile=TILE, merge="refine",
                      refiner=broken, device="cpu")
    assert [p.name for p in tmp_path.iterdir()] == ["scene.tif"]


def test_a_refiner_must_fit_the_models_classes(refiner_dir: Path, tmp_path: Path) -> None:
    three = {**SEGMENTER_CONFIG, "inputs": ["x0", "x1", "x2"], "n_classes": 3, "class_names": ["a", "b", "c"]}
    model = torch.nn.Conv2d(3, 3, 1)
    scene = write_raster(tmp_path / "s.tif", np.zeros((3, 40, 40), "float32"), affine_grid(40, 40), nodata=None,
                         band_names=["x0", "x1", "x2"])
    with pytest.raises(ConfigError, match="refines 2 classes but the model has 3"):
        predict_scene(scene, model, three, tmp_path / "o.tif", tile=TILE, merge="refine", refiner=refiner_dir)
    not_a_refiner = {key: value for key, value in REFINER_CONFIG.items() if key != "refines"}
    with pytest.raises(ConfigError, match="is not a refiner"):
        predict_scene(scene, model, three, tmp_path / "o.tif", tile=TILE, merge="refine",
                      refiner=make_predictor(Broken(), not_a_refiner, device="cpu"))
    with pytest.raises(ConfigError, match="--merge refine only"):
        predict_scene(scene, model, three, tmp_path / "o.tif", tile=TILE, refiner=refiner_dir)
    assert [p.name for p in tmp_path.iterdir()] == ["s.tif"]


def test_cli_merge_refine_without_a_refiner_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "s.tif"), "-m", str(tmp_path / "m"),
                                      "-o", str(tmp_path / "o.tif"), "--merge", "refine"])
    assert result.exit_code == 1
    assert result.output.strip() == "error: --merge refine needs --refiner REFINER_DIR"


# ------------------------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def multiclass_run(tmp_path_factory) -> tuple[Path, object, Path]:
    """A 3-class scene, its patches, and a tiny U-Net trained one epoch on them (the --from model)."""
    folder = tmp_path_factory.mktemp("multiclass")
    rng = np.random.default_rng(5)
    classes = np.zeros((64, 64), "uint8")
    classes[:, 20:40] = 1
    classes[:, 40:] = 2
    image = (classes.astype("float32") + rng.normal(0, 0.3, classes.shape))[None].astype("float32")
    grid = affine_grid(64, 64)
    scene = write_raster(folder / "scene.tif", image, grid, nodata=float("nan"), band_names=["HH"])
    labels = write_raster(folder / "classes.tif", classes, grid, nodata=255, band_names=["class"],
                          tags={"class_names": "water,young ice,old ice"}, categorical=True)
    frame = patch_frame(scene, labels, grid_windows(64, 32, 16, lambda r, c: "val" if c == 32 else "train"),
                        task="multiclass")
    options = TrainOptions.from_mapping({"epochs": 1, "batch_size": 4, "workers": 0, "lr": 3e-3,
                                         "model_args": {"widths": [4, 8, 8, 8]}})
    train_model(frame, folder / "seg", options)
    return scene, frame, folder / "seg"


def refiner_options(seg: Path, **changes: object) -> TrainOptions:
    values = {"from_model": str(seg), "epochs": 1, "steps_per_epoch": 2, "batch_size": 4, "workers": 0,
              "model_args": {"widths": [4, 8]}, **changes}
    return TrainOptions.from_mapping(values)


def test_train_from_a_model_learns_on_its_crude_mosaics(multiclass_run, tmp_path: Path) -> None:
    scene, frame, seg = multiclass_run
    summary = train_model(frame, tmp_path / "ref", refiner_options(seg))
    config = read_config(tmp_path / "ref")
    bands = ["p_water", "p_young ice", "p_old ice"]
    assert summary["model"] == "refiner" and config["model"]["name"] == "refiner"
    assert config["refines"]["model_dir"] == str(seg.resolve()) and config["refines"]["model"] == "unet"
    assert config["refines"]["task"] == "multiclass" and config["refines"]["n_classes"] == 3
    assert config["inputs"] == config["refines"]["crude_inputs"] == bands
    assert config["normalization"] == {"mean": [0.0] * 3, "std": [1.0] * 3}
    assert config["context_scales"] == [1.0, 2.0] and config["n_classes"] == 3
    assert config["training"]["loss"] == "focal" and config["training"]["loss_args"] == {"gamma": 3.0}
    assert config["model"]["args"]["in_channels"] == 3 and config["model"]["args"]["out_channels"] == 3

    # The crude mosaic is what predict's normal averaging pass makes: the model's probabilities.
    crude = tmp_path / "ref" / "crude" / "scene_crude.tif"
    predict_scene(scene, load_predictor(seg, "cpu"), None, tmp_path / "p.tif", overlap=0.25, probabilities=True)
    with rasterio.open(crude) as made, rasterio.open(tmp_path / "p_probs.tif") as predicted:
        assert made.count == 3 and made.dtypes[0] == "float32" and list(made.descriptions) == bands
        np.testing.assert_array_equal(made.read(), predicted.read())

    # Reused while scene and model are unchanged, remade when the model changes.
    stamp = crude.stat().st_mtime_ns
    train_model(frame, tmp_path / "ref", refiner_options(seg, overwrite=True))
    assert crude.stat().st_mtime_ns == stamp
    weights = seg / "model.safetensors"
    weights.write_bytes(weights.read_bytes())  # same weights, a newer file: the stamp no longer matches
    train_model(frame, tmp_path / "ref", refiner_options(seg, overwrite=True))
    assert crude.stat().st_mtime_ns != stamp

    # ... and the trained refiner pairs with its model in predict.
    predict_scene(scene, load_predictor(seg, "cpu"), None, tmp_path / "r.tif", merge="refine",
                  refiner=tmp_path / "ref")
    with rasterio.open(tmp_path / "r.tif") as ds:
        assert ds.tags()["merge"] == "refine" and set(np.unique(ds.read(1))) <= {0, 1, 2}


def test_refiner_defaults_and_mismatches(tmp_path: Path) -> None:
    scene, labels, _ = write_sic_scene(tmp_path)
    frame = patch_frame(scene, labels, grid_windows(96, 32, 32, lambda r, c: "val" if c == 64 else "train"))
    sic_model = RefineSource(predictor=None, model_dir=tmp_path / "m", model_name="unet", task="sic",  # type: ignore[arg-type]
                             n_classes=1, band_names=("probability",))
    setup = resolve_setup(frame, TrainOptions(from_model="m"), refines=sic_model)
    assert (setup.model, setup.loss, setup.inputs) == ("refiner", "pixel-mse", ["probability"])
    assert setup.model_args["in_channels"] == 1 and setup.model_args["out_channels"] == 1
    assert setup.refines["task"] == "sic"
    classes = RefineSource(predictor=None, model_dir=tmp_path / "m", model_name="fctl", task="multiclass",  # type: ignore[arg-type]
                           n_classes=4, band_names=("p0", "p1", "p2", "p3"))
    with pytest.raises(ConfigError, match="multiclass model but the patches are sic"):
        resolve_setup(frame, TrainOptions(from_model="m"), refines=classes)
    with pytest.raises(ConfigError, match="--model refiner needs --from"):
        TrainOptions(model="refiner").validate()
    with pytest.raises(ConfigError, match="--from trains a refiner"):
        TrainOptions(model="unet", from_model="m").validate()
