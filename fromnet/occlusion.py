"""What a FROM network thinks is occluded: the predicted occlusion pattern and the coarse KxK feature mask.

The pattern predictor's argmax is mapped back to its rectangle of blocks with occgen's own pattern catalog (the
same catalog the labels were made with, so index i means the same rectangle in both). The mask M (C x h x w on the
top feature grid, values in (0, 1), low = features switched off) is averaged over channels, spread back over the
face's pixels, and averaged inside each of the K x K blocks, so it reads on the same grid as the pattern.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw

from fromnet.shards import to_input
from occgen.errors import UserError
from occgen.label.patterns import block_edges, pattern_catalog


@dataclass
class OcclusionReadout:
    name: str
    pattern: int | None  # predicted pattern index (0 = clean); None for a variant without a classifier
    probability: float | None  # softmax probability of that pattern
    rect: tuple[int, int, int, int] | None  # its pixel rectangle (x0, y0, x1, y1), half-open; None when clean
    blocks: tuple[int, int, int, int] | None  # the same as block indices (col0, row0, col1, row1), half-open
    grid: np.ndarray | None  # (K, K) mean mask per block, rows top to bottom; None for the embedding ('fc') mask


def block_means(mask: np.ndarray, K: int, height: int, width: int) -> np.ndarray:
    """(K, K) averages of an (h, w) feature-grid map over the face's K x K pixel blocks.

    Each feature cell covers the pixels whose position maps into it (nearest), so blocks that straddle cells
    average them by pixel area.
    """
    h, w = mask.shape
    rows = np.minimum(np.arange(height) * h // height, h - 1)
    cols = np.minimum(np.arange(width) * w // width, w - 1)
    full = mask[rows][:, cols]
    ye, xe = block_edges(K, height), block_edges(K, width)
    return np.array([[full[ye[i] : ye[i + 1], xe[j] : xe[j + 1]].mean() for j in range(K)] for i in range(K)])


def read_occlusion(model: torch.nn.Module, K: int, faces: np.ndarray, names: list[str]) -> list[OcclusionReadout]:
    """Pattern and KxK mask of each face in (N, H, W, 3) uint8 RGB."""
    height, width = faces.shape[1:3]
    with torch.inference_mode():
        out = model(to_input(torch.from_numpy(np.require(faces, requirements=["C", "W"]))))
    if out.mask is None:
        raise UserError("this model has no mask decoder (a baseline variant): it predicts no occlusion")
    catalog = pattern_catalog(K, height, width)
    ye, xe = block_edges(K, height), block_edges(K, width)
    probs = torch.softmax(out.pattern_logits.float(), 1).numpy() if out.pattern_logits is not None else None
    spatial = out.mask.dim() == 4
    means = out.mask.float().mean(1).numpy() if spatial else None
    result = []
    for n, name in enumerate(names):
        pattern: int | None = None
        prob: float | None = None
        rect: tuple[int, int, int, int] | None = None
        blocks: tuple[int, int, int, int] | None = None
        if probs is not None:
            pattern = int(probs[n].argmax())
            prob = float(probs[n, pattern])
            if pattern > 0:
                x0, y0, x1, y1 = (int(v) for v in catalog[pattern])
                rect = (x0, y0, x1, y1)
                blocks = (
                    int(np.searchsorted(xe, x0)),
                    int(np.searchsorted(ye, y0)),
                    int(np.searchsorted(xe, x1)),
                    int(np.searchsorted(ye, y1)),
                )
        elif out.box is not None:  # the regression ablation predicts the box itself
            x0, y0, x1, y1 = (out.box[n].float().numpy() * [width, height, width, height]).round().astype(int)
            rect = (int(x0), int(y0), int(x1), int(y1)) if x1 > x0 and y1 > y0 else None
        grid = block_means(means[n], K, height, width) if means is not None else None
        result.append(OcclusionReadout(name, pattern, prob, rect, blocks, grid))
    return result


@dataclass
class AttentionReadout:
    """The attention variant's view of a face: its K raw maps and their importance s (sums to 1)."""

    name: str
    attention: np.ndarray  # (K, h, w)
    importance: np.ndarray  # (K,)


