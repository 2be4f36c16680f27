"""Read a manifest's boxes and write its occlusion-pattern labels, ``labels-kK[-from].parquet``, beside it.

Labels are derived data: a pure function (occgen.label.patterns) of the geometry the manifest already holds, so they are
computed for any K without re-rendering, and ``samples.parquet`` is never rewritten.

The labels file has one row per sample, sorted by key (so its bytes do not depend on how the samples were
sharded): ``key``, ``pattern`` (int16, 0 = clean), ``iou`` (float64, IoU of the box with that pattern; see
occgen.label.patterns for clean samples in each mode) and ``reg_x0, reg_y0, reg_x1, reg_y1`` (float32, the box corners
normalised by the image size: the target of the paper's pattern-regression variant, zeros for clean samples).
The schema metadata ``occgen.labels`` records K, the mode, the image size and the block edges.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from occgen.errors import UserError
from occgen.label.patterns import block_edges, check_compat, check_k, label_boxes, num_patterns, regression_target
from occgen.manifest import Parts, batches, in_key_order, open_samples, sorted_writer
from occgen.occlude.render import Compat

BOX_COLUMNS = ("box_x0", "box_y0", "box_x1", "box_y1")
NEEDED_COLUMNS = ("key", "occluded", *BOX_COLUMNS, "width", "height")
REG_COLUMNS = ("reg_x0", "reg_y0", "reg_x1", "reg_y1")


@dataclass(frozen=True)
class Samples:
    """What labelling needs from a run of a manifest's samples, sorted by key."""

    keys: pa.Array  # string
    occluded: np.ndarray  # (N,) bool
    boxes: np.ndarray  # (N, 4) float64, NaN where a clean sample has no box
    height: int
    width: int


@dataclass(frozen=True)
class Manifest:
    """A manifest checked for labelling (columns, keys, flags, one image size) in one pass over its parts."""

    path: Path  # its samples.parquet
    parts: Parts
    samples: int
    occluded: int
    height: int
    width: int


def labels_path(manifest_dir: Path, K: int, compat: Compat = "paper") -> Path:
    suffix = "-from" if compat == "from" else ""
    return Path(manifest_dir) / f"labels-k{K}{suffix}.parquet"


def open_manifest(manifest_dir: Path) -> Manifest:
    """Check ``manifest_dir/samples.parquet`` part by part: the columns, keys present, flags present, and one
    positive whole image size; count its samples."""
    parts = open_samples(manifest_dir)
    path = parts.path
    missing = [c for c in NEEDED_COLUMNS if c not in parts.schema.names]
    if missing:
        raise UserError(
            f"{path} lacks the column(s) {', '.join(missing)}; labelling needs {', '.join(NEEDED_COLUMNS)} "
            "(rebuild the manifest with a current `occgen build`)"
        )
    samples = occluded = bad = 0
    first_bad = ""  # the first unknown size, in words
    sizes: set[tuple[int, int]] = set()
    for batch in batches(parts, ["key", "occluded", "height", "width"]):
        if batch.column(0).null_count:
            raise UserError(f"{path}: sample keys must be present and unique")
        if batch.column(1).null_count:
            raise UserError(f"{path}: the 'occluded' column has nulls; every sample must say whether it is occluded")
        samples += batch.num_rows
        occluded += int(pc.sum(batch.column(1)).as_py() or 0)
        hw = np.stack([_floats(batch.column(2)), _floats(batch.column(3))], axis=1)
        wrong = ~np.isfinite(hw).all(axis=1) | (hw != np.round(hw)).any(axis=1) | (hw <= 0).any(axis=1)
        if wrong.any():
            bad += int(wrong.sum())
            h, w = hw[np.flatnonzero(wrong)[0]].tolist()
            first_bad = first_bad or f"height={h}, width={w}"
        elif len(hw):
            sizes.update(map(tuple, np.unique(hw.astype(np.int64), axis=0).tolist()))
    if samples == 0:
        raise UserError(f"{path} has no samples: nothing to label")
    if bad:
        raise UserError(
            f"{path}: {bad} sample(s) have an unknown image size (first: {first_bad}); "
            "every sample needs a positive whole width and height"
        )
    if len(sizes) > 1:
        shown = ", ".join(f"{h}x{w}" for h, w in sorted(sizes)[:5])
        raise UserError(
            f"{path} mixes image sizes (HxW: {shown}); pattern labels need one size per manifest, so build each "
            "size as its own manifest"
        )
    ((height, width),) = sizes
    return Manifest(path, parts, samples, occluded, height, width)


