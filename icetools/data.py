"""Training data: patches read by window from their scenes, normalised, augmented and batched.

Nothing here reads a whole scene: each sample is one window of the scene and of its labels, read
when the DataLoader asks for it (in a worker process when ``workers > 0``; scenes reopen their
file handles per process). Batches carry everything the losses need, built on the CPU:

* ``image`` float32 (B, C, H, W), or (B, T, C, H, W) for context models;
* ``target`` float32 (B, H, W) for sic/binary, int64 for multiclass; ``valid`` bool (B, H, W);
* for SIC also ``polygon_ids`` int64 (B, H, W) and ``scene_index`` int64 (B,), plus the regional
  loss's ``groups`` (compact group per pixel, 0 = ignore) and ``group_targets`` (G + 1,).

Polygon ids are global within a scene, so with ``pool="scene"`` (and :class:`SceneBatchSampler`
drawing every batch from one scene) a polygon cut by several patches of the batch is pooled into
one group: the regional loss then sees more of each polygon than one patch shows.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rasterio.windows import Window
from torch.utils.data import DataLoader, Dataset, Sampler

from icetools.contexts import read_contexts
from icetools.errors import ConfigError, DataError
from icetools.inputs import InputSpec, channel_reader, read_inputs
from icetools.io.scene import Scene, open_scene
from icetools.tasks import BINARY, SIC, check_task

if TYPE_CHECKING:
    import pandas as pd

    from icetools.labels import LabelReader

POOLS = ("scene", "patch")
CLASS_NODATA = 255  # class labels: uint8 with 255 = no data

Sample = dict[str, Any]
Batch = dict[str, torch.Tensor]


def labels_path(value: object) -> str:
    """A row's labels path; "" (the scene's own chart) for empty or missing values (NaN, None)."""
    return value if isinstance(value, str) else ""


def split_rows(frame: pd.DataFrame, split: str) -> pd.DataFrame:
    """The rows of one split, in file order; ConfigError for an unknown split name."""
    if split not in ("train", "val", "test"):
        raise ConfigError(f"unknown split {split!r}; valid splits: train, val, test")
    return frame[frame["split"] == split].reset_index(drop=True)


class _SceneCache:
    """Scenes and label readers opened once per process (handles reopen after fork on their own)."""

    def __init__(self) -> None:
        self._scenes: dict[str, Scene] = {}
        self._labels: dict[tuple[str, str], LabelReader] = {}

    def scene(self, path: str) -> Scene:
        if path not in self._scenes:
            self._scenes[path] = open_scene(path)
        return self._scenes[path]

    def labels(self, scene_path: str, label_file: str) -> LabelReader:
        from icetools.labels import open_labels  # the one place that knows the label file formats

        key = (scene_path, label_file)
        if key not in self._labels:
            self._labels[key] = open_labels(self.scene(scene_path), label_file or None)
        return self._labels[key]

    def __getstate__(self) -> dict:
        return {"_scenes": {}, "_labels": {}}  # workers open their own


def _scaled(raw: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(x - mean) / std per channel (channel axis = -3), NaN kept."""
    return (raw - mean[:, None, None]) / std[:, None, None]


def _finite(values: np.ndarray) -> np.ndarray:
    """NaN (land, no data) -> 0 = the mean, as float32."""
    return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0).astype("float32", copy=False)


