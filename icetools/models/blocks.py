"""Layers shared by several architectures: conv blocks, ASPP, attention gate, pyramid pooling,
a small dilated ResNet encoder and the local-context correlation of FCtL.

Branches that pool a map to a single value per channel (ASPP image pooling, the 1x1 pyramid bin)
use a biased conv without BatchNorm: BatchNorm cannot normalise one value per channel when a
batch holds a single patch, and those branches would otherwise fail in training with batch size 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(
    in_channels: int, out_channels: int, *, kernel_size: int = 3, stride: int = 1, dilation: int = 1
) -> nn.Sequential:
    """Conv (same padding) + BatchNorm + ReLU: the unit most blocks are made of."""
    padding = dilation * (kernel_size // 2)
    return nn.Sequential(
        nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=False
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def resize_to(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize to ``size`` (H, W) when it differs, so odd sizes never break a join."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class DoubleConv(nn.Sequential):
    """Two 3x3 conv-BN-ReLU: the U-Net encoder/decoder block."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            conv_bn_relu(in_channels, out_channels),
            conv_bn_relu(out_channels, out_channels),
        )


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (Chen et al. 2017): parallel dilated convs + image pooling.

    A dilation of 1 is a 1x1 conv, as in DeepLabv3; the others are dilated 3x3 convs.
    """

    def __init__(self, in_channels: int, out_channels: int, *, dilations: tuple[int, ...] = (1, 6, 12, 18)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            conv_bn_relu(in_channels, out_channels, kernel_size=1)
            if d == 1
            else conv_bn_relu(in_channels, out_channels, dilation=d)
            for d in dilations
        )
        self.image_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1), nn.ReLU(inplace=True)
        )
        self.project = conv_bn_relu((len(dilations) + 1) * out_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.image_pool(x).expand(-1, -1, x.shape[-2], x.shape[-1])
        return self.project(torch.cat([branch(x) for branch in self.branches] + [pooled], dim=1))


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018) that weights a skip by the coarser decoder state.

    The map is computed at the gate's (coarser) resolution, from the skip downsampled by a strided
    2x2 conv, then upsampled: cheaper than at full resolution and as in the paper.
    """

    def __init__(self, *, skip_channels: int, gate_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.theta = nn.Conv2d(skip_channels, inter_channels, 2, stride=2, bias=False)
        self.phi = nn.Conv2d(gate_channels, inter_channels, 1)
        self.psi = nn.Conv2d(inter_channels, 1, 1)
        self.output = nn.Sequential(
            nn.Conv2d(skip_channels, skip_channels, 1, bias=False), nn.BatchNorm2d(skip_channels)
        )

    def attention(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """Weights in (0, 1), shape (B, 1, H, W) of the skip."""
        gate_term = self.phi(gate)
        skip_term = resize_to(self.theta(skip), gate_term.shape[-2:])
        weights = torch.sigmoid(self.psi(F.relu(skip_term + gate_term)))
        return resize_to(weights, skip.shape[-2:])

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return self.output(skip * self.attention(skip, gate))


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling module: pooled summaries at several bin counts, upsampled, concatenated."""

    def __init__(self, in_channels: int, *, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        branch_channels = max(1, in_channels // len(bins))
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(in_channels, branch_channels, 1), nn.ReLU(inplace=True))
            for b in bins
        )
        self.out_channels = in_channels + len(bins) * branch_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return torch.cat([x] + [resize_to(stage(x), size) for stage in self.stages], dim=1)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs, identity or projected shortcut), optionally dilated."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(in_channels, out_channels, stride=stride, dilation=dilation),
            nn.Conv2d(out_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class ResNetEncoder(nn.Module):
    """ResNet-18-shaped encoder with widths (b, b, 2b, 4b, 8b), randomly initialised.

    ``output_stride`` 32 is the classification layout; 16 and 8 replace the last strides by
    dilation (DeepLab, PSPNet) so the deepest map keeps more resolution.
    """

    def __init__(self, in_channels: int, *, base_width: int, output_stride: int = 32, blocks: int = 2) -> None:
        super().__init__()
        b = base_width
        self.channels = (b, b, 2 * b, 4 * b, 8 * b)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, b, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(b),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        # (stride, dilation) of layers 1..4 for each output stride.
        layout = {
            32: ((1, 1), (2, 1), (2, 1), (2, 1)),
            16: ((1, 1), (2, 1), (2, 1), (1, 2)),
            8: ((1, 1), (2, 1), (1, 2), (1, 4)),
        }
        self.layers = nn.ModuleList()
        previous = b
        for width, (stride, dilation) in zip(self.channels[1:], layout[output_stride]):
            stage = [BasicBlock(previous, width, stride=stride, dilation=dilation)]
            stage += [BasicBlock(width, width, dilation=dilation) for _ in range(blocks - 1)]
            self.layers.append(nn.Sequential(*stage))
            previous = width

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The stem output and the four layer outputs, shallow to deep."""
        features = [self.stem(x)]
        for layer in self.layers:
            features.append(layer(features[-1]))
        return features


class ContextCorrelation(nn.Module):
    """FCtL's local-context correlation: each local position gathers the context features it is
    most related to.

    Relevance R = softmax over context positions of <Q(local), K(context)> (scaled by
    1/sqrt(key_channels) to keep the softmax out of saturation at random init); the result is
    R applied to V(context), shaped like the local features. Q, K, V are 1x1 projections.
    """

    def __init__(self, channels: int, *, key_channels: int | None = None) -> None:
        super().__init__()
        key_channels = key_channels or max(1, channels // 2)
        self.query = nn.Conv2d(channels, key_channels, 1)
        self.key = nn.Conv2d(channels, key_channels, 1)
        self.value = nn.Conv2d(channels, channels, 1, bias=False)
        self.scale = key_channels**-0.5

    def relevance(self, local_feat: torch.Tensor, context_feat: torch.Tensor) -> torch.Tensor:
        """(B, N_local, N_context) weights; each row sums to 1."""
        query = self.query(local_feat).flatten(2)  # B, k, N
        key = self.key(context_feat).flatten(2)  # B, k, M
        return torch.softmax(torch.bmm(query.transpose(1, 2), key) * self.scale, dim=-1)

    def forward(self, local_feat: torch.Tensor, context_feat: torch.Tensor) -> torch.Tensor:
        # The same product as relevance() applied to V, through the fused attention kernel: it
        # never holds the N x M matrix, which at a 64x64 bottleneck is already 16M numbers.
        query = self.query(local_feat).flatten(2).transpose(1, 2).unsqueeze(1)  # B, 1, N, k
        key = self.key(context_feat).flatten(2).transpose(1, 2).unsqueeze(1)  # B, 1, M, k
        value = self.value(context_feat).flatten(2).transpose(1, 2).unsqueeze(1)  # B, 1, M, C
        attended = F.scaled_dot_product_attention(query, key, value, scale=self.scale)  # B, 1, N, C
        return attended.squeeze(1).transpose(1, 2).reshape(local_feat.shape)
