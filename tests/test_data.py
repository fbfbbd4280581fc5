"""Tests for icetools.data: windows read lazily and right, train-only normalisation, aligned
augmentation, regional groups pooled per scene or per patch, and the scene batch sampler."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
import torch
from rasterio.windows import Window
from fixtures import affine_grid, two_polygon_chart, write_ai4arctic

from icetools.data import (
    PatchDataset,
    SceneBatchSampler,
    augment_arrays,
    collate,
    compute_normalization,
    make_loader,
    regional_groups,
)
from icetools.errors import ConfigError, DataError
from icetools.io.raster import write_raster
from icetools.io.scene import open_scene
from icetools.losses import regional_loss

BLOCK = 24  # chart polygons are BLOCK x BLOCK squares
SIC_LEVELS = (0.0, 0.3, 0.7, 1.0)


def write_sic_scene(
    folder: Path, *, size: int = 96, seed: int = 0, image_is_sic: bool = False, land: bool = False
) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """A 2-band scene whose band HH follows the chart SIC (an easy pattern), and its labels raster.

    Polygons are BLOCK-pixel squares with ids 1..n and SIC from SIC_LEVELS; with ``image_is_sic``
    band HH equals the SIC exactly (to check that augmentation keeps image and target aligned).
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = np.zeros((size, size), "float32")
    sic = np.full((size, size), np.nan, "float32")
    n = 1
    for row in range(0, size, BLOCK):
        for col in range(0, size, BLOCK):
            ids[row : row + BLOCK, col : col + BLOCK] = n
            sic[row : row + BLOCK, col : col + BLOCK] = SIC_LEVELS[(n * 7 + seed) % len(SIC_LEVELS)]
            n += 1
    if image_is_sic:
        hh = sic.copy()
    else:
        hh = sic * 2 - 1 + rng.normal(0, 0.1, (size, size))
    hv = rng.normal(0, 1, (size, size))
    image = np.stack([hh, hv]).astype("float32")
    if land:
        image[:, :8, :8] = np.nan
    grid = affine_grid(size, size)
    scene = write_raster(folder / "scene.tif", image, grid, nodata=float("nan"), band_names=["HH", "HV"])
    labels = write_raster(
        folder / "labels.tif", np.stack([ids, sic]), grid, nodata=float("nan"), band_names=["polygon_id", "SIC"]
    )
    return scene, labels, {"image": image, "ids": ids, "sic": sic}


def patch_frame(
    scene: Path, labels: Path | str, windows: list[tuple[int, int, str]], *, size: int = 32, task: str = "sic"
) -> gpd.GeoDataFrame:
    """A patches frame as `icetools sample-patches` writes it: (row_off, col_off, split) per patch."""
    rows = [
        {"scene": str(scene), "labels": str(labels), "task": task, "row_off": r, "col_off": c, "size": size,
         "split": split, "foreground": 1.0, "unseen": 1.0, "valid": 1.0, "patch_id": i}
        for i, (r, c, split) in enumerate(windows)
    ]
    boxes = [shapely.box(r["col_off"], r["row_off"], r["col_off"] + size, r["row_off"] + size) for r in rows]
    return gpd.GeoDataFrame(rows, geometry=boxes)


def grid_windows(size: int, patch: int, step: int, split_of) -> list[tuple[int, int, str]]:
    return [(r, c, split_of(r, c)) for r in range(0, size - patch + 1, step) for c in range(0, size - patch + 1, step)]


@pytest.fixture(scope="module")
def sic_scene(tmp_path_factory) -> tuple[Path, Path, dict[str, np.ndarray]]:
    return write_sic_scene(tmp_path_factory.mktemp("sic"), land=True)


IDENTITY = {"mean": [0.0, 0.0], "std": [1.0, 1.0]}