def _normalise(raw: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(x - mean) / std per channel (channel axis = -3), NaN (land, no data) -> 0 = the mean."""
    return _finite(_scaled(raw, mean, std))


def augment_arrays(arrays: Mapping[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One random flip + 90-degree rotation, applied identically to every array's last two axes.

    The same draw for image, target, mask, ids and every context window keeps them aligned; the
    contexts are centred on the patch, so rotating each about its own centre keeps them centred.
    """
    turns = int(rng.integers(4))
    flip = bool(rng.integers(2))
    out = {}
    for key, array in arrays.items():
        if array.ndim < 2:
            out[key] = array
            continue
        moved = np.rot90(array, turns, axes=(-2, -1))
        if flip:
            moved = moved[..., ::-1]
        out[key] = np.ascontiguousarray(moved)
    return out


class WindowDataset(Dataset):
    """Samples read lazily by window from scenes and their labels: what every training dataset shares.

    Subclasses say which windows exist (:class:`PatchDataset`: the fixed patches of a split;
    :class:`icetools.train_windows.RandomWindowDataset`: windows drawn afresh every epoch) and call
    :meth:`read_sample`.

    ``window_axis`` gives images a window axis even for ``context_scales`` (1,): (1, C, H, W), as a
    context model built with the patch alone (fctl with context_scales [1]) expects.

    ``input_scenes`` maps a scene path to another raster on its grid that supplies the inputs
    (and their validity) instead: a refiner reads the crude masks of a segmentation model there,
    while the labels still come through the original scene.
    """

    def __init__(
        self,
        *,
        inputs: Sequence[str],
        normalization: Mapping[str, Sequence[float]],
        task: str,
        input_transforms: Mapping[str, str] | None = None,
        augment: bool = False,
        context_scales: Sequence[float] = (1.0,),
        seed: int = 0,
        input_scenes: Mapping[str, str] | None = None,
        window_axis: bool = False,
    ) -> None:
        check_task(task)
        self.task = task
        self.inputs = list(inputs)
        self.input_spec = InputSpec.from_mapping(self.inputs, input_transforms)  # none given: as they are
        self.mean = np.asarray(normalization["mean"], dtype="float32")
        self.std = np.asarray(normalization["std"], dtype="float32")
        channels = self.input_spec.n_channels
        if self.mean.shape != (channels,) or self.std.shape != (channels,):
            raise ConfigError(
                f"normalisation has {self.mean.size} means and {self.std.size} stds for "
                f"{channels} input channels ({', '.join(self.input_spec.channel_names)})"
            )
        self.augment = augment
        self.context_scales = tuple(float(s) for s in context_scales)
        self.window_axis = window_axis
        self.seed = seed
        self.input_scenes = {str(k): str(v) for k, v in (input_scenes or {}).items()}
        self._cache = _SceneCache()
        self._rng: np.random.Generator | None = None
        self._rng_pid: int | None = None

    @property
    def is_context(self) -> bool:
        return self.window_axis or self.context_scales != (1.0,)

    def _fallback_rng(self) -> np.random.Generator:
        """For items without a seed (plain indices): a generator per process, seeded per worker."""
        if self._rng is None or self._rng_pid != os.getpid():
            self._rng = np.random.default_rng([self.seed, torch.initial_seed() % 2**32, os.getpid()])
            self._rng_pid = os.getpid()
        return self._rng

    def read_sample(
        self, scene_path: str, label_file: str, window: Window, *, scene_index: int, augment_seed: int | None
    ) -> Sample:
        """One window's image, labels and validity, normalised and (with ``augment``) flipped/rotated."""
        scene = self._cache.scene(self.input_scenes.get(scene_path, scene_path))
        labels = self._cache.labels(scene_path, label_file)
        channels, valid = read_inputs(scene, window, self.input_spec)  # the reads and transforms of predict
        if self.is_context:
            # Normalised before the contexts are resized, in predict's order: the very same floats.
            read = channel_reader(scene, self.input_spec)
            image = _finite(read_contexts(lambda w: _scaled(read(w), self.mean, self.std), window, self.context_scales))
        else:
            image = _normalise(channels, self.mean, self.std)
        sample: Sample = {"image": image}
        sample.update(self._labels(labels.read(window), valid))
        sample["scene_index"] = np.int64(scene_index)

        if self.augment:
            rng = np.random.default_rng(augment_seed) if augment_seed is not None else self._fallback_rng()
            sample = augment_arrays(sample, rng)
        return sample

    def _labels(self, bands: np.ndarray, scene_valid: np.ndarray) -> Sample:
        """target / valid (/ polygon_ids) from the label bands as LabelReader gives them."""
        if self.task == SIC:
            ids, sic = bands
            ids = np.nan_to_num(ids, nan=0.0).astype("int64")
            valid = scene_valid & np.isfinite(sic)
            target = np.where(valid, sic, 0.0).astype("float32")
            return {"target": target, "valid": valid, "polygon_ids": np.where(valid, ids, 0)}
        label = bands[0]
        if self.task == BINARY:
            valid = scene_valid & np.isfinite(label)
            return {"target": np.where(valid, label > 0.5, 0).astype("float32"), "valid": valid}
        valid = scene_valid & np.isfinite(label) & (np.nan_to_num(label, nan=CLASS_NODATA) < CLASS_NODATA)
        return {"target": np.where(valid, label, 0).astype("int64"), "valid": valid}


class PatchDataset(WindowDataset):
    """The fixed patches of one split as samples (validation, test, and training from old files).

    An item is an index, or ``(index, augmentation_seed)`` as :class:`SceneBatchSampler` yields
    them: seeding each sample's augmentation from the sampler makes a run reproducible whatever
    the number of workers, and a resumed run continues exactly as an uninterrupted one would.
    The keyword options are :class:`WindowDataset`'s.
    """

    def __init__(self, frame: pd.DataFrame, split: str, **options: Any) -> None:
        super().__init__(**options)
        rows = split_rows(frame, split)
        self.split = split
        # Plain tuples: cheap to pickle into workers, no pandas on the hot path.
        self.records = [
            (str(r.scene), labels_path(r.labels), int(r.row_off), int(r.col_off), int(r.size))
            for r in rows.itertuples(index=False)
        ]
        scenes = sorted({record[0] for record in self.records})
        self.scene_paths = scenes
        lookup = {path: i for i, path in enumerate(scenes)}
        self.scene_of_item = np.array([lookup[record[0]] for record in self.records], dtype="int64")

    def __len__(self) -> int:
        return len(self.records)

    def window(self, index: int) -> Window:
        _, _, row, col, size = self.records[index]
        return Window(col, row, size, size)

    def __getitem__(self, item: int | tuple[int, int]) -> Sample:
        index, augment_seed = item if isinstance(item, tuple) else (item, None)
        scene_path, label_file, *_ = self.records[index]
        return self.read_sample(scene_path, label_file, self.window(index),
                                scene_index=int(self.scene_of_item[index]), augment_seed=augment_seed)


# --------------------------------------------------------------------------- normalisation


def compute_normalization(
    frame: pd.DataFrame,
    inputs: Sequence[str],
    *,
    max_patches: int = 256,
    seed: int = 0,
    input_transforms: Mapping[str, str] | None = None,
) -> dict[str, list[float]]:
    """Per-channel mean and std over the valid pixels of (up to ``max_patches``) TRAIN patches.

    Channels are the bands after ``input_transforms`` (none: the bands as they are), read as the
    model reads them. Validation and test patches never contribute: their statistics would leak
    into the model.
    Sums are kept in float64 (dB values over ~1e7 pixels); a band with zero spread gets std 1.
    """
    rows = split_rows(frame, "train")
    if len(rows) == 0:
        raise DataError("no train patches to compute the normalisation from: sample patches with a train split")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(rows), size=min(max_patches, len(rows)), replace=False))
    spec = InputSpec.from_mapping(list(inputs), input_transforms)
    n_channels = spec.n_channels
    count = 0
    total = np.zeros(n_channels)
    total_sq = np.zeros(n_channels)
    cache = _SceneCache()
    for i in chosen:
        record = rows.iloc[int(i)]
        scene = cache.scene(str(record["scene"]))
        window = Window(int(record["col_off"]), int(record["row_off"]), int(record["size"]), int(record["size"]))
        data, valid = read_inputs(scene, window, spec)
        data = data.astype("float64")
        values = data[:, valid]
        count += values.shape[1]
        total += values.sum(axis=1)
        total_sq += (values**2).sum(axis=1)
    if count == 0:
        raise DataError(
            "the train patches hold no valid pixel in the bands " + ", ".join(inputs) + ": check the inputs"
        )
    mean = total / count
    variance = np.maximum(total_sq / count - mean**2, 0.0)
    std = np.sqrt(variance)
    std = np.where(std > 0, std, 1.0)
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}


