"""Shard and manifest files: deterministic WebDataset tars and Parquet parts, each written atomically.

Everything is first written under a hidden temporary name in the destination folder and then renamed, so a
reader (or a resumed build) never sees half a file. Hidden names also keep temporaries out of
``pandas.read_parquet(folder)``, which skips files starting with '.' or '_'. A process killed mid-write leaves a
temporary ``.NAME.tmp-PID``; ``remove_temporaries`` clears those before a run starts again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from occgen.errors import UserError

#: One row per sample. Boxes are half-open pixel rectangles; box_* is clipped to the image, raw_* is not.
SAMPLES_SCHEMA = pa.schema(
    [
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
    ]
)

#: One row per input that could not be used (kind "error") or was used after a fix (kind "warning").
ERRORS_SCHEMA = pa.schema([("input", pa.string()), ("reason", pa.string()), ("kind", pa.string())])

#: Fixed tar metadata: the same samples always give the same bytes.
_MTIME = 0


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def remove_temporaries(folder: Path, pattern: str) -> int:
    """Delete the temporaries matching ``pattern`` in ``folder`` that killed writers left; only safe while no
    writer is running (see ``exclusive``). Returns how many were removed."""
    stale = [p for p in folder.glob(pattern) if p.is_file()] if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


@contextlib.contextmanager
def exclusive(lock: Path, busy: str) -> Iterator[None]:
    """Hold an exclusive lock on the file ``lock`` (created if needed) or fail at once with ``busy``.

    The kernel drops the lock when its holder dies, SIGKILL included, so a killed run never blocks the next. The
    holder writes its pid into the file, and a refused caller's message names it.
    """
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+b") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().decode(errors="replace").strip()
            raise UserError(busy + (f" (held by pid {holder})" if holder.isdigit() else "")) from None
        try:
            f.truncate(0)
            f.write(str(os.getpid()).encode())  # who holds it, for the next one's message
            f.flush()
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` either does not exist or is complete."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary name in ``path``'s folder to write to: synced and renamed to ``path`` when the block ends,
    removed if it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:  # a full disk or an interrupt: leave no partial temporary behind
        tmp.unlink(missing_ok=True)


def _ustar_header(name: str, size: int) -> bytes:
    """A 512-byte POSIX ustar header for a regular file with fixed mode, owner and mtime.

    Written by hand because ``tarfile`` spends more time per member than encoding the image does.
    """
    raw = name.encode()
    if len(raw) > 100:
        raise ValueError(f"tar member name longer than 100 bytes: {name!r}")
    fields = (
        raw.ljust(100, b"\0"),
        b"0000444\0",
        b"0000000\0",
        b"0000000\0",  # mode, uid, gid
        b"%011o\0" % size,
        b"%011o\0" % _MTIME,
        b" " * 8,  # checksum placeholder
        b"0",
        b"\0" * 100,  # regular file, no link
        b"ustar\x0000",
        b"\0" * 32,
        b"\0" * 32,  # magic+version, uname, gname
        b"0000000\0",
        b"0000000\0",
        b"\0" * 155,
        b"\0" * 12,  # devmajor, devminor, prefix, pad
    )
    header = b"".join(fields)
    checksum = b"%06o\0 " % sum(header)
    return header[:148] + checksum + header[156:]


def write_tar(path: Path, samples: Iterable[Mapping[str, Any]]) -> tuple[int, str]:
    """Stream a WebDataset tar of samples ``{"__key__": key, ext: bytes, ...}`` to ``path`` atomically.

    Members are ``key.ext`` in sample order, extensions sorted, with fixed mtime, owner and mode, so the same
    samples always give the same bytes. Returns (size in bytes, sha256 hex digest).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    digest, size = hashlib.sha256(), 0
    with open(tmp, "wb") as f:

        def put(chunk: bytes) -> None:
            nonlocal size
            f.write(chunk)
            digest.update(chunk)
            size += len(chunk)

        for sample in samples:
            key = sample["__key__"]
            for ext in sorted(k for k in sample if not k.startswith("__")):
                data = sample[ext]
                put(_ustar_header(f"{key}.{ext}", len(data)) + data + b"\0" * (-len(data) % 512))
        put(b"\0" * 1024)  # end-of-archive marker
        put(b"\0" * (-size % 10240))  # whole 10 KiB records, as tar(1) writes them
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return size, digest.hexdigest()


