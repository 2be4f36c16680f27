"""FROM and its ablation variants, chosen by name: `build_model("from", K=5, input_size=(112, 96))`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fromnet.models.net import FromNet, FromOutput, MaskKind, NetConfig, PredictorKind
from fromnet.models.pattern_predictor import num_patterns


@dataclass(frozen=True)
class Variant:
    """Which optional parts a named variant has, and the paper's name for it."""

    mask: MaskKind | None
    predictor: PredictorKind | None
    description: str


VARIANTS: dict[str, Variant] = {
    "baseline": Variant(None, None, "backbone + embedding head only (Baseline, Baseline-Aug)"),
    "md": Variant("3d", None, "3D mask decoder without the pattern predictor (Baseline-MD)"),
    "from": Variant("3d", "classify", "full FROM: 3D mask + occlusion pattern classification"),
    "3d": Variant("3d", "classify", "the '3D' row of the mask ablation, identical to 'from'"),
    "2d": Variant("2d", "classify", "one HxW mask broadcast over the channels ('2D' ablation)"),
    "fc": Variant("fc", "classify", "mask on the 512-d embedding instead of the conv map ('FC' ablation)"),
    "reg": Variant("3d", "regress", "3D mask, predictor regresses the occluded box corners ('REG' ablation)"),
}


def build_model(
    variant: str = "from",
    K: int = 5,
    input_size: tuple[int, int] = (112, 96),
    *,
    channels_last: bool = False,
    compile: bool = False,
    **overrides,
) -> nn.Module:
    """A freshly initialised variant; `overrides` are NetConfig fields (widths, depths, ...) for other sizes.

    `channels_last` converts the weights (feed channels_last inputs too); `compile` wraps it in torch.compile.
    On CPU, keep >= 16 channels into the strided 1x1 shortcuts with channels_last (oneDNN#6035 corrupts memory below).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    spec = VARIANTS[variant]
    config = NetConfig(mask=spec.mask, predictor=spec.predictor, K=K, input_size=tuple(input_size), **overrides)
    model: nn.Module = FromNet(config)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model = torch.compile(model)
    return model


__all__ = ["VARIANTS", "FromNet", "FromOutput", "NetConfig", "Variant", "build_model", "num_patterns"]
