"""Occlusion Pattern Predictor: reads the flattened mask and names the occlusion pattern it reflects.

Supervising the mask this way ties it to where the occluder is. Classification has (K(K+1)/2)^2 + 1 outputs (every
rectangle of adjacent blocks in a KxK grid, plus "clean"); the regression ablation has 4 outputs, the occluded box's
normalized corners (x0, y0, x1, y1), squashed into [0, 1] by a sigmoid.
"""

from __future__ import annotations

import torch
from torch import nn


def num_patterns(K: int) -> int:
    """Occlusion patterns for a KxK grid: every m x n rectangle of adjacent blocks, plus the clean pattern."""
    if K < 1:
        raise ValueError(f"K must be >= 1 (blocks per side), got {K}")
    return (K * (K + 1) // 2) ** 2 + 1


class PatternPredictor(nn.Module):
    """BN-Dropout-FC-BN on the flattened mask; `squash` adds a sigmoid for the box regression outputs."""

    def __init__(self, in_features: int, num_outputs: int, dropout: float = 0.5, squash: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.BatchNorm1d(in_features),
            nn.Dropout(dropout),
            nn.Linear(in_features, num_outputs, bias=False),
            nn.BatchNorm1d(num_outputs),
        ]
        if squash:
            layers.append(nn.Sigmoid())
        self.layers = nn.Sequential(*layers)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        return self.layers(mask.flatten(1))
