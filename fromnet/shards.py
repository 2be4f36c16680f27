"""occgen datasets as the network sees them: manifests, shards read as sample dicts, decoded faces, input tensors.

Shared by training (fromnet.train.data) and embedding (fromnet.embed).

A sample is a plain dict keyed by extension, as webdataset yields it (``__key__``, ``jpg``, ``cls``, ``json``).
Faces are decoded by occgen's own decoder (libjpeg-turbo for JPEG) into H x W x 3 uint8 arrays, batched as uint8
(a quarter of the bytes of float32 to move between processes), and turned into [-1, 1] floats on the device: a
(N, H, W, 3) batch permuted to (N, 3, H, W) is already channels_last in memory, which the network prefers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds
import torch
import webdataset as wds

from occgen.errors import UserError
from occgen.images import FORMATS, decode_array
from occgen.manifest import BATCH_ROWS
from occgen.writer import NeedsTarfile, read_tar


@dataclass(frozen=True)
class Shard:
    url: str  # absolute path of the tar
    name: str  # e.g. occ-lfw-000003
    samples: int


@dataclass(frozen=True)
class Manifest:
    """One occgen dataset: its shards (in build order) and how many identities its labels use."""

    name: str
    path: Path  # manifests/NAME
    shards: tuple[Shard, ...]
    num_identities: int

    @property
    def samples(self) -> int:
        return sum(s.samples for s in self.shards)


def read_manifest(path: str | Path) -> Manifest:
    """Read ``manifests/NAME/shards.json`` (and the identity column) with errors that say what to run."""
    path = Path(path)
    index = path / "shards.json"
    if not index.is_file():
        hint = (
            "build it with `occgen build`" if not path.exists() else "its build has not finished: rerun `occgen build`"
        )
        raise UserError(f"{path}: no shards.json, so not a finished occgen manifest ({hint})")
    try:
        meta = json.loads(index.read_text())
        shards = tuple(Shard(str((path / s["path"]).resolve()), s["shard"], int(s["samples"])) for s in meta["shards"])
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{index}: not a valid shard index ({exc}); rebuild with `occgen build`") from None
    missing = [s.url for s in shards if not Path(s.url).is_file()]
    if missing:
        raise UserError(
            f"{path}: {len(missing)} shard file(s) missing, first {missing[0]}; "
            "run `occgen build` again with the same options to rebuild them"
        )
    try:
        dataset = ds.dataset(path / "samples.parquet", format="parquet")
        top = [pc.max(b.column(0)).as_py() for b in dataset.to_batches(columns=["identity"], batch_size=BATCH_ROWS)]
        num_identities = max((t for t in top if t is not None), default=-1) + 1
    except Exception as exc:  # pyarrow raises several types for a missing or damaged folder
        raise UserError(f"{path}/samples.parquet: cannot read identities ({exc})") from None
    return Manifest(str(meta.get("name", path.name)), path, shards, num_identities)


def image_field(sample: dict[str, Any]) -> bytes:
    """The encoded face of a sample, whichever format the build stored."""
    for ext in FORMATS:
        if ext in sample:
            return sample[ext]
    raise UserError(
        f"sample {sample.get('__key__')} in {sample.get('__url__')} has no image "
        f"({', '.join(FORMATS)}); members: {', '.join(k for k in sample if not k.startswith('__'))}"
    )


def decode_face(sample: dict[str, Any]) -> np.ndarray:
    """H x W x 3 uint8 RGB of a sample, through the build's own fast decoder."""
    return decode_array(image_field(sample), f"{sample.get('__url__')}:{sample.get('__key__')}")


def to_input(
    batch: torch.Tensor, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) floats in [-1, 1], channels_last, on ``device``."""
    x = batch.to(device, non_blocking=True).permute(0, 3, 1, 2)
    return x.to(dtype).sub_(127.5).div_(127.5)


def tar_samples(url: str) -> Iterator[dict[str, Any]]:
    """The samples of one shard as webdataset dicts (``__key__``, ``__url__``, one entry per extension).

    occgen's own ustar shards take a direct header parser (occgen.writer.read_tar); any other tar goes through
    webdataset's tarfile-based reader. Members are grouped by key, the name up to the first dot of its basename.
    """
    try:
        members = list(read_tar(Path(url)))
    except NeedsTarfile:
        yield from wds.DataPipeline(wds.SimpleShardList([url]), wds.tarfile_to_samples())
        return
    sample: dict[str, Any] = {}
    for name, data in members:
        slash = name.rfind("/") + 1
        dot = name.find(".", slash)
        if dot < 0:
            continue
        key, ext = name[:dot], name[dot + 1 :]
        if sample and sample["__key__"] != key:
            yield sample
            sample = {}
        if not sample:
            sample = {"__key__": key, "__url__": url}
        sample[ext] = data
    if sample:
        yield sample


def iter_ordered(manifest: Manifest) -> Iterator[dict[str, Any]]:
    """Every sample of a manifest in build order (shards in index order, samples in tar order), undecoded.

    For embedding and evaluation, where order and completeness matter and shuffling does not.
    """
    for shard in manifest.shards:
        yield from tar_samples(shard.url)


def sample_meta(sample: dict[str, Any]) -> dict[str, Any]:
    """The manifest row the build stored beside the image (``KEY.json``)."""
    return json.loads(sample["json"]) if "json" in sample else {}


def image_size(manifest: Manifest) -> tuple[int, int]:
    """The one (height, width) of a manifest's samples."""
    sizes: set[tuple[int, int]] = set()
    dataset = ds.dataset(manifest.path / "samples.parquet", format="parquet")
    for batch in dataset.to_batches(columns=["height", "width"], batch_size=BATCH_ROWS):
        hw = np.stack([batch.column(0).to_numpy(), batch.column(1).to_numpy()], axis=1)
        sizes.update(map(tuple, np.unique(hw, axis=0).tolist()))
    if len(sizes) != 1:
        raise UserError(f"{manifest.path}: samples of several sizes ({sorted(sizes)}); train on one size at a time")
    return sizes.pop()
