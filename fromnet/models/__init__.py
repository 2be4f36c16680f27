"""FROM, its ablation variants and the attention-based alternative, chosen by name:
`build_model("from", K=5, input_size=(112, 96))`, `build_model("attention", K=4, ...)`."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from fromnet.models.attention import AttentionConfig, AttentionNet, AttentionOutput
from fromnet.models.net import FromNet, FromOutput, MaskKind, NetConfig, PredictorKind
from fromnet.models.pattern_predictor import num_patterns


@dataclass(frozen=True)
class Variant:
    """Which optional parts a named variant has, and the paper's name for it."""

    mask: MaskKind | None
    predictor: PredictorKind | None
    description: str
    family: str = "from"  # "from": FromNet (K = pattern-grid blocks); "attention": AttentionNet (K = maps)
    part_head: str = "top"  # attention family: how a map becomes a part embedding (AttentionConfig.part_head)


VARIANTS: dict[str, Variant] = {
    "baseline": Variant(None, None, "backbone + embedding head only (Baseline, Baseline-Aug)"),
    "md": Variant("3d", None, "3D mask decoder without the pattern predictor (Baseline-MD)"),
    "from": Variant("3d", "classify", "full FROM: 3D mask + occlusion pattern classification"),
    "3d": Variant("3d", "classify", "the '3D' row of the mask ablation, identical to 'from'"),
    "2d": Variant("2d", "classify", "one HxW mask broadcast over the channels ('2D' ablation)"),
    "fc": Variant("fc", "classify", "mask on the 512-d embedding instead of the conv map ('FC' ablation)"),
    "reg": Variant("3d", "regress", "3D mask, predictor regresses the occluded box corners ('REG' ablation)"),
    "attention": Variant(
        None,
        None,
        "K attention maps weight the stage-3 map into K parts through stage 4 and the head (after Hoermann et al.)",
        family="attention",
    ),
    "attention-pooled": Variant(
        None,
        None,
        "K attention maps pool the stage-3 map into K parts, each with its own head (Hoermann et al. 2021)",
        family="attention",
        part_head="pooled",
    ),
}


#: Blocks per stage of the LResNet-E-IR depths FROM-style work uses; r50 is the paper's LResNet50E-IR.
BACKBONES: dict[str, tuple[int, ...]] = {
    "r18": (2, 2, 2, 2),
    "r34": (3, 4, 6, 3),
    "r50": (3, 4, 14, 3),
    "r100": (3, 13, 30, 3),
}
#: Narrowest layer a width multiplier may give: oneDNN#6035 corrupts channels_last training below 16 channels.
MIN_WIDTH = 16


def backbone_overrides(backbone: str = "r50", width_mult: float = 1.0) -> dict:
    """NetConfig fields for a named depth and a width multiplier (rounded to multiples of 8, at least 16), so
    the same command trains the paper's network on GPUs or a quarter-width one on a laptop CPU."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
    if not 0 < width_mult <= 4:
        raise ValueError(f"width multiplier must be in (0, 4], got {width_mult}")
    base = NetConfig()

    def scaled(width: int) -> int:
        return max(MIN_WIDTH, int(round(width * width_mult / 8)) * 8)

    return dict(
        depths=BACKBONES[backbone],
        widths=tuple(scaled(w) for w in base.widths),
        stem_width=scaled(base.stem_width),
        pyramid_width=scaled(base.pyramid_width),
        decoder_width=scaled(base.decoder_width),
    )


def build_model(
    variant: str = "from",
    K: int = 5,
    input_size: tuple[int, int] = (112, 96),
    *,
    backbone: str | None = None,
    width_mult: float = 1.0,
    channels_last: bool = False,
    **overrides,
) -> FromNet | AttentionNet:
    """A freshly initialised variant; `backbone` ("r18", "r34", "r50", "r100") and `width_mult` pick a size,
    and `overrides` are NetConfig fields (widths, depths, ...), or AttentionConfig fields for "attention", on top.

    K is the occlusion-pattern grid (blocks per side) for the FROM family and the number of attention maps for
    "attention".

    `channels_last` converts the weights (feed channels_last inputs too). Callers that want torch.compile wrap the
    result (or its DDP wrapper) themselves, so the model's own type and attributes stay visible here.
    On CPU, keep >= 16 channels into the strided 1x1 shortcuts with channels_last (oneDNN#6035 corrupts memory below).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    spec = VARIANTS[variant]
    sized = backbone_overrides(backbone or "r50", width_mult) if backbone is not None or width_mult != 1.0 else {}
    model: FromNet | AttentionNet
    if spec.family == "attention":
        known = {f.name for f in fields(AttentionConfig)}  # the preset's pyramid/decoder widths do not apply
        sized = {k: v for k, v in sized.items() if k in known}
        kwargs = {"part_head": spec.part_head, **({"embedding_dim": 256} if spec.part_head == "pooled" else {})}
        model = AttentionNet(AttentionConfig(K=K, input_size=input_size, **{**kwargs, **sized, **overrides}))
    else:
        model = FromNet(
            NetConfig(mask=spec.mask, predictor=spec.predictor, K=K, input_size=input_size, **{**sized, **overrides})
        )
    if channels_last:
        # Module.to takes memory_format (it converts the 4-D weights); torch's overloads for it leave it out
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


__all__ = [
    "BACKBONES",
    "VARIANTS",
    "AttentionConfig",
    "AttentionNet",
    "AttentionOutput",
    "FromNet",
    "FromOutput",
    "NetConfig",
    "Variant",
    "backbone_overrides",
    "build_model",
    "num_patterns",
]
