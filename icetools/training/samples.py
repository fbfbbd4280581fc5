"""Epochs of a fixed number of samples over the fixed training windows of a patches file.

An epoch is counted in samples, not in windows on disk: a few scenes give only tens of fixed
training windows, and an epoch of one pass over them is a handful of steps, too few for patience
counted in epochs to mean anything. :class:`FixedSamplesSampler` draws ``samples_per_epoch`` items
per epoch by cycling passes of a :class:`icetools.data.SceneBatchSampler` (every window as often as
the others, each pass in a new order and with new augmentations) and cutting the last batch to the
count. The fresh random windows of :mod:`icetools.train_windows` give the count by construction.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader, Sampler

from icetools.data import SceneBatchSampler
from icetools.device import derived_seed
from icetools.errors import ConfigError
from icetools.train_windows import RankShares, with_batch_sampler


class FixedSamplesSampler(Sampler):
    """``samples_per_epoch`` items per epoch from passes of ``batches``, reproducible from the epoch.

    Pass 0 of epoch ``e`` is exactly the pass ``batches`` makes for epoch ``e`` (so an epoch of one
    pass's samples is the plain sampler's epoch); later passes draw from ``(e, pass)``. A batch of
    fewer than ``min_batch`` items (a scene's few windows, the epoch's last cut) joins its neighbour:
    batches drawn for several processes must hold an item for each.
    """

    def __init__(self, batches: SceneBatchSampler, samples_per_epoch: int, *, min_batch: int = 1) -> None:
        if samples_per_epoch < max(min_batch, 1):
            raise ConfigError(f"samples_per_epoch must be >= {max(min_batch, 1)}, got {samples_per_epoch}")
        if len(batches) == 0:
            raise ConfigError("no training window to draw samples from")
        self.batches, self.samples_per_epoch, self.min_batch = batches, samples_per_epoch, min_batch
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Plan the epoch's batches now, so that ``len()`` is exact before iterating."""
        self.epoch = epoch
        plan: list[list[Any]] = []
        remaining, cycle = self.samples_per_epoch, 0
        while remaining > 0:
            self.batches.set_epoch(epoch if cycle == 0 else derived_seed(epoch, cycle))
            for batch in self.batches:
                batch = batch[:remaining]
                plan.append(batch)
                remaining -= len(batch)
                if remaining == 0:
                    break
            cycle += 1
        self._plan = _joined(plan, self.min_batch) if self.min_batch > 1 else plan

    def __len__(self) -> int:
        return len(self._plan)

    def __iter__(self) -> Iterator[list[Any]]:
        return iter(self._plan)


def _joined(plan: list[list[Any]], min_batch: int) -> list[list[Any]]:
    """``plan`` with every batch of fewer than ``min_batch`` items joined to its neighbour."""
    joined: list[list[Any]] = []
    for batch in plan:
        if joined and (len(batch) < min_batch or len(joined[-1]) < min_batch):
            joined[-1] = joined[-1] + list(batch)
        else:
            joined.append(list(batch))
    return joined


def fixed_samples_loader(loader: DataLoader, samples_per_epoch: int, *, rank: int = 0, world_size: int = 1) -> DataLoader:
    """``loader`` (from :func:`icetools.data.make_loader`) with epochs of ``samples_per_epoch`` samples.

    With several processes, ``loader``'s batches are drawn for all of them (batch size times
    ``world_size``) and process ``rank`` steps on its part of each (:func:`icetools.train_windows.rank_share`).
    """
    sampler: Sampler = FixedSamplesSampler(loader.batch_sampler, samples_per_epoch, min_batch=world_size)
    if world_size > 1:
        sampler = RankShares(sampler, rank, world_size)
    return with_batch_sampler(loader, sampler)


__all__ = ["FixedSamplesSampler", "fixed_samples_loader"]
