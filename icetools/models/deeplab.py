"""DeepLabv3 (Chen et al. 2017) on a small, randomly initialised dilated ResNet-18-shaped encoder."""

from __future__ import annotations

import torch
from torch import nn

from icetools.models.base import IcetoolsModel
from icetools.models.blocks import ASPP, ResNetEncoder, conv_bn_relu, resize_to
from icetools.models.registry import check_int


class DeepLabV3(IcetoolsModel):
    """Encoder at output stride 8 or 16, ASPP head (rates 6, 12, 18 at stride 16, doubled at 8),
    logits upsampled bilinearly to the input size."""

    model_name = "deeplabv3"

    def __init__(
        self, *, in_channels: int, out_channels: int = 1, base_width: int = 16, output_stride: int = 16
    ) -> None:
        super().__init__()
        name = self.model_name
        in_channels = check_int(in_channels, arg="in_channels", model=name)
        out_channels = check_int(out_channels, arg="out_channels", model=name)
        base_width = check_int(base_width, arg="base_width", model=name)
        output_stride = check_int(output_stride, arg="output_stride", model=name, choices=(8, 16))
        self.encoder = ResNetEncoder(in_channels, base_width=base_width, output_stride=output_stride)
        deep = self.encoder.channels[-1]
        rate = 16 // output_stride
        self.aspp = ASPP(deep, deep, dilations=(1, 6 * rate, 12 * rate, 18 * rate))
        self.classifier = nn.Sequential(conv_bn_relu(deep, deep), nn.Conv2d(deep, out_channels, 1))
        self.record_spec(
            in_channels=in_channels,
            out_channels=out_channels,
            base_width=base_width,
            output_stride=output_stride,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deepest = self.encoder(x)[-1]
        return resize_to(self.classifier(self.aspp(deepest)), x.shape[-2:])