# --------------------------------------------------------------------------- batching


def regional_groups(
    polygon_ids: np.ndarray, target: np.ndarray, owners: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Compact groups (B, H, W) int64 and their chart SIC (G + 1,) float32 for the regional loss.

    A group is one (owner, polygon id) pair: owner = scene index pools a polygon across the
    patches of its scene, owner = patch position keeps every patch's part apart. Ids <= 0 are
    ignored (group 0). Pairs are numbered through a dense presence table over
    (distinct owners) x (max id + 1) rather than np.unique: a cumulative sum instead of a sort
    of a million pixels keeps the worker's collate cheap.
    """
    ids = polygon_ids.astype("int64", copy=False)
    mask = ids > 0
    if not mask.any():
        return np.zeros(ids.shape, dtype="int64"), np.zeros(1, dtype="float32")
    distinct, owner_rank = np.unique(np.asarray(owners, dtype="int64"), return_inverse=True)
    span = int(ids.max()) + 1
    keys = owner_rank.reshape(-1, *([1] * (ids.ndim - 1))) * span + ids
    present = np.zeros(len(distinct) * span, dtype=bool)
    present[keys[mask]] = True
    number = np.cumsum(present)  # group number of every present key (1..G)
    groups = np.where(mask, number[np.where(mask, keys, 0)], 0).astype("int64")
    n_groups = int(number[-1])
    weights = np.where(mask, target, 0.0).astype("float64").ravel()
    sums = np.bincount(groups.ravel(), weights=weights, minlength=n_groups + 1)
    counts = np.bincount(groups.ravel(), minlength=n_groups + 1)
    group_targets = np.zeros(n_groups + 1, dtype="float32")
    group_targets[1:] = sums[1:] / np.maximum(counts[1:], 1)
    return groups, group_targets


def collate(samples: Sequence[Sample], *, pool: str = "patch") -> Batch:
    """Stack samples into a batch; for SIC also the regional loss's groups (pooled per ``pool``)."""
    if pool not in POOLS:
        raise ConfigError(f"unknown pool {pool!r}; valid: {', '.join(POOLS)}")
    batch = {key: np.stack([np.asarray(s[key]) for s in samples]) for key in samples[0]}
    if "polygon_ids" in batch:
        owners = batch["scene_index"] if pool == "scene" else np.arange(len(samples))
        groups, group_targets = regional_groups(batch["polygon_ids"], batch["target"], owners)
        batch["groups"] = groups
        batch["group_targets"] = group_targets
    return {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in batch.items()}


class SceneBatchSampler(Sampler):
    """Batches of dataset items, each batch from one scene (``by_scene``) or from anywhere.

    Items of a group are split into near-equal batches of at most ``batch_size`` (17 items with
    batch size 8 give 6 + 6 + 5, not 8 + 8 + 1: a lone patch makes BatchNorm statistics noisy).
    With ``shuffle`` the order is redrawn every epoch from ``(seed, epoch)`` and each item comes
    with an augmentation seed, so epoch ``e`` is the same whether or not the run was resumed.
    """

    def __init__(
        self,
        scene_of_item: Sequence[int] | np.ndarray,
        batch_size: int,
        *,
        by_scene: bool = True,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}")
        scene_of_item = np.asarray(scene_of_item, dtype="int64")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        if by_scene:
            self.groups = [np.flatnonzero(scene_of_item == s) for s in np.unique(scene_of_item)]
        else:
            self.groups = [np.arange(scene_of_item.size)]
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self._rng = np.random.default_rng([self.seed, epoch])

    def __len__(self) -> int:
        return sum(math.ceil(group.size / self.batch_size) for group in self.groups if group.size)

    def __iter__(self) -> Iterator[list[Any]]:
        rng = self._rng
        batches: list[np.ndarray] = []
        for group in self.groups:
            if not group.size:
                continue
            items = rng.permutation(group) if self.shuffle else group
            batches.extend(np.array_split(items, math.ceil(items.size / self.batch_size)))
        order = rng.permutation(len(batches)) if self.shuffle else range(len(batches))
        for i in order:
            if self.shuffle:
                seeds = rng.integers(2**31, size=batches[i].size)
                yield [(int(item), int(s)) for item, s in zip(batches[i], seeds)]
            else:
                yield [int(item) for item in batches[i]]


def make_loader(
    dataset: PatchDataset,
    *,
    batch_size: int,
    pool: str,
    shuffle: bool,
    workers: int = 1,
    seed: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over ``dataset``: one scene per batch for ``pool="scene"``, persistent workers."""
    sampler = SceneBatchSampler(
        dataset.scene_of_item, batch_size, by_scene=pool == "scene", shuffle=shuffle, seed=seed
    )
    return batch_loader(dataset, sampler, pool=pool, workers=workers, pin_memory=pin_memory)


def batch_loader(
    dataset: Dataset, batch_sampler: Sampler, *, pool: str, workers: int = 1, pin_memory: bool = False
) -> DataLoader:
    """A DataLoader whose ``batch_sampler`` picks the items (it stays in the main process; workers read)."""
    if workers < 0:
        raise ConfigError(f"workers must be >= 0, got {workers}")
    return DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=partial(collate, pool=pool),
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=pin_memory,
        prefetch_factor=2 if workers > 0 else None,
    )


def label_class_names(frame: pd.DataFrame) -> list[str] | None:
    """Class names from the ``class_names`` tag of the labels rasters (the first that has one)."""
    for path in dict.fromkeys(labels_path(p) for p in frame["labels"] if labels_path(p)):
        scene = open_scene(path)
        try:
            tags = getattr(scene, "tags", {}) or {}
            if tags.get("class_names"):
                return [name.strip() for name in str(tags["class_names"]).split(",")]
        finally:
            scene.close()
    return None


def max_class(frame: pd.DataFrame, *, split: str = "train") -> int:
    """The largest class label (nodata excluded) over one split's patches; -1 if none."""
    rows = split_rows(frame, split)
    cache = _SceneCache()
    largest = -1
    for record in rows.itertuples(index=False):
        reader = cache.labels(str(record.scene), labels_path(record.labels))
        window = Window(int(record.col_off), int(record.row_off), int(record.size), int(record.size))
        label = reader.read(window)[0]
        label = label[np.isfinite(label) & (label < CLASS_NODATA)]
        if label.size:
            largest = max(largest, int(label.max()))
    return largest


def scene_paths(frame: pd.DataFrame) -> list[str]:
    """Distinct scene paths in file order (for provenance)."""
    return [str(Path(p)) for p in dict.fromkeys(frame["scene"])]
