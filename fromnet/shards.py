"""occgen datasets as the network sees them: manifests, shards read as sample dicts, decoded faces, input tensors.

Shared by training (fromnet.train.data) and embedding (fromnet.embed).

A sample is a plain dict keyed by extension, as webdataset yields it (``__key__``, ``jpg``, ``cls``, ``json``).
Faces are decoded by occgen's own decoder (libjpeg-turbo for JPEG) into H x W x 3 uint8 arrays, batched as uint8
(a quarter of the bytes of float32 to move between processes), and turned into [-1, 1] floats on the device: a
(N, H, W, 3) batch permuted to (N, 3, H, W) is already channels_last in memory, which the network prefers.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch
import webdataset as wds

from occgen.errors import UserError
from occgen.images import FORMATS, decode_array
from occgen.manifest import batches, open_samples
from occgen.writer import NeedsTarfile, member_bytes, parse_tar, read_tar, ustar_member


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
        top = [pc.max(b.column(0)).as_py() for b in batches(open_samples(path), ["identity"])]
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


def split_member(name: str) -> tuple[str, str] | None:
    """(key, extension) of a tar member: the key is the name up to the first dot of its basename."""
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    return None if dot < 0 else (name[:dot], name[dot + 1 :])


def group_members(members: Iterable[tuple[str, bytes]], url: str) -> Iterator[dict[str, Any]]:
    """Consecutive members with one key -> one sample dict, as webdataset groups them."""
    sample: dict[str, Any] = {}
    for name, data in members:
        split = split_member(name)
        if split is None:
            continue
        key, ext = split
        if sample and sample["__key__"] != key:
            yield sample
            sample = {}
        if not sample:
            sample = {"__key__": key, "__url__": url}
        sample[ext] = data
    if sample:
        yield sample


def tar_samples(url: str) -> Iterator[dict[str, Any]]:
    """The samples of one shard as webdataset dicts (``__key__``, ``__url__``, one entry per extension).

    occgen's own ustar shards take a direct header parser (occgen.writer.read_tar); any other tar goes through
    webdataset's tarfile-based reader.
    """
    try:
        members = list(read_tar(Path(url)))
    except NeedsTarfile:
        yield from wds.DataPipeline(wds.SimpleShardList([url]), wds.tarfile_to_samples())
        return
    yield from group_members(members, url)


def tar_spans(url: str) -> np.ndarray:
    """The byte range [start, end) of each sample of a tar, from its member headers alone (no image is read):
    what random access into the shard needs. occgen's ustar shards are walked header by header; other tars (long
    names, pax headers) through ``tarfile``, whose offsets include a member's extended headers."""
    try:
        members = _ustar_extents(url)
    except NeedsTarfile:
        members = _tarfile_extents(url)
    spans: list[list[int]] = []
    key = None
    for name, start, end in members:
        split = split_member(name)
        if split is None:
            continue
        if split[0] == key:
            spans[-1][1] = end
        else:
            spans.append([start, end])
            key = split[0]
    return np.array(spans, dtype=np.int64).reshape(-1, 2)


def _ustar_extents(url: str) -> list[tuple[str, int, int]]:
    """(name, header offset, end of padded data) of each member, reading only the 512-byte headers."""
    with open(url, "rb", buffering=0) as f:
        fd, size = f.fileno(), os.fstat(f.fileno()).st_size
        extents: list[tuple[str, int, int]] = []
        offset = 0
        while offset + 512 <= size:
            member = ustar_member(os.pread(fd, 512, offset), url)
            if member is None:
                return extents
            name, length = member
            if offset + 512 + length > size:
                raise UserError(f"{url}: truncated in member {name}; rebuild the shard (rerun `occgen build`)")
            end = offset + 512 + (length + 511) // 512 * 512
            extents.append((name, offset, end))
            offset = end
    if offset < size:
        raise UserError(f"{url}: truncated at byte {offset}; rebuild the shard (rerun `occgen build`)")
    return extents


def _tarfile_extents(url: str) -> list[tuple[str, int, int]]:
    try:
        with tarfile.open(url) as tar:
            return [(m.name, m.offset, m.offset_data + (m.size + 511) // 512 * 512) for m in tar if m.isreg()]
    except tarfile.TarError as exc:
        raise UserError(f"{url}: not a readable tar ({exc}); rebuild or replace the shard") from None


def span_sample(url: str, data: bytes) -> dict[str, Any]:
    """The sample whose members are the bytes ``data`` (one span of :func:`tar_spans`)."""
    try:
        members = list(parse_tar(memoryview(data), url))
    except NeedsTarfile:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = [(m.name, member_bytes(tar, m)) for m in tar if m.isreg()]
    samples = list(group_members(members, url))
    if len(samples) != 1:
        raise UserError(f"{url}: the shard changed since the run indexed it; start the run again")
    return samples[0]


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
    for batch in batches(open_samples(manifest.path), ["height", "width"]):
        hw = np.stack([batch.column(0).to_numpy(), batch.column(1).to_numpy()], axis=1)
        sizes.update(map(tuple, np.unique(hw, axis=0).tolist()))
    if len(sizes) != 1:
        raise UserError(f"{manifest.path}: samples of several sizes ({sorted(sizes)}); train on one size at a time")
    return sizes.pop()
