"""LinkNet (Chaurasia & Culurciello 2017): a ResNet-18-shaped encoder whose features are *added*
to the decoder, which keeps the decoder light (no concatenation widens it)."""

from __future__ import annotations

import torch
from torch import nn

from icetools.models.base import IcetoolsModel
from icetools.models.blocks import ResNetEncoder, conv_bn_relu, resize_to
from icetools.models.registry import check_int


class LinkDecoderBlock(nn.Module):
    """1x1 reduce to a quarter, 3x3 transposed conv (x2), 1x1 expand: LinkNet's decoder block."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = max(1, in_channels // 4)
        self.reduce = conv_bn_relu(in_channels, mid, kernel_size=1)
        self.up = nn.Sequential(
            nn.ConvTranspose2d(mid, mid, 3, stride=2, padding=1, output_padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
        )
        self.expand = conv_bn_relu(mid, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
        return self.expand(resize_to(self.up(self.reduce(x)), size))


class LinkNet(IcetoolsModel):
    """Encoder at strides 4..32; decoder blocks upsample and add the matching encoder output;
    a transposed-conv head returns to full resolution."""

    model_name = "linknet"

    def __init__(self, *, in_channels: int, out_channels: int = 1, base_width: int = 16) -> None:
        super().__init__()
        name = self.model_name
        in_channels = check_int(in_channels, arg="in_channels", model=name)
        out_channels = check_int(out_channels, arg="out_channels", model=name)
        base_width = check_int(base_width, arg="base_width", model=name)
        self.encoder = ResNetEncoder(in_channels, base_width=base_width, output_stride=32)
        _, c1, c2, c3, c4 = self.encoder.channels
        self.decoders = nn.ModuleList(
            [LinkDecoderBlock(c4, c3), LinkDecoderBlock(c3, c2), LinkDecoderBlock(c2, c1), LinkDecoderBlock(c1, c1)]
        )
        half = max(1, c1 // 2)
        self.final = nn.Sequential(
            nn.ConvTranspose2d(c1, half, 3, stride=2, padding=1, output_padding=1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            conv_bn_relu(half, half),
            nn.Conv2d(half, out_channels, 1),
        )
        self.record_spec(in_channels=in_channels, out_channels=out_channels, base_width=base_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, e1, e2, e3, e4 = self.encoder(x)
        d = self.decoders[0](e4, e3.shape[-2:]) + e3
        d = self.decoders[1](d, e2.shape[-2:]) + e2
        d = self.decoders[2](d, e1.shape[-2:]) + e1
        half_size = ((x.shape[-2] + 1) // 2, (x.shape[-1] + 1) // 2)
        d = self.decoders[3](d, half_size)
        return resize_to(self.final(d), x.shape[-2:])
