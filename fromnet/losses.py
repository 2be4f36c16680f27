"""Training losses: the unified margin softmax (FROM Eq. 1), pattern softmax (Eq. 4), box L2 (Eq. 5), total (Eq. 6).

Eq. 1 replaces the target class's cos(theta) by delta = cos(m1 * theta + m2) - m3 before scaling by s. Following the
paper's notation, m1 = 0 means "no multiplicative margin" (it acts as 1), so CosFace is (0, 0, m3) and ArcFace
(0, m2, 0). Where m1 * theta + m2 passes pi, cos() stops decreasing and the margin would reward a worse angle:
ArcFace then uses its usual threshold fallback cos(theta) - m2 * sin(m2), and a multiplicative margin uses
SphereFace's monotone psi extension (-1)^k cos(phi) - 2k. Cosines are computed in fp32 even under autocast: bf16
cosines are only good to ~0.004, coarser than the margins that matter. The `softmax` preset is the plain softmax
cross-entropy on unnormalised logits W f (no margin, no bias), the attention paper's identity loss.

The attention variant's losses (Hoermann et al. 2021) are here too: the importance-weighted cross-entropy over its
K part embeddings and the weighted diversity regularizer on its attention maps; `make_criterion` picks the
criterion for a variant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from fromnet.models import VARIANTS
from fromnet.models.attention import AttentionOutput
from fromnet.models.net import FromOutput

_EPS = 1e-7  # keeps acos away from +-1, where its gradient is infinite


@dataclass(frozen=True)
class Margin:
    """(m1, m2, m3) of Eq. 1 and the scale s; `normalized=False` scores classes by raw inner products W f instead
    of cosines (the plain softmax), which takes no margin."""

    m1: float = 0.0
    m2: float = 0.0
    m3: float = 0.0
    s: float = 30.0
    normalized: bool = True

    def __post_init__(self) -> None:
        if self.m1 < 0 or self.m2 < 0 or self.m3 < 0 or self.s <= 0:
            raise ValueError(f"margins must be >= 0 and s > 0, got {self}")
        if self.m2 >= math.pi / 2:
            raise ValueError(f"m2 = {self.m2} is an angle in radians and must be below pi/2")
        if not self.normalized and (self.m1 or self.m2 or self.m3):
            raise ValueError(f"margins act on angles, so they need normalized=True, got {self}")

    @classmethod
    def preset(cls, name: str, s: float | None = None) -> Margin:
        """CosFace/ArcFace/SphereFace with the margins the FROM release trains with, or the plain softmax;
        `s` overrides the scale."""
        if name not in MARGIN_PRESETS:
            raise ValueError(f"unknown margin preset {name!r}; choose one of {', '.join(MARGIN_PRESETS)}")
        base = MARGIN_PRESETS[name]
        return base if s is None else replace(base, s=s)


MARGIN_PRESETS: dict[str, Margin] = {
    "cosface": Margin(0.0, 0.0, 0.35, s=30.0),
    "arcface": Margin(0.0, 0.5, 0.0, s=30.0),
    "sphereface": Margin(1.5, 0.0, 0.0, s=64.0),
    "softmax": Margin(s=1.0, normalized=False),
}


def target_cosine(cos: torch.Tensor, margin: Margin) -> torch.Tensor:
    """delta of Eq. 1 for the target-class cosines `cos`, made monotone in theta over [0, pi]."""
    m1 = margin.m1 if margin.m1 > 0 else 1.0
    if m1 == 1.0 and margin.m2 == 0.0:
        return cos - margin.m3  # CosFace: no angle needed, so no acos rounding either
    theta = torch.acos(cos.clamp(-1.0 + _EPS, 1.0 - _EPS))
    phi = m1 * theta + margin.m2
    if m1 == 1.0:
        fallback = cos - margin.m2 * math.sin(margin.m2)
        delta = torch.where(phi <= math.pi, torch.cos(phi), fallback)
    else:
        k = torch.floor(phi / math.pi)
        sign = 1.0 - 2.0 * torch.remainder(k, 2.0)
        delta = sign * torch.cos(phi) - 2.0 * k
    return delta - margin.m3


def margin_logits(cos: torch.Tensor, labels: torch.Tensor, margin: Margin) -> torch.Tensor:
    """Scaled logits of Eq. 1: the target column gets delta, the others keep cos(theta_j)."""
    idx = labels.view(-1, 1)
    target = target_cosine(cos.gather(1, idx), margin)
    return margin.s * cos.scatter(1, idx, target)


def class_scores(embedding: torch.Tensor, weight: torch.Tensor, normalized: bool = True) -> torch.Tensor:
    """Scores of every class before the margin, in fp32: cos(theta_j) between embedding and class centre, or the
    raw inner products W_j f when not `normalized` (plain softmax). Any identity head computes its logits here."""
    with torch.autocast(embedding.device.type, enabled=False):
        e, w = embedding.float(), weight.float()
        if normalized:
            e, w = F.normalize(e), F.normalize(w)
        return F.linear(e, w)


class MarginClassifier(nn.Module):
    """Class centres on the unit sphere; cosines with the embedding, margin on the true class (training only).
    With the plain softmax (`margin.normalized` False) the logits are the raw inner products instead."""

    def __init__(self, embedding_dim: int, num_classes: int, margin: Margin) -> None:
        super().__init__()
        self.margin = margin
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, embedding: torch.Tensor) -> torch.Tensor:
        return class_scores(embedding, self.weight)

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return margin_logits(class_scores(embedding, self.weight, self.margin.normalized), labels, self.margin)


def margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 1 given `margin_logits`: softmax cross-entropy, averaged over the batch."""
    return F.cross_entropy(logits.float(), labels)


