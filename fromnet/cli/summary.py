"""`fromnet summary`: the size and cost of a model variant."""

from __future__ import annotations

import click

from fromnet.cli import main
from fromnet.models import VARIANTS, AttentionConfig
from occgen.clicommon import parse_size


@main.command("summary")
@click.option("--variant", default="from", show_default=True, type=click.Choice(list(VARIANTS)), help="Model variant.")
@click.option(
    "--K",
    "K",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="Blocks per side of the occlusion pattern grid; attention maps for --variant attention.",
)
@click.option("--size", default="112x96", show_default=True, help="Input HEIGHTxWIDTH.")
def summary(variant: str, K: int, size: str) -> None:
    """Print a variant's parameters (per part and total) and forward GFLOPs per image."""
    from fromnet.models.summary import summarize

    input_size = parse_size(size)
    result = summarize(variant, K, input_size)
    config = result.config
    gh, gw = config.grid
    click.echo(f"{variant}: {VARIANTS[variant].description}")
    if isinstance(config, AttentionConfig):
        click.echo(
            f"input {input_size[0]}x{input_size[1]}, feature map F {config.channels}x{gh}x{gw} (stage 3, split "
            f"{config.branch_depth} blocks before its end), K={K} attention maps, {config.embedding_dim}-d parts "
            + ("pooled, one head each" if config.part_head == "pooled" else "through stage 4 and a shared head")
        )
    else:
        click.echo(
            f"input {input_size[0]}x{input_size[1]}, top map {config.widths[-1]}x{gh}x{gw}, K={K}"
            + (f", {config.num_outputs} predictor outputs" if config.predictor else "")
        )
    for name, count in result.parts.items():
        click.echo(f"  {name:<16} {count / 1e6:8.2f}M params")
    click.echo(f"  {'total':<16} {result.params / 1e6:8.2f}M params ({result.params:,})")
    click.echo(f"forward: {result.flops / 1e9:.2f} GFLOPs per image (2 FLOPs per multiply-add)")
