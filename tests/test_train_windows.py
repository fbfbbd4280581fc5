"""Fresh training windows: never in a validation or test block, reproducible per (seed, epoch), the samples an
epoch says, foreground share for lines, the blocks layer, and old patches files without it."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from rasterio.windows import Window

import fixtures

from icetools.data import SceneBatchSampler
from icetools.errors import DataError
from icetools.io.raster import write_raster
from icetools.io.scene import open_scene
from icetools.patches_io import BLOCK_COLUMNS, read_blocks, read_patches, write_patches
from icetools.sampling import sample_patches_and_blocks
from icetools.train_windows import (
    RandomWindowDataset,
    RandomWindowSampler,
    TrainArea,
    TrainRegions,
    make_train_loader,
    make_window_loader,
    train_regions,
)

SIDE = 512
PATCH = 64
BLOCK = 128
IDENTITY = {"mean": [0.0, 0.0], "std": [1.0, 1.0]}


def line_mask() -> np.ndarray:
    """Two short lines, a small share of the pixels (rare foreground, as grounding lines are)."""
    line = np.zeros((SIDE, SIDE), dtype="uint8")
    idx = np.arange(150, 470)
    line[idx, idx] = 1  # a diagonal
    line[300, 20:200] = 1  # and a horizontal piece
    return line


@pytest.fixture(scope="module")
def lines(tmp_path_factory) -> dict:
    """A 512 px scene (top-left 128 px land, cell-aligned), its line labels and a patches file with blocks."""
    root = tmp_path_factory.mktemp("train_windows")
    grid = fixtures.affine_grid(SIDE, SIDE)
    scene = fixtures.write_scene(root / "scene.tif", grid, seed=3)
    labels = write_raster(root / "line.tif", line_mask(), grid, nodata=None, band_names=["line"])
    sampled = sample_patches_and_blocks([scene], [labels], size=PATCH, block_size=BLOCK, n=200, seed=1)
    path = write_patches(sampled.patches, root / "patches.gpkg", blocks=sampled.blocks)
    valid = np.isfinite(fixtures.sar_like(SIDE, SIDE, seed=3)).all(axis=0)
    return {"scene": scene, "labels": labels, "sampled": sampled, "path": path, "valid": valid, "grid": grid}


def split_pixels(blocks, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    masks = {s: np.zeros(shape, dtype=bool) for s in ("train", "val", "test")}
    for b in blocks.itertuples():
        masks[b.split][b.row_off : b.row_off + b.height, b.col_off : b.col_off + b.width] = True
    return masks


def epoch_windows(sampler: RandomWindowSampler, epoch: int) -> list[tuple[int, int, int, int]]:
    sampler.set_epoch(epoch)
    return [item for batch in sampler for item in batch]


# --- where windows lie --------------------------------------------------------------------------------


def test_training_windows_never_touch_a_validation_or_test_block(lines):
    frame, blocks = read_patches(lines["path"]), read_blocks(lines["path"])
    masks = split_pixels(blocks, (SIDE, SIDE))
    assert masks["val"].any() and masks["test"].any()
    regions = train_regions(frame, blocks)
    sampler = RandomWindowSampler(regions, 8, samples_per_epoch=1000, seed=0)
    windows = [w for epoch in range(3) for w in epoch_windows(sampler, epoch)]
    assert len(windows) == 3000
    straddling = 0
    for _, row, col, _ in windows:
        assert 0 <= row <= SIDE - PATCH and 0 <= col <= SIDE - PATCH
        assert masks["train"][row : row + PATCH, col : col + PATCH].all()  # every pixel in a train block
        assert 1 - lines["valid"][row : row + PATCH, col : col + PATCH].mean() <= 0.5  # max_invalid, exact here
        straddling += row // BLOCK != (row + PATCH - 1) // BLOCK or col // BLOCK != (col + PATCH - 1) // BLOCK
    rows = np.array([w[1] for w in windows])
    assert len(set(rows % 16)) == 16  # any pixel offset, not only the 16 px cells
    assert straddling > 0  # a window may span adjacent train blocks


def test_valid_share_is_exact_for_aligned_windows_and_where_cells_are_whole(lines):
    frame, blocks = read_patches(lines["path"]), read_blocks(lines["path"])
    area = train_regions(frame, blocks).areas[0]
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, SIDE - PATCH + 1, size=(2, 500))
    expected = [lines["valid"][r : r + PATCH, c : c + PATCH].mean() for r, c in zip(rows, cols)]
    np.testing.assert_allclose(area.valid_share(rows, cols, PATCH), expected, atol=1e-9)


def test_a_half_valid_cell_is_counted_evenly():
    valid = np.zeros((4, 4), dtype="int32")
    valid[1, 1] = 128  # half of one 16 x 16 cell
    area = TrainArea(scene="s", labels="", height=64, width=64, valid=valid, foreground=valid * 0,
                     train=np.ones((4, 4), bool))
    share = area.valid_share(np.array([16, 24, 8]), np.array([16, 16, 8]), 16)
    np.testing.assert_allclose(share, [0.5, 0.25, 0.125])


# --- epochs -------------------------------------------------------------------------------------------


def test_an_epoch_has_the_samples_it_says(lines):
    regions = train_regions(read_patches(lines["path"]), read_blocks(lines["path"]))
    sampler = RandomWindowSampler(regions, 8, samples_per_epoch=1001, seed=0)
    sizes = [len(batch) for batch in sampler]
    assert len(sizes) == len(sampler) == 126 and sum(sizes) == 1001
    assert set(sizes) == {7, 8}  # near-equal batches, never a lone window


def test_same_seed_and_epoch_draw_the_same_windows(lines):
    regions = train_regions(read_patches(lines["path"]), read_blocks(lines["path"]))
    sampler = RandomWindowSampler(regions, 8, samples_per_epoch=200, seed=5)
    first = epoch_windows(sampler, 3)
    epoch_windows(sampler, 4)
    assert epoch_windows(sampler, 3) == first  # a resumed run repeats epoch 3 exactly
    assert epoch_windows(RandomWindowSampler(regions, 8, samples_per_epoch=200, seed=5), 3) == first
    assert epoch_windows(sampler, 4) != first
    assert epoch_windows(RandomWindowSampler(regions, 8, samples_per_epoch=200, seed=6), 3) != first


def test_foreground_share_for_a_line_task(lines):
    frame, blocks = read_patches(lines["path"]), read_blocks(lines["path"])
    line = line_mask()

    def with_line(share: float | None) -> tuple[float, float]:
        regions = train_regions(frame, blocks, foreground_share=share)
        rng = np.random.default_rng(1)
        rows, cols, centred = regions.draw(0, 2000, rng)
        hits = [line[r : r + PATCH, c : c + PATCH].any() for r, c in zip(rows, cols)]
        assert all(h for h, c in zip(hits, centred) if c)  # a centred window holds its foreground cell
        return float(np.mean(hits)), float(np.mean(centred))

    uniform, none_centred = with_line(0.0)
    assert none_centred == 0 and uniform < 0.6
    assert with_line(1.0) == (1.0, 1.0)
    hits, centred = with_line(None)  # the binary task's default: half the windows centred
    assert centred == pytest.approx(0.5, abs=0.04)
    assert hits == pytest.approx(0.5 + 0.5 * uniform, abs=0.05)


def test_no_train_window_is_a_data_error(lines):
    blocks = read_blocks(lines["path"]).copy()
    blocks["split"] = "val"
    blocks.loc[0, "split"] = "train"  # one 128 px block of land: no window holds enough valid pixels
    with pytest.raises(DataError, match="no 64-pixel training window"):
        TrainRegions.from_blocks(blocks, size=PATCH)


# --- the dataset and the loader -----------------------------------------------------------------------


def test_dataset_reads_the_drawn_window(lines):
    regions = train_regions(read_patches(lines["path"]), read_blocks(lines["path"]))
    dataset = RandomWindowDataset(regions.scenes, size=regions.size, inputs=list(fixtures.AI4ARCTIC_BANDS),
                                  normalization=IDENTITY, task="binary", augment=False)
    sample = dataset[(0, 200, 136, 7)]
    with open_scene(lines["scene"]) as scene:
        direct = scene.read(list(fixtures.AI4ARCTIC_BANDS), Window(136, 200, PATCH, PATCH))
    np.testing.assert_allclose(sample["image"], np.nan_to_num(direct), rtol=1e-6)
    np.testing.assert_array_equal(sample["target"], line_mask()[200:264, 136:200].astype("float32"))
    assert sample["scene_index"] == 0
    copy = pickle.loads(pickle.dumps(dataset))  # as a spawned worker gets it: open handles stay behind
    np.testing.assert_array_equal(copy[(0, 200, 136, 7)]["image"], sample["image"])


def sic_scenes(root: Path) -> list[tuple[Path, Path]]:
    """Two 256 px SIC scenes whose polygons are 32 px squares (ids repeat across scenes on purpose)."""
    out = []
    for i in range(2):
        grid = fixtures.affine_grid(256, 256, origin=(100_000.0 + 20_000 * i, -2_000_000.0))
        rows, cols = np.mgrid[:256, :256]
        ids = (1 + (rows // 32) * 8 + cols // 32).astype("float32")
        sic = ((ids * 7 + i) % 11 / 10).astype("float32")
        scene = fixtures.write_scene(root / f"scene{i}.tif", grid, seed=i, land=False)
        labels = write_raster(root / f"sic{i}.tif", np.stack([ids, sic]), grid, nodata=float("nan"),
                              band_names=["polygon_id", "SIC"])
        out.append((scene, labels))
    return out


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_batches_come_from_one_scene_with_pooled_groups(tmp_path, workers):
    pairs = sic_scenes(tmp_path)
    sampled = sample_patches_and_blocks([s for s, _ in pairs], [l for _, l in pairs], size=32, n=40, seed=0)
    regions = train_regions(sampled.patches, sampled.blocks)
    assert regions.foreground_share == 0.0  # charted pixels are no rare foreground
    dataset = RandomWindowDataset(regions.scenes, size=regions.size, inputs=list(fixtures.AI4ARCTIC_BANDS),
                                  normalization=IDENTITY, task="sic")
    loader = make_window_loader(dataset, regions, batch_size=4, samples_per_epoch=18, pool="scene", workers=workers)
    seen, scenes = 0, set()
    for epoch in range(2):
        loader.batch_sampler.set_epoch(epoch)
        for batch in loader:
            assert batch["image"].shape[1:] == (2, 32, 32)
            assert batch["scene_index"].unique().numel() == 1
            scenes.add(int(batch["scene_index"][0]))
            assert batch["groups"].max() + 1 == batch["group_targets"].numel()
            seen += batch["image"].shape[0]
    assert seen == 36 and len(loader) == 5
    assert scenes == {0, 1}


# --- the blocks layer ---------------------------------------------------------------------------------


def test_blocks_round_trip_and_cover_the_scene(lines):
    blocks = lines["sampled"].blocks
    back = read_blocks(lines["path"])
    assert list(back[list(BLOCK_COLUMNS)].itertuples(index=False)) == list(
        blocks[list(BLOCK_COLUMNS)].itertuples(index=False)
    )
    cover = np.zeros((SIDE, SIDE), dtype=int)
    for b in back.itertuples():
        cover[b.row_off : b.row_off + b.height, b.col_off : b.col_off + b.width] += 1
        bounds = lines["grid"].window_transform(Window(b.col_off, b.row_off, b.width, b.height))
        left, top = bounds * (0, 0)
        right, bottom = bounds * (b.width, b.height)
        assert b.geometry.bounds == pytest.approx((left, bottom, right, top))
        share = lines["valid"][b.row_off : b.row_off + b.height, b.col_off : b.col_off + b.width].mean()
        assert b.valid == pytest.approx(share)
    assert (cover == 1).all()  # every pixel in exactly one block
    assert set(back["split"]) == {"train", "val", "test"} and len(back) == (SIDE // BLOCK) ** 2
    masks = split_pixels(back, (SIDE, SIDE))
    for p in lines["sampled"].patches.itertuples():  # the fixed patches lie in blocks of their own split
        assert masks[p.split][p.row_off : p.row_off + p.size, p.col_off : p.col_off + p.size].all()


def test_a_scene_split_has_one_block_per_scene(tmp_path):
    scenes, labels = [], []
    for i in range(3):
        grid = fixtures.affine_grid(96, 112, origin=(100_000.0 + 10_000 * i, -2_000_000.0))
        scenes.append(fixtures.write_scene(tmp_path / f"s{i}.tif", grid, seed=i))
        labels.append(write_raster(tmp_path / f"l{i}.tif", np.ones((96, 112), "uint8"), grid, nodata=None,
                                   band_names=["line"]))
    blocks = sample_patches_and_blocks(scenes, labels, size=32, n=20, split_by="scene").blocks
    assert len(blocks) == 3 and sorted(blocks["split"]) == ["test", "train", "val"]
    assert (blocks[["row_off", "col_off", "height", "width"]].to_numpy() == [0, 0, 96, 112]).all()


def test_an_old_patches_file_without_blocks_still_trains(tmp_path, lines):
    path = write_patches(lines["sampled"].patches, tmp_path / "old.gpkg")
    assert read_blocks(path) is None
    frame = read_patches(path)
    options = dict(inputs=list(fixtures.AI4ARCTIC_BANDS), normalization=IDENTITY, task="binary")
    loader = make_train_loader(frame, None, batch_size=8, pool="patch", samples_per_epoch=1000, workers=0, **options)
    assert isinstance(loader.batch_sampler, SceneBatchSampler)  # the fixed train windows, as before blocks
    n_train = int((frame["split"] == "train").sum())
    loader.batch_sampler.set_epoch(1)
    assert sum(batch["image"].shape[0] for batch in loader) == n_train

    fresh = make_train_loader(frame, lines["sampled"].blocks, batch_size=8, pool="patch", samples_per_epoch=40,
                              workers=0, **options)
    assert isinstance(fresh.batch_sampler, RandomWindowSampler) and len(fresh) == 5


def test_train_patches_can_stand_in_for_blocks(lines):
    """For old files written by sample-patches: windows move freely inside the train patches' union."""
    frame = lines["sampled"].patches
    regions = TrainRegions.from_patches(frame)
    covered = np.zeros((SIDE, SIDE), dtype=bool)
    for p in frame[frame["split"] == "train"].itertuples():
        covered[p.row_off : p.row_off + p.size, p.col_off : p.col_off + p.size] = True
    sampler = RandomWindowSampler(regions, 8, samples_per_epoch=500, seed=0)
    for _, row, col, _ in epoch_windows(sampler, 0):
        assert covered[row : row + PATCH, col : col + PATCH].all()
