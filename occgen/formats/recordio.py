"""Indexed RecordIO (dmlc-core / MXNet ``.rec`` + ``.idx``), as insightface's training sets are distributed.

A record is ``magic (0xced7230a), lrecord, data, padding to 4 bytes`` (little-endian uint32s). ``lrecord`` holds
the part length in its lower 29 bits and a continuation flag in its upper 3: 0 a whole record; 1, 2, 3 the first,
a middle and the last part of a record that was split where the magic number occurred in its data (at a 4-byte
aligned position), so the parts are joined with the magic between them. The ``.idx`` file lists ``key<TAB>byte
offset`` per line, so any record is read where it lies (positional reads, safe for threads sharing the file):
workers read only the records of their shards.

An image record starts with MXNet's IRHeader ``flag (uint32), label (float32), id (uint64), id2 (uint64)``; a flag
above zero means ``flag`` float32 labels follow the header (a vector label) before the encoded image.
insightface's face2rec writes record 0 as a header with an empty image and the label ``(first identity record,
end)``: faces are records 1 .. first identity record - 1, followed by one range record per identity. Files without
that header record hold faces only.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from occgen.errors import UserError

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_WORDS = struct.Struct("<II")
IR_HEADER = struct.Struct("<IfQQ")
_LENGTH_MASK = (1 << 29) - 1


@dataclass(frozen=True)
class Record:
    """One image record: its IRHeader fields and the encoded image after them."""

    flag: int
    label: tuple[float, ...]  # one value, or ``flag`` values for a vector label
    id: int
    id2: int
    image: bytes

    @property
    def identity(self) -> int:
        """The class: the label, or the first element of a vector label (as insightface reads it)."""
        return int(self.label[0])


@dataclass(frozen=True)
class Layout:
    """Where the faces of an indexed RecordIO file are: (key, byte offset) of each face record, in key order."""

    faces: tuple[tuple[int, int], ...]
    header: tuple[float, ...] | None  # record 0's label when the file has insightface's header record


def _read_exact(f: IO[bytes], n: int, where: str, offset: int) -> bytes:
    """``n`` bytes at ``offset``, by positional reads: threads sharing one open file do not disturb each other."""
    data = os.pread(f.fileno(), n, offset)
    while 0 < len(data) < n:  # a short read before the end of the file: read on
        more = os.pread(f.fileno(), n - len(data), offset + len(data))
        if not more:
            break
        data += more
    if len(data) != n:
        raise UserError(
            f"{where}: truncated record at byte {offset} (wanted {n} bytes, the file has {len(data)} more); "
            "the .rec file is incomplete or the .idx belongs to another file"
        )
    return data


def read_record(f: IO[bytes], offset: int, where: str) -> bytes:
    """The data of the record at ``offset``, its parts joined."""
    parts: list[bytes] = []
    pos = offset
    while True:
        magic, lrecord = _WORDS.unpack(_read_exact(f, 8, where, pos))
        if magic != MAGIC:
            raise UserError(
                f"{where}: no RecordIO record at byte {pos} (magic {magic:#010x}, expected {MAGIC:#010x}); "
                "the .idx does not belong to this .rec, or the file is not MXNet RecordIO"
            )
        cflag, length = lrecord >> 29, lrecord & _LENGTH_MASK
        if cflag not in (0, 1, 2, 3) or (not parts and cflag in (2, 3)) or (parts and cflag in (0, 1)):
            raise UserError(f"{where}: record part at byte {pos} has continuation flag {cflag} out of sequence")
        parts.append(_read_exact(f, length, where, pos + 8))
        pos += 8 + length + (-length % 4)
        if cflag in (0, 3):
            return _MAGIC_BYTES.join(parts)


def unpack(data: bytes, where: str) -> Record:
    """Split a record's data into its IRHeader, label and image bytes."""
    if len(data) < IR_HEADER.size:
        raise UserError(f"{where}: record of {len(data)} bytes is too short for an image header ({IR_HEADER.size})")
    flag, label, id_, id2 = IR_HEADER.unpack_from(data)
    start = IR_HEADER.size
    if flag > 0:
        end = start + 4 * flag
        if len(data) < end:
            raise UserError(
                f"{where}: record promises {flag} labels but holds only {len(data) - start} bytes after its header"
            )
        labels = tuple(float(v) for v in np.frombuffer(data, "<f4", flag, start))
        return Record(flag, labels, id_, id2, data[end:])
    return Record(flag, (float(label),), id_, id2, data[start:])


def read_index(path: Path) -> list[tuple[int, int]]:
    """(key, byte offset) of every line of a ``.idx`` file, sorted by key."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the RecordIO index ({exc})") from None
    entries = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or not all(v.isdigit() for v in fields):
            raise UserError(f"{path}:{n}: expected 'key<TAB>offset', got {line.strip()[:60]!r}")
        entries.append((int(fields[0]), int(fields[1])))
    if not entries:
        raise UserError(f"{path}: empty RecordIO index")
    entries.sort()
    keys = [k for k, _ in entries]
    if len(set(keys)) != len(keys):
        dup = next(k for k, k2 in zip(keys, keys[1:]) if k == k2)
        raise UserError(f"{path}: key {dup} listed twice")
    return entries


def read_at(f: IO[bytes], offset: int, where: str) -> Record:
    return unpack(read_record(f, offset, where), where)


def layout(rec: Path, idx: Path) -> Layout:
    """The face records of an indexed RecordIO file: 1 .. header[0] - 1 when record 0 is insightface's header
    (a vector label and no image), else every record of the index."""
    entries = read_index(idx)
    header = None
    if entries[0][0] == 0:
        with open(rec, "rb") as f:
            first = read_at(f, entries[0][1], f"{rec}: record 0")
        if first.flag >= 2 and not first.image:
            header = first.label
    if header is None:
        return Layout(tuple(entries), None)
    end = int(header[0])
    faces = tuple((k, o) for k, o in entries if 1 <= k < end)
    if not faces:
        raise UserError(f"{rec}: the header record says faces are records 1..{end - 1}, and the index has none of them")
    return Layout(faces, header)


def labels(rec: Path, faces: tuple[tuple[int, int], ...]) -> Iterator[tuple[int, int, int | str]]:
    """(key, offset, identity) of each face, reading only each record's header (and label vector); a record that
    cannot be read gives the reason instead of an identity."""
    with open(rec, "rb") as f:
        for key, offset in faces:
            try:
                yield key, offset, _head(f, offset, f"record {key}").identity
            except UserError as exc:
                yield key, offset, str(exc)


def _head(f: IO[bytes], offset: int, where: str) -> Record:
    """A record's IRHeader and labels without reading its image (the whole record when it was split)."""
    head = os.pread(f.fileno(), 64, offset)  # the header words, the IRHeader and up to 8 labels
    if len(head) < 8 + IR_HEADER.size:
        return read_at(f, offset, where)  # raises the truncation error
    magic, lrecord = _WORDS.unpack_from(head)
    flag = IR_HEADER.unpack_from(head, 8)[0]
    length = lrecord & _LENGTH_MASK
    need = IR_HEADER.size + 4 * max(flag, 0)
    if magic != MAGIC or lrecord >> 29 or length < need or need > len(head) - 8:
        return read_at(f, offset, where)  # split, short, vector-labelled or damaged: the full path
    return unpack(head[8 : 8 + need], where)
