"""Contact sheets of a built dataset: random samples (seeded) per scale, read back from the shards, with optional
overlays of the occluded box and of the K x K block grid with the sample's labelled pattern shaded."""

from __future__ import annotations

import io
import json
import math
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image, ImageDraw

from occgen.errors import UserError
from occgen.images import decode_array
from occgen.label.labels import labels_path
from occgen.label.patterns import block_edges, label_boxes, pattern_catalog
from occgen.manifest import Parts, batches, in_key_order, open_parts, open_samples
from occgen.writer import atomic_write, member_bytes, shard_paths

LABEL_H = 12
GAP = 4
BOX, GRID, SHADE, TEXT = (255, 40, 40), (255, 255, 255), (40, 120, 255, 90), (30, 30, 30)


@dataclass(frozen=True)
class Overlay:
    boxes: bool = False  # outline the occluded box
    K: int | None = None  # draw the K x K grid and shade the sample's pattern


#: The columns that decide a sample's sheet.
GROUP_COLUMNS = ("occluded", "scale", "placement")


def _groups(rows: pa.Table) -> np.ndarray:
    """Each sample's sheet: its scale, its placement when the face decided its size (masks, anchored), or clean."""
    frame = rows.to_pandas()
    scaled = frame["scale"].map(lambda s: "" if pd.isna(s) else f"s={s:g}")
    placed = frame["placement"].map(lambda p: str(p or "occluded")) if "placement" in frame else "occluded"
    named = np.where(scaled != "", scaled, placed)
    return np.where(frame["occluded"].astype(bool).to_numpy(), named, "clean")


def pick(manifest_dir: Path, per_group: int, seed: int) -> dict[str, pd.DataFrame]:
    """``per_group`` random samples (seeded, independent of file order) of each scale (or placement), and of the
    clean ones: the group sizes from one pass over the parts, then the chosen ranks from a second, in key order."""
    parts = open_samples(manifest_dir)
    columns = [c for c in GROUP_COLUMNS if c in parts.schema.names]
    sizes: Counter = Counter()
    for batch in batches(parts, columns):
        sizes.update(Counter(_groups(batch).tolist()))
    rng = np.random.default_rng(seed)
    names = sorted(sizes, key=lambda g: (g == "clean", not g.startswith("s="), _scale(g), g))
    take = {name: np.sort(rng.permutation(sizes[name])[:per_group]) for name in names}
    seen: Counter = Counter()
    chosen: dict[str, list[pa.Table]] = {name: [] for name in names}
    for run in in_key_order(parts, parts.schema.names):
        groups = _groups(run.select(columns))
        for name in np.unique(groups).tolist():
            rows = np.flatnonzero(groups == name)
            ranks = seen[name] + np.arange(len(rows))
            chosen[name].append(run.take(rows[np.isin(ranks, take[name])]))
            seen[name] += len(rows)
    return {name: pa.concat_tables(chosen[name]).to_pandas() for name in names}


def _scale(group: str) -> float:
    return float(group[2:]) if group.startswith("s=") else 0.0


