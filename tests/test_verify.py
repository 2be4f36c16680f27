"""occgen verify: finds missing, truncated and altered shards; --repair rebuilds them byte-identical."""

from __future__ import annotations

import json
from pathlib import Path

from test_build import files, run

from occgen.occlude import demo


def _build(tmp_path: Path, src: str = "demo", *extra: str) -> list[str]:
    run(
        "build",
        "--src",
        src,
        "--copies",
        "2",
        "--shard-size",
        "40",
        "--out",
        str(tmp_path / "o"),
        "--manifests",
        str(tmp_path / "m"),
        "--name",
        "v",
        "-q",
        "-j",
        "1",
        *extra,
    )
    return [p.name for p in sorted((tmp_path / "o").glob("v-*.tar"))]


def test_verify_finds_truncated_deleted_and_flipped_shards_and_repair_restores_them(tmp_path: Path):
    tars = _build(tmp_path)
    assert len(tars) == 7
    original = files(tmp_path)
    manifest = str(tmp_path / "m" / "v")
    assert "7 shards, 256 samples: all intact" in run("verify", manifest, "-j", "1").output

    out = tmp_path / "o"
    data = (out / tars[1]).read_bytes()
    (out / tars[1]).write_bytes(data[: len(data) // 2])  # truncated
    (out / tars[3]).unlink()  # deleted
    flipped = bytearray((out / tars[5]).read_bytes())
    flipped[3000] ^= 0x01  # one bit inside the first image
    (out / tars[5]).write_bytes(bytes(flipped))
    stale = tmp_path / "m" / "v" / "shards" / "v-000005.json"

    result = run("verify", manifest, "-j", "2", ok=False)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith("v-000001: truncated") and lines[1].startswith("v-000003: missing")
    assert lines[2].startswith("v-000005: altered (image") and "sha256" in lines[2]
    assert "3 bad (1 missing, 1 truncated, 1 altered)" in lines[3]

    # A flip in a tar header (not an image) is caught too, by the whole-file sha256.
    header = bytearray((out / tars[6]).read_bytes())
    header[140] ^= 0x01  # inside the first member's mtime field
    (out / tars[6]).write_bytes(bytes(header))
    assert "v-000006: altered" in run("verify", manifest, "-j", "1", ok=False).output

    result = run("verify", manifest, "--repair", "-j", "2")
    assert "repaired 4 of 4 shards" in result.output
    assert files(tmp_path) == original and stale.exists()
    assert "all intact" in run("verify", manifest, "-j", "1").output


def test_verify_a_missing_manifest_part_and_repair_from_a_folder_source(tmp_path: Path):
    src = tmp_path / "faces"
    for i in range(3):
        for j in range(10):
            (src / f"p{i}").mkdir(parents=True, exist_ok=True)
            demo.face(i, j).save(src / f"p{i}" / f"{j}.jpg", quality=90)
    _build(tmp_path, str(src))
    original = files(tmp_path)
    (tmp_path / "m" / "v" / "samples.parquet" / "v-000000.parquet").unlink()
    result = run("verify", str(tmp_path / "m" / "v"), "--repair", "-j", "1")
    assert "v-000000: missing (manifest part" in result.output and "repaired 1 of 1" in result.output
    assert files(tmp_path) == original

    # The inputs changed since the build (one is gone): a repair would not give the same bytes, so it is refused.
    (tmp_path / "o" / "v-000001.tar").unlink()
    (src / "p2" / "9.jpg").unlink()
    result = run("verify", str(tmp_path / "m" / "v"), "--repair", "-j", "1", ok=False)
    assert result.exit_code == 2 and "its input images changed" in result.output


def test_verify_needs_a_finished_build(tmp_path: Path):
    _build(tmp_path)
    (tmp_path / "m" / "v" / "shards.json").unlink()
    result = run("verify", str(tmp_path / "m" / "v"), ok=False)
    assert result.exit_code == 2 and "has not finished" in result.output
    result = run("verify", str(tmp_path / "nothing"), ok=False)
    assert result.exit_code == 2 and "no readable build.json" in result.output
    index = json.loads((tmp_path / "m" / "v" / "build.json").read_text())
    assert index["src"] == "demo"
