"""Contextual semantics refinement network (after the description in the FCtL paper; no public code).

It reads a crude probability mask of the patch and of a twice-larger window around it, and
redraws the patch's mask with that context in view, which removes seams and tidies contours where
neighbouring patches disagree. Two encoders (one per stream, not shared: the context mask is at a
coarser effective resolution), a ContextCorrelation at the bottleneck, a U-Net decoder with skips
from the local stream only.
"""

from __future__ import annotations

import torch
from torch import nn

from icetools.errors import ConfigError, DataError
from icetools.models.blocks import ContextCorrelation, DoubleConv, conv_bn_relu, resize_to
from icetools.models.registry import check_float_tuple, check_int, check_int_tuple


class StreamEncoder(nn.Module):
    """Double convs with max pooling between them; returns every level (the last is the bottleneck)."""

    def __init__(self, in_channels: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.blocks.append(DoubleConv(previous, width))
            previous = width
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels = []
        for i, block in enumerate(self.blocks):
            x = block(x if i == 0 else self.pool(x))
            levels.append(x)
        return levels


class Refiner(nn.Module):
    """Input (B, 2, K, H, W): [:, 0] the local crude mask, [:, 1] the context crude mask."""

    model_name = "refiner"

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int = 1,
        context_scales: tuple[float, ...] = (1.0, 2.0),
        widths: tuple[int, ...] = (16, 32, 64),
    ) -> None:
        super().__init__()
        name = self.model_name
        in_channels = check_int(in_channels, arg="in_channels", model=name)
        out_channels = check_int(out_channels, arg="out_channels", model=name)
        context_scales = check_float_tuple(context_scales, arg="context_scales", model=name, length=2)
        if context_scales[0] != 1.0:
            raise ConfigError(
                f"model {name!r}: context_scales must be [1.0, larger window], got {list(context_scales)}"
            )
        widths = check_int_tuple(widths, arg="widths", model=name, min_length=2)
        self.context_scales = context_scales
        self.local_encoder = StreamEncoder(in_channels, widths)
        self.context_encoder = StreamEncoder(in_channels, widths)
        deep = widths[-1]
        self.correlation = ContextCorrelation(deep)
        self.join = conv_bn_relu(2 * deep, deep, kernel_size=1)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        previous = deep
        for skip_width in reversed(widths[:-1]):
            self.ups.append(nn.ConvTranspose2d(previous, skip_width, 2, stride=2))
            self.decoders.append(DoubleConv(2 * skip_width, skip_width))
            previous = skip_width
        self.head = nn.Conv2d(previous, out_channels, 1)
        self.spec = {
            "name": name,
            "args": {
                "in_channels": in_channels,
                "out_channels": out_channels,
                "context_scales": context_scales,
                "widths": widths,
            },
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != 2:
            raise DataError(
                f"refiner expects input (batch, 2 masks, classes, H, W): local and context crude masks, "
                f"got shape {tuple(x.shape)}"
            )
        local_levels = self.local_encoder(x[:, 0])
        context_deep = self.context_encoder(x[:, 1])[-1]
        local_deep = local_levels[-1]
        y = self.join(torch.cat([local_deep, self.correlation(local_deep, context_deep)], dim=1))
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(local_levels[:-1])):
            y = decoder(torch.cat([resize_to(up(y), skip.shape[-2:]), skip], dim=1))
        return self.head(y)
