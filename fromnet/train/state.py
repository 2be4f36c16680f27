"""What a training run updates: the network, its margin classifier, the criterion, the optimizers and the gradient
scaler, and the global step. Built once per process; saved into and restored from a checkpoint as a whole."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from fromnet import checkpoint
from fromnet.checkpoint import ModelSpec
from fromnet.losses import Margin, MarginHead, make_criterion
from fromnet.models import VARIANTS, build_model
from fromnet.train import distributed
from fromnet.train.distributed import World
from fromnet.train.params import TrainConfig
from fromnet.train.partial_fc import ShardedMarginHead
from occgen.errors import UserError


@dataclass
class TrainState:
    """The model/classifier/optimizer bundle of one process. `model` is the bare network whose weights are saved,
    `wrapped` the same in DDP when there are several processes, `forward` what the step calls (maybe compiled)."""

    spec: ModelSpec
    model: nn.Module
    wrapped: nn.Module
    forward: Callable[..., Any]
    head: MarginHead | ShardedMarginHead
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    head_optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    step: int = 0

    def no_sync(self):
        """Skip DDP's gradient all-reduce (every micro-batch of a step but the last); nothing on one process."""
        return self.wrapped.no_sync() if isinstance(self.wrapped, DistributedDataParallel) else nullcontext()

    def set_lr(self, lr: float) -> None:
        for opt in (self.optimizer, self.head_optimizer):
            for group in opt.param_groups:
                group["lr"] = lr

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.head_optimizer.zero_grad(set_to_none=True)

    # -- checkpoint contents ------------------------------------------------------------------------------------

    def _head_weight(self) -> nn.Parameter:
        return next(self.head.parameters())

    def to_checkpoint(self, cfg: TrainConfig, steps_per_epoch: int, data: dict[str, Any]) -> dict[str, Any]:
        """Everything a resume needs; collective (the sharded classifier is gathered), so every rank calls it."""
        momentum = self.head_optimizer.state.get(self._head_weight(), {}).get("momentum_buffer")
        return {
            "step": self.step,
            "epoch": self.step // steps_per_epoch,
            "model_spec": self.spec.to_dict(),
            "model": self.model.state_dict(),
            "classifier": {
                "weight": self.head.full_weight().cpu(),
                "momentum": None if momentum is None else self.head.gather_rows(momentum).cpu(),
            },
            "optimizer": self.optimizer.state_dict(),
            "schedule": {
                "lr": cfg.lr,
                "milestones": list(cfg.milestones),
                "steps_per_epoch": steps_per_epoch,
                "step": self.step,
            },
            "scaler": self.scaler.state_dict(),
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            "data": {"step": self.step, **data},
            "config": json.dumps(cfg.to_dict(), sort_keys=True),
        }

    def restore(self, state: dict[str, Any], device: torch.device) -> None:
        self.model.load_state_dict(state["model"])
        self.head.load_full_weight(state["classifier"]["weight"].to(device))
        self.optimizer.load_state_dict(state["optimizer"])
        momentum = state["classifier"]["momentum"]
        if momentum is not None:
            weight = self._head_weight()
            self.head_optimizer.state[weight]["momentum_buffer"] = self.head.local_rows(momentum).to(device).clone()
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.step = int(state["step"])

    def replica_checksums(self, world: World) -> list[float]:
        """A checksum of this rank's weights from every rank: DDP replicas must never drift apart."""
        with torch.no_grad():
            mine = torch.stack([p.double().sum() for p in self.model.parameters()]).sum().reshape(1).cpu()
        return distributed.all_gather_cat(mine, world).tolist()


def build_state(cfg: TrainConfig, world: World, spec: ModelSpec, num_identities: int) -> TrainState:
    """A fresh state: the same initial weights on every rank (seeded by the run seed)."""
    torch.manual_seed(cfg.seed)
    device = world.device
    model = build_model(**spec.build_kwargs(), channels_last=cfg.channels_last).to(device)
    margin = Margin.preset(cfg.margin, cfg.margin_scale or None)
    dim = model.config.embedding_dim
    if cfg.classifier == "sharded":
        head: MarginHead | ShardedMarginHead = ShardedMarginHead(dim, num_identities, margin, world, cfg.seed)
    else:
        head = MarginHead(dim, num_identities, margin)
    head.to(device)
    criterion = make_criterion(cfg.variant, head, cfg.lam, cfg.lambda_wce, cfg.lambda_div)
    wrapped: nn.Module = model
    if world.distributed:
        wrapped = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    forward = torch.compile(wrapped) if cfg.compile else wrapped
    opt: dict[str, Any] = dict(lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return TrainState(
        spec,
        model,
        wrapped,
        forward,
        head,
        criterion,
        torch.optim.SGD(model.parameters(), **opt),
        torch.optim.SGD(head.parameters(), **opt),
        torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16"),
    )


#: Parts of a FROM-family checkpoint that the pooled attention variant has no use for: it stops after stage 3 and
#: pools with attention instead of the flattening embedding head.
ATTENTION_UNUSED = ("backbone.stages.3.", "head.")


def load_init(model: nn.Module, head: MarginHead | ShardedMarginHead, path: str, variant: str) -> str:
    """Start from another run's weights (stage 2 from stage 1): every tensor must fit, or nothing is loaded."""
    state = checkpoint.load(path, what="--init")
    theirs, ours = state["model"], model.state_dict()
    unused = []
    if VARIANTS[variant].family == "attention":
        unused = [k for k in theirs if k not in ours and k.startswith(ATTENTION_UNUSED)]
        theirs = {k: v for k, v in theirs.items() if k not in unused}
    wrong = [
        f"{k} {tuple(v.shape)} vs {tuple(ours[k].shape)}"
        for k, v in theirs.items()
        if k in ours and v.shape != ours[k].shape
    ]
    unknown = [k for k in theirs if k not in ours]
    missing = [k for k in ours if k not in theirs and k.split(".")[0] in ("backbone", "head")]
    if wrong or unknown or missing:
        parts = [
            f"{len(wrong)} of different shape ({'; '.join(wrong[:4])})" if wrong else "",
            f"{len(unknown)} this model lacks ({', '.join(unknown[:4])})" if unknown else "",
            f"{len(missing)} the checkpoint lacks ({', '.join(missing[:4])})" if missing else "",
        ]
        spec = state.get("model_spec", {})
        raise UserError(
            f"--init {state['path']} (a {spec.get('variant')} {spec.get('backbone')} x"
            f"{spec.get('width_mult')}) does not fit this model: tensors "
            + "; ".join(p for p in parts if p)
            + ". Use the same --backbone, --width-mult and face size"
        )
    model.load_state_dict(theirs, strict=False)
    fresh = sorted({k.split(".")[0] for k in ours if k not in theirs})
    weight = state.get("classifier", {}).get("weight")
    dim = next(head.parameters()).shape[1]
    if weight is not None and tuple(weight.shape) == (head.num_classes, dim):
        head.load_full_weight(weight.to(next(head.parameters()).device))
        classifier = "classifier loaded"
    else:
        classifier = "classifier starts fresh (other identities or embedding size)"
    return (
        f"initialised from {state['path']}"
        + (f" (new parts: {', '.join(fresh)})" if fresh else "")
        + (f" ({len(unused)} tensors of parts this variant drops left unused)" if unused else "")
        + f"; {classifier}"
    )
