"""Shared test setup: one thread per test worker, so `pytest -n 2` uses the 2 cores evenly."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # the foundation tests do not need torch
    pass
