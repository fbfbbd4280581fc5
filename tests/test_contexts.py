"""Tests for the context windows of FCtL and the refiner (icetools.contexts), as the training data
path (icetools.data) and the inference engine (icetools.inference) read them.

The scene's pixels encode their own coordinates (value = row * 1000 + col), so what a context holds
can be computed by hand: reflected coordinates beyond the edge, block means after the resize.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from rasterio.windows import Window
from scenes import affine_grid
from test_data import patch_frame

from icetools.contexts import context_window, read_contexts
from icetools.data import PatchDataset
from icetools.io.raster import write_raster
from icetools.io.scene import GeoTiffScene, open_scene
from icetools.inference.mosaic import scene_strip_reader
from icetools.inference.windows import context_margin, stack_windows

HEIGHT, WIDTH = 60, 80
TILE = 12  # scale 2 -> 24 px (blocks of 2), scale 3 -> 36 px (blocks of 3): exact block means
SCALES = (1.0, 2.0, 3.0)


def coordinates(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    return (rows * 1000 + cols).astype("float32")


@pytest.fixture(scope="module")
def coord_scene(tmp_path_factory) -> Path:
    """Band 'a' = row * 1000 + col, band 'b' = 2a + 1 (to see that bands stay apart)."""
    a = coordinates()
    path = tmp_path_factory.mktemp("contexts") / "coords.tif"
    return write_raster(path, np.stack([a, 2 * a + 1]), affine_grid(HEIGHT, WIDTH), nodata=None, band_names=["a", "b"])


def reflect(index: np.ndarray, n: int) -> np.ndarray:
    """Reflection about the edge pixels, not repeating them (numpy's 'reflect'): -1 -> 1, n -> n - 2."""
    index = np.abs(index)
    return np.where(index > n - 1, 2 * (n - 1) - index, index)


def expected_context(window: Window, scale: float) -> np.ndarray:
    """The context of band 'a' by hand: reflected coordinates of the larger window, then block means."""
    big = context_window(window, scale)
    rows = reflect(np.arange(big.row_off, big.row_off + big.height), HEIGHT)
    cols = reflect(np.arange(big.col_off, big.col_off + big.width), WIDTH)
    values = (rows[:, None] * 1000 + cols[None, :]).astype("float64")
    k = int(scale)
    return values.reshape(TILE, k, TILE, k).mean(axis=(1, 3))


def block_mean(array: np.ndarray, k: int) -> np.ndarray:
    h, w = array.shape[-2:]
    return array.reshape(*array.shape[:-2], h // k, k, w // k, k).mean(axis=(-3, -1))


CORNERS = {
    "top-left": Window(0, 0, TILE, TILE),
    "top-right": Window(WIDTH - TILE, 0, TILE, TILE),
    "bottom-left": Window(0, HEIGHT - TILE, TILE, TILE),
    "bottom-right": Window(WIDTH - TILE, HEIGHT - TILE, TILE, TILE),
    "left edge": Window(0, 24, TILE, TILE),
    "interior": Window(30, 20, TILE, TILE),
}


def test_context_window_is_centred_and_scaled() -> None:
    assert context_window(Window(0, 0, 12, 12), 2) == Window(-6, -6, 24, 24)
    assert context_window(Window(30, 20, 12, 12), 3) == Window(18, 8, 36, 36)
    assert context_window(Window(5, 7, 12, 12), 1) == Window(5, 7, 12, 12)


@pytest.mark.parametrize("where", list(CORNERS))
def test_contexts_at_edges_and_corners_hold_reflected_coordinates(coord_scene: Path, where: str) -> None:
    window = CORNERS[where]
    with open_scene(coord_scene) as scene:
        stack = read_contexts(lambda w: scene.read(["a", "b"], w, pad_mode="reflect"), window, SCALES)
    assert stack.shape == (3, 2, TILE, TILE) and stack.dtype == np.float32
    local = coordinates()[window.row_off : window.row_off + TILE, window.col_off : window.col_off + TILE]
    np.testing.assert_array_equal(stack[0, 0], local)  # the local layer is the window itself
    np.testing.assert_array_equal(stack[0, 1], 2 * local + 1)
    for t, scale in enumerate(SCALES[1:], start=1):
        np.testing.assert_allclose(stack[t, 0], expected_context(window, scale), rtol=1e-6)
        np.testing.assert_allclose(stack[t, 1], 2 * expected_context(window, scale) + 1, rtol=1e-6)


@pytest.mark.parametrize("where", list(CORNERS))
def test_the_centre_of_each_context_is_the_local_window_area_averaged(coord_scene: Path, where: str) -> None:
    window = CORNERS[where]
    with open_scene(coord_scene) as scene:
        stack = read_contexts(lambda w: scene.read(["a"], w, pad_mode="reflect"), window, SCALES)
    local = stack[0, 0].astype("float64")
    np.testing.assert_allclose(stack[1, 0, 3:9, 3:9], block_mean(local, 2), rtol=1e-6)  # 24 px -> 12: centre 6 px
    np.testing.assert_allclose(stack[2, 0, 4:8, 4:8], block_mean(local, 3), rtol=1e-6)  # 36 px -> 12: centre 4 px


def counting_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Window]]:
    """Every band read of every GeoTIFF scene: (file name, window inside the file)."""
    reads: list[tuple[str, Window]] = []
    original = GeoTiffScene._read_band

    def read_band(self: GeoTiffScene, name: str, window: Window) -> np.ndarray:
        reads.append((self.path.name, window))
        return original(self, name, window)

    monkeypatch.setattr(GeoTiffScene, "_read_band", read_band)
    return reads


