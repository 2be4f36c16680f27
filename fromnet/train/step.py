"""One optimisation step: forward, loss and backward over the micro-batches this process runs, then one update.

The global batch of a step is cut into `replicas` micro-batches (fixed when the run starts: the world size, or
batch / --micro-batch). A process runs replicas / world of them, accumulating gradients; each micro-batch's dropout
masks are seeded by (seed, step, replica). So the gradient of a step is the same sum whatever the number of
processes, and the step needs nothing but its state and its micro-batches: it can be read and tested alone.
"""

from __future__ import annotations

import hashlib
import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fromnet.shards import to_input
from fromnet.train import distributed
from fromnet.train.distributed import World
from fromnet.train.state import TrainState
from occgen.errors import UserError

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLoss(UserError):
    """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


@dataclass(frozen=True)
class StepSettings:
    seed: int
    replicas: int  # micro-batches per step over all processes: the losses are averaged over them
    precision: str = "fp32"
    clip_grad: float = 0.0
    targets: bool = False  # the variant predicts occlusion patterns (report their loss)


def step_seed(seed: int, step: int, replica: int) -> int:
    """The torch seed of one micro-batch (dropout masks): a function of the data position alone."""
    digest = hashlib.blake2b(f"{seed}:{step}:{replica}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def lr_factor(step: int, milestones: list[int], steps_per_epoch: int) -> float:
    """Step decay: /10 at each milestone epoch, applied from the first step of that epoch."""
    epoch = step // steps_per_epoch
    return 0.1 ** sum(epoch >= m for m in milestones)


def train_step(
    state: TrainState, micro: list[dict[str, Any]], lr: float, settings: StepSettings, world: World
) -> dict[str, float | None]:
    """Update `state` with the gradient of its step's micro-batches (those of this process); returns the step's
    losses averaged over all micro-batches of all processes. Raises NonFiniteLoss before updating on NaN/inf."""
    device = world.device
    autocast = AUTOCAST[settings.precision]
    state.zero_grad()
    totals = torch.zeros(5, dtype=torch.float64)  # loss, id, pattern, pattern hits, pattern count
    for i, mb in enumerate(micro):
        torch.manual_seed(step_seed(settings.seed, state.step, mb["replica"]))
        x = to_input(mb["image"], device)
        labels = mb["label"].to(device, non_blocking=True)
        patterns = mb["pattern"].to(device, non_blocking=True) if "pattern" in mb else None
        boxes = mb["box"].to(device, non_blocking=True) if "box" in mb else None
        with state.no_sync() if i < len(micro) - 1 else nullcontext():
            with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
                out = state.forward(x)
                parts = state.criterion(out, labels, patterns=patterns, boxes=boxes)
            state.scaler.scale(parts.total / len(micro)).backward()
        totals[0] += parts.total.item()
        totals[1] += parts.margin.item()
        if parts.pred is not None:
            totals[2] += parts.pred.item()
        if out.pattern_logits is not None and patterns is not None:
            totals[3] += (out.pattern_logits.argmax(1) == patterns).sum().item()
            totals[4] += len(patterns)
    if world.distributed and not state.head.sharded:
        for p in state.head.parameters():
            assert p.grad is not None  # every head parameter takes part in the loss
            distributed.all_reduce_sum(p.grad, world).div_(world.size)
    distributed.all_reduce_sum(totals, world)
    n = settings.replicas
    loss = totals[0].item() / n
    if not math.isfinite(loss):
        raise NonFiniteLoss(f"the loss became {loss} at step {state.step + 1}")
    if settings.clip_grad > 0:
        state.scaler.unscale_(state.optimizer)
        state.scaler.unscale_(state.head_optimizer)
        clip_global(state.model, state.head, settings.clip_grad, world)
    state.set_lr(lr)
    state.scaler.step(state.optimizer)
    state.scaler.step(state.head_optimizer)
    state.scaler.update()
    state.step += 1
    return {
        "loss": loss,
        "loss_id": totals[1].item() / n,
        "loss_pattern": totals[2].item() / n if settings.targets else None,
        "pattern_acc": totals[3].item() / totals[4].item() if totals[4] > 0 else None,
        "lr": lr,
    }


def clip_global(model: nn.Module, head: nn.Module, max_norm: float, world: World) -> None:
    """Clip by the norm of all gradients of the step, the sharded classifier's slices included."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    local = [p.grad for p in head.parameters() if p.grad is not None]
    total = torch.stack([g.float().norm() ** 2 for g in grads]).sum() if grads else torch.zeros(())
    head_sq = torch.stack([g.float().norm() ** 2 for g in local]).sum() if local else torch.zeros(())
    if head.sharded:
        head_sq = distributed.all_reduce_sum(head_sq.cpu().double(), world).to(head_sq)
    norm = (total.cpu() + head_sq.cpu()).sqrt()
    scale = max_norm / (norm.item() + 1e-6)
    if scale < 1:
        for g in grads + local:
            g.mul_(scale)
