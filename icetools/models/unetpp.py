"""UNet++ (Zhou et al. 2018): nested dense skips between encoder and decoder, with deep
supervision heads on the top row so a shallower (faster) head can be used at inference."""

from __future__ import annotations

import torch
from torch import nn

from icetools.models.base import IcetoolsModel
from icetools.models.blocks import DoubleConv, resize_to
from icetools.models.registry import check_bool, check_int, check_int_tuple

LEVELS = 5


class UNetPlusPlus(IcetoolsModel):
    """Nodes X[i][j] (level i, column j): X[i][0] is the encoder; X[i][j] = block(concat(X[i][0..j-1],
    up(X[i+1][j-1]))). Heads are 1x1 convs on X[0][1..4].

    With ``deep_supervision`` there are 4 heads (``forward_heads`` returns all of them for the
    loss); without it there is only the head on X[0][4]. ``forward`` computes only the nodes that
    the ``inference_head`` needs, which is how UNet++ is pruned at test time.
    """

    model_name = "unet++"
    can_deep_supervise = True

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int = 1,
        widths: tuple[int, ...] = (32, 64, 128, 256, 512),
        deep_supervision: bool = True,
        inference_head: int = -1,
    ) -> None:
        super().__init__()
        name = self.model_name
        in_channels = check_int(in_channels, arg="in_channels", model=name)
        out_channels = check_int(out_channels, arg="out_channels", model=name)
        widths = check_int_tuple(widths, arg="widths", model=name, length=LEVELS)
        deep_supervision = check_bool(deep_supervision, arg="deep_supervision", model=name)
        self.n_heads = LEVELS - 1 if deep_supervision else 1
        inference_head = check_int(
            inference_head,
            arg="inference_head",
            model=name,
            choices=tuple(range(-self.n_heads, self.n_heads)),
        )
        self.deep_supervision = deep_supervision
        self.inference_head = inference_head
        self.pool = nn.MaxPool2d(2)
        self.nodes = nn.ModuleDict()
        for level in range(LEVELS):
            self.nodes[f"x{level}_0"] = DoubleConv(in_channels if level == 0 else widths[level - 1], widths[level])
        for column in range(1, LEVELS):
            for level in range(LEVELS - column):
                in_width = column * widths[level] + widths[level + 1]
                self.nodes[f"x{level}_{column}"] = DoubleConv(in_width, widths[level])
        self.heads = nn.ModuleList(nn.Conv2d(widths[0], out_channels, 1) for _ in range(self.n_heads))
        self.record_spec(
            in_channels=in_channels,
            out_channels=out_channels,
            widths=widths,
            deep_supervision=deep_supervision,
            inference_head=inference_head,
        )

    def _top_row(self, x: torch.Tensor, depth: int) -> list[torch.Tensor]:
        """X[0][1..depth], computing only the triangle of nodes they depend on."""
        grid: dict[tuple[int, int], torch.Tensor] = {}
        for level in range(depth + 1):
            source = x if level == 0 else self.pool(grid[(level - 1, 0)])
            grid[(level, 0)] = self.nodes[f"x{level}_0"](source)
        for column in range(1, depth + 1):
            for level in range(depth + 1 - column):
                size = grid[(level, 0)].shape[-2:]
                inputs = [grid[(level, j)] for j in range(column)]
                inputs.append(resize_to(grid[(level + 1, column - 1)], size))
                grid[(level, column)] = self.nodes[f"x{level}_{column}"](torch.cat(inputs, dim=1))
        return [grid[(0, column)] for column in range(1, depth + 1)]

    def _head_column(self, head: int) -> int:
        """The top-row column (1..4) that head index ``head`` reads."""
        head = head % self.n_heads
        return head + 1 if self.deep_supervision else LEVELS - 1

    def forward_heads(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every head, shallow to deep, at the input resolution (for deep supervision)."""
        top = self._top_row(x, LEVELS - 1)
        return [head(top[self._head_column(i) - 1]) for i, head in enumerate(self.heads)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        column = self._head_column(self.inference_head)
        top = self._top_row(x, column)
        return self.heads[self.inference_head](top[-1])