@dataclass(frozen=True)
class ShardPlace:
    """Where shard ``index`` of dataset ``name`` lives: its tar, and its parts and stats file in the manifest."""

    index: int
    name: str
    tar_path: Path
    manifest_dir: Path

    @property
    def shard(self) -> str:
        return f"{self.name}-{self.index:06d}"

    @property
    def stats_path(self) -> Path:
        return self.manifest_dir / "shards" / f"{self.shard}.json"


def shard_paths(manifest_dir: Path, entries: list[Any], name: str | None = None) -> list[Path]:
    """The tars a manifest's shards.json names, checked. A manifest folder may come from elsewhere with its shards,
    so its paths are untrusted: entry i must be shard ``NAME-<i>`` at a relative path ending in ``NAME-<i>.tar``
    (``NAME`` the manifest folder's name unless given), all in one folder; anything else is refused."""
    name = name or os.path.basename(os.path.abspath(manifest_dir))
    index = manifest_dir / "shards.json"
    if not _plain_name(name):
        raise UserError(f"{index}: dataset name {name!r} is not a plain name; refusing the manifest")
    paths = []
    for i, entry in enumerate(entries):
        want = f"{name}-{i:06d}"
        rel = entry.get("path") if isinstance(entry, dict) else None
        shard = entry.get("shard") if isinstance(entry, dict) else None
        if (
            shard != want
            or not isinstance(rel, str)
            or "\\" in rel
            or os.path.isabs(rel)
            or os.path.basename(rel) != f"{want}.tar"
        ):
            raise UserError(
                f"{index}: entry {i} names {rel!r} for shard {shard!r}, where occgen writes {want}.tar by a relative "
                "path; the manifest is damaged or was not made by occgen, so it is refused (rebuild it)"
            )
        paths.append(Path(os.path.normpath(manifest_dir / rel)))
    if len({p.parent for p in paths}) > 1:
        raise UserError(f"{index}: the shards are listed in several folders; occgen writes a dataset's shards to one")
    return paths


def _plain_name(name: object) -> bool:
    return isinstance(name, str) and bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")


def writable_shard_folder(manifest_dir: Path, paths: list[Path], out: Path | None = None) -> Path:
    """The folder a repair may write the shards ``paths`` into: the one shards.json names, and only when it lies
    inside the dataset's own folder (the one holding ``manifests/``; symlinks resolved) or is the ``out`` the user
    named. Shard files that are symlinks are refused too: nothing is written outside the dataset."""
    folder = paths[0].parent
    base = out if out is not None else manifest_dir.absolute().parent.parent
    where = folder.resolve()
    inside = where == base.resolve() if out is not None else where.is_relative_to(base.resolve())
    if not inside:
        raise UserError(
            f"{manifest_dir}/shards.json puts the shards in {folder} ({where}), "
            + (f"not in --out {out}" if out is not None else f"outside the dataset folder {base.resolve()}")
            + "; refusing to write there. If that really is where the shards belong, give it as --out"
        )
    for sub in ("samples.parquet", "errors.parquet", "shards"):
        if (manifest_dir / sub).is_symlink():
            raise UserError(f"{manifest_dir / sub} is a symlink; refusing to write through it")
    linked = [p for p in paths if p.is_symlink()]
    if linked:
        raise UserError(f"{linked[0]} is a symlink; refusing to write a shard through it")
    return folder


