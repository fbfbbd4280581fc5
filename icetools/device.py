"""Device choice, mixed precision and seeding: one of each for training and inference."""

from __future__ import annotations

import contextlib
import random
from typing import TYPE_CHECKING

import numpy as np

from icetools.errors import ConfigError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None): CUDA when available, else CPU; a named CUDA device must exist."""
    import torch

    if isinstance(name, torch.device):
        return name
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {name!r} is not a device torch knows: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name}: no CUDA GPU is available here; use cpu or auto")
    return device


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaling needed); full precision on the CPU, where bf16 is slower."""
    import torch

    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch from one number."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derived_seed(*parts: int) -> int:
    """A well-mixed 32-bit seed from several integers (e.g. the run's seed and the epoch)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])
