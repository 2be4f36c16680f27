"""occgen build under faults: broken and odd inputs, symlinked trees, error thresholds, kill -9 and Ctrl-C."""

from __future__ import annotations

import io
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import webdataset as wds
from conftest import REPO
from PIL import Image
from test_build import files, run

from occgen.occlude import demo
from occgen.occlude.plan import sample_key

#: Two paths whose sample keys coincide: same readable part, and a 32-bit hash collision (found by search).
COLLIDING = ("id7/x# ^=y.jpg", "id7/x' #@y.jpg")


def _save(path: Path, image: Image.Image, fmt: str, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt, **kw)


def _bomb_jpeg(face: Image.Image) -> bytes:
    """A small JPEG whose header claims 60000 x 60000 pixels."""
    buf = io.BytesIO()
    face.save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    return bytes(data)


def bad_corpus(root: Path) -> tuple[set[str], dict[str, str], dict[str, str]]:
    """Every kind of bad or odd input, made from demo faces. Returns (inputs that must become samples,
    {input: reason fragment} of errors, {input: reason fragment} of warnings)."""
    face = demo.face(0, 0)
    good: set[str] = set()
    for j in range(4):
        _save(root / "id0" / f"good{j}.jpg", demo.face(0, j), "JPEG", quality=95)
        good.add(f"id0/good{j}.jpg")
    jpeg = (root / "id0" / "good0.jpg").read_bytes()
    (root / "id0" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (root / "id0" / "empty.jpg").write_bytes(b"")
    (root / "id0" / "text.jpg").write_text("this is a text file, not a JPEG\n")
    _save(root / "id1" / "cmyk.jpg", face.convert("CMYK"), "JPEG", quality=95)
    _save(root / "id1" / "grey16.png", Image.fromarray(np.asarray(face.convert("L")).astype(np.uint16) * 257), "PNG")
    _save(root / "id1" / "palette.gif", face.convert("P", palette=Image.Palette.ADAPTIVE), "GIF", transparency=0)
    _save(root / "id1" / "grey.pgm", face.convert("L"), "PPM")
    _save(root / "id1" / "rgba.png", face.convert("RGBA"), "PNG")
    good |= {"id1/cmyk.jpg", "id1/grey16.png", "id1/palette.gif", "id1/grey.pgm", "id1/rgba.png"}
    (root / "id2").mkdir()
    (root / "id2" / "bomb.jpg").write_bytes(_bomb_jpeg(face))
    _save(root / "id2" / "bigger.png", face.resize((192, 224)), "PNG")
    odd_names = [
        "id 3/with space.jpg",
        "idé/ünïcödé 顔.jpg",
        "id4/dots.in.the.name.jpg",
        "id4/a b.jpg",
        "id4/a_b.jpg",
        COLLIDING[0],
    ]
    for rel in odd_names:
        _save(root / rel, face, "JPEG", quality=95)
    good |= set(odd_names) | {"id2/bigger.png"}
    (root / COLLIDING[1]).write_bytes(jpeg)
    (root / "id5").mkdir()
    os.mkfifo(root / "id5" / "fifo.jpg")
    (root / "id5" / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    with open(os.path.join(os.fsencode(root / "id5"), b"latin1-\xe9.jpg"), "wb") as f:
        f.write(jpeg)
    (root / "id6").mkdir()
    _save(root / "id6" / "ok.jpg", face, "JPEG", quality=95)
    good.add("id6/ok.jpg")
    (root / "id6" / "loop").symlink_to(root)  # id6/loop -> the tree itself
    (root / "README.txt").write_text("not a face")
    errors = {
        "id0/truncated.jpg": "cannot decode",
        "id0/empty.jpg": "empty file",
        "id0/text.jpg": "cannot decode",
        "id2/bomb.jpg": "decompression-bomb limit",
        COLLIDING[1]: f"same sample key as {COLLIDING[0]}",
        "id5/fifo.jpg": "not a regular file",
        "id5/dangling.jpg": "broken symlink",
        "id5/latin1-\\xe9.jpg": "not valid UTF-8",
        "id6/loop/": "symlink loop",
        "README.txt": "not inside",
    }
    return good, errors, {"id2/bigger.png": "resized from 224x192 to 112x96"}


def test_bad_corpus_every_file_accounted_for(tmp_path: Path):
    root = tmp_path / "faces"
    good, errors, warnings = bad_corpus(root)
    assert sample_key(COLLIDING[0], 0) == sample_key(COLLIDING[1], 0)
    result = run(
        "build",
        "--src",
        str(root),
        "--out",
        str(tmp_path / "o"),
        "--manifests",
        str(tmp_path / "m"),
        "--name",
        "bad",
        "--format",
        "png",
        "--clean-ratio",
        "1",
        "-j",
        "1",
        "--max-errors",
        "50%",
    )
    assert f"{len(good)} samples written, {len(errors)} errors, 1 warning" in result.output
    assert "1 input used after a fix" in result.output and f"{len(errors)} inputs not used" in result.output
    df = pd.read_parquet(tmp_path / "m" / "bad" / "samples.parquet")
    table = pd.read_parquet(tmp_path / "m" / "bad" / "errors.parquet")
    assert set(df.src) == good and df.key.is_unique
    found = {kind: dict(zip(t.input, t.reason)) for kind, t in table.groupby("kind")}
    assert set(found["error"]) == set(errors) and set(found["warning"]) == set(warnings)
    for expected in (errors, warnings):
        for name, fragment in expected.items():
            assert fragment in {**found["error"], **found["warning"]}[name], (name, table)
    # Handled correctly: every usable input is a 112x96 RGB face close to what was written.
    reference = np.asarray(demo.face(0, 0), dtype=np.int16)
    tars = sorted((tmp_path / "o").glob("bad-*.tar"))
    by_src = {}
    for sample in wds.WebDataset([str(t) for t in tars], shardshuffle=False).decode("rgb8"):
        by_src[sample["json"]["src"]] = sample["png"]
    assert set(by_src) == good and all(img.shape == (112, 96, 3) for img in by_src.values())
    grey = np.asarray(demo.face(0, 0).convert("L"), dtype=np.int16)
    for src, want, tol in (
        ("id1/cmyk.jpg", reference, 4),
        ("id1/rgba.png", reference, 0),
        ("id1/palette.gif", reference, 6),
        ("id1/grey16.png", grey[..., None], 0),
        ("idé/ünïcödé 顔.jpg", reference, 4),
        ("id2/bigger.png", reference, 6),
    ):
        assert np.abs(by_src[src].astype(np.int16) - want).mean() <= tol, src


def test_strict_size_rejects_other_sizes(tmp_path: Path):
    root = tmp_path / "faces"
    for j in range(3):
        _save(root / "a" / f"{j}.png", demo.face(1, j), "PNG")
    _save(root / "b" / "big.png", demo.face(1, 5).resize((192, 224)), "PNG")
    result = run(
        "build",
        "--src",
        str(root),
        "--out",
        str(tmp_path / "o"),
        "--manifests",
        str(tmp_path / "m"),
        "--strict-size",
        "--max-errors",
        "1",
        "-j",
        "1",
    )
    assert "3 samples written, 1 error" in result.output
    table = pd.read_parquet(tmp_path / "m" / "occ-faces" / "errors.parquet")
    assert table.to_dict("records") == [
        {
            "input": "b/big.png",
            "reason": "is 224x192, not 112x96 like the other inputs (--strict-size)",
            "kind": "error",
        }
    ]
    # --size sets the face size instead of the first input's: now the three small faces are the odd ones.
    result = run(
        "build",
        "--src",
        str(root),
        "--out",
        str(tmp_path / "o"),
        "--manifests",
        str(tmp_path / "m"),
        "--name",
        "big",
        "--size",
        "224x192",
        "-j",
        "1",
    )
    assert "4 samples written, 0 errors, 3 warnings" in result.output
    assert set(pd.read_parquet(tmp_path / "m" / "big" / "samples.parquet").width) == {192}


def test_unreadable_file_is_recorded(tmp_path: Path):
    """chmod 000 stops everyone but root. As root (as in CI here) the build runs without the capabilities that
    let root ignore file permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so permissions apply to it too."""
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("runs as root, and setpriv (util-linux) is absent to drop root's permission override")
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    root = tmp_path / "faces"
    for j in range(2):
        _save(root / "a" / f"{j}.jpg", demo.face(0, j), "JPEG")
    (root / "a" / "1.jpg").chmod(0)
    proc = subprocess.run(
        [
            *prefix,
            sys.executable,
            "-m",
            "occgen",
            "build",
            "--src",
            "faces",
            "--out",
            "o",
            "--manifests",
            "m",
            "--max-errors",
            "1",
            "-j",
            "1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr
    table = pd.read_parquet(tmp_path / "m" / "occ-faces" / "errors.parquet")
    assert list(table.input) == ["a/1.jpg"] and table.reason[0] == "cannot read (Permission denied)"
    assert list(pd.read_parquet(tmp_path / "m" / "occ-faces" / "samples.parquet").src) == ["a/0.jpg"]


def test_one_bad_file_in_a_hundred_passes_the_default_threshold(tmp_path: Path):
    root = tmp_path / "faces"
    for i in range(99):
        _save(root / f"p{i % 10}" / f"{i:03d}.jpg", demo.face(i % 10, i), "JPEG")
    (root / "p3" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    args = ["build", "--src", str(root), "--out", str(tmp_path / "o"), "--manifests", str(tmp_path / "m"), "-j", "1"]
    result = run(*args)
    assert "99 samples written, 1 error" in result.output
    assert "1 input not used" in result.output and "p3/broken.jpg: cannot decode image" in result.output
    # The threshold counts the whole build, also when a rerun has nothing left to do.
    result = run(*args, "--max-errors", "0", ok=False)
    assert result.exit_code == 1 and "more inputs failed than --max-errors 0 allows" in result.output
    assert "1 of 100 inputs" in result.output
    result = run(*args, "--max-errors", "0.5%", ok=False)
    assert result.exit_code == 1
    assert run(*args, "--max-errors", "x%", ok=False).exit_code == 2


def test_symlinked_identity_folders_build_like_the_real_tree(tmp_path: Path):
    real = tmp_path / "real"
    for i in range(4):
        for j in range(3):
            _save(real / f"person{i}" / f"{j}.jpg", demo.face(i, j), "JPEG")
    linked = tmp_path / "linked"
    linked.mkdir()
    for i in range(3):
        (linked / f"person{i}").symlink_to(real / f"person{i}", target_is_directory=True)
    (linked / "person3").mkdir()  # a real folder of symlinked files
    for j in range(3):
        (linked / "person3" / f"{j}.jpg").symlink_to(real / "person3" / f"{j}.jpg")
    (linked / "person3" / "again").symlink_to(linked / "person3")  # a loop inside an identity folder
    common = ["--copies", "2", "--shard-size", "5", "-j", "1", "--name", "t", "--max-errors", "1"]
    for tree in ("real", "linked"):
        run(
            "build",
            "--src",
            str(tmp_path / tree),
            "--out",
            str(tmp_path / f"o-{tree}"),
            "--manifests",
            str(tmp_path / f"m-{tree}"),
            *common,
        )
    assert files(tmp_path / "o-real") == files(tmp_path / "o-linked")
    parts = [files(tmp_path / f"m-{tree}" / "t" / "samples.parquet") for tree in ("real", "linked")]
    assert parts[0] == parts[1] and len(pd.read_parquet(tmp_path / "m-real" / "t" / "samples.parquet")) == 24
    errors = pd.read_parquet(tmp_path / "m-linked" / "t" / "errors.parquet")
    assert list(errors.input) == ["person3/again/"] and "symlink loop" in errors.reason[0]


# ---------------------------------------------------------------------------------------------- kill -9, Ctrl-C

BUILD = ["--src", "demo", "--copies", "2", "--shard-size", "8", "--seed", "5", "-q"]  # 32 shards


def _start(cwd: Path, *extra: str) -> subprocess.Popen:
    """`occgen build` with 2 loky workers in its own process group (as a shell job would be)."""
    return subprocess.Popen(
        [sys.executable, "-m", "occgen", "build", *BUILD, "-j", "2", "--out", "o", "--manifests", "m", *extra],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def _group_alive(pgid: int) -> list[int]:
    """Processes still in a process group (zombies excluded)."""
    alive = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                alive.append(int(entry))
    return alive


def _wait_until(condition, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def _no_group_left(pgid: int) -> bool:
    _wait_until(lambda: not _group_alive(pgid), timeout=10)
    return True


def test_sigkill_at_any_point_then_rerun_equals_an_uninterrupted_build(tmp_path: Path, monkeypatch):
    reference = tmp_path / "ref"
    reference.mkdir()
    monkeypatch.chdir(reference)
    run("build", *BUILD, "-j", "1", "--out", "o", "--manifests", "m")
    expected = files(reference)
    assert len([f for f in expected if f.endswith(".tar")]) == 32

    for shards_done in (0, 5, 17):
        work = tmp_path / f"kill-{shards_done}"
        work.mkdir()
        proc = _start(work)
        marks = work / "m" / "occ-demo" / "shards"
        _wait_until(
            lambda: (
                (work / "m" / "occ-demo" / "build.json").exists()
                and (shards_done == 0 or len(list(marks.glob("*.json"))) >= shards_done)
            )
        )
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        assert _no_group_left(proc.pid)
        assert not (work / "m" / "occ-demo" / "shards.json").exists(), "the build finished before it was killed"
        monkeypatch.chdir(work)
        result = run("build", *BUILD, "-j", "2", "--out", "o", "--manifests", "m")
        assert "samples written" in result.output
        assert files(work) == expected, shards_done  # no temporaries, no partial or missing shard, same bytes
        rows = pd.read_parquet(work / "m" / "occ-demo" / "samples.parquet")
        assert len(rows) == 256 and rows.key.is_unique


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_stops_the_workers_and_says_how_to_resume(tmp_path: Path, how: str):
    proc = _start(tmp_path, "--copies", "40")  # 5120 samples: several seconds of work
    _wait_until(lambda: len(list((tmp_path / "m" / "occ-demo" / "shards").glob("*.json"))) >= 2)
    workers = [p for p in _group_alive(proc.pid) if p != proc.pid]
    assert workers, "the build runs no worker processes"
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    else:
        os.kill(proc.pid, signal.SIGTERM)  # what kill and batch schedulers do: the main process only
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "run the same command again to resume" in err
    assert _no_group_left(proc.pid)
    assert not [p for p in (tmp_path / "o").iterdir() if ".tmp-" in p.name]


def test_cli_leaves_no_worker_process_behind(tmp_path: Path, monkeypatch):
    proc = _start(tmp_path)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert _no_group_left(proc.pid)
    # In-process too: the build returns with its loky workers stopped.
    monkeypatch.chdir(tmp_path)
    before = _children()
    run("build", *BUILD, "-j", "2", "--out", "o2", "--manifests", "m2")
    assert _children() - before == set()


def _children() -> set[int]:
    """Live child processes of this one, less multiprocessing's resource trackers (they are no workers)."""
    me = os.getpid()
    found = set()
    for task in Path(f"/proc/{me}/task").iterdir():
        for pid in (task / "children").read_text().split():
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"resource_tracker" not in cmd:
                found.add(int(pid))
    return found


def test_a_second_run_of_the_same_build_is_refused_while_the_first_runs(tmp_path: Path, monkeypatch):
    proc = _start(tmp_path, "--copies", "40")
    _wait_until(lambda: (tmp_path / "m" / "occ-demo" / "build.json").exists())
    monkeypatch.chdir(tmp_path)
    result = run("build", *BUILD, "--copies", "40", "-j", "1", "--out", "o", "--manifests", "m", ok=False)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert result.exit_code == 2 and "another run of the build occ-demo" in result.output


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b""), "is an empty file"),
        (lambda p: Image.new("RGBA", (20, 30), (255, 0, 0, 0)).save(p), "is fully transparent"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n broken"), "cannot be read"),
    ],
)
def test_bad_occluders_fail_at_load_time_with_the_file_named(tmp_path: Path, make, message: str):
    lib = tmp_path / "lib"
    for category in ("cup", "hand"):
        (lib / category).mkdir(parents=True)
        Image.new("RGBA", (20, 30), (0, 200, 0, 255)).save(lib / category / "0001.png")
    make(lib / "hand" / "0002.png")
    result = run(
        "build",
        "--src",
        "demo",
        "--occluders",
        str(lib),
        "--out",
        str(tmp_path / "o"),
        "--manifests",
        str(tmp_path / "m"),
        ok=False,
    )
    assert result.exit_code == 2
    assert f"occluder {lib / 'hand' / '0002.png'} {message}" in result.output
    assert not (tmp_path / "o").exists()  # before any work