def read_images(manifest_dir: Path, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """Decode the chosen samples from their shards (paths from shards.json)."""
    entries = json.loads((Path(manifest_dir) / "shards.json").read_text())["shards"]
    shards = {s["shard"]: p for s, p in zip(entries, shard_paths(Path(manifest_dir), entries))}
    images: dict[str, np.ndarray] = {}
    for shard, group in rows.groupby("shard"):
        wanted = {f"{k}.{f}": k for k, f in zip(group["key"], group["format"])}
        try:
            with tarfile.open(shards[shard]) as tar:
                for member in tar:
                    if member.name in wanted:
                        images[wanted[member.name]] = decode_array(member_bytes(tar, member), member.name)
        except (OSError, KeyError, tarfile.TarError) as exc:
            raise UserError(f"cannot read shard {shard} of {manifest_dir} ({exc}); run `occgen build` again") from None
    missing = set(rows["key"]) - set(images)
    if missing:
        raise UserError(
            f"{len(missing)} sample(s) missing from their shards (first: {sorted(missing)[0]}); "
            "the shards do not match the manifest"
        )
    return images


def patterns_for(manifest_dir: Path, rows: pd.DataFrame, K: int) -> np.ndarray:
    """The rows' pattern index for K: from labels-kK.parquet when it exists, else labelled now (same function)."""
    path = labels_path(manifest_dir, K)
    if path.is_file():
        wanted = pa.array(rows["key"].tolist(), pa.string())
        found = [b.filter(pc.is_in(b["key"], value_set=wanted)) for b in batches(open_parts(path), ["key", "pattern"])]
        labels = pa.concat_tables(found).to_pandas().set_index("key")["pattern"]
        return labels.reindex(rows["key"]).fillna(0).to_numpy(np.int64)
    boxes = rows[["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(np.float64)
    H, W = int(rows["height"].iloc[0]), int(rows["width"].iloc[0])
    return label_boxes(boxes, rows["occluded"].to_numpy(bool), K, H, W)[0]


def tile(image: np.ndarray, row: pd.Series, overlay: Overlay, pattern: int | None, zoom: int) -> Image.Image:
    """One sample, enlarged ``zoom`` times (nearest), with its overlays."""
    H, W = image.shape[:2]
    img = Image.fromarray(image).resize((W * zoom, H * zoom), Image.Resampling.NEAREST).convert("RGBA")
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    if overlay.K:
        if pattern:
            x0, y0, x1, y1 = pattern_catalog(overlay.K, H, W)[pattern].tolist()
            draw.rectangle((x0 * zoom, y0 * zoom, x1 * zoom - 1, y1 * zoom - 1), fill=SHADE)
        for x in block_edges(overlay.K, W).tolist()[1:-1]:
            draw.line((x * zoom, 0, x * zoom, H * zoom), fill=GRID + (160,))
        for y in block_edges(overlay.K, H).tolist()[1:-1]:
            draw.line((0, y * zoom, W * zoom, y * zoom), fill=GRID + (160,))
    if overlay.boxes and bool(row["occluded"]):
        x0, y0, x1, y1 = (int(row[c]) for c in ("box_x0", "box_y0", "box_x1", "box_y1"))
        draw.rectangle((x0 * zoom, y0 * zoom, x1 * zoom - 1, y1 * zoom - 1), outline=BOX + (255,), width=max(1, zoom))
    return Image.alpha_composite(img, layer).convert("RGB")


def sheet(tiles: list[Image.Image], captions: list[str], title: str, cols: int) -> Image.Image:
    """Tiles in a grid under a title line, each with its caption above."""
    w, h = tiles[0].size
    rows = math.ceil(len(tiles) / cols)
    out = Image.new("RGB", (cols * (w + GAP) + GAP, LABEL_H + GAP + rows * (h + LABEL_H + GAP) + GAP), "white")
    draw = ImageDraw.Draw(out)
    draw.text((GAP, 2), title, fill=TEXT)
    for n, (t, caption) in enumerate(zip(tiles, captions)):
        left, top = GAP + (n % cols) * (w + GAP), LABEL_H + GAP + (n // cols) * (h + LABEL_H + GAP) + LABEL_H
        draw.text((left, top - LABEL_H), caption, fill=TEXT)
        out.paste(t, (left, top))
    return out


def caption(row: pd.Series, pattern: int | None) -> str:
    if not bool(row["occluded"]):
        return "clean"
    view = row.get("mask_view")
    name = row["occluder_category"] + (f" {view[0].upper()}" if isinstance(view, str) and view != "front" else "")
    text = f"{name} {100 * row['pixel_area_ratio' if isinstance(view, str) else 'box_area_ratio']:.0f}%"
    return text + (f" p{pattern}" if pattern is not None else "")


def contact_sheets(
    manifest_dir: Path, per_group: int, seed: int, overlay: Overlay, zoom: int = 1, cols: int = 8
) -> dict[str, Image.Image]:
    """One sheet per scale (and one of clean samples), by group name."""
    chosen = pick(manifest_dir, per_group, seed)
    images = read_images(manifest_dir, pd.concat(chosen.values()))
    out = {}
    for group, rows in chosen.items():
        patterns = patterns_for(manifest_dir, rows, overlay.K) if overlay.K else [None] * len(rows)
        tiles, captions = [], []
        for (_, row), pattern in zip(rows.iterrows(), patterns):
            p = int(pattern) if pattern is not None else None
            tiles.append(tile(images[row["key"]], row, overlay, p, zoom))
            captions.append(caption(row, p))
        title = f"{Path(manifest_dir).name}, {group}: {len(rows)} random samples (seed {seed})"
        if overlay.K:
            title += f", K={overlay.K} pattern shaded"
        out[group] = sheet(tiles, captions, title, min(cols, len(tiles)))
    return out


def png_bytes(image: Image.Image, optimize: bool = True) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=optimize)
    return buf.getvalue()


def write_preview(manifest_dir: Path, per_group: int = 24, seed: int = 0) -> Path:
    """``preview.png`` beside the manifest: a contact sheet of the occluded samples (8 a row; crops zoomed 2x),
    with a sheet of clean ones below when the set has them (the gallery side of pairs). Written with plain zlib:
    optimising a large sheet costs more than building the set."""
    height, width = _first_size(open_samples(manifest_dir))
    zoom = 2 if max(height, width) <= 128 else 1
    sheets = contact_sheets(manifest_dir, per_group, seed, Overlay(), zoom=zoom)
    parts = [sheets[g] for g in sorted(sheets, key=lambda g: g == "clean")]
    out = Image.new("RGB", (max(p.width for p in parts), sum(p.height for p in parts)), "white")
    top = 0
    for part in parts:
        out.paste(part, (0, top))
        top += part.height
    path = Path(manifest_dir) / "preview.png"
    atomic_write(path, png_bytes(out, optimize=False))
    return path


def _first_size(parts: Parts) -> tuple[int, int]:
    """(height, width) of the sample with the least key."""
    best: tuple[str, int, int] | None = None
    for batch in batches(parts, ["key", "height", "width"]):
        at = pc.index(batch["key"], pc.min(batch["key"])).as_py()
        if at >= 0:
            row = (batch["key"][at].as_py(), batch["height"][at].as_py(), batch["width"][at].as_py())
            best = row if best is None or row[0] < best[0] else best
    if best is None:
        raise UserError(f"{parts.path} has no samples")
    return best[1], best[2]
