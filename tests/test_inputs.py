"""Tests for icetools.inputs: the phase enters as (cos, sin), and training and predict read the same channels."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures import affine_grid, write_scene
from rasterio.windows import Window

from icetools.data import PatchDataset, compute_normalization
from icetools.errors import ConfigError, MissingVariableError
from icetools.inference import load_predictor, make_predictor, plan_windows, probability_pass
from icetools.inputs import COS_SIN, IDENTITY, InputSpec, is_phase_band, read_inputs
from icetools.io.raster import write_raster
from icetools.io.scene import open_scene
from icetools.modeldir import save_model_dir
from icetools.models import build_model
from icetools.training import TrainOptions, resolve_setup

SIZE = 64
TILE = 32
PHASE_SPEC = InputSpec.from_mapping(["phase", "magnitude"], {"phase": COS_SIN})
NORMALIZATION = {"mean": [0.1, -0.1, 2.0], "std": [0.7, 0.7, 1.5]}


# --- the transform ------------------------------------------------------------------------------


def test_cos_sin_gives_cos_and_sin_of_the_angle_and_keeps_nan() -> None:
    phase = np.array([[0.0, np.pi / 2, -np.pi / 3, np.nan]], "float32")
    magnitude = np.array([[1.0, 2.0, 3.0, 4.0]], "float32")
    channels = PHASE_SPEC.apply(np.stack([phase, magnitude]))
    assert channels.shape == (3, 1, 4) and channels.dtype == np.float32
    np.testing.assert_allclose(channels[0, 0, :3], np.cos(phase[0, :3]), atol=1e-7)
    np.testing.assert_allclose(channels[1, 0, :3], np.sin(phase[0, :3]), atol=1e-7)
    np.testing.assert_array_equal(channels[2], magnitude)
    assert np.isnan(channels[:2, 0, 3]).all() and channels[2, 0, 3] == 4.0


def test_cos_sin_is_continuous_across_plus_minus_pi() -> None:
    eps = 1e-3
    near = np.array([[[np.pi - eps, -np.pi + eps]]], "float32")
    channels = InputSpec.from_mapping(["phase"], {"phase": COS_SIN}).apply(near)
    assert np.abs(channels[:, 0, 0] - channels[:, 0, 1]).max() < 3 * eps  # the raw angles differ by 2 pi
    assert abs(float(near[0, 0, 0] - near[0, 0, 1])) > 6


def test_phase_bands_get_cos_sin_by_default_and_overrides_win() -> None:
    assert [is_phase_band(n) for n in ("phase", "Phase", "interferometric_phase", "DInSAR_PHASE")] == [True] * 4
    assert [is_phase_band(n) for n in ("magnitude", "phases", "phase_ramp", "nersc_sar_primary")] == [False] * 4
    spec = InputSpec.default(["phase", "magnitude"])
    assert spec.record() == {"phase": COS_SIN, "magnitude": IDENTITY}
    assert spec.channel_names == ("cos(phase)", "sin(phase)", "magnitude") and spec.n_channels == 3
    assert InputSpec.default(["phase", "magnitude"], {"phase": IDENTITY}).is_identity
    assert InputSpec.default(["a", "b"], {"b": COS_SIN}).transforms == (IDENTITY, COS_SIN)
    with pytest.raises(ConfigError, match="not inputs"):
        InputSpec.default(["phase"], {"magnitude": COS_SIN})
    with pytest.raises(ConfigError, match="valid transforms: identity, cos-sin"):
        InputSpec.default(["phase"], {"phase": "sin-cos"})


def test_old_configs_without_transforms_read_every_band_as_it_is() -> None:
    spec = InputSpec.from_config({"inputs": ["phase", "magnitude"]})
    assert spec is not None and spec.is_identity  # absent means identity, not today's default
    assert InputSpec.from_config({}) is None
    with pytest.raises(ConfigError, match="needs \"inputs\""):
        InputSpec.from_config({"input_transforms": {"phase": COS_SIN}})


def test_train_options_take_the_transforms_and_setup_records_them(tmp_path: Path) -> None:
    frame = _frame(_write_interferogram(tmp_path), task="binary", splits=("train", "val"))
    setup = resolve_setup(frame, TrainOptions(model_args={"widths": [4, 8, 8, 8]}))
    assert setup.inputs == ["phase", "magnitude"]
    assert setup.input_transforms == {"phase": COS_SIN, "magnitude": IDENTITY}
    assert setup.model_args["in_channels"] == 3
    raw = resolve_setup(frame, TrainOptions(input_transforms={"phase": "identity"}))
    assert raw.model_args["in_channels"] == 2
    with pytest.raises(ConfigError, match="valid transforms"):
        TrainOptions(input_transforms={"phase": "angle"}).validate()
    with pytest.raises(ConfigError, match="not inputs"):
        resolve_setup(frame, TrainOptions(input_transforms={"coherence": COS_SIN}))


# --- reading -------------------------------------------------------------------------------------


def _write_interferogram(folder: Path, *, seed: int = 0) -> Path:
    """A wrapped phase (with a NaN corner) and a magnitude, plus a line mask beside it (lines.tif)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:SIZE, :SIZE]
    phase = np.angle(np.exp(1j * (0.3 * cols + 0.05 * rows**1.5))).astype("float32")  # wraps many times
    magnitude = rng.gamma(2.0, 1.0, size=(SIZE, SIZE)).astype("float32")
    phase[:6, :6] = np.nan
    grid = affine_grid(SIZE, SIZE)
    scene = write_scene(folder / "ifg.tif", grid, data=np.stack([phase, magnitude]), band_names=["phase", "magnitude"])
    line = np.zeros((SIZE, SIZE), "uint8")
    line[30:32, :] = 1
    write_raster(folder / "lines.tif", line, grid, nodata=None, band_names=["line"], categorical=True)
    return scene


