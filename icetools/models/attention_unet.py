"""Attention U-Net (Oktay et al. 2018): additive gates let the decoder suppress skip features
away from the structure of interest (e.g. fringes far from a grounding line)."""

from __future__ import annotations

from icetools.models.blocks import DoubleConv
from icetools.models.registry import check_int, check_int_tuple
from icetools.models.unet import UNetBody


class AttentionUNet(UNetBody):
    """4-level U-Net with a double-conv bottleneck and an attention gate on every skip."""

    model_name = "attention-unet"

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int = 1,
        encoder_widths: tuple[int, ...] = (4, 8, 16, 32),
        decoder_widths: tuple[int, ...] = (16, 8, 4, 2),
        bottleneck_width: int = 64,
    ) -> None:
        name = self.model_name
        in_channels = check_int(in_channels, arg="in_channels", model=name)
        out_channels = check_int(out_channels, arg="out_channels", model=name)
        encoder_widths = check_int_tuple(encoder_widths, arg="encoder_widths", model=name, length=4)
        decoder_widths = check_int_tuple(decoder_widths, arg="decoder_widths", model=name, length=4)
        bottleneck_width = check_int(bottleneck_width, arg="bottleneck_width", model=name)
        super().__init__(
            in_channels=in_channels,
            out_channels=out_channels,
            encoder_widths=encoder_widths,
            decoder_widths=decoder_widths,
            bottleneck=DoubleConv(encoder_widths[-1], bottleneck_width),
            bottleneck_width=bottleneck_width,
            attention=True,
        )
        self.record_spec(
            in_channels=in_channels,
            out_channels=out_channels,
            encoder_widths=encoder_widths,
            decoder_widths=decoder_widths,
            bottleneck_width=bottleneck_width,
        )
