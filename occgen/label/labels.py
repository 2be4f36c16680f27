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

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from occgen.errors import UserError
from occgen.label.patterns import block_edges, check_compat, check_k, label_boxes, num_patterns, regression_target
from occgen.occlude.render import Compat
from occgen.writer import atomic_write, table_bytes

BOX_COLUMNS = ("box_x0", "box_y0", "box_x1", "box_y1")
NEEDED_COLUMNS = ("key", "occluded", *BOX_COLUMNS, "width", "height")
REG_COLUMNS = ("reg_x0", "reg_y0", "reg_x1", "reg_y1")


@dataclass(frozen=True)
class Samples:
    """What labelling needs from a manifest, sorted by key."""

    keys: pa.Array  # string
    occluded: np.ndarray  # (N,) bool
    boxes: np.ndarray  # (N, 4) float64, NaN where a clean sample has no box
    height: int
    width: int


def labels_path(manifest_dir: Path, K: int, compat: Compat = "paper") -> Path:
    suffix = "-from" if compat == "from" else ""
    return Path(manifest_dir) / f"labels-k{K}{suffix}.parquet"


def read_samples(manifest_dir: Path) -> Samples:
    """The keys, flags, boxes and the one image size of ``manifest_dir/samples.parquet``."""
    manifest_dir = Path(manifest_dir)
    path = manifest_dir / "samples.parquet"
    if not path.exists():
        raise UserError(f"no manifest at {manifest_dir}: {path} is missing (build one with `occgen build`)")
    try:
        dataset = open_samples(path)
        missing = [c for c in NEEDED_COLUMNS if c not in dataset.schema.names]
        if missing:
            raise UserError(
                f"{path} lacks the column(s) {', '.join(missing)}; labelling needs {', '.join(NEEDED_COLUMNS)} "
                "(rebuild the manifest with a current `occgen build`)"
            )
        table = dataset.to_table(columns=list(NEEDED_COLUMNS))
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc
    if table.num_rows == 0:
        raise UserError(f"{path} has no samples: nothing to label")
    table = table.sort_by("key")
    keys = pc.cast(table["key"], pa.string()).combine_chunks()
    if keys.null_count or len(pc.unique(keys)) != len(keys):
        raise UserError(f"{path}: sample keys must be present and unique")
    if table["occluded"].null_count:
        raise UserError(f"{path}: the 'occluded' column has nulls; every sample must say whether it is occluded")
    occluded = table["occluded"].to_numpy().astype(bool)
    boxes = np.stack([_floats(table[c]) for c in BOX_COLUMNS], axis=1)
    height, width = _image_size(table, path)
    return Samples(keys, occluded, boxes, height, width)


def open_samples(path: Path) -> ds.Dataset:
    """The shards as one dataset, their schemas unified: a shard of only clean samples may store its box columns
    as type null when written from Python None values, which the first-shard schema alone would not accept."""
    dataset = ds.dataset(path, format="parquet")
    schemas = [fragment.physical_schema for fragment in dataset.get_fragments()]
    if not schemas:
        return dataset
    return ds.dataset(path, format="parquet", schema=pa.unify_schemas(schemas, promote_options="permissive"))


def _floats(column: pa.ChunkedArray) -> np.ndarray:
    """A numeric column as float64 with NaN for nulls, whether it was stored as nullable int or as float."""
    return pc.cast(column, pa.float64()).to_numpy()


def _image_size(table: pa.Table, path: Path) -> tuple[int, int]:
    """The single (height, width) of a manifest; missing, fractional, non-positive or mixed sizes are refused."""
    height, width = _floats(table["height"]), _floats(table["width"])
    sizes = np.stack([height, width], axis=1)
    bad = ~np.isfinite(sizes).all(axis=1) | (sizes != np.round(sizes)).any(axis=1) | (sizes <= 0).any(axis=1)
    if bad.any():
        n = int(np.flatnonzero(bad)[0])
        raise UserError(
            f"{path}: {int(bad.sum())} sample(s) have an unknown image size (first: height={height[n]}, "
            f"width={width[n]}); every sample needs a positive whole width and height"
        )
    if (sizes != sizes[0]).any():
        distinct = np.unique(sizes.astype(np.int64), axis=0)
        shown = ", ".join(f"{h}x{w}" for h, w in distinct[:5].tolist())
        raise UserError(
            f"{path} mixes image sizes (HxW: {shown}); pattern labels need one size per manifest, so build each "
            "size as its own manifest"
        )
    return int(sizes[0, 0]), int(sizes[0, 1])


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


def write_atomic(table: pa.Table, out: Path) -> Path:
    """Write ``table`` to ``out`` under a temporary name in the same folder, then rename: no half-written file."""
    atomic_write(out, table_bytes(table))
    return out


def write_labels(manifest_dir: Path, K: int, compat: Compat = "paper") -> Path:
    """Read ``manifest_dir/samples.parquet`` and write ``labels-kK[-from].parquet`` beside it; returns its path."""
    check_k(K)  # before reading a large manifest
    check_compat(compat)
    table = label_table(read_samples(manifest_dir), K, compat)
    return write_atomic(table, labels_path(manifest_dir, K, compat))
