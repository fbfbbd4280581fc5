"""Tests for FCtL's refinement stage: the refiner model (a gated residual over the crude mask), its
training on held-out crude mosaics (train --from) and the two-pass ``predict --merge refine``
(icetools.models.refiner, icetools.refine, icetools.inference, icetools.training).

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

from icetools.cli.app import app
from icetools.data import PatchDataset
from icetools.errors import ConfigError, DataError
from icetools.inference import PredictJob, Predictor, load_predictor, make_predictor, predict_scene
from icetools.io.raster import write_raster
from icetools.losses import build_loss
from icetools.modeldir import read_config, save_model_dir
from icetools.models import build_model
from icetools.models.base import IcetoolsModel
from icetools.progress import Event
from icetools.inference.refinement import REFINER_FORMAT
from icetools.refine import (
    CRUDE_STAGE,
    RefineSource,
    crude_band_names,
    identity_normalization,
    open_refine_source,
    prepare_crude_inputs,
)
from icetools.training import TrainOptions, resolve_setup, train_model

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


def pass_through() -> Predictor:
    return make_predictor(PassThrough(), SEGMENTER_CONFIG, device="cpu")


SEGMENTER_CONFIG = {"task": "multiclass", "inputs": ["x0", "x1"], "n_classes": 2, "class_names": CLASSES,
                    "patch_size": TILE}
REFINER_CONFIG = {
    "task": "multiclass", "inputs": list(crude_band_names(SEGMENTER_CONFIG, 2)), "normalization": identity_normalization(2),
    "n_classes": 2, "class_names": CLASSES, "patch_size": TILE, "context_scales": [1.0, 2.0],
    "refines": {"format": REFINER_FORMAT, "model": "pass-through", "task": "multiclass", "n_classes": 2,
                "image_inputs": [], "gate": {"threshold": None, "beats_crude": True}},
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
    events: list[Event] = []
    job = PredictJob(scene, tmp_path / "out.tif", pass_through(), refiner=load_predictor(refiner_dir, "cpu"), tile=TILE,
                     overlap=0.5, merge="refine", probabilities=True)
    summary = predict_scene(job, progress=events.append)
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
    assert tags["merge"] == "refine" and tags["refiner"].startswith(f"{refiner_dir.name}@sha256:")
    assert summary["merge"] == "refine" and summary["refiner"] == str(refiner_dir)
    # progress counts the windows of both passes, in whole windows
    windows = summary["windows"]
    assert all(e.stage == "windows" and e.total == 2 * windows and e.info == {"scene": "scene.tif"} for e in events)
    assert events[-1].done == 2 * windows and any(e.done == windows for e in events)
    # only the products remain: the temporary crude mosaic is gone
    # the class raster's attribute table is its GDAL sidecar, out.tif.aux.xml
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif", "out.tif.aux.xml", "out_probs.tif", "scene.tif"]


class Broken(IcetoolsModel):
    """A refiner that fails mid-run (a full crude mosaic is on disk by then)."""

    takes_windows = True
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
        predict_scene(PredictJob(scene, tmp_path / "out.tif", pass_through(), refiner=broken, tile=TILE, merge="refine"))
    assert [p.name for p in tmp_path.iterdir()] == ["scene.tif"]


def test_a_refiner_must_fit_the_models_classes(refiner_dir: Path, tmp_path: Path) -> None:
    three = {**SEGMENTER_CONFIG, "inputs": ["x0", "x1", "x2"], "n_classes": 3, "class_names": ["a", "b", "c"]}
    model = make_predictor(torch.nn.Conv2d(3, 3, 1), three, device="cpu")
    refiner = load_predictor(refiner_dir, "cpu")
    scene = write_raster(tmp_path / "s.tif", np.zeros((3, 40, 40), "float32"), affine_grid(40, 40), nodata=None,
                         band_names=["x0", "x1", "x2"])
    with pytest.raises(ConfigError, match="refines 2 classes but the model has 3"):
        predict_scene(PredictJob(scene, tmp_path / "o.tif", model, refiner=refiner, tile=TILE, merge="refine"))
    not_a_refiner = {key: value for key, value in REFINER_CONFIG.items() if key != "refines"}
    with pytest.raises(ConfigError, match="is not a refiner"):
        predict_scene(PredictJob(scene, tmp_path / "o.tif", model, tile=TILE, merge="refine",
                                 refiner=make_predictor(Broken(), not_a_refiner, device="cpu")))
    with pytest.raises(ConfigError, match="merge 'refine' only"):
        predict_scene(PredictJob(scene, tmp_path / "o.tif", model, tile=TILE, refiner=refiner))
    assert [p.name for p in tmp_path.iterdir()] == ["s.tif"]


def test_cli_merge_refine_without_a_refiner_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "s.tif"), "-m", str(tmp_path / "m"),
                                      "-o", str(tmp_path / "o.tif"), "--merge", "refine"])
    assert result.exit_code == 2  # options that do not go together: a usage error (issue 11)
    assert [line for line in result.stderr.splitlines() if line.startswith("Error")] == [
        "Error: --merge refine needs --refiner REFINER_DIR"]


# ------------------------------------------------------------------- the model: residual, gate, config


def random_inputs(classes: int, image: int, *, seed: int = 0, size: int = 16) -> torch.Tensor:
    """(2, 2, K + C, H, W): crude probabilities (softmax of noise, or a sigmoid for one channel) + image."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 2, classes, size, size, generator=generator) * 2
    crude = torch.sigmoid(logits) if classes == 1 else torch.softmax(logits, dim=2)
    return torch.cat([crude, torch.randn(2, 2, image, size, size, generator=generator)], dim=2)


