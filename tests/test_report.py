"""occgen stats, preview, the dataset card, occgen occluders and `occgen label` over every manifest."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import shared
from PIL import Image

from occgen.cli import main
from occgen.label.labels import labels_path
from occgen.occlude.calibrate import TARGETS
from occgen.occlude.coverage import expected_box_fraction
from occgen.occlude.occluders import load_library


def run(*args: str, ok: bool = True):
    result = CliRunner().invoke(main, list(args))
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """lfw-mini at s = 1, 2, 3, 60 copies per image (2,880 samples), labelled for K=5, in its own working folder."""
    root = tmp_path_factory.mktemp("report")
    faces = shared("lfw-mini/aligned-112x96")
    cwd = Path.cwd()
    try:
        os.chdir(root)
        run(
            "build",
            "--src",
            str(faces),
            "--scales",
            "1,2,3",
            "--copies",
            "60",
            "--clean-ratio",
            "0.1",
            "--name",
            "mini",
            "-j",
            "1",
            "--shard-size",
            "1000",
            "--K",
            "5",
        )
    finally:
        os.chdir(cwd)
    return root


def test_stats_agree_with_the_manifest_and_the_library_calibration(built, tmp_path):
    manifest = built / "manifests" / "mini"
    out = run("stats", str(manifest), "--out", str(tmp_path)).output
    stats = json.loads((tmp_path / "stats.json").read_text())
    samples = pd.read_parquet(manifest / "samples.parquet")
    occ = samples[samples["occluded"]]
    assert stats["samples"] == 2880 and stats["occluded"] == len(occ) and stats["clean"] == 2880 - len(occ)
    for row in stats["scales"]:
        g = occ[occ["scale"] == row["scale"]]
        assert row["samples"] == len(g)
        assert row["box_mean"] == pytest.approx(g["box_area_ratio"].mean())
        assert row["pixel_median"] == pytest.approx(g["pixel_area_ratio"].median())
        assert abs(row["box_mean"] - TARGETS[row["scale"]]) < 0.02  # the library's calibration, on real faces
        assert f"{100 * row['box_mean']:.2f}%" in out
    assert sum(stats["categories"].values()) == len(occ) and len(stats["categories"]) == 9
    assert sum(stats["shards"].values()) == 2880 and len(stats["shards"]) == 3
    hist = stats["identities"]["histogram"]
    assert hist == {"value": [240], "count": [12]}  # 12 people x 4 images x 60 copies
    labels = pd.read_parquet(labels_path(manifest, 5))
    k5 = stats["labels"]["k5"]
    assert dict(zip(k5["histogram"]["value"], k5["histogram"]["count"])) == labels["pattern"].value_counts().to_dict()
    for name in ("area.png", "counts.png", "labels-k5.png"):
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG" and im.width > 600


def test_preview_sheets_show_each_scale_with_boxes_and_the_labelled_pattern(built, tmp_path):
    manifest = built / "manifests" / "mini"
    out = run(
        "preview",
        str(manifest),
        "--out",
        str(tmp_path),
        "-n",
        "5",
        "--boxes",
        "--grid",
        "5",
        "--zoom",
        "2",
        "--cols",
        "5",
    ).output
    assert [line.split(":")[0] for line in out.splitlines()] == ["s=1", "s=2", "s=3", "clean"]
    sheet = np.asarray(Image.open(tmp_path / "sheet-s=2.png").convert("RGB"))
    assert sheet.shape == (12 + 4 + 1 * (224 + 12 + 4) + 4, 5 * (192 + 4) + 4, 3)
    red = (sheet[..., 0] > 240) & (sheet[..., 1] < 60) & (sheet[..., 2] < 60)
    assert red.sum() > 5 * 100  # every occluded box outlined
    again = tmp_path / "again"
    run(
        "preview", str(manifest), "--out", str(again), "-n", "5", "--boxes", "--grid", "5", "--zoom", "2", "--cols", "5"
    )
    assert (again / "sheet-s=2.png").read_bytes() == (tmp_path / "sheet-s=2.png").read_bytes()  # seeded


def test_preview_pattern_from_the_labels_file_equals_labelling_on_the_fly(built):
    from occgen.report.preview import patterns_for

    manifest = built / "manifests" / "mini"
    rows = pd.read_parquet(manifest / "samples.parquet").sort_values("key", ignore_index=True)
    from_file = patterns_for(manifest, rows, 5)
    on_the_fly = patterns_for(manifest, rows, 4)  # no labels-k4 file: computed
    labels = pd.read_parquet(labels_path(manifest, 5)).set_index("key")["pattern"]
    assert (from_file == labels.loc[rows["key"]].to_numpy()).all()
    assert on_the_fly.max() <= 100 and (on_the_fly[~rows["occluded"].to_numpy()] == 0).all()


def test_dataset_card_says_how_it_was_made_and_its_snippets_run(built, monkeypatch, capsys):
    manifest = built / "manifests" / "mini"
    card = (manifest / "README.md").read_text()
    assert "--scales 1,2,3 --copies 60" in card and "seed: 0" in card
    for shard in json.loads((manifest / "shards.json").read_text())["shards"]:
        assert shard["sha256"] in card
    assert "public domain (Open Clip Art Library)" in card and "MIT (Microsoft Fluent Emoji)" in card
    assert "webdataset" in card and "pyarrow" in card
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    assert len(blocks) == 3 and "load_dataset" in blocks[2]  # the Hugging Face one: tests/test_hf.py runs it
    monkeypatch.chdir(built)
    for block in blocks[:2]:
        exec(compile(block, "card", "exec"), {})
    printed = capsys.readouterr().out
    assert "(112, 96, 3)" in printed and "box_area_ratio" in printed


def test_label_without_a_manifest_labels_those_that_lack_the_k(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, ks in (("a", ["--K", "5"]), ("b", [])):
        run("build", "--src", "demo", "--scales", "2", "--name", name, "-j", "1", *ks)
    first = run("label", "--K", "5").output
    assert "already labelled for K=5: a" in first and "labelling manifests/b (K=5)" in first
    assert labels_path(tmp_path / "manifests" / "b", 5).is_file()
    card = (tmp_path / "manifests" / "b" / "README.md").read_text()
    assert "labels k5:" in card and "occgen build --src demo --scales 2 --name b" in card  # card refreshed
    assert "nothing to do" in run("label", "--K", "5").output
    monkeypatch.chdir(tmp_path / "manifests")
    missing = run("label", "--K", "5", ok=False)
    assert missing.exit_code == 2 and "no manifests under manifests/" in missing.output


def test_occluders_reports_the_build_s_expected_area_and_calibrates_a_saturating_library(tmp_path):
    library = load_library()
    out = run("occluders", str(library.root)).output
    members = [(o.category, o.size) for o in library.occluders]
    means = [expected_box_fraction(members, s) for s in (1.0, 2.0, 3.0)]
    assert "library mean" in out and " ".join(f"{100 * m:.2f}%" for m in means) in re.sub(r" +", " ", out)
    assert "Warning" not in out
    big = tmp_path / "big"
    rng = np.random.default_rng(0)
    for cat, (h, w) in {
        "hat": (150, 220),
        "hand": (240, 180),
        "sunglasses": (90, 230),
        "cup": (200, 170),
        "scarf": (120, 250),
        "phone": (250, 130),
    }.items():
        for n in range(2):
            (big / cat).mkdir(parents=True, exist_ok=True)
            rgba = rng.integers(0, 256, (h + 10 * n, w, 4), dtype=np.uint8)
            rgba[..., 3] = 255
            Image.fromarray(rgba, "RGBA").save(big / cat / f"{n:04d}.png")
    warned = run("occluders", str(big))
    assert "saturated at s=2: 100%" in warned.output and "--fit-paper" in warned.output
    fitted = run("occluders", str(big), "--fit-paper", "--out", str(tmp_path / "fit")).output
    assert "fitted" in fitted and not (big / "catalog.csv").exists()
    assert (tmp_path / "fit" / "occluder.txt").read_text().split() == [o.name for o in load_library(big).occluders]
    (tmp_path / "fit" / "catalog.csv").rename(big / "catalog.csv")
    calibrated = load_library(big)
    for s, target in TARGETS.items():
        assert abs(expected_box_fraction([(o.category, o.size) for o in calibrated.occluders], s) - target) < 0.02
    assert "Warning" not in run("occluders", str(big)).output
