"""Attention-based partial face recognition (Hörmann et al., ICIP 2021): Extract, Attend, Aggregate.

Instead of masking corrupted features (FROM), the network looks at the face through K attention maps, makes one
part embedding of the feature map per map, and averages the K parts, so a part hidden by an occluder can be
down-weighted rather than poison one global descriptor. For this variant `K` counts attention maps, not
pattern-grid blocks.

Where the LResNet50E-IR (stages of 3, 4, 14, 3 blocks; stride-1 stem) is split, on 112x96 faces:

- **F and A come from stage 3.** The stem keeps full resolution, so the third stride-2 stage leaves a 14x12 map,
  1/8 of the input, like the paper's 20x20 on 160x160; stage 4 would leave 7x6 cells of ~16 px, too coarse to keep
  eyes, nose and mouth apart. Stage 3 (256 channels, 14 blocks) is also this network's counterpart of ResNet-50's
  conv4_x, whose 1024-channel map is the paper's F. The pooled variant does not build stage 4.
- **Split three blocks before the end of stage 3.** Stem, stages 1-2 and stage 3's first 11 blocks are shared; the
  feature branch is stage 3's last 3 blocks (F: 256x14x12; stem and stages 1-3 keep a baseline's `backbone.*`
  names, so a stage-1 baseline's weights fit them); the attention branch is a fresh copy of those 3 blocks plus the
  1x1 conv (256 -> K) and ReLU that give the raw maps A (Kx14x12). Three blocks of their own let the maps grow
  their receptive field for 3.5M parameters and 1.2 GFLOPs; running stage 4 at stride 1 for each branch instead
  would cost 13.1M parameters and 4.4 GFLOPs per branch. `branch_blocks` moves the split (default: 3, or all but
  the first block of a shorter stage 3, as r18's).

Attend is parameter-free: sigmoid(A_k), global average pooling, softmax over the K maps gives the importance s
(sums to 1); the recalibrated map k is s_k * sigmoid(A_k). Because A >= 0 (ReLU), sigmoid(A) lies in [0.5, 1), so
the pooled values entering the softmax differ by less than 0.5 and no s_k can exceed e^0.5 = 1.65 times another:
importance re-weights the parts but cannot switch one off. Aggregate: one embedding f_k per map, and the face
embedding is the mean of the f_k. How a part becomes f_k is `part_head`:

- ``"pooled"`` (variant ``attention-pooled``, the paper's): v_k is the spatial mean of F weighted by map k, and
  each v_k has its own BN-FC-BN to a 256-d f_k (BN-wrapped, where the paper has a bare FC: with a bare FC the
  parts start ~50x smaller than a baseline embedding and the raw-logit softmax stayed at ln C).
- ``"top"`` (variant ``attention``, the default; a deviation from the paper): F weighted by the recalibrated map k,
  rescaled so that uniform maps and equal importance leave F unchanged, goes through the rest of the baseline
  network (stage 4 and its BN-Dropout-FC-BN head, shared by the K parts) to a 512-d f_k. **Why:** pooling throws
  away where a feature is, and at the widths a CPU trains this leaves too little. On the held-out LFW people of
  tools/exp_table5.py, a stage-1 r18 x0.25 Baseline (85.4 % accuracy with its own embedding) gives 63.3 % from
  the spatial mean of its 64-channel stage-3 map, 78.0 % from the same map flattened; the pooled variant trained
  by the same stage 2 reached 64.2 %, at that ceiling (the paper pools ResNet-50's 1024-channel conv4_x). With
  the top, the parts keep the map's layout, every tensor but the attention branch has the stage-1 Baseline's
  shape (so ``--init`` loads them, and the classifier too), and with the branch's last conv started at zero the
  variant starts as the Baseline exactly and learns where to look from there. Cost: stage 4 and the head run K
  times (r50 at 112x96, K = 4: 16.3 GFLOPs a face against the Baseline's 10.8 and the pooled variant's 10.6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from fromnet.models.iresnet import IRBlock, IResNet, stage_size
from fromnet.models.net import EmbeddingHead, FromOutput, init_weights

#: The stride-2 stage after which the network splits into the feature and attention branches.
CUT = 3

PartHead = Literal["top", "pooled"]


@dataclass(frozen=True)
class AttentionConfig:
    """Everything that shapes the attention network; defaults: LResNet50E-IR split in stage 3, K=4 maps, 112x96.

    `widths`/`depths` take the same four-stage presets as FROM (`backbone_overrides`); the "pooled" part head
    builds only the first three stages, the "top" head all four.
    """

    K: int = 4  # attention maps
    input_size: tuple[int, int] = (112, 96)  # (height, width)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    depths: tuple[int, ...] = (3, 4, 14, 3)
    stem_width: int = 64
    in_channels: int = 3
    branch_blocks: int | None = None  # stage-3 blocks after the split, in both branches; None: min(3, depth - 1)
    part_head: PartHead = "top"
    embedding_dim: int = 512  # size of each part f_k and of the face embedding (the paper's pooled parts: 256)
    dropout: float = 0.5  # of the "top" head, as the baseline's

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
        if self.part_head not in ("top", "pooled"):
            raise ValueError(f"part_head must be 'top' or 'pooled', got {self.part_head!r}")
        if self.part_head == "top" and len(self.widths) <= CUT:
            raise ValueError(f"the 'top' part head runs stage {CUT + 1}: widths {self.widths} has no such stage")

    @property
    def stages(self) -> int:
        """Stages built: the top head needs every stage, pooling stops after stage 3."""
        return len(self.widths) if self.part_head == "top" else CUT

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


def part_weights(attention: torch.Tensor, importance: torch.Tensor) -> torch.Tensor:
    """Weights of F for the top head, from raw maps A (N, K, h, w) and importance s (N, K): the recalibrated map
    s_k * sigmoid(A_k) divided by the mean of sigmoid(A_k) over the pixels and by the equal share 1/K, so all ones
    when every map is flat and s = 1/K, and a part's weights average K * s_k over the face."""
    squashed = torch.sigmoid(attention)
    k = attention.shape[1]
    return k * importance[:, :, None, None] * squashed / squashed.mean(dim=(2, 3), keepdim=True)