def _frame(scene: Path, *, task: str, splits: tuple[str, ...] = ("train",)) -> pd.DataFrame:
    """Every tile-aligned window of the scene, in the given splits by column."""
    rows = [
        {"scene": str(scene), "labels": str(scene.with_name("lines.tif")), "task": task, "row_off": r,
         "col_off": c, "size": TILE, "split": splits[(c // TILE) % len(splits)], "foreground": 1.0, "unseen": 1.0,
         "valid": 1.0, "patch_id": (r // TILE) * (SIZE // TILE) + c // TILE}
        for r in range(0, SIZE, TILE) for c in range(0, SIZE, TILE)
    ]
    return pd.DataFrame(rows)


def test_read_inputs_keeps_nan_invalid_and_pads_beyond_the_edge(tmp_path: Path) -> None:
    scene = open_scene(_write_interferogram(tmp_path))
    channels, valid = read_inputs(scene, Window(-4, -4, 16, 16), PHASE_SPEC, pad_mode="reflect")
    assert channels.shape == (3, 16, 16) and valid.shape == (16, 16)
    assert not valid[:4].any() and not valid[:, :4].any()  # beyond the edge: never valid, even reflected
    assert not valid[4:10, 4:10].any() and np.isnan(channels[:2, 4:10, 4:10]).all()  # the NaN phase corner
    assert np.isfinite(channels[2, 4:10, 4:10]).all()  # the magnitude itself is there
    assert valid[10:, 10:].all()
    raw = scene.read(["phase"], Window(10, 10, 2, 2))[0]  # scene pixels 10..11 = window pixels 14..15
    np.testing.assert_array_equal(channels[0, 14:, 14:], np.cos(raw))


def test_normalisation_is_computed_on_the_transformed_channels(tmp_path: Path) -> None:
    scene_path = _write_interferogram(tmp_path)
    stats = compute_normalization(_frame(scene_path, task="binary"), ["phase", "magnitude"],
                                  input_transforms={"phase": COS_SIN})
    channels, valid = read_inputs(open_scene(scene_path), Window(0, 0, SIZE, SIZE), PHASE_SPEC)
    values = channels[:, valid].astype("float64")
    np.testing.assert_allclose(stats["mean"], values.mean(axis=1), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(stats["std"], values.std(axis=1), rtol=1e-5)


# --- the same channels in training and in predict ------------------------------------------------


class Recorder(torch.nn.Module):
    """Passes batches to the model and keeps what it was fed."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.model(x)


def _model_dir(folder: Path, model: torch.nn.Module, **config: object) -> Path:
    base = {"task": "binary", "inputs": ["phase", "magnitude"], "input_transforms": {"phase": COS_SIN},
            "normalization": NORMALIZATION, "patch_size": TILE, "threshold": 0.5}
    save_model_dir(folder / "model", model, {**base, **config})
    return folder / "model"


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(lambda: build_model("unet", in_channels=3, widths=[4, 8, 8, 8]), id="unet"),
        pytest.param(lambda: build_model("fctl", in_channels=3, width=1 / 32, context_scales=[1.0, 2.0]), id="fctl"),
    ],
)
def test_predict_feeds_the_model_what_training_feeds_it(tmp_path: Path, model) -> None:
    scene_path = _write_interferogram(tmp_path)
    built = model().eval()
    predictor = load_predictor(_model_dir(tmp_path, built, context_scales=list(built.context_scales)), device="cpu")
    assert predictor.input_spec == PHASE_SPEC and predictor.in_channels == 3
    predictor.out_channels()  # known before the recorder hides the model's spec
    recorder = Recorder(predictor.model)
    predictor.model = recorder
    plan = plan_windows(SIZE, SIZE, tile=TILE, overlap=0.0)
    with open_scene(scene_path) as scene:
        probability_pass(scene, predictor, plan, write_rows=lambda window, probs: None, batch=2)
    fed = torch.cat(recorder.seen).numpy()  # the windows in row order: (0, 0), (0, 32), (32, 0), (32, 32)
    if fed.ndim == 4 and predictor.window_axis:
        fed = fed[:, None]

    dataset = PatchDataset(
        _frame(scene_path, task="binary"), "train", inputs=predictor.inputs, input_transforms=PHASE_SPEC.record(),
        normalization=NORMALIZATION, task="binary", context_scales=predictor.context_scales,
        window_axis=predictor.window_axis,
    )
    assert len(dataset) == len(fed) == 4
    for index in range(len(dataset)):
        assert dataset.records[index][2:4] == (TILE * (index // 2), TILE * (index % 2))
        image = dataset[index]["image"]
        assert image.shape == fed[index].shape
        np.testing.assert_array_equal(image, fed[index])  # identical, not merely close
    assert fed.shape[-3] == 3  # cos, sin and magnitude


def test_an_old_config_without_transforms_still_predicts(tmp_path: Path) -> None:
    scene_path = _write_interferogram(tmp_path)
    old = {"task": "binary", "inputs": ["phase", "magnitude"], "normalization": {"mean": [0.0, 2.0], "std": [1.0, 1.5]},
           "patch_size": TILE}
    model = build_model("unet", in_channels=2, widths=[4, 8, 8, 8])
    save_model_dir(tmp_path / "old", model, old)
    predictor = load_predictor(tmp_path / "old", device="cpu")
    assert predictor.input_spec is not None and predictor.input_spec.is_identity
    predictor.out_channels()  # known before the recorder hides the model's spec
    recorder = Recorder(predictor.model)
    predictor.model = recorder
    with open_scene(scene_path) as scene:
        probability_pass(scene, predictor, plan_windows(SIZE, SIZE, tile=TILE, overlap=0.0),
                         write_rows=lambda window, probs: None)
        raw = scene.read(["phase"], Window(TILE, 0, TILE, TILE))[0]
    np.testing.assert_array_equal(recorder.seen[0][1, 0].numpy(), raw)  # the raw angle, as that model learnt


def test_a_channel_count_that_does_not_fit_the_model_is_a_config_error(tmp_path: Path) -> None:
    two = build_model("unet", in_channels=2, widths=[4, 8, 8, 8])
    config = {"inputs": ["phase", "magnitude"], "input_transforms": {"phase": COS_SIN}}
    with pytest.raises(ConfigError, match=r"gives 3 input channels \(phase -> cos\(phase\), sin\(phase\); magnitude\) "
                                          r"but the model takes 2"):
        make_predictor(two, config, device="cpu")
    three = build_model("unet", in_channels=3, widths=[4, 8, 8, 8])
    with pytest.raises(ConfigError, match="names 2 input bands but the model takes 3"):
        make_predictor(three, {"inputs": ["phase", "magnitude"]}, device="cpu")
    with pytest.raises(ConfigError, match="normalization has 2 means and 2 stds for 3 input channels"):
        make_predictor(three, {**config, "normalization": {"mean": [0, 0], "std": [1, 1]}}, device="cpu")
    with pytest.raises(ConfigError, match="valid transforms"):
        make_predictor(three, {**config, "input_transforms": {"phase": "degrees"}}, device="cpu")


def test_a_scene_without_a_transformed_band_names_it(tmp_path: Path) -> None:
    scene_path = write_scene(tmp_path / "mag.tif", data=np.ones((1, SIZE, SIZE), "float32"), band_names=["magnitude"])
    predictor = make_predictor(build_model("unet", in_channels=3, widths=[4, 8, 8, 8]),
                               {"inputs": ["phase", "magnitude"], "input_transforms": {"phase": COS_SIN}}, device="cpu")
    with open_scene(scene_path) as scene, pytest.raises(MissingVariableError, match="lacks band.*phase"):
        probability_pass(scene, predictor, plan_windows(SIZE, SIZE, tile=TILE, overlap=0.0),
                         write_rows=lambda window, probs: None, lock=threading.Lock())


# --- the command line ------------------------------------------------------------------------------


def test_train_records_the_transforms_and_the_flag_overrides_them(tmp_path: Path) -> None:
    import geopandas as gpd
    import shapely
    from typer.testing import CliRunner

    from icetools.cli.app import app
    from icetools.modeldir import read_config
    from icetools.patches_io import write_patches

    frame = _frame(_write_interferogram(tmp_path), task="binary", splits=("train", "val"))
    boxes = [shapely.box(c, r, c + TILE, r + TILE) for r, c in zip(frame["row_off"], frame["col_off"])]
    patches = write_patches(gpd.GeoDataFrame(frame, geometry=boxes), tmp_path / "patches.gpkg")
    base = ["train", "--patches", str(patches), "--epochs", "1", "--batch-size", "2", "--workers", "0", "--samples-per-epoch", "8",
            "--model", "unet", "--model-arg", "widths=[4,8,8,8]", "--device", "cpu", "--thresholds", "0.5"]
    runner = CliRunner()

    result = runner.invoke(app, [*base, "-o", str(tmp_path / "default")])
    assert result.exit_code == 0, result.output
    config = read_config(tmp_path / "default")
    assert config["inputs"] == ["phase", "magnitude"]
    assert config["input_transforms"] == {"phase": COS_SIN, "magnitude": IDENTITY}
    assert config["model"]["args"]["in_channels"] == 3 and len(config["normalization"]["mean"]) == 3
    assert load_predictor(tmp_path / "default", device="cpu").input_spec == PHASE_SPEC

    result = runner.invoke(app, [*base, "-o", str(tmp_path / "raw"), "--input-transform", "phase=identity"])
    assert result.exit_code == 0, result.output
    assert read_config(tmp_path / "raw")["model"]["args"]["in_channels"] == 2

    result = runner.invoke(app, [*base, "-o", str(tmp_path / "bad"), "--input-transform", "phase=radians"])
    assert result.exit_code == 1 and "unknown input transform 'radians' for band 'phase'" in result.output


def test_fresh_training_windows_read_the_same_channels(tmp_path: Path) -> None:
    from icetools.train_windows import RandomWindowDataset

    scene_path = _write_interferogram(tmp_path)
    scenes = [(str(scene_path), str(scene_path.with_name("lines.tif")))]
    dataset = RandomWindowDataset(scenes, size=TILE, augment=False, inputs=["phase", "magnitude"],
                                  input_transforms=PHASE_SPEC.record(), normalization=NORMALIZATION, task="binary")
    sample = dataset[(0, 5, 7, 0)]  # (scene, row, col, augmentation seed): a window at any pixel offset
    channels, valid = read_inputs(open_scene(scene_path), Window(7, 5, TILE, TILE), PHASE_SPEC)
    mean, std = (np.asarray(NORMALIZATION[k], "float32")[:, None, None] for k in ("mean", "std"))
    np.testing.assert_array_equal(sample["image"], np.nan_to_num((channels - mean) / std, nan=0.0))
    assert sample["image"].shape == (3, TILE, TILE)
    np.testing.assert_array_equal(sample["valid"], valid)