def test_contexts_beyond_the_edge_read_only_their_part_inside_the_scene(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size, tile = 400, 16
    a = coordinates(size, size)
    path = write_raster(tmp_path / "big.tif", a[None], affine_grid(size, size), nodata=None, band_names=["a"])
    reads = counting_reads(monkeypatch)
    with open_scene(path) as scene:
        read_contexts(lambda w: scene.read(["a"], w, pad_mode="reflect"), Window(0, 0, tile, tile), SCALES)
    # local 16 x 16; 2x context (-8..24) clamped to 24 x 24; 3x (-16..32) clamped to 32 x 32
    assert [(int(w.height), int(w.width)) for _, w in reads] == [(16, 16), (24, 24), (32, 32)]
    assert all(w.row_off >= 0 and w.col_off >= 0 for _, w in reads)


def test_a_training_sample_at_the_corner_reads_windows_not_the_scene(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size, tile = 400, 16
    a = coordinates(size, size)
    grid = affine_grid(size, size)
    scene = write_raster(tmp_path / "big.tif", a[None], grid, nodata=None, band_names=["a"])
    labels = write_raster(tmp_path / "classes.tif", (a % 3).astype("uint8"), grid, nodata=255, band_names=["class"])
    frame = patch_frame(scene, labels, [(0, 0, "train"), (size - tile, size - tile, "train")], size=tile,
                        task="multiclass")
    dataset = PatchDataset(frame, "train", inputs=["a"], normalization={"mean": [0.0], "std": [1.0]},
                           task="multiclass", context_scales=SCALES)
    reads = counting_reads(monkeypatch)
    for index in range(2):
        sample = dataset[index]
        assert sample["image"].shape == (3, 1, tile, tile)
    largest = max(int(w.height) * int(w.width) for _, w in reads)
    assert largest <= 32 * 32  # the clamped 3x context: never the 400 x 400 scene
    scene_pixels = sum(int(w.height) * int(w.width) for name, w in reads if name == "big.tif")
    # per sample: local + 2x + 3x contexts + the validity read of the local window
    assert scene_pixels == 2 * (16 * 16 + 24 * 24 + 32 * 32 + 16 * 16)


def test_predict_strips_stay_within_the_context_margin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from icetools.inference import plan_windows, sliding_window_merge, window_weights

    size, tile = 160, 16
    path = write_raster(tmp_path / "tall.tif", coordinates(size, 48)[None], affine_grid(size, 48), nodata=None,
                        band_names=["a"])
    reads = counting_reads(monkeypatch)
    margin = context_margin(tile, SCALES)
    assert margin == 16  # the 3x context reaches one tile above and below
    with open_scene(path) as scene:
        plan = plan_windows(size, 48, tile=tile, overlap=0.25)
        sliding_window_merge(
            scene_strip_reader(scene, ["a"], mean=None, std=None, lock=threading.Lock()),
            lambda batch: np.full((len(batch), 1, tile, tile), 0.5, dtype="float32"),
            plan, channels=1, weights=window_weights(tile, "average"), write_rows=lambda w, p: None,
            context_scales=SCALES,
        )
    assert max(int(w.height) for _, w in reads) <= tile + 2 * margin
    assert all(int(w.width) == 48 for _, w in reads)


def test_predict_sees_the_same_context_windows_as_training(tmp_path: Path) -> None:
    """The same window through data.PatchDataset and through predict's strips: the same stack,
    at the corners (reflection), at an edge, inside, and next to NaN (nodata averaged out)."""
    a = coordinates()
    data = np.stack([a, np.sin(a / 7.0) * 50]).astype("float32")
    data[:, 20:26, 40:47] = np.nan  # a nodata hole that some contexts overlap
    grid = affine_grid(HEIGHT, WIDTH)
    scene_path = write_raster(tmp_path / "s.tif", data, grid, nodata=float("nan"), band_names=["a", "b"])
    labels = write_raster(tmp_path / "c.tif", np.zeros((HEIGHT, WIDTH), "uint8"), grid, nodata=255,
                          band_names=["class"])
    windows = list(CORNERS.values()) + [Window(36, 24, TILE, TILE)]
    frame = patch_frame(scene_path, labels, [(int(w.row_off), int(w.col_off), "train") for w in windows], size=TILE,
                        task="multiclass")
    norm = {"mean": [30000.0, 1.0], "std": [17000.0, 30.0]}
    dataset = PatchDataset(frame, "train", inputs=["a", "b"], normalization=norm, task="multiclass",
                           context_scales=SCALES)
    margin = context_margin(TILE, SCALES)
    mean, std = np.asarray(norm["mean"], "float32"), np.asarray(norm["std"], "float32")
    with open_scene(scene_path) as scene:
        reader = scene_strip_reader(scene, ["a", "b"], mean=mean, std=std, lock=threading.Lock())
        for index, window in enumerate(windows):
            row = int(window.row_off)
            strip = reader(max(0, row - margin), min(HEIGHT, row + TILE + margin))
            predicted = stack_windows(strip, [window], SCALES)[0]
            trained = dataset[index]["image"]
            assert predicted.shape == trained.shape == (3, 2, TILE, TILE)
            np.testing.assert_allclose(predicted, trained, rtol=1e-5, atol=1e-5)
    assert (dataset[len(windows) - 1]["image"][0, :, 0, 4:11] == 0).all()  # the hole: 0 (= the mean) in the local layer


def test_a_context_model_of_the_patch_alone_gets_a_window_axis(coord_scene: Path, tmp_path: Path) -> None:
    """fctl with context_scales [1] takes (B, 1, C, H, W): both paths must give it that axis."""
    from icetools.models import build_model
    from icetools.inference import PredictJob, make_predictor, predict_scene

    labels = write_raster(tmp_path / "c.tif", np.zeros((HEIGHT, WIDTH), "uint8"), affine_grid(HEIGHT, WIDTH),
                          nodata=255, band_names=["class"])
    frame = patch_frame(coord_scene, labels, [(0, 0, "train")], size=16, task="multiclass")
    common = dict(inputs=["a", "b"], normalization={"mean": [0.0, 0.0], "std": [1.0, 1.0]}, task="multiclass")
    assert PatchDataset(frame, "train", **common)[0]["image"].shape == (2, 16, 16)
    image = PatchDataset(frame, "train", window_axis=True, **common)[0]["image"]
    assert image.shape == (1, 2, 16, 16)
    np.testing.assert_array_equal(image[0, 0], coordinates()[:16, :16])

    model = build_model("fctl", in_channels=2, out_channels=3, width=1 / 32, context_scales=[1.0]).eval()
    predictor = make_predictor(model, {"task": "multiclass", "inputs": ["a", "b"], "n_classes": 3}, device="cpu")
    assert predictor.window_axis and predictor(np.zeros((2, 2, 16, 16), "float32")).shape == (2, 3, 16, 16)
    predict_scene(PredictJob(coord_scene, tmp_path / "o.tif", predictor, tile=16))
    with open_scene(tmp_path / "o.tif") as out:
        assert out.read(["class"]).shape == (1, HEIGHT, WIDTH)