def read_attention(model: torch.nn.Module, faces: np.ndarray, names: list[str]) -> list[AttentionReadout]:
    """Attention maps and importances of each face in (N, H, W, 3) uint8 RGB."""
    with torch.inference_mode():
        out = model(to_input(torch.from_numpy(np.require(faces, requirements=["C", "W"]))))
    return [
        AttentionReadout(name, out.attention[n].float().numpy(), out.importance[n].float().numpy())
        for n, name in enumerate(names)
    ]


def describe_attention(r: AttentionReadout) -> str:
    shares = ", ".join(f"map {k}: s = {v:.3f}" for k, v in enumerate(r.importance))
    peaks = ", ".join(
        f"map {k} peaks at cell {tuple(int(i) for i in np.unravel_index(a.argmax(), a.shape))}"
        for k, a in enumerate(r.attention)
    )
    return (
        f"{r.name}\n  importance: {shares}\n  {peaks} (row, col of the {r.attention.shape[1]}x"
        f"{r.attention.shape[2]} grid)"
    )


def draw_attention(faces: np.ndarray, readouts: list[AttentionReadout]) -> Image.Image:
    """One strip per face (the face, then each map blended over it), stacked top to bottom."""
    from fromnet.viz import attention_overlay

    strips = [attention_overlay(face, r.attention, r.importance) for face, r in zip(faces, readouts)]
    return Image.fromarray(np.concatenate(strips, axis=0))


def describe(r: OcclusionReadout) -> str:
    """A few lines for the terminal: the pattern and the KxK mask (low = judged occluded)."""
    lines = [r.name]
    if r.pattern is not None:
        where = (
            "clean (no occlusion)"
            if r.rect is None or r.blocks is None
            else (
                f"block cols {_span(r.blocks[0], r.blocks[2])}, rows {_span(r.blocks[1], r.blocks[3])} = pixels "
                f"x {r.rect[0]}-{r.rect[2]}, y {r.rect[1]}-{r.rect[3]}"
            )
        )
        lines.append(f"  pattern {r.pattern} (p = {r.probability:.3f}): {where}")
    elif r.rect is not None:
        lines.append(f"  predicted box: x {r.rect[0]}-{r.rect[2]}, y {r.rect[1]}-{r.rect[3]}")
    if r.grid is not None:
        lines.append(f"  mask M, mean per block ({len(r.grid)}x{len(r.grid)}; low = features switched off):")
        lines.extend("    " + " ".join(f"{v:.2f}" for v in row) for row in r.grid)
    return "\n".join(lines)


def _span(lo: int, hi: int) -> str:
    """Half-open block range as people read it: '2' or '1-3'."""
    return f"{lo}" if hi == lo + 1 else f"{lo}-{hi - 1}"


def draw(faces: np.ndarray, readouts: list[OcclusionReadout], K: int, zoom: int = 3) -> Image.Image:
    """The faces side by side, each with the KxK grid, blocks shaded red by 1 - M, and the pattern outlined."""
    n, height, width = faces.shape[:3]
    sheet = Image.new("RGB", (n * width * zoom, height * zoom), "black")
    ye, xe = block_edges(K, height) * zoom, block_edges(K, width) * zoom
    for i, (face, r) in enumerate(zip(faces, readouts)):
        img = Image.fromarray(face).resize((width * zoom, height * zoom), Image.Resampling.NEAREST).convert("RGBA")
        layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
        pen = ImageDraw.Draw(layer)
        if r.grid is not None:
            for a in range(K):
                for b in range(K):
                    alpha = int(round(180 * (1 - float(np.clip(r.grid[a, b], 0, 1)))))
                    pen.rectangle([xe[b], ye[a], xe[b + 1] - 1, ye[a + 1] - 1], fill=(255, 0, 0, alpha))
        for x in xe[1:-1]:
            pen.line([(x, 0), (x, height * zoom)], fill=(255, 255, 255, 110))
        for y in ye[1:-1]:
            pen.line([(0, y), (width * zoom, y)], fill=(255, 255, 255, 110))
        if r.rect is not None:
            x0, y0, x1, y1 = (v * zoom for v in r.rect)
            pen.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(255, 220, 0, 255), width=3)
        label = "clean" if r.pattern == 0 else (f"p{r.pattern}" if r.pattern is not None else "")
        pen.text((4, 4), label, fill=(255, 255, 0, 255))
        sheet.paste(Image.alpha_composite(img, layer).convert("RGB"), (i * width * zoom, 0))
    return sheet