def test_dataset_reads_the_patch_window(sic_scene) -> None:
    scene_path, labels_path, truth = sic_scene
    frame = patch_frame(scene_path, labels_path, [(0, 0, "train"), (40, 24, "train"), (8, 56, "val")])
    norm = {"mean": [-0.5, 0.2], "std": [2.0, 0.5]}
    dataset = PatchDataset(frame, "train", inputs=["HH", "HV"], normalization=norm, task="sic")
    assert len(dataset) == 2
    sample = dataset[1]
    window = Window(24, 40, 32, 32)
    with open_scene(scene_path) as scene:
        direct = scene.read(["HH", "HV"], window)
    expected = (direct - np.array([-0.5, 0.2])[:, None, None]) / np.array([2.0, 0.5])[:, None, None]
    np.testing.assert_allclose(sample["image"], expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(sample["target"], truth["sic"][40:72, 24:56])
    np.testing.assert_array_equal(sample["polygon_ids"], truth["ids"][40:72, 24:56].astype("int64"))
    assert sample["valid"].all()

    corner = dataset[0]  # the NaN 'land' corner: invalid, image 0 (= the mean), no polygon
    assert not corner["valid"][:8, :8].any() and corner["valid"][8:, 8:].all()
    assert (corner["image"][:, :8, :8] == 0).all()
    assert (corner["polygon_ids"][:8, :8] == 0).all()
    assert corner["image"].dtype == np.float32 and corner["polygon_ids"].dtype == np.int64


def test_context_samples_stack_the_windows(sic_scene) -> None:
    scene_path, labels_path, _ = sic_scene
    frame = patch_frame(scene_path, labels_path, [(32, 32, "train")])
    dataset = PatchDataset(frame, "train", inputs=["HH"], normalization={"mean": [0.0], "std": [1.0]},
                           task="sic", context_scales=(1.0, 2.0))
    image = dataset[0]["image"]
    assert image.shape == (2, 1, 32, 32)
    with open_scene(scene_path) as scene:
        local = scene.read(["HH"], Window(32, 32, 32, 32))
        context = scene.read(["HH"], Window(16, 16, 64, 64))
    np.testing.assert_allclose(image[0], local)
    # the 2x context, area-averaged to 32 x 32: each pixel the mean of a 2 x 2 block
    np.testing.assert_allclose(image[1, 0], context[0].reshape(32, 2, 32, 2).mean(axis=(1, 3)), rtol=1e-5)


def test_normalization_uses_train_patches_only(tmp_path: Path) -> None:
    scene_path, labels_path, truth = write_sic_scene(tmp_path, land=True)
    # train: the top half; val: the bottom half, whose SIC (and so HH) differ
    windows = [(0, 0, "train"), (0, 32, "train"), (64, 0, "val"), (64, 64, "val")]
    frame = patch_frame(scene_path, labels_path, windows)
    stats = compute_normalization(frame, ["HH", "HV"])
    train_pixels = np.concatenate([truth["image"][:, 0:32, 0:64].reshape(2, -1)], axis=1)
    train_pixels = train_pixels[:, np.isfinite(train_pixels).all(axis=0)]
    np.testing.assert_allclose(stats["mean"], train_pixels.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(stats["std"], train_pixels.std(axis=1), rtol=1e-4)
    everything = truth["image"][:, np.isfinite(truth["image"]).all(axis=0)]
    assert abs(stats["mean"][0] - everything[0].mean()) > 0.05  # the val half would have moved it

    with pytest.raises(DataError, match="no train patches"):
        compute_normalization(patch_frame(scene_path, labels_path, [(0, 0, "val")]), ["HH"])


def test_augmentation_keeps_image_target_and_ids_aligned(tmp_path: Path) -> None:
    scene_path, labels_path, truth = write_sic_scene(tmp_path, image_is_sic=True)
    frame = patch_frame(scene_path, labels_path, [(10, 20, "train")], size=40)
    dataset = PatchDataset(frame, "train", inputs=["HH", "HV"], normalization=IDENTITY, task="sic", augment=True)
    id_to_sic = {int(i): float(s) for i, s in zip(truth["ids"].ravel(), truth["sic"].ravel())}
    plain = truth["ids"][10:50, 20:60].astype("int64")  # ids differ per block: no symmetry
    layouts = set()
    for seed in range(24):
        sample = dataset[(0, seed)]
        np.testing.assert_array_equal(sample["image"][0], sample["target"])
        lookup = np.vectorize(id_to_sic.get)(sample["polygon_ids"])
        np.testing.assert_array_equal(lookup.astype("float32"), sample["target"])
        # the result is one of the 8 symmetries of the plain patch
        variants = [np.rot90(plain, k) for k in range(4)]
        variants += [v[:, ::-1] for v in variants]
        matches = [i for i, v in enumerate(variants) if np.array_equal(v, sample["polygon_ids"])]
        assert len(matches) == 1
        layouts.add(matches[0])
    assert len(layouts) >= 6  # the draws reach (nearly) all flips and rotations
    again = dataset[(0, 5)]
    np.testing.assert_array_equal(again["target"], dataset[(0, 5)]["target"])  # seeded: repeatable


def test_augment_arrays_treats_contexts_like_the_patch() -> None:
    rng = np.random.default_rng(3)
    base = np.arange(16, dtype="float32").reshape(4, 4)
    arrays = {"image": np.stack([np.stack([base]), np.stack([base * 2])]), "target": base.copy()}
    out = augment_arrays(arrays, rng)
    np.testing.assert_array_equal(out["image"][0, 0], out["target"])
    np.testing.assert_array_equal(out["image"][1, 0], out["target"] * 2)


def _sample(ids: np.ndarray, sic: np.ndarray, scene: int) -> dict[str, np.ndarray]:
    return {"image": np.zeros((1, *ids.shape), "float32"), "target": sic.astype("float32"),
            "valid": ids > 0, "polygon_ids": ids.astype("int64"), "scene_index": np.int64(scene)}


def test_collate_pools_polygons_per_scene_or_per_patch() -> None:
    ids_a = np.array([[5, 5], [7, 0]])
    ids_b = np.array([[5, 9], [9, 9]])
    sic_a = np.array([[0.5, 0.5], [1.0, 0.0]])
    sic_b = np.array([[0.5, 0.2], [0.2, 0.2]])
    same_scene = [_sample(ids_a, sic_a, 0), _sample(ids_b, sic_b, 0)]

    pooled = collate(same_scene, pool="scene")
    groups = pooled["groups"].numpy()
    assert groups[0, 0, 0] == groups[0, 0, 1] == groups[1, 0, 0]  # polygon 5 of both patches: one group
    assert groups[0, 1, 1] == 0  # no polygon
    assert len(set(groups[groups > 0].tolist())) == 3  # polygons 5, 7, 9
    targets = pooled["group_targets"].numpy()
    assert targets[groups[0, 0, 0]] == pytest.approx(0.5) and targets[groups[1, 1, 1]] == pytest.approx(0.2)

    apart = collate(same_scene, pool="patch")["groups"].numpy()
    assert apart[0, 0, 0] != apart[1, 0, 0]  # polygon 5 counted per patch
    assert len(set(apart[apart > 0].tolist())) == 4

    other_scene = collate([_sample(ids_a, sic_a, 0), _sample(ids_b, sic_b, 1)], pool="scene")["groups"].numpy()
    assert other_scene[0, 0, 0] != other_scene[1, 0, 0]  # same id, different scenes: different polygons

    with pytest.raises(ConfigError):
        collate(same_scene, pool="tile")


def test_pooled_regional_loss_matches_a_hand_computation() -> None:
    ids_a = np.array([[5, 5], [7, 0]])
    ids_b = np.array([[5, 9], [9, 9]])
    sic_a = np.array([[0.5, 0.5], [1.0, 0.0]])
    sic_b = np.array([[0.5, 0.2], [0.2, 0.2]])
    batch = collate([_sample(ids_a, sic_a, 0), _sample(ids_b, sic_b, 0)], pool="scene")
    prob = torch.tensor([[[0.2, 0.4], [0.9, 0.5]], [[0.9, 0.1], [0.3, 0.2]]])
    logits = torch.logit(prob)[:, None]
    loss = regional_loss(logits, batch["groups"], batch["group_targets"])
    poly5 = (0.2 + 0.4 + 0.9) / 3 - 0.5  # pooled over both patches
    poly7 = 0.9 - 1.0
    poly9 = (0.1 + 0.3 + 0.2) / 3 - 0.2
    assert float(loss) == pytest.approx((poly5**2 + poly7**2 + poly9**2) / 3, rel=1e-5)


def test_regional_groups_agree_with_np_unique() -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 40, size=(6, 16, 16))
    owners = np.array([3, 3, 8, 8, 8, 1])
    target = rng.random(40)[ids]
    groups, targets = regional_groups(ids, target, owners)
    keys = owners[:, None, None] * 1000 + ids
    _, expected = np.unique(keys[ids > 0], return_inverse=True)
    np.testing.assert_array_equal(groups[ids > 0], expected + 1)
    assert (groups[ids == 0] == 0).all()
    np.testing.assert_allclose(targets[groups[ids > 0]], target[ids > 0], rtol=1e-6)


def test_scene_batch_sampler_draws_each_batch_from_one_scene() -> None:
    scene_of_item = np.array([0] * 17 + [1] * 5 + [2] * 1)
    sampler = SceneBatchSampler(scene_of_item, 8, seed=4)
    sampler.set_epoch(1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3 + 1 + 1
    items = [item for batch in batches for item, _ in batch]
    assert sorted(items) == list(range(23))  # every item once
    for batch in batches:
        assert len({scene_of_item[item] for item, _ in batch}) == 1
    assert sorted(len(b) for b in batches) == [1, 5, 5, 6, 6]  # 17 -> 6 + 6 + 5, never 8 + 8 + 1
    sampler.set_epoch(1)
    assert list(sampler) == batches  # the epoch fixes order and augmentation seeds
    sampler.set_epoch(2)
    assert list(sampler) != batches

    mixed = SceneBatchSampler(scene_of_item, 8, by_scene=False, shuffle=False)
    assert [len(b) for b in mixed] == [8, 8, 7]
    assert [i for b in mixed for i in b] == list(range(23))


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_batches_one_scene_with_groups(tmp_path: Path, workers: int) -> None:
    first = write_sic_scene(tmp_path / "a", seed=0)
    second = write_sic_scene(tmp_path / "b", seed=1)
    windows = grid_windows(96, 32, 32, lambda r, c: "train")
    frame = gpd.GeoDataFrame(
        np.concatenate([patch_frame(first[0], first[1], windows), patch_frame(second[0], second[1], windows)]),
        columns=patch_frame(first[0], first[1], windows).columns,
    )
    dataset = PatchDataset(frame, "train", inputs=["HH", "HV"], normalization=IDENTITY, task="sic", augment=True)
    loader = make_loader(dataset, batch_size=4, pool="scene", shuffle=True, workers=workers)
    seen = 0
    for batch in loader:
        assert batch["image"].shape[1:] == (2, 32, 32)
        assert batch["scene_index"].unique().numel() == 1
        assert batch["groups"].max() + 1 == batch["group_targets"].numel()
        seen += batch["image"].shape[0]
    assert seen == 18


def test_netcdf_chart_gives_the_sic_target(tmp_path: Path) -> None:
    path = write_ai4arctic(tmp_path / "scene.nc", chart=two_polygon_chart(64, 64, uncharted=4))
    frame = patch_frame(path, "", [(0, 0, "train")], size=64)
    sample = PatchDataset(frame, "train", inputs=["HH", "HV"], normalization=IDENTITY, task="sic")[0]
    with open_scene(path) as scene:
        table = scene.polygon_table()
    ids = sample["polygon_ids"]
    assert set(np.unique(ids).tolist()) == {0, 1, 2}
    np.testing.assert_allclose(sample["target"][ids == 1], table[1].sic)
    np.testing.assert_allclose(sample["target"][ids == 2], table[2].sic)
    assert table[1].sic != table[2].sic
    assert not sample["valid"][:, -4:].any()  # outside the chart: no label
    assert not sample["valid"][:6, :6].any() and (ids[:6, :6] == 0).all()  # land: no label, no polygon
    assert sample["valid"][6:, 6:-4].all()
