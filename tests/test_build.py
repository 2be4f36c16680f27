"""occgen build end to end: real shards read back by webdataset, real Parquet, real worker processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import webdataset as wds
from click.testing import CliRunner
from conftest import REPO, shared
from PIL import Image

from occgen.cli import main
from occgen.errors import UserError
from occgen.occlude import demo
from occgen.occlude.plan import parse_scales, sample_key

SHARED_OCCLUDERS = "occluders-openclipart-fluent"


def run(*args: str, ok: bool = True):
    result = CliRunner().invoke(main, list(args))
    if ok:
        assert result.exit_code == 0, result.output
    return result


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def odd_tree(tmp_path: Path) -> Path:
    """A small <identity>/<image> tree in every accepted format, plus a corrupt and a truncated file."""
    root = tmp_path / "faces"
    formats = [
        ("a.jpg", "JPEG"),
        ("b.PNG", "PNG"),
        ("c.pgm", "PPM"),
        ("d.gif", "GIF"),
        ("e.webp", "WEBP"),
        ("f.bmp", "BMP"),
        ("g", "PNG"),
        ("subject01.glasses", "GIF"),
    ]
    for ident in range(3):
        d = root / f"id{ident}"
        d.mkdir(parents=True)
        for j, (fn, fmt) in enumerate(formats):
            img = demo.face(ident, j)
            (img.convert("L") if fn.endswith((".pgm", ".glasses")) else img).save(d / fn, format=fmt)
    (root / "id0" / "corrupt.jpg").write_bytes(b"this is not an image")
    data = (root / "id1" / "a.jpg").read_bytes()
    (root / "id1" / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (root / "README.txt").write_text("not a face")
    return root


def test_parse_scales():
    assert parse_scales("1:0.5:5") == (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0)
    assert parse_scales("1,1.5,2") == (1.0, 1.5, 2.0)
    assert parse_scales("2.0") == (2.0,)
    for bad in ("1:0:5", "abc", "-1", "1:2", "5:1:1", "0"):
        with pytest.raises(UserError):
            parse_scales(bad)


def test_keys_are_stable_unique_and_dot_free():
    paths = ["a.b/c.jpg", "a_b/c.jpg", "a/b.c.jpg", "a/b_c.jpg", "x/y", "x/y.png"]
    keys = [sample_key(p, c) for p in paths for c in range(2)]
    assert len(set(keys)) == len(keys)
    assert all("." not in k and "/" not in k and len(k) < 95 for k in keys)
    assert sample_key("Amelia_Vega/Amelia_Vega_0001.jpg", 0) == sample_key("Amelia_Vega/Amelia_Vega_0001.jpg", 0)
    assert sample_key("Amelia_Vega/Amelia_Vega_0001.jpg", 0).startswith("Amelia_Vega__Amelia_Vega_0001-")


def test_lfw_mini_build_reads_back(tmp_path: Path):
    src = shared("lfw-mini") / "aligned-112x96"
    run(
        "build",
        "--src",
        str(src),
        "--scales",
        "1:0.5:5",
        "--copies",
        "2",
        "--out",
        str(tmp_path / "out"),
        "--manifests",
        str(tmp_path / "m"),
        "--name",
        "occ-lfwmini",
        "--shard-size",
        "30",
        "-j",
        "2",
        "--seed",
        "7",
    )
    inputs = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.jpg"))
    df = pd.read_parquet(tmp_path / "m" / "occ-lfwmini" / "samples.parquet")
    assert len(df) == 2 * len(inputs) == 96
    assert (df.groupby("src").size() == 2).all() and sorted(df["src"].unique()) == inputs
    assert df["key"].is_unique and df["occluded"].all()
    assert set(df["scale"].unique()) <= set(parse_scales("1:0.5:5"))
    assert ((df.box_x0 >= 0) & (df.box_x1 <= 96) & (df.box_y0 >= 0) & (df.box_y1 <= 112)).all()
    assert (df.box_x1 > df.box_x0).all() and (df.box_y1 > df.box_y0).all()
    assert np.allclose(df.box_area_ratio, (df.box_x1 - df.box_x0) * (df.box_y1 - df.box_y0) / (96 * 112))
    assert (df.pixel_area_ratio <= df.box_area_ratio + 1e-6).all()
    assert df.identity.nunique() == 12 and (df.groupby("identity").identity_name.nunique() == 1).all()

    index = json.loads((tmp_path / "m" / "occ-lfwmini" / "shards.json").read_text())["shards"]
    assert [s["samples"] for s in index] == [30, 30, 30, 6]
    tars = sorted((tmp_path / "out").glob("occ-lfwmini-*.tar"))
    assert [t.name for t in tars] == [Path(s["path"]).name for s in index]

    ds = wds.WebDataset([str(t) for t in tars], shardshuffle=False).decode("pil")
    seen = {}
    for sample in ds:
        meta = sample["json"]
        assert sample["__key__"] == meta["key"]
        assert sample["jpg"].size == (96, 112) and sample["jpg"].mode == "RGB"
        assert int(sample["cls"]) == meta["identity"]
        seen[meta["key"]] = meta
    assert set(seen) == set(df["key"])
    row = df.set_index("key").loc[next(iter(seen))]
    assert row["occluder"] == seen[row.name]["occluder"] and row["sha256"] == seen[row.name]["sha256"]


def test_outputs_are_byte_identical_for_any_worker_count_and_rerun(tmp_path: Path):
    common = [
        "build",
        "--src",
        "demo",
        "--copies",
        "2",
        "--clean-ratio",
        "0.25",
        "--shard-size",
        "40",
        "--seed",
        "3",
        "-q",
    ]
    for label, jobs in (("a", "1"), ("b", "2"), ("c", "2")):
        run(*common, "-j", jobs, "--out", str(tmp_path / label / "out"), "--manifests", str(tmp_path / label / "m"))
    a, b, c = (files(tmp_path / x) for x in "abc")
    assert len([f for f in a if f.endswith(".tar")]) == 7
    # the dataset card names the run's own folders (--out, --manifests): equal once they are
    cards = [d.pop("m/occ-demo/README.md").replace(f"/{x}/".encode(), b"/a/") for d, x in zip((a, b, c), "abc")]
    assert cards[0] == cards[1] == cards[2]
    assert a == b == c


def test_resume_rebuilds_only_missing_shards(tmp_path: Path):
    args = [
        "build",
        "--src",
        "demo",
        "--shard-size",
        "32",
        "--out",
        str(tmp_path / "out"),
        "--manifests",
        str(tmp_path / "m"),
        "--name",
        "d",
        "-j",
        "2",
    ]
    run(*args)
    before = files(tmp_path)
    # An interrupted run: one shard never finished (its stats mark missing, a stale temporary left behind),
    # another was half-written.
    (tmp_path / "m" / "d" / "shards" / "d-000001.json").unlink()
    (tmp_path / "out" / ".d-000001.tar.tmp-123").write_bytes(b"partial")
    (tmp_path / "out" / "d-000002.tar").write_bytes(b"truncated")
    result = run(*args)
    assert "64 samples written" in result.output and "64 already done" in result.output
    assert files(tmp_path) == before  # the stale temporary is gone too


def test_changed_options_need_overwrite(tmp_path: Path):
    args = ["build", "--src", "demo", "--out", str(tmp_path / "o"), "--manifests", str(tmp_path / "m"), "-j", "1"]
    run(*args, "--seed", "1")
    result = run(*args, "--seed", "2", ok=False)
    assert result.exit_code == 2 and "other option seed" in result.output and "--overwrite" in result.output
    run(*args, "--seed", "2", "--overwrite")
    assert json.loads((tmp_path / "m" / "occ-demo" / "build.json").read_text())["options"]["seed"] == 2
    run(*args, "--seed", "2")  # same options: resumes, nothing to do


def test_changed_occluder_images_need_overwrite(tmp_path: Path):
    lib = tmp_path / "lib" / "cup"
    lib.mkdir(parents=True)
    Image.new("RGBA", (30, 40), (200, 0, 0, 255)).save(lib / "0001.png")
    args = [
        "build",
        "--src",
        "demo",
        "--occluders",
        str(tmp_path / "lib"),
        "--out",
        str(tmp_path / "o"),
        "--manifests",
        str(tmp_path / "m"),
        "-j",
        "1",
    ]
    run(*args)
    Image.new("RGBA", (30, 40), (0, 200, 0, 255)).save(lib / "0001.png")  # same name, other picture
    result = run(*args, ok=False)
    assert result.exit_code == 2 and "other occluder images" in result.output


def test_odd_formats_and_bad_files_are_recorded(tmp_path: Path, odd_tree: Path):
    run(
        "build",
        "--src",
        str(odd_tree),
        "--out",
        str(tmp_path / "o"),
        "--manifests",
        str(tmp_path / "m"),
        "--name",
        "odd",
        "--format",
        "png",
        "-j",
        "2",
        "--max-errors",
        "3",
    )
    df = pd.read_parquet(tmp_path / "m" / "odd" / "samples.parquet")
    errors = pd.read_parquet(tmp_path / "m" / "odd" / "errors.parquet").set_index("input")["reason"]
    assert len(df) == 3 * 8
    assert set(errors.index) == {"id0/corrupt.jpg", "id1/truncated.jpg", "README.txt"}
    assert "cannot decode" in errors["id0/corrupt.jpg"] and "identity" in errors["README.txt"]
    assert "id2/g" in set(df.src) and "id2/subject01.glasses" in set(df.src)
    assert list(df.groupby("identity_name").identity.first()) == [0, 1, 2]


def test_list_file_and_named_sources(tmp_path: Path, odd_tree: Path, monkeypatch):
    listing = tmp_path / "list.txt"
    listing.write_text("id0/a.jpg 5\nid1/b.PNG 12\nid2/missing.jpg 5\nid2/c.pgm 0\n")
    run(
        "build",
        "--src",
        str(listing),
        "--root",
        str(odd_tree),
        "--out",
        str(tmp_path / "o"),
        "--manifests",
        str(tmp_path / "m"),
        "--name",
        "lst",
        "--max-errors",
        "1",
    )
    df = pd.read_parquet(tmp_path / "m" / "lst" / "samples.parquet").set_index("src")
    assert df.loc["id0/a.jpg", "identity"] == 1 and df.loc["id1/b.PNG", "identity"] == 2
    assert df.loc["id2/c.pgm", "identity_name"] == "0"
    assert list(pd.read_parquet(tmp_path / "m" / "lst" / "errors.parquet")["input"]) == ["id2/missing.jpg"]

    monkeypatch.setenv("OCCGEN_SRC_MYFACES", str(odd_tree))
    run(
        "build",
        "--src",
        "myfaces",
        "--out",
        str(tmp_path / "o"),
        "--manifests",
        str(tmp_path / "m"),
        "--max-errors",
        "12%",
    )
    assert len(pd.read_parquet(tmp_path / "m" / "occ-myfaces" / "samples.parquet")) == 24


def test_clean_ratio_per_scale_and_compat(tmp_path: Path):
    run(
        "build",
        "--src",
        "demo",
        "--copies",
        "3",
        "--clean-ratio",
        "0.3333",
        "--out",
        str(tmp_path / "o"),
        "--manifests",
        str(tmp_path / "m"),
        "--name",
        "mix",
        "--shard-size",
        "1000",
        "--K",
        "5",
    )
    df = pd.read_parquet(tmp_path / "m" / "mix" / "samples.parquet")
    assert abs((~df.occluded).mean() - 1 / 3) < 0.08
    clean = df[~df.occluded]
    assert clean[["box_x0", "scale", "occluder"]].isna().all().all()
    # --K labels as it goes: the same file `occgen label` writes
    labels = (tmp_path / "m" / "mix" / "labels-k5.parquet").read_bytes()
    run("label", "--K", "5", str(tmp_path / "m" / "mix"))
    assert (tmp_path / "m" / "mix" / "labels-k5.parquet").read_bytes() == labels
    lab = pd.read_parquet(tmp_path / "m" / "mix" / "labels-k5.parquet").set_index("key").loc[df.key]
    assert ((lab.pattern.values == 0) == ~df.occluded.values).all()

    run(
        "build",
        "--src",
        "demo",
        "--scales",
        "1,2",
        "--per-scale",
        "--compat",
        "from",
        "--out",
        str(tmp_path / "o"),
        "--manifests",
        str(tmp_path / "m"),
        "--name",
        "occ-demo",
    )
    one, two = (pd.read_parquet(tmp_path / "m" / f"occ-demo-{s}" / "samples.parquet") for s in ("1.0", "2.0"))
    assert set(one.scale) == {1.0} and set(two.scale) == {2.0}
    assert (one.occluder.values == two.occluder.values).all() and (one.center_x.values == two.center_x.values).all()
    assert two.box_x1.max() <= 95 and two.box_y1.max() <= 111  # the release clips at W-1, H-1
    assert (two.box_area_ratio >= one.box_area_ratio - 1e-6).all()


def test_occluder_subsets_and_user_libraries(tmp_path: Path):
    lib = shared(SHARED_OCCLUDERS)
    run(
        "build",
        "--src",
        "demo",
        "--occluders",
        str(lib),
        "--categories",
        "cup,hand",
        "--out",
        str(tmp_path / "o"),
        "--manifests",
        str(tmp_path / "m"),
        "--name",
        "sub",
    )
    df = pd.read_parquet(tmp_path / "m" / "sub" / "samples.parquet")
    assert set(df.occluder_category) == {"cup", "hand"}
    run(
        "build",
        "--src",
        "demo",
        "--occluders",
        str(lib),
        "--exclude-categories",
        "hand",
        "--out",
        str(tmp_path / "o"),
        "--manifests",
        str(tmp_path / "m"),
        "--name",
        "exc",
    )
    assert "hand" not in set(pd.read_parquet(tmp_path / "m" / "exc" / "samples.parquet").occluder_category)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--src", "/no/such/folder"], "no such folder or list file"),
        (["--src", "webface"], "OCCGEN_SRC_WEBFACE"),
        (["--src", "demo", "--scales", "1:0:5"], "step > 0"),
        (["--src", "demo", "--scales", "abc"], "start:step:stop"),
        (["--src", "demo", "--scales", "-1"], "positive"),
        (["--src", "demo", "--occluders", "/no/such/dir"], "no such folder"),
        (["--src", "EMPTY"], "no images found"),
        (["--src", "demo", "--occluders", "EMPTY"], "no occluder images"),
        (["--src", "demo", "--occluders", "BROKEN"], "cannot be read"),
        (["--src", "demo", "--categories", "hats"], "unknown category"),
    ],
)
def test_user_errors_are_one_line_without_traceback(tmp_path: Path, args: list[str], message: str):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken" / "cup").mkdir(parents=True)
    (tmp_path / "broken" / "cup" / "0001.png").write_bytes(b"\x89PNG broken")
    args = [{"EMPTY": str(tmp_path / "empty"), "BROKEN": str(tmp_path / "broken")}.get(a, a) for a in args]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "occgen",
            "build",
            *args,
            "--out",
            str(tmp_path / "o"),
            "--manifests",
            str(tmp_path / "m"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_default_library_matches_the_paper_occlusion_figures_on_lfw_mini(tmp_path: Path):
    """Algorithm 1 with the project's library occludes ~18.76/43.09/52.00% of LFW faces at s = 1, 2, 3."""
    src = shared("lfw-mini") / "aligned-112x96"
    run(
        "build",
        "--src",
        str(src),
        "--scales",
        "1,2,3",
        "--per-scale",
        "--copies",
        "25",
        "--seed",
        "100",
        "--out",
        str(tmp_path / "o"),
        "--manifests",
        str(tmp_path / "m"),
        "--name",
        "cal",
        "-q",
    )
    for scale, paper in (("1.0", 18.76), ("2.0", 43.09), ("3.0", 52.00)):
        df = pd.read_parquet(tmp_path / "m" / f"cal-{scale}" / "samples.parquet")
        assert len(df) == 48 * 25
        assert abs(100 * df.box_area_ratio.mean() - paper) < 3.0, (scale, df.box_area_ratio.mean())