def runs(manifest: Manifest) -> Iterator[Samples]:
    """The manifest's samples in key order, a run of keys at a time (occgen.manifest.in_key_order)."""
    seen = 0
    for table in in_key_order(manifest.parts, NEEDED_COLUMNS):
        keys = pc.cast(table["key"], pa.string()).combine_chunks()
        if len(keys) > 1 and pc.any(pc.equal(keys[1:], keys[:-1])).as_py():
            raise UserError(f"{manifest.path}: sample keys must be present and unique")
        seen += len(keys)
        occluded = table["occluded"].to_numpy().astype(bool)
        boxes = np.stack([_floats(table[c]) for c in BOX_COLUMNS], axis=1)
        yield Samples(keys, occluded, boxes, manifest.height, manifest.width)
    if seen != manifest.samples:
        raise UserError(f"{manifest.path} changed while it was read; run the command again")


def _floats(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A numeric column as float64 with NaN for nulls, whether it was stored as nullable int or as float."""
    return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)


def label_table(samples: Samples, K: int, compat: Compat = "paper") -> pa.Table:
    """The labels of ``samples`` for one K and mode, as the Arrow table that write_labels stores."""
    pattern, iou = label_boxes(samples.boxes, samples.occluded, K, samples.height, samples.width, compat)
    target = regression_target(samples.boxes, samples.occluded, samples.height, samples.width, compat)
    columns = {"key": samples.keys, "pattern": pa.array(pattern, pa.int16()), "iou": pa.array(iou, pa.float64())}
    columns.update({name: pa.array(target[:, i], pa.float32()) for i, name in enumerate(REG_COLUMNS)})
    meta = {
        "K": K,
        "compat": compat,
        "num_patterns": num_patterns(K),
        "height": samples.height,
        "width": samples.width,
        "x_edges": block_edges(K, samples.width).tolist(),
        "y_edges": block_edges(K, samples.height).tolist(),
    }
    return pa.table(columns).replace_schema_metadata({"occgen.labels": json.dumps(meta, sort_keys=True)})


@dataclass(frozen=True)
class Written:
    """A labels file and how well its patterns fit the occluded boxes."""

    path: Path
    patterns_used: int  # distinct patterns of occluded samples
    mean_iou: float | None  # over occluded samples with a pattern


def write_labels(manifest_dir: Path, K: int, compat: Compat = "paper", manifest: Manifest | None = None) -> Written:
    """Write ``labels-kK[-from].parquet`` beside ``manifest_dir/samples.parquet``, a run of keys at a time, with
    the bytes of writing the whole table at once."""
    check_k(K)  # before reading a large manifest
    check_compat(compat)
    manifest = manifest or open_manifest(manifest_dir)
    path = labels_path(manifest_dir, K, compat)
    used: set[int] = set()
    hit_iou: list[np.ndarray] = []
    with contextlib.ExitStack() as stack:
        write = None
        for samples in runs(manifest):
            table = label_table(samples, K, compat)
            if write is None:
                write = stack.enter_context(sorted_writer(path, table.schema))
            write(table)
            pattern, iou = table["pattern"].to_numpy(), table["iou"].to_numpy()
            hit = samples.occluded & (pattern > 0)
            used.update(np.unique(pattern[hit]).tolist())
            hit_iou.append(iou[hit])
    ious = np.concatenate(hit_iou)
    return Written(path, len(used), float(ious.mean()) if len(ious) else None)