def attentional_pool(features: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """One descriptor per map: v_k = mean over pixels of maps_k * F, for F (N, C, h, w) and maps (N, K, h, w) ->
    (N, K, C)."""
    n, c, h, w = features.shape
    return torch.einsum("nchw,nkhw->nkc", features, maps) / (h * w)


class AttentionNet(nn.Module):
    """Shared trunk -> (feature branch F, attention branch A) -> recalibrate -> K parts -> mean.

    A part is F pooled by its map through its own BN-FC-BN ("pooled"), or F weighted by its map through the shared
    stage 4 and embedding head ("top"); see the module docstring.
    """

    def __init__(self, config: AttentionConfig) -> None:
        super().__init__()
        self.config = c = config
        widths, depths = c.widths[: c.stages], c.depths[: c.stages]
        self.backbone = IResNet(widths, depths, c.stem_width, c.in_channels)
        self.split = depths[CUT - 1] - c.branch_depth  # index in stage 3 of the first block after the split
        width = c.channels
        maps = nn.Conv2d(width, c.K, kernel_size=1)
        self.attention_branch = nn.Sequential(
            *[IRBlock(width, width, stride=1) for _ in range(c.branch_depth)], maps, nn.ReLU()
        )
        self.parts: nn.ModuleList | None = None
        self.head: EmbeddingHead | None = None
        if c.part_head == "pooled":
            self.parts = nn.ModuleList(EmbeddingHead(width, c.embedding_dim, dropout=0.0) for _ in range(c.K))
        else:
            gh, gw = stage_size(c.input_size[0], c.stages), stage_size(c.input_size[1], c.stages)
            self.head = EmbeddingHead(c.widths[c.stages - 1] * gh * gw, c.embedding_dim, c.dropout)
        init_weights(self)
        if c.part_head == "top":
            # A starts flat (weights 0, bias 0.01 > 0 so the ReLU passes gradients): the parts start as the plain
            # network, which a stage-1 Baseline's weights then make the Baseline itself
            assert maps.bias is not None  # built with a bias above
            nn.init.zeros_(maps.weight)
            nn.init.constant_(maps.bias, 0.01)

    def forward(self, x: torch.Tensor) -> AttentionOutput:
        if tuple(x.shape[-2:]) != self.config.input_size:
            raise ValueError(f"this model takes {self.config.input_size} (H, W) inputs, got {tuple(x.shape[-2:])}")
        x = self.backbone.stem(x)
        stages = list(self.backbone.stages)
        for stage in stages[: CUT - 1]:
            x = stage(x)
        for i, block in enumerate(stages[CUT - 1].children()):
            if i == self.split:
                trunk = x  # where the attention branch leaves stage 3
            x = block(x)
        features = x
        attention = self.attention_branch(trunk)
        importance, maps = recalibrate(attention)
        n, k = importance.shape
        if self.parts is not None:
            pooled = attentional_pool(features, maps)
            parts = torch.stack([fc(pooled[:, i]) for i, fc in enumerate(self.parts)], dim=1)
        else:
            assert self.head is not None
            weighted = features[:, None] * part_weights(attention, importance)[:, :, None]  # (N, K, C, h, w)
            h = weighted.flatten(0, 1)
            for stage in stages[CUT:]:
                h = stage(h)
            parts = self.head(h).view(n, k, -1)
        return AttentionOutput(embedding=parts.mean(dim=1), parts=parts, attention=attention, importance=importance)
