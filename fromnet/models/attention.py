"""Attention-based partial face recognition (Hörmann et al., ICIP 2021): Extract, Attend, Aggregate.

Instead of masking corrupted features (FROM), the network looks at the face through K attention maps, pools the
feature map once per map, and averages the K part embeddings, so a part hidden by an occluder can be down-weighted
rather than poison one global descriptor. For this variant `K` counts attention maps, not pattern-grid blocks.

Where the LResNet50E-IR (stages of 3, 4, 14, 3 blocks; stride-1 stem) is cut and split, on 112x96 faces:

- **Cut after stage 3.** The stem keeps full resolution, so the third stride-2 stage leaves a 14x12 map, 1/8 of the
  input, like the paper's 20x20 on 160x160; stage 4 would leave 7x6 cells of ~16 px, too coarse to keep eyes, nose
  and mouth apart. Stage 3 (256 channels, 14 blocks) is also this network's counterpart of ResNet-50's conv4_x,
  whose 1024-channel map is the paper's F. Stage 4 is not built.
- **Split three blocks before the end of stage 3.** Stem, stages 1-2 and stage 3's first 11 blocks are shared; the
  feature branch is stage 3's last 3 blocks (F: 256x14x12; stem and stages 1-3 keep a baseline's `backbone.*`
  names, so a stage-1 baseline's weights fit them); the attention branch is a fresh copy of those 3 blocks plus the
  1x1 conv (256 -> K) and ReLU that give the raw maps A (Kx14x12). Three blocks of their own let the maps grow
  their receptive field for 3.5M parameters and 1.2 GFLOPs; running stage 4 at stride 1 for each branch instead
  would cost 13.1M parameters and 4.4 GFLOPs per branch. `branch_blocks` moves the split (default: 3, or all but
  the first block of a shorter stage 3, as r18's).

Attend is parameter-free: sigmoid(A_k), global average pooling, softmax over the K maps gives the importance s
(sums to 1); the recalibrated map k is s_k * sigmoid(A_k), and v_k is the spatial mean of F weighted by it.
Because A >= 0 (ReLU), sigmoid(A) lies in [0.5, 1), so the pooled values entering the softmax differ by less than
0.5 and no s_k can exceed e^0.5 = 1.65 times another: importance re-weights the parts but cannot switch one off.
Aggregate: each v_k has its own FC layer to a 256-d f_k; the embedding is the mean of the f_k.

**Deviation from the paper: each part's FC is wrapped in batch norms (BN-FC-BN, the baseline's embedding head
without dropout).** With a bare FC the variant did not learn in CPU-sized runs (issue #17): v_k is about
GAP(F) / (2K) (s_k ~ 1/K, sigmoid(A) in [0.5, 1)), so the parts start ~50x smaller than the baseline's embedding
(norm 0.3-0.4 against ~21 for a quarter-width r18) and the plain softmax on raw logits W f starts with logits near
0 and gradients near 0 (loss flat at ln C); and the pooled stage-3 features of a trained trunk share a large
component, which the unnormalised FC passes on (between-face share of the embedding's energy 0.80 at the start of
stage 2 and 0.32 after 25 steps), so CosFace and cosine verification see every face at nearly the same angle.
The BNs give each part unit per-dimension scale and remove the shared component, as the baseline's head does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fromnet.models.iresnet import IRBlock, IResNet, stage_size
from fromnet.models.net import EmbeddingHead, FromOutput, init_weights

#: Stages of the LResNet-E-IR kept: the network is cut after its third stride-2 stage.
CUT = 3


@dataclass(frozen=True)
class AttentionConfig:
    """Everything that shapes the attention network; defaults: LResNet50E-IR cut after stage 3, K=4 maps, 112x96.

    `widths`/`depths` take the same four-stage presets as FROM (`backbone_overrides`); only the first three
    stages are built.
    """

    K: int = 4  # attention maps
    input_size: tuple[int, int] = (112, 96)  # (height, width)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    depths: tuple[int, ...] = (3, 4, 14, 3)
    stem_width: int = 64
    in_channels: int = 3
    branch_blocks: int | None = None  # stage-3 blocks after the split, in both branches; None: min(3, depth - 1)
    embedding_dim: int = 256  # size of each part f_k and of the face embedding

    def __post_init__(self) -> None:
        if self.K < 1:
            raise ValueError(f"K (attention maps) must be >= 1, got {self.K}")
        if len(self.widths) < CUT or len(self.depths) != len(self.widths):
            raise ValueError(
                f"the attention network uses the first {CUT} stages; widths {self.widths} and depths "
                f"{self.depths} need at least {CUT} entries each, one per stage"
            )
        if not 1 <= self.branch_depth < self.depths[CUT - 1]:
            raise ValueError(
                f"branch_blocks must be in [1, {self.depths[CUT - 1] - 1}] (stage 3 has "
                f"{self.depths[CUT - 1]} blocks and the first stays shared), got {self.branch_blocks}"
            )
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise ValueError(f"input_size must be (height, width), got {self.input_size}")

    @property
    def branch_depth(self) -> int:
        """Blocks per branch: 3 (the r34/r50/r100 split), or all but the first of a shorter stage 3 (r18: 1)."""
        return self.branch_blocks if self.branch_blocks is not None else min(3, self.depths[CUT - 1] - 1)

    @property
    def channels(self) -> int:
        """Channels of the feature map F."""
        return self.widths[CUT - 1]

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w) of F and of the attention maps."""
        return stage_size(self.input_size[0], CUT), stage_size(self.input_size[1], CUT)


