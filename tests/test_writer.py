"""The shard writer: valid, deterministic tars and atomic files."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import pytest

from occgen.writer import atomic_write, write_tar


def test_write_tar_is_a_standard_deterministic_tar(tmp_path: Path):
    samples = [{"__key__": "a-1", "jpg": b"x" * 700, "cls": b"3", "json": b"{}"}, {"__key__": "b-0", "cls": b""}]
    size, digest = write_tar(tmp_path / "s.tar", samples)
    data = (tmp_path / "s.tar").read_bytes()
    assert size == len(data) and size % 10240 == 0 and digest == hashlib.sha256(data).hexdigest()
    with tarfile.open(tmp_path / "s.tar") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["a-1.cls", "a-1.jpg", "a-1.json", "b-0.cls"]
        assert {(m.mtime, m.uid, m.gid, m.uname, m.mode) for m in members} == {(0, 0, 0, "", 0o444)}
        assert tar.extractfile("a-1.jpg").read() == b"x" * 700
    write_tar(tmp_path / "t.tar", samples)
    assert (tmp_path / "t.tar").read_bytes() == data
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporaries left


def test_long_names_are_refused(tmp_path: Path):
    with pytest.raises(ValueError):
        write_tar(tmp_path / "s.tar", [{"__key__": "k" * 100, "jpg": b""}])


def test_atomic_write_replaces_whole_files(tmp_path: Path):
    atomic_write(tmp_path / "d" / "f.json", b"one")
    atomic_write(tmp_path / "d" / "f.json", b"two")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["f.json"]
    assert (tmp_path / "d" / "f.json").read_bytes() == b"two"
