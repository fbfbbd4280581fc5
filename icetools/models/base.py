"""The small contract every icetools model keeps, so callers never probe models with hasattr."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn


class IcetoolsModel(nn.Module):
    """Base class of the registered models.

    ``spec`` (``{"name", "args"}``) is what config.json stores to rebuild the model;
    ``context_scales`` are the window sizes (relative to the patch) the model reads: ``(1.0,)`` for a
    plain model, whose input is (B, C, H, W); context models (``takes_windows``) take (B, T, C, H, W)
    with T = len(context_scales). ``n_heads`` > 1 for deep supervision, where ``forward_heads``
    returns every head's logits (``forward`` returns the chosen one).
    """

    model_name: ClassVar[str] = ""
    takes_windows: ClassVar[bool] = False
    can_deep_supervise: ClassVar[bool] = False
    context_scales: tuple[float, ...] = (1.0,)
    n_heads: int = 1

    def record_spec(self, **args: Any) -> None:
        """Record the (checked) constructor arguments as the spec that rebuilds this model."""
        self.spec = {"name": self.model_name, "args": args}

    def forward_heads(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The logits of every head; one head unless the model is deeply supervised."""
        return [self(x)]
