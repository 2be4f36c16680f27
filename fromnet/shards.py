"""occgen datasets as the network sees them: manifests, shards read as sample dicts, decoded faces, input tensors.

Shared by training (fromnet.train.data) and embedding (fromnet.embed).

Shards not made by occgen are taken too, as a WebDataset spec: brace patterns (``faces-{000000..000099}.tar``),
several specs joined by ``::``, local paths, ``pipe:COMMAND``, and any URL fsspec opens (``s3://``, ``gs://``,
``https://``, ...) when it is installed. Their samples need an image (jpg, jpeg, png or webp) and a class: ``.cls``,
or a field of ``.json`` named by the caller.

A sample is a plain dict keyed by extension, as webdataset yields it (``__key__``, ``jpg``, ``cls``, ``json``).
Faces are decoded by occgen's own decoder (libjpeg-turbo for JPEG) into H x W x 3 uint8 arrays, batched as uint8
(a quarter of the bytes of float32 to move between processes), and turned into [-1, 1] floats on the device: a
(N, H, W, 3) batch permuted to (N, 3, H, W) is already channels_last in memory, which the network prefers.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np
import pyarrow.compute as pc
import torch
import webdataset as wds
from webdataset.gopen import Pipe, set_options

from occgen.errors import UserError
from occgen.images import FORMATS, decode_array
from occgen.manifest import batches, open_samples
from occgen.writer import NeedsTarfile, member_bytes, parse_tar, read_tar, shard_paths, ustar_member


@dataclass(frozen=True)
class Shard:
    url: str  # absolute path of the tar, or (plain WebDataset shards) any URL open_url takes
    name: str  # e.g. occ-lfw-000003
    samples: int  # 0 where unknown (plain shards before a counting pass)
    size: int = 0  # bytes of its samples' members; 0 where unknown (see sample_bytes)


@dataclass(frozen=True)
class Manifest:
    """One dataset: its shards (in build order) and how many identities its labels use."""

    name: str
    path: Path | None  # manifests/NAME; None for plain WebDataset shards (no manifest)
    shards: tuple[Shard, ...]
    num_identities: int  # 0 where unknown (plain shards before a counting pass)

    @property
    def samples(self) -> int:
        return sum(s.samples for s in self.shards)

    @property
    def folder(self) -> Path:
        """The manifest folder (samples.parquet, labels, identity names), which plain shards do not have."""
        if self.path is None:
            raise UserError(
                f"{self.name}: plain WebDataset shards have no occgen manifest (samples.parquet, labels); "
                "this needs shards built by `occgen build`"
            )
        return self.path


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
        paths = shard_paths(path, meta["shards"], meta.get("name", path.name))
        shards = tuple(Shard(str(p.resolve()), s["shard"], int(s["samples"])) for s, p in zip(meta["shards"], paths))
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


#: Image members read from a sample, in order of preference: occgen's formats, then other tools' names.
IMAGE_MEMBERS = (*FORMATS, "jpeg")


def image_field(sample: dict[str, Any]) -> bytes:
    """The encoded face of a sample, whichever format the build stored."""
    for ext in IMAGE_MEMBERS:
        if ext in sample:
            return sample[ext]
    raise UserError(
        f"sample {sample.get('__key__')} in {sample.get('__url__')} has no image "
        f"({', '.join(IMAGE_MEMBERS)}); members: {', '.join(k for k in sample if not k.startswith('__'))}"
    )


def sample_class(sample: dict[str, Any], class_field: str | None = None) -> int:
    """A sample's identity: its ``.cls`` member, or the field ``class_field`` of its ``.json``."""
    where = f"sample {sample.get('__key__')} in {sample.get('__url__')}"
    if class_field is None:
        if "cls" not in sample:
            raise UserError(
                f"{where} has no .cls member; name the JSON field that holds the class with --class-field "
                f"(members: {', '.join(k for k in sample if not k.startswith('__'))})"
            )
        value: Any = sample["cls"].decode(errors="replace").strip()
    else:
        value = sample_meta(sample).get(class_field)
    try:
        identity = int(value)
    except (TypeError, ValueError):
        what = ".cls" if class_field is None else f"JSON field {class_field!r}"
        raise UserError(f"{where}: {what} is {value!r}, not a whole-number class") from None
    if identity < 0:
        raise UserError(f"{where}: class {identity} is negative")
    return identity