@pytest.mark.parametrize("classes", [3, 1])
def test_an_untrained_refiner_gives_the_crude_mask_back(classes: int) -> None:
    from icetools.models.refiner import CRUDE_EPS

    x = random_inputs(classes, image=2)
    crude = x[:, 0, :classes]
    model = build_model("refiner", in_channels=classes + 2, out_channels=classes, widths=[4, 8])
    for mode in (model.train, model.eval):  # BatchNorm in either mode: the zero head hides it
        mode()
        with torch.no_grad():
            logits = model(x)
        probs = torch.sigmoid(logits) if classes == 1 else torch.softmax(logits, dim=1)
        torch.testing.assert_close(probs, crude, atol=2 * CRUDE_EPS, rtol=0)  # exact but for the clip
        inside = ((crude > CRUDE_EPS) & (crude < 1 - CRUDE_EPS)).all(dim=1, keepdim=True).expand_as(crude)
        if classes == 1:
            torch.testing.assert_close(probs[inside], crude[inside], atol=1e-6, rtol=0)
        if classes > 1:
            assert torch.equal(probs.argmax(dim=1), crude.argmax(dim=1))
        else:
            assert torch.equal(probs > 0.5, crude > 0.5)


def randomised_head(model: torch.nn.Module) -> torch.nn.Module:
    """A refiner whose correction is no longer zero (as after training)."""
    with torch.no_grad():
        model.head.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(1))
        model.head.bias.fill_(0.5)
    return model.eval()


@pytest.mark.parametrize("classes", [3, 1])
def test_the_gate_keeps_confident_pixels_and_refines_uncertain_ones(classes: int) -> None:
    from icetools.models.refiner import CRUDE_EPS, GATE_RAMP, confidence, crude_logits

    x = random_inputs(classes, image=1, seed=2)
    crude = x[:, 0, :classes]
    model = randomised_head(build_model("refiner", in_channels=classes + 1, out_channels=classes, widths=[4, 8]))
    with torch.no_grad():
        everywhere = model(x)
        model.set_gate(0.8)
        gated = model(x)
    to_probs = torch.sigmoid if classes == 1 else (lambda t: torch.softmax(t, dim=1))
    sure = (confidence(crude) >= 0.8).expand_as(crude)
    unsure = (confidence(crude) <= 0.8 - GATE_RAMP).expand_as(crude)
    assert sure.any() and unsure.any()
    assert torch.equal(gated[sure], crude_logits(crude)[sure])  # untouched: the crude mask's own logits
    torch.testing.assert_close(to_probs(gated)[sure], crude[sure], atol=2 * CRUDE_EPS, rtol=0)
    torch.testing.assert_close(gated[unsure], everywhere[unsure])
    assert not torch.allclose(to_probs(everywhere)[sure], crude[sure], atol=1e-3)  # the head does change them
    assert model.spec["args"]["gate_threshold"] == 0.8


