"""A manifest folder that comes from elsewhere is untrusted: its shards.json must not make occgen or fromnet write (or
read shards) outside the dataset."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_build import run

from fromnet.shards import read_manifest
from occgen.errors import UserError


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """tmp/ds/{o,m/v}: a 3-shard demo build; tmp/outside: a folder beside the dataset."""
    ds = tmp_path / "ds"
    run("build", "--src", "demo", "--shard-size", "60", "--out", str(ds / "o"), "--manifests", str(ds / "m"),
        "--name", "v", "-q", "-j", "1")  # fmt: skip
    (tmp_path / "outside").mkdir()
    return ds


def _point(ds: Path, path: str) -> None:
    """Rewrite shards.json so that shard i lives at ``path.format(i=i)``."""
    index_file = ds / "m" / "v" / "shards.json"
    meta = json.loads(index_file.read_text())
    for i, entry in enumerate(meta["shards"]):
        entry["path"] = path.format(i=i)
    index_file.write_text(json.dumps(meta))


def _verify(ds: Path, *extra: str):
    return run("verify", str(ds / "m" / "v"), "--repair", "-j", "1", "-q", *extra, ok=False)


@pytest.mark.parametrize(
    "hostile, message, unreadable",
    [
        ("{outside}/v-{i:06d}.tar", "refused", True),  # absolute
        ("../../../outside/v-{i:06d}.tar", "outside the dataset folder", False),  # escapes through ..
        ("../../o/../../outside/v-{i:06d}.tar", "outside the dataset folder", False),
        ("../../o/authorized_keys", "refused", True),  # not the shard's own name
        ("../../o/v-000002.tar", "refused", True),  # another shard's name
    ],
)
def test_hostile_shard_paths_are_refused(dataset, hostile, message, unreadable):
    outside = dataset.parent / "outside"
    (dataset / "o" / "v-000001.tar").unlink()
    _point(dataset, hostile.replace("{outside}", str(outside)))
    result = _verify(dataset)
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
    assert not any(outside.iterdir()) and not (dataset / "o" / "authorized_keys").exists()
    if unreadable:  # fromnet reads no shard through such a manifest either
        with pytest.raises(UserError, match="refused"):
            read_manifest(dataset / "m" / "v")


def test_symlinks_out_of_the_dataset_are_refused(dataset):
    outside = dataset.parent / "outside"
    (dataset / "link").symlink_to(outside, target_is_directory=True)
    _point(dataset, "../../link/v-{i:06d}.tar")
    result = _verify(dataset)
    assert "outside the dataset folder" in result.output and not any(outside.iterdir())
    # a manifest part folder that is a symlink would take the rewritten parts elsewhere
    _point(dataset, "../../o/v-{i:06d}.tar")
    (dataset / "o" / "v-000001.tar").unlink()
    samples = dataset / "m" / "v" / "samples.parquet"
    os.rename(samples, outside / "samples.parquet")
    samples.symlink_to(outside / "samples.parquet", target_is_directory=True)
    before = sorted(p.name for p in (outside / "samples.parquet").iterdir())
    assert "is a symlink" in _verify(dataset).output
    assert sorted(p.name for p in (outside / "samples.parquet").iterdir()) == before
    # a shard file that is a symlink is not written through
    samples.unlink()
    os.rename(outside / "samples.parquet", samples)
    (dataset / "o" / "v-000001.tar").symlink_to(outside / "target.tar")
    assert "is a symlink" in _verify(dataset).output and not (outside / "target.tar").exists()


def test_shards_kept_elsewhere_are_repaired_when_named_with_out(tmp_path):
    out, manifests = tmp_path / "disk2" / "shards", tmp_path / "project" / "manifests"
    run("build", "--src", "demo", "--shard-size", "60", "--out", str(out), "--manifests", str(manifests),
        "--name", "v", "-q", "-j", "1")  # fmt: skip
    original = (out / "v-000001.tar").read_bytes()
    (out / "v-000001.tar").unlink()
    manifest = str(manifests / "v")
    refused = run("verify", manifest, "--repair", "-j", "1", "-q", ok=False)
    assert "give it as --out" in refused.output and not (out / "v-000001.tar").exists()
    wrong = run("verify", manifest, "--repair", "-j", "1", "-q", "--out", str(tmp_path), ok=False)
    assert f"not in --out {tmp_path}" in wrong.output
    assert "repaired 1 of 1" in run("verify", manifest, "--repair", "-j", "1", "-q", "--out", str(out)).output
    assert (out / "v-000001.tar").read_bytes() == original