def local_path(url: str) -> Path | None:
    """The file a shard URL names on this machine (a plain path or file://), else None."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    return Path(url) if not parsed.scheme or len(parsed.scheme) == 1 else None  # 'C:' is a drive, not a scheme


def shard_urls(spec: str) -> list[str]:
    """The shard URLs of a WebDataset spec (braces expanded, ``::`` lists split); local ones must exist."""
    from webdataset.shardlists import expand_urls

    urls = list(expand_urls(spec))
    missing = [u for u in urls if (p := local_path(u)) is not None and not p.is_file()]
    if missing:
        raise UserError(
            f"--shards {spec}: {len(missing)} of {len(urls)} shard file(s) do not exist, first {missing[0]}; "
            "give a manifest folder (manifests/NAME) or WebDataset shards (faces-{000000..000099}.tar, pipe:, URLs)"
        )
    return urls


def open_url(url: str) -> BinaryIO:
    """A shard's bytes as a stream: a local file, the output of ``pipe:COMMAND``, or a URL through fsspec."""
    path = local_path(url)
    if path is not None:
        return open(path, "rb")
    if url.startswith("pipe:"):
        return wds.gopen(url)
    try:
        import fsspec  # type: ignore[import-untyped]
    except ImportError:
        raise UserError(
            f"{url}: opening URLs needs fsspec (pip install fsspec, plus s3fs or gcsfs for S3/GCS)"
        ) from None
    try:
        return fsspec.open(url, "rb").open()
    except (ImportError, ValueError) as exc:  # a protocol whose package is missing, or an unknown one
        raise UserError(f"{url}: fsspec cannot open it ({exc})") from None


