"""The FROM network and its ablations as one module: backbone, optional pyramid + mask decoder, optional predictor.

One forward runs the embedding head once, on the cleaned features (the authors' release also embeds the uncleaned
map and throws the result away).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from fromnet.models.iresnet import IResNet, stage_size
from fromnet.models.mask_decoder import EmbeddingMaskDecoder, MaskDecoder
from fromnet.models.pattern_predictor import PatternPredictor, num_patterns
from fromnet.models.pyramid import Pyramid

MaskKind = Literal["3d", "2d", "fc"]
PredictorKind = Literal["classify", "regress"]


@dataclass(frozen=True)
class NetConfig:
    """Everything that shapes the network; the defaults are LResNet50E-IR FROM at K=5 on 112x96 faces."""

    mask: MaskKind | None = "3d"
    predictor: PredictorKind | None = "classify"
    K: int = 5
    input_size: tuple[int, int] = (112, 96)  # (height, width)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    depths: tuple[int, ...] = (3, 4, 14, 3)
    stem_width: int = 64
    in_channels: int = 3
    pyramid_width: int = 256
    decoder_width: int = 256
    fc_mask_reduced: int = 64  # channels before the FC layer of the embedding-mask decoder
    embedding_dim: int = 512
    dropout: float = 0.5

    def __post_init__(self) -> None:
        if self.predictor is not None and self.mask is None:
            raise ValueError("a pattern predictor reads the mask, so it needs a mask decoder (mask='3d'/'2d'/'fc')")
        if self.mask is not None and len(self.widths) < 3:
            raise ValueError(f"the pyramid taps the last three stages; widths {self.widths} has fewer")
        if len(self.input_size) != 2 or min(self.input_size) < 1:
            raise ValueError(f"input_size must be (height, width), got {self.input_size}")
        num_patterns(self.K)  # validates K

    @property
    def grid(self) -> tuple[int, int]:
        """(H, W) of the top feature map X1."""
        stages = len(self.widths)
        return stage_size(self.input_size[0], stages), stage_size(self.input_size[1], stages)

    @property
    def num_outputs(self) -> int:
        """Outputs of the pattern predictor: patterns of K, or the 4 box corners."""
        return 4 if self.predictor == "regress" else num_patterns(self.K)


@dataclass
class FromOutput:
    """What the trainer picks from: the embedding always; mask and predictor outputs where the variant has them."""

    embedding: torch.Tensor
    mask: torch.Tensor | None = None
    pattern_logits: torch.Tensor | None = None
    box: torch.Tensor | None = None


class EmbeddingHead(nn.Module):
    """BN-Dropout-FC-BN from the flattened top map to the face embedding."""

    def __init__(self, in_features: int, embedding_dim: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.BatchNorm1d(in_features),
            nn.Dropout(dropout),
            nn.Linear(in_features, embedding_dim),
            nn.BatchNorm1d(embedding_dim),
        )

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.layers(fmap.flatten(1))


class FromNet(nn.Module):
    """Backbone -> (pyramid -> mask decoder -> mask) -> masked features -> embedding (+ pattern prediction)."""

    def __init__(self, config: NetConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        top = c.widths[-1]
        gh, gw = c.grid
        self.backbone = IResNet(c.widths, c.depths, c.stem_width, c.in_channels)
        self.head = EmbeddingHead(top * gh * gw, c.embedding_dim, c.dropout)
        self.pyramid: Pyramid | None = None
        self.decoder: nn.Module | None = None
        self.predictor: PatternPredictor | None = None
        if c.mask is not None:
            self.pyramid = Pyramid(c.widths[-3:], c.pyramid_width)
            if c.mask == "fc":
                self.decoder = EmbeddingMaskDecoder(
                    c.pyramid_width, (gh, gw), c.embedding_dim, c.decoder_width, c.fc_mask_reduced
                )
                mask_features = c.embedding_dim
            else:
                channels = top if c.mask == "3d" else 1
                self.decoder = MaskDecoder(c.pyramid_width, channels, c.decoder_width)
                # A 2D mask is predicted from its H*W values; the release repeats it C times first, which adds
                # parameters but no information.
                mask_features = channels * gh * gw
            if c.predictor is not None:
                self.predictor = PatternPredictor(
                    mask_features, c.num_outputs, c.dropout, squash=c.predictor == "regress"
                )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> FromOutput:
        if tuple(x.shape[-2:]) != self.config.input_size:
            raise ValueError(f"this model takes {self.config.input_size} (H, W) inputs, got {tuple(x.shape[-2:])}")
        feats = self.backbone(x)
        x1 = feats[-1]
        if self.decoder is None or self.pyramid is None:
            return FromOutput(embedding=self.head(x1))
        mask = self.decoder(self.pyramid(feats[-3:]))
        if self.config.mask == "fc":
            embedding = self.head(x1) * mask
        else:
            embedding = self.head(x1 * mask)  # a 2D mask (N, 1, H, W) broadcasts over the channels
        out = FromOutput(embedding=embedding, mask=mask)
        if self.predictor is not None:
            pred = self.predictor(mask)
            if self.config.predictor == "regress":
                out.box = pred
            else:
                out.pattern_logits = pred
        return out


def init_weights(model: nn.Module) -> None:
    """Xavier-uniform convs and linears with zero bias, unit BN: the initialisation the FROM authors train from."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
