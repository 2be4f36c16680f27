"""LResNet-E-IR backbone (the "improved residual" ResNet of ArcFace), as FROM and PDSN use it.

Face crops are small (112x96), so the stem is a stride-1 3x3 conv and every stage halves the resolution once,
leaving a 7x6 top map; the block puts BN before each conv and PReLU in the middle, with no activation after the
sum, which is what makes these networks train well on margin losses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


class IRBlock(nn.Module):
    """BN, 3x3 conv, BN, PReLU, 3x3 conv (carrying the stride), BN, plus a shortcut (projected if shapes change)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_ch),
            conv3x3(in_ch, out_ch),
            nn.BatchNorm2d(out_ch),
            nn.PReLU(out_ch),
            conv3x3(out_ch, out_ch, stride),
            nn.BatchNorm2d(out_ch),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class IResNet(nn.Module):
    """Stem plus stride-2 stages; forward returns every stage's output (the pyramid taps the later ones)."""

    def __init__(
        self,
        widths: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (3, 4, 14, 3),
        stem_width: int = 64,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if len(widths) != len(depths) or not depths or min(depths) < 1:
            raise ValueError(f"widths {tuple(widths)} and depths {tuple(depths)} need one entry >= 1 per stage")
        self.widths = tuple(widths)
        self.stem = nn.Sequential(conv3x3(in_channels, stem_width), nn.BatchNorm2d(stem_width), nn.PReLU(stem_width))
        stages = []
        in_ch = stem_width
        for width, depth in zip(widths, depths):
            blocks = [IRBlock(in_ch, width, stride=2)] + [IRBlock(width, width, stride=1) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = width
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


def stage_size(size: int, num_stages: int) -> int:
    """Side length after `num_stages` stride-2 3x3 convs with padding 1 (each maps n to ceil(n / 2))."""
    for _ in range(num_stages):
        size = (size + 1) // 2
    return size
