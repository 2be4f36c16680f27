"""Top-down feature pyramid (FROM Eq. 2-3): brings the top map's global context down to a finer stage.

X3 = smooth(lateral(C3) + up(lateral(C4) + up(lateral(X1)))): the mask decoder reads X3, which is 4x the
resolution of X1 per side and mixes local (C3) with global (X1) information. Only X3 is ever consumed, so unlike
a detection FPN (and the authors' release) there are no smoothing convs for the coarser levels and no P6/P7.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Pyramid(nn.Module):
    """1x1 lateral convs on the given stages (finest first), nearest upsampling, one 3x3 smoothing conv."""

    def __init__(self, in_channels: Sequence[int], width: int = 256) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(nn.Conv2d(c, width, kernel_size=1) for c in in_channels)
        self.smooth = nn.Conv2d(width, width, kernel_size=3, padding=1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        top = self.laterals[-1](feats[-1])
        for lateral, feat in zip(reversed(self.laterals[:-1]), reversed(feats[:-1])):
            # Upsample to the exact size: stride-2 stages round up, so odd sizes are not exact doublings.
            top = lateral(feat) + F.interpolate(top, size=feat.shape[-2:], mode="nearest")
        return self.smooth(top)