def write_shard(
    place: ShardPlace,
    samples: Iterable[Mapping[str, Any]],
    rows: list[dict[str, Any]],
    errors: list[dict[str, Any]],
    schema: pa.Schema,
) -> dict[str, Any]:
    """Write one shard's files in the order that keeps resuming safe: the tar, its manifest and errors parts, then
    the stats file that marks the shard complete. ``samples`` fills ``rows`` and ``errors`` as the tar is written."""
    tar_path, manifest_dir, shard = place.tar_path, place.manifest_dir, place.shard
    size, digest = write_tar(tar_path, samples)
    atomic_write(manifest_dir / "samples.parquet" / f"{shard}.parquet", parquet_bytes(rows, schema))
    atomic_write(manifest_dir / "errors.parquet" / f"{shard}.parquet", parquet_bytes(errors, ERRORS_SCHEMA))
    warnings = sum(e.get("kind") == "warning" for e in errors)
    stats = {
        "shard": shard,
        "path": os.path.relpath(tar_path, manifest_dir),
        "samples": len(rows),
        "errors": len(errors) - warnings,
        "warnings": warnings,
        "bytes": size,
        "sha256": digest,
    }
    atomic_write(place.stats_path, json_bytes(stats))  # written last: marks the shard complete
    return stats


def parquet_bytes(rows: list[dict[str, Any]], schema: pa.Schema) -> bytes:
    """Parquet file bytes for ``rows`` under a fixed schema (no pandas metadata: stable bytes)."""
    # Column-wise: Table.from_pylist costs more per row than rendering the sample does.
    return table_bytes(pa.Table.from_pydict({f.name: [r.get(f.name) for r in rows] for f in schema}, schema=schema))


def table_bytes(table: pa.Table) -> bytes:
    """Parquet file bytes of a table (zstd)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()


class NeedsTarfile(ValueError):
    """An archive with member types the direct reader does not parse (long names, pax headers, links)."""


def ustar_member(header: bytes | memoryview, where: str) -> tuple[str, int] | None:
    """(name, size) of the regular file a 512-byte ustar header describes, or None for the end-of-archive block.

    Member types the direct parsers do not handle (long names, pax headers, links) raise NeedsTarfile.
    """
    if header[0] == 0 and not any(header):
        return None
    if header[156:157] not in (b"0", b"\0"):
        raise NeedsTarfile(f"{where}: member type {bytes(header[156:157])!r}")
    name = bytes(header[:100]).rstrip(b"\0").decode()
    posix = header[257:263] == b"ustar\0"  # GNU tars ("ustar  ") keep other fields where POSIX keeps the prefix
    prefix = bytes(header[345:500]).rstrip(b"\0").decode() if posix else ""
    size = int(bytes(header[124:136]).strip(b"\0 ") or b"0", 8)
    return (f"{prefix}/{name}" if prefix else name), size


def parse_tar(buf: memoryview, where: str) -> Iterator[tuple[str, bytes]]:
    """(member name, bytes) of each regular file in ``buf``: a whole ustar archive, or a run of its members."""
    offset, end = 0, len(buf)
    while offset + 512 <= end:
        member = ustar_member(buf[offset : offset + 512], where)
        if member is None:
            return
        name, size = member
        start = offset + 512
        if start + size > end:
            raise UserError(f"{where}: truncated in member {name}; rebuild the shard (rerun `occgen build`)")
        yield name, bytes(buf[start : start + size])
        offset = start + (size + 511) // 512 * 512
    if offset < end:
        raise UserError(f"{where}: truncated at byte {offset}; rebuild the shard (rerun `occgen build`)")


def read_tar(path: Path) -> Iterator[tuple[str, bytes]]:
    """(member name, bytes) of each regular file of a ustar archive, in order: the inverse of ``write_tar``.

    A shard is read whole and its 512-byte headers parsed directly, which costs a tenth of ``tarfile``'s per-member
    Python work (the loader's largest cost after JPEG decoding). Archives with other member types (long names,
    pax headers, links) are left to ``tarfile``: this raises NeedsTarfile for them, and the caller falls back. A
    truncated archive is a UserError.
    """
    with open(path, "rb") as f:
        buf = memoryview(f.read())
    yield from parse_tar(buf, str(path))


def member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    """The payload of a regular member (``tarfile`` gives no file object for folders and devices)."""
    f = tar.extractfile(member)
    if f is None:
        raise tarfile.TarError(f"{member.name} is not a regular file")
    return f.read()
