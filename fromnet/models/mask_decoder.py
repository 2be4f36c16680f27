"""Mask decoders: turn the pyramid map X3 into a feature mask in (0, 1) that multiplies the features it cleans.

Two stride-2 convs bring X3 (4x the resolution of X1 per side) down to exactly X1's grid, so the mask lines up
element by element with the top conv features. A 3D mask has one value per feature (C x H x W, FROM's choice: conv
features are not channel-independent); a 2D mask has one channel that broadcasts over all of them. The FC variant
masks the 512-d embedding instead, which loses the spatial layout (the paper's ablation shows that is worse).
"""

from __future__ import annotations

import torch
from torch import nn

from fromnet.models.iresnet import conv3x3


class MaskDecoder(nn.Module):
    """Conv(s2)-PReLU-BN-Conv(s2)-Sigmoid; `out_channels` is C for a 3D mask, 1 for a 2D one."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 256) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            conv3x3(in_channels, hidden, stride=2),
            nn.PReLU(hidden),
            nn.BatchNorm2d(hidden),
            conv3x3(hidden, out_channels, stride=2),
            nn.Sigmoid(),
        )

    def forward(self, x3: torch.Tensor) -> torch.Tensor:
        return self.layers(x3)


class EmbeddingMaskDecoder(nn.Module):
    """Mask on the embedding: two conv-PReLU-BN reductions, then BN-FC-BN-Sigmoid to one value per embedding dim."""

    def __init__(
        self, in_channels: int, grid: tuple[int, int], embedding_dim: int, hidden: int = 256, reduced: int = 64
    ) -> None:
        super().__init__()
        flat = reduced * grid[0] * grid[1]
        self.layers = nn.Sequential(
            conv3x3(in_channels, hidden, stride=2),
            nn.PReLU(hidden),
            nn.BatchNorm2d(hidden),
            conv3x3(hidden, reduced, stride=2),
            nn.PReLU(reduced),
            nn.BatchNorm2d(reduced),
            nn.Flatten(),
            nn.BatchNorm1d(flat),
            nn.Linear(flat, embedding_dim),
            nn.BatchNorm1d(embedding_dim),
            nn.Sigmoid(),
        )

    def forward(self, x3: torch.Tensor) -> torch.Tensor:
        return self.layers(x3)