def test_refiner_config_round_trip(tmp_path: Path) -> None:
    from icetools.modeldir import load_model_dir, read_model_config

    model = randomised_head(build_model("refiner", in_channels=4, out_channels=2, widths=[4, 8]))
    model.set_gate(0.85)
    gate = {"rule": "test", "threshold": 0.85, "beats_crude": True, "metric": "miou", "crude": 0.5, "refined": 0.6}
    config = {**REFINER_CONFIG, "inputs": [*REFINER_CONFIG["inputs"], "image:x0", "image:x1"],
              "normalization": identity_normalization(4),
              "refines": {**REFINER_CONFIG["refines"], "image_inputs": ["image:x0", "image:x1"], "gate": gate}}
    save_model_dir(tmp_path / "r", model, config)
    loaded, stored = load_model_dir(tmp_path / "r")
    assert loaded.gate_threshold == 0.85 and stored["model"]["args"]["gate_threshold"] == 0.85
    assert stored["refines"] == config["refines"] and stored["inputs"] == config["inputs"]
    assert read_model_config(tmp_path / "r").to_dict() == stored
    x = random_inputs(2, image=2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert load_predictor(tmp_path / "r", "cpu").in_channels == 4


# --------------------------------------------------------- predict: an identity refiner, a failed one

MODEL3 = {"task": "multiclass", "inputs": ["x0", "x1"], "n_classes": 3, "class_names": ["a", "b", "c"],
          "normalization": {"mean": [0.5, -0.5], "std": [2.0, 0.5]}, "patch_size": TILE}
CRUDE3 = ["p_a", "p_b", "p_c"]


def three_class_model() -> Predictor:
    torch.manual_seed(4)
    return make_predictor(torch.nn.Conv2d(2, 3, 3, padding=1).eval(), MODEL3, device="cpu")


def identity_refiner(*, beats_crude: bool = True) -> Predictor:
    """An untrained refiner that reads the crude mask and the image, as training would record it."""
    config = {
        "task": "multiclass", "inputs": CRUDE3 + ["image:x0", "image:x1"], "normalization": identity_normalization(5),
        "n_classes": 3, "class_names": ["a", "b", "c"], "patch_size": TILE, "context_scales": [1.0, 2.0],
        "refines": {"format": REFINER_FORMAT, "model": "conv", "task": "multiclass", "n_classes": 3,
                    "crude_inputs": CRUDE3, "image_inputs": ["image:x0", "image:x1"],
                    "gate": {"threshold": None, "beats_crude": beats_crude, "metric": "miou", "crude": 0.8,
                             "refined": 0.9 if beats_crude else 0.79}},
    }
    torch.manual_seed(0)
    model = build_model("refiner", in_channels=5, out_channels=3, widths=[4, 8])
    return make_predictor(model, config, device="cpu", source="identity-refiner")


def two_band_scene(path: Path) -> Path:
    rng = np.random.default_rng(3)
    data = rng.normal(0, 1, (2, 80, 72)).astype("float32")
    data[:, :10, :12] = np.nan  # no data: the same pixels must stay empty through both passes
    return write_raster(path, data, affine_grid(80, 72), nodata=float("nan"), band_names=["x0", "x1"])


def read_products(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    with rasterio.open(path) as ds:
        classes, tags = ds.read(1), ds.tags()
    with rasterio.open(path.with_name(path.stem + "_probs.tif")) as ds:
        return classes, ds.read(), tags


def test_merge_refine_with_an_identity_refiner_gives_the_classes_of_averaging(tmp_path: Path) -> None:
    scene = two_band_scene(tmp_path / "scene.tif")
    model = three_class_model()
    predict_scene(PredictJob(scene, tmp_path / "avg.tif", model, tile=TILE, overlap=0.25, merge="average", probabilities=True))
    summary = predict_scene(PredictJob(scene, tmp_path / "ref.tif", model, refiner=identity_refiner(), tile=TILE,
                                       overlap=0.25, merge="refine", probabilities=True))
    averaged, averaged_probs, _ = read_products(tmp_path / "avg.tif")
    refined, refined_probs, tags = read_products(tmp_path / "ref.tif")
    np.testing.assert_array_equal(refined, averaged)
    np.testing.assert_allclose(refined_probs, averaged_probs, atol=1e-3)
    assert np.isnan(refined_probs[:, :10, :12]).all() and np.isfinite(refined_probs[:, 10:, :]).all()
    assert summary["refined"] and summary["warnings"] == [] and tags["merge"] == "refine"
    assert "refine_fallback" not in tags


def test_a_refiner_that_failed_validation_falls_back_to_averaging(tmp_path: Path) -> None:
    scene = two_band_scene(tmp_path / "scene.tif")
    model = three_class_model()
    predict_scene(PredictJob(scene, tmp_path / "avg.tif", model, tile=TILE, merge="average", probabilities=True))
    summary = predict_scene(PredictJob(scene, tmp_path / "ref.tif", model, refiner=identity_refiner(beats_crude=False),
                                       tile=TILE, merge="refine", probabilities=True))
    averaged, averaged_probs, _ = read_products(tmp_path / "avg.tif")
    refined, refined_probs, tags = read_products(tmp_path / "ref.tif")
    np.testing.assert_array_equal(refined, averaged)
    np.testing.assert_array_equal(refined_probs, averaged_probs)
    assert not summary["refined"] and len(summary["warnings"]) == 1
    assert "did not beat the averaged mosaic on validation (miou 0.7900 vs 0.8000)" in summary["warnings"][0]
    assert tags["merge"] == "refine" and tags["refine_fallback"].startswith("average")


def test_cli_warns_when_a_refiner_falls_back_to_averaging(tmp_path: Path) -> None:
    scene = two_band_scene(tmp_path / "scene.tif")
    torch.manual_seed(0)
    save_model_dir(tmp_path / "seg", build_model("unet", in_channels=2, out_channels=3, widths=[2, 4, 4, 8]), MODEL3)
    refiner = identity_refiner(beats_crude=False)
    save_model_dir(tmp_path / "ref", refiner.model, refiner.config)
    result = CliRunner().invoke(app, ["predict", str(scene), "-m", str(tmp_path / "seg"), "-o", str(tmp_path / "o.tif"),
                                      "--merge", "refine", "--refiner", str(tmp_path / "ref")])
    assert result.exit_code == 0, result.output
    assert "did not beat the averaged mosaic on validation" in " ".join(result.output.split())
    with rasterio.open(tmp_path / "o.tif") as ds:
        assert ds.tags()["refine_fallback"].startswith("average")


def test_old_or_mismatched_refiners_are_refused(tmp_path: Path) -> None:
    scene = two_band_scene(tmp_path / "scene.tif")
    model = three_class_model()
    refiner = identity_refiner()
    old = {**refiner.config, "refines": {k: v for k, v in refiner.config["refines"].items() if k != "format"}}
    with pytest.raises(ConfigError, match="older icetools"):
        predict_scene(PredictJob(scene, tmp_path / "o.tif", model, merge="refine", tile=TILE,
                                 refiner=make_predictor(refiner.model, old, device="cpu")))
    other_inputs = {**MODEL3, "inputs": ["x1", "x0"]}
    with pytest.raises(ConfigError, match="reads the image channels image:x0, image:x1 but the model reads image:x1"):
        predict_scene(PredictJob(scene, tmp_path / "o.tif", make_predictor(model.model, other_inputs, device="cpu"),
                                 merge="refine", tile=TILE, refiner=refiner))
    assert [p.name for p in tmp_path.iterdir()] == ["scene.tif"]


# ------------------------------------------------------------------- choosing the gate on validation


class OracleRefiner(torch.nn.Module):
    """forward_parts as a refiner's: its correction reads the truth from the image channel, and is
    right where the crude mask is unsure and wrong where it is sure (so the best gate lies between)."""

    def forward_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from icetools.models.refiner import confidence, crude_logits

        crude, truth = x[:, 0, :2], x[:, 0, 2:3]
        towards_truth = torch.cat([1 - truth, truth], dim=1) * 2 - 1
        sure = confidence(crude) >= 0.75
        return crude, crude_logits(crude), 8.0 * torch.where(sure, -towards_truth, towards_truth)


def gate_batches(*, unsure_right: bool) -> list[dict[str, torch.Tensor]]:
    """Columns 0-11: sure (0.9) and right; columns 12-15: unsure (0.55) and wrong (or right)."""
    truth = torch.zeros(4, 16, 16, dtype=torch.int64)
    truth[:, ::2] = 1
    p_true = torch.full((4, 16, 16), 0.9)
    p_true[:, :, 12:] = 0.55 if unsure_right else 0.45
    p_one = torch.where(truth == 1, p_true, 1 - p_true)
    crude = torch.stack([1 - p_one, p_one], dim=1)
    image = torch.cat([crude, truth[:, None].float()], dim=1)
    x = torch.stack([image, image], dim=1)
    return [{"image": x, "target": truth, "valid": torch.ones_like(truth, dtype=torch.bool)}]


def test_the_gate_is_chosen_on_validation_and_never_makes_things_worse() -> None:
    from icetools.training.refiner_gate import NEVER, choose_gate

    choice = choose_gate(OracleRefiner(), gate_batches(unsure_right=False), task="multiclass", n_classes=2,
                         device=torch.device("cpu"))
    record = choice.record
    assert choice.beats_crude and record["beats_crude"] and choice.warnings == []
    assert record["crude"] == pytest.approx(0.6) and record["refined"] == pytest.approx(1.0)
    assert choice.threshold == record["threshold"] == 0.6  # the first that refines the unsure half only
    scores = dict(zip(record["candidates"], record["scores"]))
    assert scores[None] < record["crude"]  # refining everywhere would have made it worse
    assert choice.metrics["miou"] == pytest.approx(1.0)

    # The crude mask is already right: nothing beats it, so the refiner becomes the identity.
    choice = choose_gate(OracleRefiner(), gate_batches(unsure_right=True), task="multiclass", n_classes=2,
                         device=torch.device("cpu"))
    assert not choice.beats_crude and choice.threshold == NEVER and choice.record["threshold"] == NEVER
    assert "does not beat the crude mosaic" in choice.warnings[0]


# ------------------------------------------------------------------- held-out splits


def test_a_refiner_learns_on_the_blocks_its_model_did_not_train_on(tmp_path: Path) -> None:
    from icetools.refine import held_out_splits, refiner_data

    frame = patch_frame(tmp_path / "a.tif", "", [(0, 0, "train"), (0, 32, "val"), (0, 64, "test"), (32, 0, "val")])
    frame.attrs = {"sampling": {"size": 32}}
    moved = held_out_splits(frame)
    assert list(moved["split"]) == ["train", "val", "train"] and list(moved["col_off"]) == [32, 64, 0]
    assert moved.attrs == frame.attrs
    seen = {"provenance": {"patches": str(tmp_path / "p.gpkg"), "scenes": [str(tmp_path / "a.tif")]}}
    assert refiner_data(frame, seen, patches_path=tmp_path / "p.gpkg").shifted
    assert refiner_data(frame, seen, patches_path=None).shifted  # shared scenes
    assert refiner_data(frame, {}, patches_path=None).shifted  # nothing known: assume the worst
    other = {"provenance": {"patches": None, "scenes": [str(tmp_path / "b.tif")]}}
    kept = refiner_data(frame, other, patches_path=None)
    assert not kept.shifted and kept.apply(frame) is frame and kept.record()["shifted"] is False
    no_test = frame[frame["split"] != "test"]
    with pytest.raises(DataError, match="no 'test' ones: sample patches with val and test shares"):
        refiner_data(no_test, seen, patches_path=None)


# ------------------------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def multiclass_run(tmp_path_factory) -> tuple[Path, object, Path]:
    """A 3-class scene, its patches (train, val and test columns), and a tiny U-Net trained one epoch on
    them (the --from model)."""
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
    splits = {0: "train", 16: "val", 32: "test"}
    frame = patch_frame(scene, labels, grid_windows(64, 32, 16, lambda r, c: splits[c]), task="multiclass")
    options = TrainOptions.from_mapping({"epochs": 1, "batch_size": 4, "workers": 0, "lr": 3e-3,
                                         "samples_per_epoch": 16, "model_args": {"widths": [4, 8, 8, 8]}})
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
    assert config["refines"]["crude_inputs"] == bands and config["refines"]["image_inputs"] == ["image:HH"]
    assert config["inputs"] == [*bands, "image:HH"] and config["refines"]["format"] == REFINER_FORMAT
    assert config["normalization"] == {"mean": [0.0] * 4, "std": [1.0] * 4}
    assert config["context_scales"] == [1.0, 2.0] and config["n_classes"] == 3
    assert config["training"]["loss"] == "focal" and config["training"]["loss_args"] == {"gamma": 3.0}
    assert config["model"]["args"]["in_channels"] == 4 and config["model"]["args"]["out_channels"] == 3
    # It learnt on the model's val column and was validated on its test column; its gate was chosen there.
    assert config["refines"]["training_data"]["shifted"] is True
    gate = config["refines"]["gate"]
    assert gate["metric"] == "miou" and len(gate["scores"]) == len(gate["candidates"])
    assert config["model"]["args"]["gate_threshold"] == gate["threshold"]
    assert gate["beats_crude"] == (gate["refined"] >= gate["crude"] + gate["min_gain"])
    assert summary["refine_gate"] == gate

    # The crude mosaic is what predict's normal averaging pass makes: the model's probabilities; then
    # the image as the model reads it (normalised with its statistics).
    crude = tmp_path / "ref" / "crude" / "scene_crude.tif"
    predict_scene(PredictJob(scene, tmp_path / "p.tif", load_predictor(seg, "cpu"), overlap=0.25, merge="average", probabilities=True))
    norm = read_config(seg)["normalization"]
    with rasterio.open(crude) as made, rasterio.open(tmp_path / "p_probs.tif") as predicted, rasterio.open(scene) as raw:
        assert made.count == 4 and made.dtypes[0] == "float32" and list(made.descriptions) == [*bands, "image:HH"]
        np.testing.assert_array_equal(made.read([1, 2, 3]), predicted.read())
        expected = (raw.read(1) - norm["mean"][0]) / norm["std"][0]
        np.testing.assert_allclose(made.read(4), expected, rtol=1e-5, atol=1e-5)

    # Reused while scene and model are unchanged, remade when the model changes.
    stamp = crude.stat().st_mtime_ns
    train_model(frame, tmp_path / "ref", refiner_options(seg, overwrite=True))
    assert crude.stat().st_mtime_ns == stamp
    weights = seg / "model.safetensors"
    weights.write_bytes(weights.read_bytes())  # same weights, a newer file: the stamp no longer matches
    train_model(frame, tmp_path / "ref", refiner_options(seg, overwrite=True))
    assert crude.stat().st_mtime_ns != stamp

    # ... and the trained refiner pairs with its model in predict.
    predict_scene(PredictJob(scene, tmp_path / "r.tif", load_predictor(seg, "cpu"), merge="refine",
                             refiner=load_predictor(tmp_path / "ref", "cpu")))
    with rasterio.open(tmp_path / "r.tif") as ds:
        assert ds.tags()["merge"] == "refine" and set(np.unique(ds.read(1))) <= {0, 1, 2}
        assert ("refine_fallback" in ds.tags()) != gate["beats_crude"]


def test_a_resumed_refiner_keeps_its_held_out_splits(multiclass_run, tmp_path: Path) -> None:
    _, frame, seg = multiclass_run
    train_model(frame, tmp_path / "ref", refiner_options(seg))
    summary = train_model(frame, tmp_path / "ref", TrainOptions.from_mapping({"resume": True, "epochs": 2}))
    config = read_config(tmp_path / "ref")
    assert summary["epochs_run"] == 2 and config["refines"]["training_data"]["shifted"] is True
    assert config["refines"]["gate"]["metric"] == "miou"
    assert config["provenance"]["crude_inputs"] == {str(frame["scene"][0]): str(tmp_path / "ref" / "crude" / "scene_crude.tif")}


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
    with pytest.raises(ConfigError, match="model 'refiner' needs from_model"):
        TrainOptions(model="refiner").validate()
    with pytest.raises(ConfigError, match="from_model trains a refiner"):
        TrainOptions(model="unet", from_model="m").validate()


def test_crude_mosaics_report_crude_events(multiclass_run, tmp_path: Path) -> None:
    _, frame, seg = multiclass_run
    events: list[Event] = []
    source = open_refine_source(seg, device="cpu")
    mapping = prepare_crude_inputs(frame, source, tmp_path / "crude", progress=events.append)
    assert len(mapping) == 1 and all(e.stage == CRUDE_STAGE for e in events)
    keys = {"scene", "index", "scenes", "path", "reused", "finished"}
    assert all(set(e.info) == keys for e in events)
    *windows, last = events
    assert windows and not any(e.info["finished"] or e.info["reused"] for e in windows)
    assert windows[-1].done == windows[-1].total
    assert last.info["finished"] and not last.info["reused"] and last.info["path"].endswith("scene_crude.tif")
    assert (last.done, last.total, last.info["index"], last.info["scenes"]) == (1, 1, 0, 1)
    again: list[Event] = []
    prepare_crude_inputs(frame, source, tmp_path / "crude", progress=again.append)
    assert len(again) == 1 and again[0].info["reused"] and again[0].info["finished"]
