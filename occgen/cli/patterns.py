"""`occgen patterns`: how many proximate occlusion patterns a K gives, and a contact sheet of all of them."""

from __future__ import annotations

import math
from pathlib import Path

import click
from PIL import Image, ImageDraw

from occgen.cli import main
from occgen.clicommon import parse_size
from occgen.errors import UserError
from occgen.label.patterns import K_MAX, K_MIN, block_edges, num_patterns, pattern_catalog

LABEL_H = 12  # pixels above each tile for its index
GAP = 4
FACE, GRID, FILL, EDGE, TEXT = (236, 236, 236), (190, 190, 190), (230, 80, 60), (150, 30, 20), (40, 40, 40)


def draw_sheet(K: int, height: int, width: int) -> Image.Image:
    """All patterns of (K, height, width) in release order, one face-sized tile each, index above (0 = clean)."""
    rects = pattern_catalog(K, height, width)
    xs, ys = block_edges(K, width).tolist(), block_edges(K, height).tolist()
    cols = math.ceil(math.sqrt(len(rects) * height / width))
    rows = math.ceil(len(rects) / cols)
    tile_w, tile_h = width + GAP, height + LABEL_H + GAP
    sheet = Image.new("RGB", (cols * tile_w + GAP, rows * tile_h + GAP), "white")
    draw = ImageDraw.Draw(sheet)
    for n, (x0, y0, x1, y1) in enumerate(rects.tolist()):
        left, top = GAP + (n % cols) * tile_w, GAP + (n // cols) * tile_h + LABEL_H
        draw.text((left, top - LABEL_H), f"{n}" if n else "0 clean", fill=TEXT)
        draw.rectangle((left, top, left + width - 1, top + height - 1), fill=FACE)
        if n:
            draw.rectangle((left + x0, top + y0, left + x1 - 1, top + y1 - 1), fill=FILL, outline=EDGE)
        for x in xs[1:-1]:
            draw.line((left + x, top, left + x, top + height - 1), fill=GRID)
        for y in ys[1:-1]:
            draw.line((left, top + y, left + width - 1, top + y), fill=GRID)
    return sheet


@main.command("patterns")
@click.option("--K", "k", type=click.IntRange(K_MIN, K_MAX), required=True, help="Blocks per side.")
@click.option("--size", default="112x96", show_default=True, help="Face size as HEIGHTxWIDTH.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="PNG sheet to write [default: patterns-kK-HxW.png].",
)
def patterns(k: int, size: str, out: Path | None) -> None:
    """Print the number of occlusion patterns for K and write a PNG sheet of them in label order."""
    height, width = parse_size(size)
    sheet = draw_sheet(k, height, width)
    out = out or Path(f"patterns-k{k}-{height}x{width}.png")
    if out.parent and not out.parent.is_dir():
        raise UserError(f"cannot write {out}: folder {out.parent} does not exist")
    sheet.save(out)
    click.echo(
        f"K={k} on {height}x{width} (HxW): {num_patterns(k)} patterns ({num_patterns(k) - 1} block rectangles + clean)"
    )
    click.echo(f"  x edges {block_edges(k, width).tolist()}, y edges {block_edges(k, height).tolist()}")
    click.echo(f"  sheet -> {out}")
