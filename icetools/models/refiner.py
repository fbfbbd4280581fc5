"""Contextual semantics refinement network (after the description in the FCtL paper; no public code).

It redraws a crude probability mask of the patch with a twice-larger window of that mask and the
scene's image in view, to remove seams and tidy contours where neighbouring patches disagree.

Built so that it can only help where it is asked to:

* **A residual over the crude mask.** The output logits are the logits of the crude probabilities
  (``log p`` for classes, ``logit p`` for one channel, clipped to [eps, 1 - eps]) plus a learnt
  correction whose last layer starts at zero: an untrained refiner gives the crude mask back.
* **It sees the image.** Channel layout of each window: the crude probabilities first
  (``out_channels`` of them: the crude mask has one band per output), then the scene's image
  channels (the rest of ``in_channels``), normalised as the segmentation model reads them. The
  local stream reads both; the context stream reads the crude mask only (the context is there to
  make neighbouring windows agree).
* **Gated by the crude mask's confidence.** The correction is weighted by
  ``clamp((gate_threshold - confidence) / GATE_RAMP, 0, 1)``, confidence being the largest class
  probability (``max(p, 1 - p)`` for one channel): pixels at least ``gate_threshold`` confident keep
  the crude mask exactly, the least confident get the whole correction, a linear ramp between them
  avoids a hard edge. ``gate_threshold`` None applies the correction everywhere (as in training;
  the threshold is chosen on validation afterwards, see :mod:`icetools.refine`). Seams of the
  averaged mosaic are where windows disagree, and averaging disagreeing windows lowers the
  confidence there, so the gate opens on seams without knowing where the windows lay.

Two encoders (one per stream, not shared: the context mask is at a coarser effective resolution),
a ContextCorrelation at the bottleneck, a U-Net decoder with skips from the local stream only.
"""

from __future__ import annotations

import torch
from torch import nn

from icetools.errors import ConfigError, DataError
from icetools.models.base import IcetoolsModel
from icetools.models.blocks import ContextCorrelation, DoubleConv, conv_bn_relu, resize_to
from icetools.models.registry import check_float_tuple, check_int, check_int_tuple

CRUDE_EPS = 1e-4
"""Crude probabilities are clipped to [eps, 1 - eps] before their logits: 0 and 1 have none."""
GATE_RAMP = 0.1
"""Width of the confidence ramp below ``gate_threshold`` over which the correction fades in."""


def crude_logits(crude: torch.Tensor) -> torch.Tensor:
    """Logits that give ``crude`` (B, K, H, W) back: ``log p`` under softmax, ``logit p`` under sigmoid."""
    p = crude.float().clamp(CRUDE_EPS, 1.0 - CRUDE_EPS)
    if p.shape[1] == 1:
        return torch.log(p) - torch.log1p(-p)
    return torch.log(p)


def confidence(crude: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W): the largest class probability; ``max(p, 1 - p)`` for one channel."""
    p = crude.float()
    if p.shape[1] == 1:
        return torch.maximum(p, 1.0 - p)
    return p.max(dim=1, keepdim=True).values


def uncertainty_gate(crude: torch.Tensor, threshold: float | None, *, ramp: float = GATE_RAMP) -> torch.Tensor:
    """(B, 1, H, W) weight of the correction: 0 where ``confidence >= threshold``, 1 below ``threshold - ramp``.

    ``threshold`` None: 1 everywhere (the correction applies to every pixel).
    """
    if threshold is None:
        return torch.ones_like(crude[:, :1], dtype=torch.float32)
    return ((threshold - confidence(crude)) / ramp).clamp(0.0, 1.0)


def check_gate_threshold(value: object, *, model: str = "refiner") -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(
            f"model {model!r}: argument 'gate_threshold' must be null or a number in [0, 1], got {value!r}"
        )
    return float(value)


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


class Refiner(IcetoolsModel):
    """Input (B, 2, C, H, W): [:, 0] the local window, [:, 1] the context window (2x, resized).

    C = ``in_channels``: the crude probabilities (``out_channels`` bands) then the image channels.
    """

    model_name = "refiner"
    takes_windows = True

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int = 1,
        context_scales: tuple[float, ...] = (1.0, 2.0),
        widths: tuple[int, ...] = (16, 32, 64),
        gate_threshold: float | None = None,
    ) -> None:
        super().__init__()
        name = self.model_name
        in_channels = check_int(in_channels, arg="in_channels", model=name)
        out_channels = check_int(out_channels, arg="out_channels", model=name)
        if in_channels < out_channels:
            raise ConfigError(
                f"model {name!r}: in_channels ({in_channels}) must count the {out_channels} crude probability "
                "bands and then the image channels"
            )
        context_scales = check_float_tuple(context_scales, arg="context_scales", model=name, length=2)
        if context_scales[0] != 1.0:
            raise ConfigError(
                f"model {name!r}: context_scales must be [1.0, larger window], got {list(context_scales)}"
            )
        widths = check_int_tuple(widths, arg="widths", model=name, min_length=2)
        self.context_scales = context_scales
        self.in_channels, self.crude_channels = in_channels, out_channels
        self.gate_threshold = check_gate_threshold(gate_threshold)
        self.local_encoder = StreamEncoder(in_channels, widths)
        self.context_encoder = StreamEncoder(out_channels, widths)
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
        nn.init.zeros_(self.head.weight)  # the correction starts at zero: an untrained refiner is the identity
        nn.init.zeros_(self.head.bias)
        self.record_spec(
            in_channels=in_channels,
            out_channels=out_channels,
            context_scales=context_scales,
            widths=widths,
            gate_threshold=self.gate_threshold,
        )

    @property
    def image_channels(self) -> int:
        return self.in_channels - self.crude_channels

    def set_gate(self, threshold: float | None) -> None:
        """Apply the correction below ``threshold`` confidence from now on (recorded in the spec)."""
        self.gate_threshold = check_gate_threshold(threshold)
        self.record_spec(**{**self.spec["args"], "gate_threshold": self.gate_threshold})

    def forward_parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(crude probabilities, crude logits, correction), each (B, K, H, W): what any gate combines."""
        if x.ndim != 5 or x.shape[1] != 2 or x.shape[2] != self.in_channels:
            raise DataError(
                f"refiner expects input (batch, 2 masks, {self.in_channels} channels, H, W): local and context "
                f"windows of {self.crude_channels} crude probability bands and {self.image_channels} image channels, "
                f"got shape {tuple(x.shape)}"
            )
        crude = x[:, 0, : self.crude_channels]
        local_levels = self.local_encoder(x[:, 0])
        context_deep = self.context_encoder(x[:, 1, : self.crude_channels])[-1]
        local_deep = local_levels[-1]
        y = self.join(torch.cat([local_deep, self.correlation(local_deep, context_deep)], dim=1))
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(local_levels[:-1])):
            y = decoder(torch.cat([resize_to(up(y), skip.shape[-2:]), skip], dim=1))
        return crude, crude_logits(crude), self.head(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        crude, base, correction = self.forward_parts(x)
        return base + uncertainty_gate(crude, self.gate_threshold) * correction.float()
