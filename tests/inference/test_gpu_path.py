"""The device side of predict: the batch chosen for the device, and (on a CUDA machine) the GPU path
against the CPU's answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from icetools.inference import make_predictor
from icetools.inference.mosaic import CUDA_PREFETCH_ROWS, prefetch_rows
from icetools.inference.windows import PREFETCH_ROWS
from icetools.inference.predictor import DEFAULT_BATCH, MAX_AUTO_BATCH, Predictor, choose_batch

from .helpers import CONFIG, fixed_conv


def test_the_cpu_keeps_the_default_batch_and_reads_ahead() -> None:
    predictor = make_predictor(fixed_conv(), CONFIG, device="cpu")
    assert choose_batch(predictor, 256) == DEFAULT_BATCH == 8
    assert prefetch_rows(predictor) == PREFETCH_ROWS


def fake_cuda(monkeypatch, *, fixed: int, per_window: int, free: int, cached: int = 0) -> list[tuple[int, ...]]:
    """A CUDA device whose peak memory for a batch of n windows is ``fixed + n * per_window``."""
    calls: list[tuple[int, ...]] = []
    peak = {"bytes": 0}

    def call(self: Predictor, batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        peak["bytes"] = max(peak["bytes"], fixed + batch.shape[0] * per_window)
        return np.zeros((batch.shape[0], 1, *batch.shape[-2:]), dtype="float32")

    def reset(device=None) -> None:
        peak["bytes"] = 0

    monkeypatch.setattr(Predictor, "__call__", call)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", reset)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: peak["bytes"])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 10 * free))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: cached)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 0)
    return calls


def on_cuda(predictor: Predictor) -> Predictor:
    predictor.device = torch.device("cuda")  # the model stays on the CPU: only the choice is under test
    return predictor


def test_cuda_batch_fits_half_the_free_memory_at_the_cost_of_one_more_window(monkeypatch) -> None:
    predictor = on_cuda(make_predictor(fixed_conv(), CONFIG, device="cpu"))
    calls = fake_cuda(monkeypatch, fixed=5_000, per_window=300, free=8_000, cached=2_000)
    # (8000 free + 2000 cached) * 0.5 / 300 per window: the fixed 5000 (weights, workspaces) is not a window's
    assert choose_batch(predictor, 64) == 16
    assert {shape[1:] for shape in calls} == {(2, 64, 64)}
    assert prefetch_rows(predictor) == CUDA_PREFETCH_ROWS


def test_cuda_batch_stays_between_one_and_the_cap(monkeypatch) -> None:
    predictor = on_cuda(make_predictor(fixed_conv(), CONFIG, device="cpu"))
    fake_cuda(monkeypatch, fixed=0, per_window=10, free=10**9)
    assert choose_batch(predictor, 32) == MAX_AUTO_BATCH
    fake_cuda(monkeypatch, fixed=0, per_window=10**9, free=10)
    assert choose_batch(predictor, 32) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_gpu_path_agrees_with_the_cpu_within_bf16() -> None:
    conv = fixed_conv(3, out_channels=3)
    cpu = make_predictor(conv, CONFIG, device="cpu")
    batch = np.random.default_rng(0).normal(size=(5, 2, 64, 64)).astype("float32")
    expected = cpu(batch)
    gpu = make_predictor(fixed_conv(3, out_channels=3), CONFIG, device="cuda")
    for n in (5, 2, 5):  # a smaller batch between two: the pinned buffers are reused, never stale
        got = gpu(batch[:n])
        assert got.dtype == np.float32 and got.shape == expected[:n].shape
        np.testing.assert_allclose(got, expected[:n], atol=2e-2)
    assert 1 <= choose_batch(gpu, 64) <= MAX_AUTO_BATCH


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_footprint_on_the_gpu_equals_the_cpus() -> None:
    from icetools.inference.footprint import smooth_valid, smooth_valid_torch

    values = np.random.default_rng(2).random((1, 80, 3000)).astype("float32")
    values[0, 30:40, 1000:1100] = np.nan
    np.testing.assert_allclose(smooth_valid_torch(values, 5.0, "cuda"), smooth_valid(values, 5.0), rtol=1e-4,
                               atol=1e-5, equal_nan=True)
