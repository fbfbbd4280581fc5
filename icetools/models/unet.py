"""The sea-ice U-Net, and the encoder-decoder body that the ASPP and attention variants share."""

from __future__ import annotations

import torch
from torch import nn

from icetools.models.base import IcetoolsModel
from icetools.models.blocks import AttentionGate, DoubleConv, resize_to
from icetools.models.registry import check_int, check_int_tuple


class UNetBody(IcetoolsModel):
    """Encoder (double conv + 2x2 max pool per level), a bottleneck, decoder (2x2 up-conv, skip
    concat, double conv per level) and a 1x1 head.

    The decoder resizes an up-sampled map to its skip when the two differ, so inputs whose sides
    are not multiples of 2**levels still work.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        encoder_widths: tuple[int, ...],
        decoder_widths: tuple[int, ...],
        bottleneck: nn.Module,
        bottleneck_width: int,
        attention: bool = False,
    ) -> None:
        super().__init__()
        self.encoders = nn.ModuleList()
        previous = in_channels
        for width in encoder_widths:
            self.encoders.append(DoubleConv(previous, width))
            previous = width
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = bottleneck
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        self.gates = nn.ModuleList() if attention else None
        previous = bottleneck_width
        for skip_width, width in zip(reversed(encoder_widths), decoder_widths):
            if self.gates is not None:
                self.gates.append(
                    AttentionGate(
                        skip_channels=skip_width, gate_channels=previous, inter_channels=max(1, skip_width // 2)
                    )
                )
            self.ups.append(nn.ConvTranspose2d(previous, width, 2, stride=2))
            self.decoders.append(DoubleConv(width + skip_width, width))
            previous = width
        self.head = nn.Conv2d(previous, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for level, (up, decoder) in enumerate(zip(self.ups, self.decoders)):
            skip = skips[-1 - level]
            if self.gates is not None:
                skip = self.gates[level](skip, x)
            x = decoder(torch.cat([resize_to(up(x), skip.shape[-2:]), skip], dim=1))
        return self.head(x)


class UNet(UNetBody):
    """The sea-ice U-Net: 4 levels, bottleneck twice the last encoder width, decoder mirrors the encoder."""

    model_name = "unet"

    def __init__(self, *, in_channels: int, out_channels: int = 1, widths: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        name = self.model_name
        in_channels = check_int(in_channels, arg="in_channels", model=name)
        out_channels = check_int(out_channels, arg="out_channels", model=name)
        widths = check_int_tuple(widths, arg="widths", model=name, length=4)
        bottleneck_width = 2 * widths[-1]
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            encoder_widths=widths,
            decoder_widths=tuple(reversed(widths)),
            bottleneck=DoubleConv(widths[-1], bottleneck_width),
            bottleneck_width=bottleneck_width,
        )
        self.record_spec(in_channels=in_channels, out_channels=out_channels, widths=widths)
