"""Shard and manifest files: deterministic WebDataset tars and Parquet parts, each written atomically.

Everything is first written under a hidden temporary name in the destination folder and then renamed, so a
reader (or a resumed build) never sees half a file. Hidden names also keep temporaries out of
``pandas.read_parquet(folder)``, which skips files starting with '.' or '_'.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

#: One row per sample. Boxes are half-open pixel rectangles; box_* is clipped to the image, raw_* is not.
SAMPLES_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("shard", pa.string()),
    ("identity", pa.int32()),
    ("identity_name", pa.string()),
    ("src", pa.string()),
    ("copy", pa.int32()),
    ("occluded", pa.bool_()),
    ("scale", pa.float32()),
    ("occluder", pa.string()),
    ("occluder_category", pa.string()),
    ("center_x", pa.int32()),
    ("center_y", pa.int32()),
    ("raw_x0", pa.int32()),
    ("raw_y0", pa.int32()),
    ("raw_x1", pa.int32()),
    ("raw_y1", pa.int32()),
    ("box_x0", pa.int32()),
    ("box_y0", pa.int32()),
    ("box_x1", pa.int32()),
    ("box_y1", pa.int32()),
    ("box_area_ratio", pa.float32()),
    ("pixel_area_ratio", pa.float32()),
    ("seed", pa.int64()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("format", pa.string()),
    ("bytes", pa.int64()),
    ("sha256", pa.string()),
])

ERRORS_SCHEMA = pa.schema([("input", pa.string()), ("reason", pa.string())])

#: Fixed tar metadata: the same samples always give the same bytes.
_MTIME = 0


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` either does not exist or is complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def tar_bytes(samples: Iterable[Mapping[str, Any]]) -> bytes:
    """A WebDataset tar of samples given as dicts ``{"__key__": key, ext: bytes, ...}``.

    Members are ``key.ext`` in sample order, extensions sorted, with fixed mtime, owner and mode.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            key = sample["__key__"]
            for ext in sorted(k for k in sample if not k.startswith("__")):
                data = sample[ext]
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(data), _MTIME, 0o444
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def parquet_bytes(rows: list[dict[str, Any]], schema: pa.Schema) -> bytes:
    """Parquet file bytes for ``rows`` under a fixed schema (no pandas metadata: stable bytes)."""
    table = pa.Table.from_pylist(rows, schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()
