"""Benchmark sets: LFW pairs (N-O, O-O), the named regions and occluder groups, PartialLFW-style partial faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import webdataset as wds
from click.testing import CliRunner
from conftest import shared

from occgen.align.transform import TEMPLATES
from occgen.cli import main
from occgen.errors import UserError
from occgen.sets.pairs import read_pairs
from occgen.sets.partial import FACTORS, PARTS, area_range, landmark, partial_face, patch
from occgen.sets.regions import GROUPS, REGIONS, region_box


def run(*args: str, ok: bool = True):
    result = CliRunner().invoke(main, list(args))
    if ok:
        assert result.exit_code == 0, result.output
    return result


def keys_in_shards(manifest: Path) -> list[str]:
    tars = sorted(str(p) for p in (manifest.parent.parent / "shards").glob(f"{manifest.name}-*.tar"))
    return [s["__key__"] for s in wds.WebDataset(tars, shardshuffle=False)]


def test_lfw_view2_pairs_have_6000_pairs_3000_same_in_ten_folds():
    pairs = read_pairs(shared("lfw-meta/pairs.txt"))
    assert len(pairs) == 6000 and sum(p.same for p in pairs) == 3000
    folds = np.array([p.fold for p in pairs])
    assert (np.bincount(folds) == 600).all() and len(np.bincount(folds)) == 10
    assert all(sum(p.same for p in pairs if p.fold == f) == 300 for f in range(10))
    assert pairs[0].first == "Abel_Pacheco/Abel_Pacheco_0001" and pairs[0].second == "Abel_Pacheco/Abel_Pacheco_0004"


def test_bad_pairs_files_are_user_errors(tmp_path):
    bad = tmp_path / "pairs.txt"
    bad.write_text("2 1\nA\t1\t2\nA\t1\tB\t1\n")
    with pytest.raises(UserError, match="promises 2 folds"):
        read_pairs(bad)
    bad.write_text("A\t1\nB\n")
    with pytest.raises(UserError, match="expected 'name i j'"):
        read_pairs(bad)
    faces = shared("lfw-mini/aligned-112x96")
    bad.write_text("1 1\nNobody\t1\t2\nAmelia_Vega\t1\tNobody\t3\n")
    result = run(
        "build",
        "--src",
        str(faces),
        "--pairs",
        str(bad),
        "--out",
        str(tmp_path / "s"),
        "--manifests",
        str(tmp_path / "m"),
        ok=False,
    )
    assert result.exit_code == 2 and "lacks" in result.output and "Nobody/Nobody_0001" in result.output


@pytest.mark.parametrize("protocol, extra", [("N-O", []), ("O-O", ["--both"]), ("N-N", ["--clean-ratio", "1"])])
def test_pairs_build_holds_every_pair_with_its_keys_folds_and_flags(tmp_path, monkeypatch, protocol, extra):
    monkeypatch.chdir(tmp_path)
    faces, pairs_txt = shared("lfw-mini/aligned-112x96"), shared("lfw-mini/pairs_mini.txt")
    run("build", "--src", str(faces), "--pairs", str(pairs_txt), "--scales", "2", "--name", "p", "-j", "1", *extra)
    manifest = tmp_path / "manifests" / "p"
    pairs = pd.read_parquet(manifest / "pairs.parquet")
    samples = pd.read_parquet(manifest / "samples.parquet").set_index("key")
    assert len(pairs) == 40 and pairs["same"].sum() == 20 and (pairs["fold"] == 0).all()
    assert pairs["pair"].tolist() == list(range(40))
    assert str(pairs["pair"].dtype) == "int32" and str(pairs["fold"].dtype) == "int16"
    assert (pairs["protocol"] == protocol).all()
    assert samples.index.is_unique and sorted(keys_in_shards(manifest)) == sorted(samples.index)
    assert set(pairs["key1"]) | set(pairs["key2"]) == set(samples.index)  # every image a pair needs, no more
    assert (samples.loc[pairs["key1"], "src"].to_numpy() == pairs["src1"].to_numpy()).all()
    assert (samples.loc[pairs["key2"], "src"].to_numpy() == pairs["src2"].to_numpy()).all()
    assert (samples.loc[pairs["key1"], "occluded"] == (protocol[0] == "O")).all()
    assert (samples.loc[pairs["key2"], "occluded"] == (protocol[2] == "O")).all()
    first = read_pairs(pairs_txt)[20]  # the first mismatched pair
    assert pairs.loc[20, "src1"].startswith(first.first + ".") and pairs.loc[20, "src2"].startswith(first.second + ".")
    assert not pairs.loc[20, "same"]


def test_region_sets_put_the_occluder_on_the_region_box_with_the_group_s_categories(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    faces = shared("lfw-mini/aligned-112x96")
    out = run("build", "--src", str(faces), "--regions", "--group", "2", "--name", "r", "-j", "1").output
    for name, box in REGIONS.items():
        assert f"manifests/r-{name}" in out
        samples = pd.read_parquet(tmp_path / "manifests" / f"r-{name}" / "samples.parquet")
        assert len(samples) == 48 and samples["occluded"].all()
        boxes = samples[["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy()
        assert (boxes == np.array(box)).all(), name
        assert set(samples["occluder_category"]) <= set(GROUPS[2]) and len(set(samples["occluder_category"])) == 3
    assert GROUPS == {
        1: ("book_cover", "cup", "eye_mask"),
        2: ("eyeglasses", "hand", "mouth_mask"),
        3: ("phone", "scarf", "sunglasses"),
    }
    assert region_box("eyes", (112, 112)) == (18, 30, 98, 70)
    bad = run("build", "--src", str(faces), "--regions", "--scales", "2", ok=False)
    assert bad.exit_code == 2 and "scales do not apply" in bad.output


def test_partial_geometry_keeps_the_scaled_rectangle_and_greys_the_rest():
    template = TEMPLATES["112x96"]
    k = np.linalg.norm(template.points[1] - template.points[0]) / 55.5
    assert k == pytest.approx(0.635, abs=1e-3)
    face = np.random.default_rng(0).integers(0, 256, (112, 96, 3), dtype=np.uint8)
    for part in PARTS:
        for factor in (FACTORS[0], FACTORS[-1]):
            x, y = landmark(part, template)
            x0, y0, x1, y1 = patch(part, factor, template)
            assert (x1 - x0) == pytest.approx(2 * k * (15 + 120 * factor), abs=1)
            assert (y1 - y0) == pytest.approx(2 * k * (10 + 105 * factor), abs=1)
            image, (cx0, cy0, cx1, cy1) = partial_face(face, part, factor, False, template)
            assert (image[cy0:cy1, cx0:cx1] == face[cy0:cy1, cx0:cx1]).all()
            mask = np.ones((112, 96), bool)
            mask[cy0:cy1, cx0:cx1] = False
            assert (image[mask] == 128).all()
            centered, _ = partial_face(face, part, factor, True, template)
            dx, dy = round(48 - x), round(56 - y)
            assert (centered[56, 48] == face[56 - dy, 48 - dx]).all()  # the landmark's pixel moved to the centre
            assert (centered == 128).all(axis=2).sum() == pytest.approx(
                112 * 96 - (cx1 - cx0) * (cy1 - cy0), abs=(cx1 - cx0) + (cy1 - cy0)
            )
    area = area_range(template)
    assert 0.08 < area["reference_min"] < 0.095 and 0.72 < area["reference_max"] < 0.745  # PartialLFW: 9% to 73.7%


def test_partial_build_writes_the_four_protocols_and_is_the_same_for_any_job_count(tmp_path):
    faces, pairs_txt = shared("lfw-mini/aligned-112x96"), shared("lfw-mini/pairs_mini.txt")
    outs = {}
    for jobs in ("1", "2"):
        root = tmp_path / f"j{jobs}"
        result = run(
            "partial",
            "--src",
            str(faces),
            "--pairs",
            str(pairs_txt),
            "--centered",
            "--name",
            "pl",
            "--out",
            str(root / "shards"),
            "--manifests",
            str(root / "manifests"),
            "-j",
            jobs,
            "--shard-size",
            "400",
        )
        outs[jobs] = {p.name: p.read_bytes() for p in sorted((root / "shards").glob("*.tar"))}
    assert outs["1"] == outs["2"] and len(outs["1"]) == 4
    assert "kept area" in result.output and "9% to 73.7%" in result.output
    manifest = tmp_path / "j2" / "manifests" / "pl"
    pairs = pd.read_parquet(manifest / "pairs.parquet")
    counts = pairs.groupby("protocol", sort=False).size().to_dict()
    assert counts == {
        "holistic": 40,
        "partial-holistic": 2 * 40 * 3 * 9,
        "partial-same": 40 * 3 * 9,
        "partial-cross": 2 * 40 * 4 * 9,
    }
    samples = pd.read_parquet(manifest / "samples.parquet").set_index("key")
    assert len(samples) == len(set(pairs["src1"]) | set(pairs["src2"])) * 37
    assert set(pairs["key1"]) | set(pairs["key2"]) <= set(samples.index)
    ph = pairs[pairs["protocol"] == "partial-holistic"].reset_index(drop=True)
    assert (ph["pair"].to_numpy()[::2] == ph["pair"].to_numpy()[1::2]).all()  # each pair doubled
    assert (ph["src1"].to_numpy()[::2] == ph["src2"].to_numpy()[1::2]).all()  # either image is the partial one
    assert (samples.loc[ph["key2"], "part"].to_numpy() == ph["part2"].to_numpy()).all()
    assert (samples.loc[ph["key2"], "factor"].to_numpy() == ph["factor"].to_numpy().astype(np.float32)).all()
    assert (samples.loc[ph["key1"], "part"] == "whole").all() and pairs["centered"].all()
    cross = pairs[pairs["protocol"] == "partial-cross"]
    assert set(zip(cross["part1"], cross["part2"])) == {
        ("left_eye", "right_eye"),
        ("left_eye", "nose"),
        ("left_eye", "mouth"),
        ("nose", "mouth"),
    }
    assert (manifest / "partial.png").stat().st_size > 10_000 and (manifest / "README.md").is_file()
