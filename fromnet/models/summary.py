"""Size and cost of a model: parameters per part and forward FLOPs, counted on the meta device (no memory, fast)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fromnet.models import AttentionConfig, NetConfig, build_model


@dataclass(frozen=True)
class ModelSummary:
    """Parameters per top-level part, their total, and FLOPs of one image's forward pass (2 per multiply-add)."""

    config: NetConfig | AttentionConfig
    parts: dict[str, int]
    params: int
    flops: int


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one eval-mode forward on an input of `input_shape` (N, C, H, W), as torch's flop counter sees them."""
    param = next(model.parameters())
    x = torch.zeros(input_shape, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops()


def summarize(variant: str, K: int = 5, input_size: tuple[int, int] = (112, 96), **overrides) -> ModelSummary:
    """Build the variant on the meta device and count it; cheap even for the full-size network."""
    with torch.device("meta"):
        model = build_model(variant, K, input_size, **overrides)
    parts = {name: count_parameters(child) for name, child in model.named_children()}
    flops = count_flops(model, (1, model.config.in_channels, *input_size))
    return ModelSummary(config=model.config, parts=parts, params=count_parameters(model), flops=flops)
