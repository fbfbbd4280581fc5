"""PSPNet (Zhao et al. 2017): a dilated encoder at output stride 8 and a pyramid pooling module
that adds scene-level context at bins 1, 2, 3 and 6."""

from __future__ import annotations

import torch
from torch import nn

from icetools.models.base import IcetoolsModel
from icetools.models.blocks import PyramidPooling, ResNetEncoder, conv_bn_relu, resize_to
from icetools.models.registry import check_int, check_int_tuple


class PSPNet(IcetoolsModel):
    """Dilated ResNet-18-shaped encoder, pyramid pooling, 3x3 fuse conv, 1x1 head, bilinear upsampling."""

    model_name = "pspnet"

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int = 1,
        base_width: int = 16,
        bins: tuple[int, ...] = (1, 2, 3, 6),
    ) -> None:
        super().__init__()
        name = self.model_name
        in_channels = check_int(in_channels, arg="in_channels", model=name)
        out_channels = check_int(out_channels, arg="out_channels", model=name)
        base_width = check_int(base_width, arg="base_width", model=name)
        bins = check_int_tuple(bins, arg="bins", model=name)
        self.encoder = ResNetEncoder(in_channels, base_width=base_width, output_stride=8)
        deep = self.encoder.channels[-1]
        self.pyramid = PyramidPooling(deep, bins=bins)
        fuse = self.encoder.channels[-2]
        self.classifier = nn.Sequential(conv_bn_relu(self.pyramid.out_channels, fuse), nn.Conv2d(fuse, out_channels, 1))
        self.record_spec(in_channels=in_channels, out_channels=out_channels, base_width=base_width, bins=bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deepest = self.encoder(x)[-1]
        return resize_to(self.classifier(self.pyramid(deepest)), x.shape[-2:])