def pattern_loss(logits: torch.Tensor, patterns: torch.Tensor) -> torch.Tensor:
    """Eq. 4: softmax cross-entropy of the predicted occlusion pattern."""
    return F.cross_entropy(logits.float(), patterns)


def box_loss(pred: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Eq. 5: Euclidean distance between predicted and true normalized corners (x0, y0, x1, y1), batch mean."""
    return torch.linalg.vector_norm(pred.float() - boxes.float(), dim=1).mean()


class MarginHead(nn.Module):
    """The identity loss of Eq. 1 over the whole classifier held by this process.

    Every identity head (this one, and partial_fc.ShardedMarginHead that splits the classes over ranks) is called
    as ``head(embedding, labels, weight=None)`` and returns the batch mean of ``weight * cross-entropy``, so the
    criteria above it never need to know where the class centres live.
    """

    sharded = False

    def __init__(self, embedding_dim: int, num_classes: int, margin: Margin | None = None) -> None:
        super().__init__()
        self.classifier = MarginClassifier(embedding_dim, num_classes, margin or Margin.preset("cosface"))

    @property
    def num_classes(self) -> int:
        return self.classifier.weight.shape[0]

    def forward(
        self, embedding: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        per_sample = F.cross_entropy(self.classifier(embedding, labels), labels, reduction="none")
        return per_sample.mean() if weight is None else (per_sample * weight.float()).mean()

    def full_weight(self) -> torch.Tensor:
        """All class centres (num_classes x D), as checkpoints store them."""
        return self.classifier.weight.detach()

    def load_full_weight(self, weight: torch.Tensor) -> None:
        with torch.no_grad():
            self.classifier.weight.copy_(weight)

    def gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """A per-class tensor (e.g. the weight's momentum) for the checkpoint: already whole on this process."""
        return rows.detach().clone()

    def local_rows(self, full: torch.Tensor) -> torch.Tensor:
        """The rows of a full per-class tensor that this head holds: all of them."""
        return full


@dataclass
class LossParts:
    """The total that is back-propagated, and its terms for logging (pred is None for variants without one)."""

    total: torch.Tensor
    margin: torch.Tensor
    pred: torch.Tensor | None


class FromLoss(nn.Module):
    """Eq. 6: margin loss on the embedding + lambda * the predictor's loss (pattern softmax or box L2)."""

    def __init__(self, head: nn.Module, lam: float = 1.0) -> None:
        super().__init__()
        self.head = head
        self.lam = lam

    def forward(
        self,
        out: FromOutput,
        labels: torch.Tensor,
        patterns: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
    ) -> LossParts:
        """Give `patterns` (class indices) or `boxes` (normalized corners) for variants that predict them."""
        main = self.head(out.embedding, labels)
        pred = None
        if out.pattern_logits is not None:
            if patterns is None:
                raise ValueError("this model predicts occlusion patterns: pass their labels as `patterns`")
            pred = pattern_loss(out.pattern_logits, patterns)
        elif out.box is not None:
            if boxes is None:
                raise ValueError("this model regresses occluded boxes: pass the normalized corners as `boxes`")
            pred = box_loss(out.box, boxes)
        total = main if pred is None else main + self.lam * pred
        return LossParts(total=total, margin=main, pred=pred)


def weighted_ce(head: nn.Module, parts: torch.Tensor, labels: torch.Tensor, importance: torch.Tensor) -> torch.Tensor:
    """L_wCE = sum_k (batch mean of s_k * CE(classifier(f_k), label)): one identity head shared by the K parts
    (N, K, D), each part's loss weighted per sample by its importance s (N, K).

    One head call on the N*K parts: the batch mean over N*K rows, times K, is exactly the sum over k of the
    per-part batch means, with one classifier matmul (and one gather for a sharded head) instead of K.
    """
    n, k, d = parts.shape
    return k * head(parts.reshape(n * k, d), labels.repeat_interleave(k), weight=importance.reshape(n * k))


def diversity_loss(attention: torch.Tensor, importance: torch.Tensor) -> torch.Tensor:
    """L_wDIV = 1 - sum over pixels of max_k s_k P_k, batch mean, with P_k = softmax over the pixels of A_k.

    0 when the importance-weighted maps do not overlap; at most 1 - max_k s_k, reached when all maps are the same
    (sum_x max_k s_k P_k(x) >= s_j for every j). Computed in fp32: the pixel softmax of a 14x12 map is fine-grained.
    """
    p = attention.float().flatten(2).softmax(dim=2)  # (N, K, h*w)
    peak = (importance.float()[:, :, None] * p).max(dim=1).values  # (N, h*w)
    return (1.0 - peak.sum(dim=1)).mean()


class AttentionLoss(nn.Module):
    """lambda_wce * L_wCE + lambda_div * L_wDIV for the attention variant (the L2 term is the optimizer's weight
    decay). Called like FromLoss; `margin` carries L_wCE and `pred` L_wDIV, so logs show identity and auxiliary."""

    def __init__(self, head: nn.Module, lambda_wce: float = 1.0, lambda_div: float = 1.0) -> None:
        super().__init__()
        if lambda_wce < 0 or lambda_div < 0:
            raise ValueError(f"loss weights must be >= 0, got lambda_wce={lambda_wce}, lambda_div={lambda_div}")
        self.head = head
        self.lambda_wce = lambda_wce
        self.lambda_div = lambda_div

    def forward(
        self,
        out: FromOutput,
        labels: torch.Tensor,
        patterns: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
    ) -> LossParts:
        """`patterns` and `boxes` are accepted for the common call and ignored: this variant predicts neither."""
        if not isinstance(out, AttentionOutput) or out.parts is None or out.attention is None or out.importance is None:
            raise ValueError(
                "AttentionLoss needs the output of an attention model (parts, attention, importance); "
                "use FromLoss for the FROM variants"
            )
        wce = weighted_ce(self.head, out.parts, labels, out.importance)
        div = diversity_loss(out.attention, out.importance)
        return LossParts(total=self.lambda_wce * wce + self.lambda_div * div, margin=wce, pred=div)


def make_criterion(
    variant: str, head: nn.Module, lam: float = 1.0, lambda_wce: float = 1.0, lambda_div: float = 1.0
) -> nn.Module:
    """The training criterion of a variant: FromLoss(head, lam) for the FROM family, AttentionLoss(head,
    lambda_wce, lambda_div) for "attention". Weights that do not apply to the variant are ignored, so a trainer
    can pass all of its settings."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if VARIANTS[variant].family == "attention":
        return AttentionLoss(head, lambda_wce, lambda_div)
    return FromLoss(head, lam)