@dataclass
class AttentionOutput(FromOutput):
    """FromOutput (embedding = mean of the parts; mask, pattern and box stay None) plus what the method looks at."""

    parts: torch.Tensor | None = None  # (N, K, D): the part embeddings f_k
    attention: torch.Tensor | None = None  # (N, K, h, w): the raw maps A (after the ReLU)
    importance: torch.Tensor | None = None  # (N, K): s, each row sums to 1


def recalibrate(attention: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Parameter-free recalibration of raw maps A (N, K, h, w): importance s = softmax_k(GAP(sigmoid(A_k))) and the
    recalibrated maps s_k * sigmoid(A_k)."""
    squashed = torch.sigmoid(attention)
    importance = squashed.mean(dim=(2, 3)).softmax(dim=1)
    return importance, importance[:, :, None, None] * squashed


def attentional_pool(features: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """One descriptor per map: v_k = mean over pixels of maps_k * F, for F (N, C, h, w) and maps (N, K, h, w) ->
    (N, K, C)."""
    n, c, h, w = features.shape
    return torch.einsum("nchw,nkhw->nkc", features, maps) / (h * w)


class AttentionNet(nn.Module):
    """Shared trunk -> (feature branch F, attention branch A) -> recalibrate -> pool -> per-part BN-FC-BN -> mean."""

    def __init__(self, config: AttentionConfig) -> None:
        super().__init__()
        self.config = c = config
        widths, depths = c.widths[:CUT], c.depths[:CUT]
        self.backbone = IResNet(widths, depths, c.stem_width, c.in_channels)
        self.split = depths[-1] - c.branch_depth  # index in stage 3 of the first block after the split
        width = c.channels
        self.attention_branch = nn.Sequential(
            *[IRBlock(width, width, stride=1) for _ in range(c.branch_depth)],
            nn.Conv2d(width, c.K, kernel_size=1),
            nn.ReLU(),
        )
        # BN-FC-BN per part (see the module docstring: a deviation from the paper's bare FC)
        self.parts = nn.ModuleList(EmbeddingHead(width, c.embedding_dim, dropout=0.0) for _ in range(c.K))
        init_weights(self)

    def forward(self, x: torch.Tensor) -> AttentionOutput:
        if tuple(x.shape[-2:]) != self.config.input_size:
            raise ValueError(f"this model takes {self.config.input_size} (H, W) inputs, got {tuple(x.shape[-2:])}")
        x = self.backbone.stem(x)
        *early, last = self.backbone.stages
        for stage in early:
            x = stage(x)
        for i, block in enumerate(last.children()):
            if i == self.split:
                trunk = x  # where the attention branch leaves stage 3
            x = block(x)
        features = x
        attention = self.attention_branch(trunk)
        importance, maps = recalibrate(attention)
        pooled = attentional_pool(features, maps)
        parts = torch.stack([fc(pooled[:, k]) for k, fc in enumerate(self.parts)], dim=1)
        return AttentionOutput(embedding=parts.mean(dim=1), parts=parts, attention=attention, importance=importance)
