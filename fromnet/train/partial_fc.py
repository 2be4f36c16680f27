"""The margin classifier split across ranks (Partial FC with sample rate 1.0), so a million identities fit.

Each rank holds the class centres of one contiguous slice of the identities. Embeddings and labels of the whole
global batch are gathered to every rank, each rank computes the cosines against its own centres only, and the
softmax is completed with two all-reduces (row maximum and sum of exponentials) plus one for the target logit.
The result equals the full classifier's loss (tests hold it to that), at 1/world of its memory per rank.

Gradients: the cross-entropy's backward is written out (softmax minus one-hot, local columns only), so nothing of
the other ranks' classes is ever materialised. The embedding gather's backward sums the contributions of every
rank and multiplies by the world size, because DDP then averages the backbone's gradients over the ranks.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn

from fromnet.losses import Margin, class_scores, target_cosine
from fromnet.train.distributed import World, all_gather_cat


def class_slices(num_classes: int, world_size: int) -> list[tuple[int, int]]:
    """[start, end) of the classes each rank holds: contiguous, sizes differing by at most one."""
    base, extra = divmod(num_classes, world_size)
    bounds, start = [], 0
    for r in range(world_size):
        end = start + base + (1 if r < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


class _GatherBatch(torch.autograd.Function):
    """All-gather along dim 0 whose backward hands each rank the world-summed gradient of its own rows, times
    the world size (cancelling DDP's averaging of the backbone gradients)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, rank: int, size: int) -> torch.Tensor:
        ctx.rank, ctx.size, ctx.rows = rank, size, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # Gloo has no reduce-scatter; the batch is small
        mine = grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]
        return mine * ctx.size, None, None


class _ShardedCrossEntropy(torch.autograd.Function):
    """Per-sample softmax cross-entropy over logits whose columns are spread over the ranks."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, local_target: torch.Tensor, distributed: bool) -> torch.Tensor:
        row_max = logits.max(dim=1).values
        if distributed:
            dist.all_reduce(row_max, op=dist.ReduceOp.MAX)
        exp = torch.exp(logits - row_max[:, None])
        denom = exp.sum(dim=1)
        owned = local_target >= 0
        target_logit = torch.zeros_like(row_max)
        target_logit[owned] = logits[owned, local_target[owned]]
        if distributed:
            dist.all_reduce(denom, op=dist.ReduceOp.SUM)
            dist.all_reduce(target_logit, op=dist.ReduceOp.SUM)
        ctx.save_for_backward(exp / denom[:, None], local_target)
        return torch.log(denom) + row_max - target_logit

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        prob, local_target = ctx.saved_tensors
        grad = prob.clone()
        owned = torch.nonzero(local_target >= 0).squeeze(1)
        grad[owned, local_target[owned]] -= 1.0
        return grad * grad_loss[:, None], None, None


class ShardedMarginHead(nn.Module):
    """Eq. 1's margin softmax with this rank's slice of the class centres; called like losses.MarginHead."""

    sharded = True

    def __init__(self, embedding_dim: int, num_classes: int, margin: Margin, world: World, seed: int = 0) -> None:
        super().__init__()
        self.world = world
        self.margin = margin
        self.num_classes = num_classes
        self.slices = class_slices(num_classes, world.size)
        self.start, self.end = self.slices[world.rank]
        # Xavier-uniform with the full matrix's bound, drawn per slice (no rank ever holds the whole matrix).
        bound = math.sqrt(6.0 / (num_classes + embedding_dim))
        gen = torch.Generator().manual_seed(seed * 1_000_003 + world.rank)
        weight = torch.empty(self.end - self.start, embedding_dim).uniform_(-bound, bound, generator=gen)
        self.weight = nn.Parameter(weight)

    def forward(
        self, embedding: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        w = self.world
        if w.distributed:
            embedding = _GatherBatch.apply(embedding, w.rank, w.size)
            labels = all_gather_cat(labels, w)
            weight = None if weight is None else all_gather_cat(weight.detach(), w)
        cos = class_scores(embedding, self.weight, self.margin.normalized)
        local = labels - self.start
        local = torch.where((local >= 0) & (labels < self.end), local, torch.full_like(local, -1))
        owned = torch.nonzero(local >= 0).squeeze(1)
        if owned.numel():
            target = target_cosine(cos[owned, local[owned]], self.margin)
            cos = cos.index_put((owned, local[owned]), target)
        per_sample = _ShardedCrossEntropy.apply(self.margin.s * cos, local, w.distributed)
        return per_sample.mean() if weight is None else (per_sample * weight.float()).mean()

    def gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a per-class tensor (the weight, or its momentum) -> the full tensor on every rank."""
        if not self.world.distributed:
            return rows.detach().clone()
        longest = max(e - s for s, e in self.slices)
        padded = torch.zeros(longest, *rows.shape[1:], dtype=rows.dtype, device=rows.device)
        padded[: rows.shape[0]] = rows.detach()
        parts = [torch.empty_like(padded) for _ in range(self.world.size)]
        dist.all_gather(parts, padded)
        return torch.cat([p[: e - s] for p, (s, e) in zip(parts, self.slices)])

    def full_weight(self) -> torch.Tensor:
        return self.gather_rows(self.weight)

    def load_full_weight(self, weight: torch.Tensor) -> None:
        with torch.no_grad():
            self.weight.copy_(self.local_rows(weight))

    def local_rows(self, full: torch.Tensor) -> torch.Tensor:
        return full[self.start : self.end]
