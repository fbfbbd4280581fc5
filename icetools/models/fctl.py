"""FCtL, "From Contexts to Locality" (Li et al., ICCV 2021): segment a patch from its own pixels and
from larger windows centred on it.

Every input (the patch and each context window, already resized to the patch size by the data
path) goes through one shared VGG16-shaped extractor. At pool5, one correlation module per scale
lets each local position gather the related context features; as in the authors' code, the first
scale (1.0, the patch itself) is correlated with itself. A squeeze-and-split fusion weighs the T
correlated maps per position (softmax across T), the weighted sum is added to the local pool5,
and an FCN-8s decoder with the local pool4/pool3 skips returns logits at patch resolution.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from icetools.errors import ConfigError, DataError, InputFileError
from icetools.models.base import IcetoolsModel
from icetools.models.blocks import ContextCorrelation, conv_bn_relu, resize_to
from icetools.models.registry import check_float, check_float_tuple, check_int, check_optional_str

__all__ = ["FCtL", "ContextCorrelation", "SqueezeSplitFusion", "VGGFeatures"]

VGG16_WIDTHS = (64, 128, 256, 512, 512)
VGG16_CONVS = (2, 2, 3, 3, 3)
VGG16_FC_WIDTH = 4096


class VGGFeatures(nn.Module):
    """VGG16-BN-shaped feature extractor returning pool3 (1/8), pool4 (1/16) and pool5 (1/32).

    Pools use ceil mode (as FCN does) so sides that are multiples of 16 but not 32 still work.
    """

    def __init__(self, in_channels: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        self.stages = nn.ModuleList()
        previous = in_channels
        for width, convs in zip(widths, VGG16_CONVS):
            layers: list[nn.Module] = []
            for _ in range(convs):
                layers.append(conv_bn_relu(previous, width))
                previous = width
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
            self.stages.append(nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pools = []
        for stage in self.stages:
            x = stage(x)
            pools.append(x)
        return pools[2], pools[3], pools[4]


class SqueezeSplitFusion(nn.Module):
    """Squeeze the T concatenated maps with a 1x1 conv, split into T weight maps, softmax across T.

    One weight per map and position (not per channel, unlike the authors' code) keeps it small and
    lets the weights be shown to a user as "how much each scale counted here".
    """

    def __init__(self, channels: int, *, n_inputs: int) -> None:
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(n_inputs * channels, channels, 1), nn.ReLU(inplace=True))
        self.split = nn.Conv2d(channels, n_inputs, 1)

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted sum (B, C, h, w) and the weights (B, T, h, w)."""
        weights = torch.softmax(self.split(self.squeeze(torch.cat(features, dim=1))), dim=1)
        fused = sum(weights[:, t : t + 1] * feature for t, feature in enumerate(features))
        return fused, weights


class FCtL(IcetoolsModel):
    """Context model: input (B, T, C, H, W), T = len(context_scales), index 0 the local patch."""

    model_name = "fctl"
    takes_windows = True

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int = 1,
        context_scales: tuple[float, ...] = (1.0, 2.0, 3.0),
        width: float = 0.25,
        encoder_weights: str | None = None,
    ) -> None:
        super().__init__()
        name = self.model_name
        in_channels = check_int(in_channels, arg="in_channels", model=name)
        out_channels = check_int(out_channels, arg="out_channels", model=name)
        context_scales = check_float_tuple(context_scales, arg="context_scales", model=name)
        if context_scales[0] != 1.0:
            raise ConfigError(
                f"model {name!r}: context_scales must start with 1.0 (the patch itself), got {list(context_scales)}"
            )
        width = check_float(width, arg="width", model=name)
        encoder_weights = check_optional_str(encoder_weights, arg="encoder_weights", model=name)
        self.context_scales = context_scales
        widths = tuple(max(1, round(w * width)) for w in VGG16_WIDTHS)
        deep = widths[-1]
        fc_width = max(1, round(VGG16_FC_WIDTH * width))
        self.encoder = VGGFeatures(in_channels, widths)
        self.correlations = nn.ModuleList(ContextCorrelation(deep) for _ in context_scales)
        self.fusion = SqueezeSplitFusion(deep, n_inputs=len(context_scales))
        # FCN's fc6/fc7 as convs (3x3 instead of 7x7: pool5 of a patch is only a few pixels wide),
        # without BatchNorm, as in FCN, so a 1x1 pool5 trains even with one patch per batch.
        self.classifier = nn.Sequential(
            nn.Conv2d(deep, fc_width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(fc_width, fc_width, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(fc_width, out_channels, 1),
        )
        self.score_pool4 = nn.Conv2d(widths[3], out_channels, 1)
        self.score_pool3 = nn.Conv2d(widths[2], out_channels, 1)
        if encoder_weights is not None:
            load_encoder_weights(self.encoder, encoder_weights)
        self.record_spec(
            in_channels=in_channels,
            out_channels=out_channels,
            context_scales=context_scales,
            width=width,
            encoder_weights=encoder_weights,
        )

    def forward(
        self, x: torch.Tensor, return_fusion_weights: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        n_scales = len(self.context_scales)
        if x.ndim != 5 or x.shape[1] != n_scales:
            raise DataError(
                f"fctl expects input (batch, {n_scales} windows, channels, H, W) for context scales "
                f"{list(self.context_scales)}, got shape {tuple(x.shape)}"
            )
        batch, _, channels, height, width = x.shape
        pool3, pool4, pool5 = self.encoder(x.reshape(batch * n_scales, channels, height, width))
        pool5 = pool5.reshape(batch, n_scales, *pool5.shape[1:])
        local = pool5[:, 0]
        correlated = [module(local, pool5[:, t]) for t, module in enumerate(self.correlations)]
        fused, weights = self.fusion(correlated)
        score = self.classifier(local + fused)
        local_pool4 = pool4.reshape(batch, n_scales, *pool4.shape[1:])[:, 0]
        local_pool3 = pool3.reshape(batch, n_scales, *pool3.shape[1:])[:, 0]
        score = resize_to(score, local_pool4.shape[-2:]) + self.score_pool4(local_pool4)
        score = resize_to(score, local_pool3.shape[-2:]) + self.score_pool3(local_pool3)
        logits = resize_to(score, (height, width))
        if return_fusion_weights:
            return logits, weights
        return logits


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Copy a local safetensors file into the shared encoder (keys with or without 'encoder.').

    Never downloads and never unpickles: the file must already be on disk.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"encoder weights {path} do not exist: give a local .safetensors file or null")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputFileError(f"encoder weights {path} are not a readable safetensors file: {exc}") from None
    state = {key.removeprefix("encoder."): value for key, value in state.items()}
    expected = encoder.state_dict()
    mismatched = sorted(
        set(expected) ^ set(state) | {k for k in set(expected) & set(state) if expected[k].shape != state[k].shape}
    )
    if mismatched:
        raise ConfigError(
            f"encoder weights {path} do not fit the fctl encoder at this width "
            f"({len(mismatched)} tensors differ, e.g. {mismatched[0]!r})"
        )
    encoder.load_state_dict(state)