def _streamed_members(url: str) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each regular member of a tar read as a stream (pipes and remote files). A stream its reader
    leaves part way is closed without complaint (a pipe's command is then stopped by SIGPIPE); one read to its end
    must have ended well, a command with exit status 0."""
    stream = open_url(url)
    finished = False
    try:
        yield from _tar_stream(stream, url)
        while stream.read(1 << 16):  # the end-of-archive padding, so that the command ends as it should
            pass
        finished = True
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:  # ValueError: a damaged header field
        raise UserError(stream_problem(url, stream, exc)) from None
    finally:
        _close_stream(stream, url, check=finished)


def _tar_stream(stream: BinaryIO, url: str) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of the regular members of a tar stream, its headers parsed directly at a fraction of
    tarfile's cost per member (as occgen.writer.read_tar does for files): ustar, with pax records (``path``,
    ``size``; webdataset's TarWriter writes one per member) and GNU long names; other members (folders, links) are
    skipped. A stream that does not start with a valid header (compressed, or not a tar) is left to tarfile."""
    name: str | None = None  # from a pax record or a GNU long name, for the next member
    size: int | None = None
    first, last = True, ""
    while True:
        header = _read_exactly(stream, 512)
        if not header or not any(header):
            return  # the end-of-archive blocks (or none: tarfile takes that as the end too)
        if len(header) < 512:
            raise EOFError("unexpected end of data in a member header")
        if not _checksum_ok(header):
            if first:
                with tarfile.open(fileobj=_Prefixed(header, stream), mode="r|*") as tar:
                    for info in tar:
                        if info.isfile():
                            yield info.name, member_bytes(tar, info)
                return
            raise tarfile.ReadError("a member header is damaged (bad checksum)")
        first = False
        kind = header[156:157]
        regular = kind in (b"0", b"\0")
        length = size if size is not None and regular else _octal(header[124:136])
        data = _read_exactly(stream, length)
        _read_exactly(stream, -length % 512)
        if len(data) < length:
            raise EOFError(f"unexpected end of data in member {name or 'after ' + repr(last)}")
        if regular:
            last = name or ustar_member(header, url)[0]  # type: ignore[index]
            yield last, data
            name = size = None
        elif kind == b"x":
            records = _pax_records(data)
            name = records.get("path", name)
            size = int(records["size"]) if "size" in records else size
        elif kind == b"L":
            name = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
        elif kind != b"g":  # a folder, link or device: not a sample member
            name = size = None


def _checksum_ok(header: bytes) -> bool:
    """The header's checksum holds, summed over unsigned bytes (or signed, as some old tars did; tarfile takes
    both)."""
    try:
        stored = int(header[148:156].strip(b"\0 ") or b"-1", 8)
    except ValueError:
        return False
    rest = header[:148] + header[156:]
    unsigned = sum(rest) + 256
    return stored == unsigned or stored == unsigned - 256 * sum(1 for b in rest if b > 127)


def _octal(field: bytes) -> int:
    """A numeric header field: octal text, or base-256 (first byte 0x80) for large values."""
    if field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    return int(field.strip(b"\0 ") or b"0", 8)


def _pax_records(data: bytes) -> dict[str, str]:
    """The ``LENGTH key=value\\n`` records of a pax extended header."""
    records, pos = {}, 0
    while pos < len(data) and data[pos] != 0:
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def _read_exactly(stream: BinaryIO, size: int) -> bytes:
    """``size`` bytes of a stream, fewer only at its end (a pipe or socket may give less per read)."""
    data = stream.read(size)
    while 0 < len(data) < size and (more := stream.read(size - len(data))):
        data += more
    return data


class _Prefixed(io.RawIOBase):
    """A stream whose first bytes were already read: those, then the rest."""

    def __init__(self, prefix: bytes, rest: BinaryIO) -> None:
        self.prefix, self.rest = prefix, rest

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if not self.prefix:
            return self.rest.read(size)
        if size < 0 or size > len(self.prefix):
            head, self.prefix = self.prefix, b""
            return head + self.rest.read(-1 if size < 0 else size - len(head))
        head, self.prefix = self.prefix[:size], self.prefix[size:]
        return head


def stream_problem(url: str, stream: Any, exc: BaseException) -> str:
    """What went wrong reading a shard as a stream, and how to see why."""
    status = _exit_status(stream)
    if url.startswith("pipe:"):
        command = url[len("pipe:") :]
        what = f"the command exited with status {status}" if status else f"its output is not a whole tar ({exc})"
        return (
            f"{url}: {what}; run it in a shell (`({command}) | tar t >/dev/null`) to see why, "
            "and make it print the shard's tar to stdout"
        )
    return (
        f"{url}: not a readable tar shard ({exc}); the file is damaged or truncated, or the connection broke: "
        "check that it downloads whole and that `tar tf` reads it"
    )


def _exit_status(stream: Any) -> int | None:
    """A pipe's command's exit status, once it has ended (it has, or is about to, when its output failed)."""
    if not isinstance(stream, Pipe):
        return None
    try:
        return stream.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return None


def _close_stream(stream: Any, url: str, check: bool) -> None:
    if not check:
        set_options(stream, ignore_errors=True)  # a pipe left part way ends by SIGPIPE: no error
    try:
        stream.close()
    except OSError as exc:
        if check:
            raise UserError(stream_problem(url, stream, exc)) from None


def _census(shard: Shard, class_field: str | None = None) -> tuple[int, int, int]:
    """(samples, largest class, bytes) of one shard, read without decoding an image."""
    count, top, size = 0, -1, 0
    for sample in tar_samples(shard.url):
        count += 1
        top = max(top, sample_class(sample, class_field))
        size += sum(len(v) for k, v in sample.items() if not k.startswith("__"))
    return count, top, size


def counted(manifest: Manifest, class_field: str | None = None, jobs: int = 1) -> Manifest:
    """Plain shards with their sample counts and identity count filled in by one pass over them (``jobs``
    processes); an occgen manifest already has them."""
    if manifest.path is not None:
        return manifest
    from functools import partial

    from occgen.runner import parallel_map

    census = list(parallel_map(partial(_census, class_field=class_field), manifest.shards, jobs, "count", quiet=True))
    shards = tuple(replace(s, samples=n, size=size) for s, (n, _, size) in zip(manifest.shards, census))
    return replace(manifest, shards=shards, num_identities=max((top for _, top, _ in census), default=-1) + 1)


def sample_bytes(manifest: Manifest) -> float:
    """The mean bytes of a sample's members: local tars by their file size, others as a counting pass found them
    (0 where unknown)."""
    paths = [local_path(s.url) for s in manifest.shards]
    total = sum(p.stat().st_size if p is not None else s.size for s, p in zip(manifest.shards, paths))
    return total / manifest.samples if manifest.samples else 0.0


def open_shards(spec: str | Path) -> Manifest:
    """An occgen manifest folder, or plain WebDataset shards (sample and identity counts unknown: 0; local shards
    as absolute paths, so they are read as occgen's own are)."""
    if Path(spec).is_dir():
        return read_manifest(spec)
    urls = [str(p.absolute()) if (p := local_path(u)) is not None else u for u in shard_urls(str(spec))]
    stems = [Path(urlparse(u).path).stem for u in urls]
    return Manifest(stems[0] if len(urls) == 1 else f"{stems[0]}..{stems[-1]}", None,
                    tuple(Shard(u, s, 0) for u, s in zip(urls, stems)), 0)  # fmt: skip


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
    """(key, extension) of a tar member: the key is the name up to the first dot of its basename; the extension is
    lower-cased, as webdataset does (other tools write .JPG)."""
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    return None if dot < 0 else (name[:dot], name[dot + 1 :].lower())


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

    occgen's own ustar shards take a direct header parser (occgen.writer.read_tar); any other local tar, a pipe or a
    remote URL is read as a stream by tarfile.
    """
    path = local_path(url)
    if path is None:
        yield from group_members(_streamed_members(url), url)
        return
    try:
        members = list(read_tar(path))
    except NeedsTarfile:
        yield from group_members(_streamed_members(url), url)
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
    """The one (height, width) of a manifest's samples (plain shards: their first face's; a face of another size
    is refused when it is read)."""
    if manifest.path is None:
        first = next((s for shard in manifest.shards for s in tar_samples(shard.url)), None)
        if first is None:
            raise UserError(f"{manifest.name}: the shards hold no samples")
        return decode_face(first).shape[:2]
    sizes: set[tuple[int, int]] = set()
    for batch in batches(open_samples(manifest.folder), ["height", "width"]):
        hw = np.stack([batch.column(0).to_numpy(), batch.column(1).to_numpy()], axis=1)
        sizes.update(map(tuple, np.unique(hw, axis=0).tolist()))
    if len(sizes) != 1:
        raise UserError(f"{manifest.path}: samples of several sizes ({sorted(sizes)}); train on one size at a time")
    return sizes.pop()
