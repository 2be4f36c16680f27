"""occgen build --placement anchored and --region-group (O_LFW-style sets) on real LFW faces: occluders sit where
their category belongs, groups keep to their half of the face, builds resume and reproduce byte for byte."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import files, shared
from conftest import run_cli as run
from PIL import Image

from occgen.align.transform import TEMPLATES
from occgen.occlude.anchors import LARGE_COVER, face_area
from occgen.occlude.face import Face, read_table
from occgen.occlude.occluders import DEFAULT_LIBRARY

ALIGNED = "lfw-mini/aligned-112x96"
POINTS = TEMPLATES["112x96"].points


def build(tmp_path: Path, name: str, *args: object) -> pd.DataFrame:
    run("build", *args, "--out", tmp_path / "out", "--manifests", tmp_path / "m", "--name", name, "-j", "1", "-q")
    return pd.read_parquet(tmp_path / "m" / name / "samples.parquet")


def pasted_alpha(row: pd.Series, library: Path) -> np.ndarray:
    """The alpha the sample's occluder was pasted with, over its raw box (the build resizes it just so)."""
    size = (row.raw_x1 - row.raw_x0, row.raw_y1 - row.raw_y0)
    image = Image.open(library / row.occluder).convert("RGBA").resize(size, Image.Resampling.BILINEAR)
    return np.asarray(image.getchannel("A"))


def covers(row: pd.Series, library: Path, point: np.ndarray) -> bool:
    alpha = pasted_alpha(row, library)
    x, y = int(round(point[0])) - row.raw_x0, int(round(point[1])) - row.raw_y0
    return 0 <= y < alpha.shape[0] and 0 <= x < alpha.shape[1] and alpha[y, x] >= 128


def face_cover(row: pd.Series, library: Path, box: tuple[float, ...]) -> float:
    """The share of the (clipped) face box under the occluder's covering pixels."""
    fx0, fy0, fx1, fy1 = (round(v) for v in box)
    alpha = pasted_alpha(row, library) >= 128
    mask = np.zeros((row.height, row.width), bool)
    x0, y0 = max(row.raw_x0, 0), max(row.raw_y0, 0)
    x1, y1 = min(row.raw_x1, row.width), min(row.raw_y1, row.height)
    mask[y0:y1, x0:x1] = alpha[y0 - row.raw_y0 : y1 - row.raw_y0, x0 - row.raw_x0 : x1 - row.raw_x0]
    return mask[fy0:fy1, fx0:fx1].mean()


def test_anchored_occluders_sit_where_their_category_belongs_on_aligned_lfw(tmp_path: Path):
    samples = build(tmp_path, "anc", "--src", shared(ALIGNED), "--placement", "anchored", "--copies", "4")
    assert len(samples) == 192 and samples["occluded"].all() and samples["scale"].isna().all()
    assert set(samples["occluder_category"]) == {
        "book_cover", "cup", "eye_mask", "eyeglasses", "hand", "mouth_mask", "phone", "scarf", "sunglasses"
    }  # fmt: skip
    face = Face(POINTS)
    x0, y0, x1, y1 = face_area(face, (96, 112))
    for _, r in samples.iterrows():
        eyes = [covers(r, DEFAULT_LIBRARY, p) for p in POINTS[:2]]
        if r.occluder_category in ("sunglasses", "eye_mask"):
            assert all(eyes), f"{r.occluder} leaves an eye bare"
        if r.occluder_category in ("sunglasses", "eyeglasses", "eye_mask"):
            assert r.anchor == "eyes" and r.box_y0 < POINTS[:2, 1].min() and r.box_y1 > POINTS[:2, 1].max()
            assert r.box_y1 < POINTS[3, 1]  # not down to the mouth
        if r.occluder_category == "mouth_mask":
            assert covers(r, DEFAULT_LIBRARY, POINTS[3]) and covers(r, DEFAULT_LIBRARY, POINTS[4])
            assert not any(eyes)
        if r.occluder_category == "scarf":  # over the mouth and down past the chin
            assert covers(r, DEFAULT_LIBRARY, POINTS[3]) and covers(r, DEFAULT_LIBRARY, POINTS[4]) and r.box_y1 >= 108
        if r.anchor == "anywhere":
            assert x0 <= r.center_x <= x1 and y0 <= r.center_y <= y1
    assert (tmp_path / "m" / "anc" / "preview.png").is_file()
    assert "anchored (each category where it sits" in (tmp_path / "m" / "anc" / "README.md").read_text()


def test_anchored_sunglasses_follow_raw_photos_landmarks_and_reproduce_byte_for_byte(tmp_path: Path):
    landmarks = shared("lfw-mini/landmarks_mediapipe.txt")
    common = ["build", "--src", shared("lfw-mini/raw-250x250-deepfunneled"), "--landmarks", landmarks]
    common += ["--placement", "anchored", "--categories", "sunglasses,eye_mask", "--copies", "2", "--shard-size", "24"]
    for label, jobs in (("a", 1), ("b", 2)):
        run(*common, "-j", jobs, "--out", tmp_path / label / "o", "--manifests", tmp_path / label / "m", "-q")
    a, b = files(tmp_path / "a"), files(tmp_path / "b")
    card = [d.pop("m/occ-raw-250x250-deepfunneled/README.md").replace(b"/b/", b"/a/") for d in (a, b)]
    assert a == b and card[0] == card[1]
    # resumed after a kill that left shard 2 unmarked and shard 3 truncated: the same bytes again
    manifest = tmp_path / "a" / "m" / "occ-raw-250x250-deepfunneled"
    (manifest / "shards" / "occ-raw-250x250-deepfunneled-000002.json").unlink()
    (tmp_path / "a" / "o" / "occ-raw-250x250-deepfunneled-000003.tar").write_bytes(b"cut")
    again = run(*common, "-j", "2", "--out", tmp_path / "a" / "o", "--manifests", tmp_path / "a" / "m", "-q")
    assert "48 samples written" in again.output and "48 already done" in again.output
    assert files(tmp_path / "a") == {**a, "m/occ-raw-250x250-deepfunneled/README.md": card[0]}
    samples = pd.read_parquet(manifest / "samples.parquet")
    table = read_table(landmarks)
    for _, r in samples.iterrows():
        points = table.points[r.src]
        assert all(covers(r, DEFAULT_LIBRARY, p) for p in points[:2]), f"{r.key}: an eye is bare"
        assert abs(r.yaw - Face(points).yaw) < 1e-3


def test_the_anchor_table_is_data_beside_the_library(tmp_path: Path):
    library = tmp_path / "lib"
    shutil.copytree(DEFAULT_LIBRARY / "sunglasses", library / "shades")
    args = ["--src", shared(ALIGNED), "--placement", "anchored", "--occluders", library]
    missing = run("build", *args, "--out", tmp_path / "o", "--manifests", tmp_path / "m", ok=False)
    assert missing.exit_code == 2 and "says nothing about shades" in missing.output and "anchors.csv" in missing.output
    (library / "anchors.csv").write_text("category,anchor,down,width_min,width_max,jitter\nshades,mouth,0,1.5,1.5,0\n")
    samples = build(tmp_path, "shades", *args)
    assert (samples["anchor"] == "mouth").all()
    for _, r in samples.iterrows():  # centred on the mouth, as the user's table says
        assert r.box_y0 < POINTS[3, 1] < r.box_y1 and r.box_y0 > POINTS[2, 1] - 10
    # the shared clip-art library (no anchors.csv: the project's table covers its categories, book and hat too)
    other = build(tmp_path, "clipart", "--src", shared(ALIGNED), "--placement", "anchored", "--occluders",
                  shared("occluders-openclipart-fluent"), "--copies", "3")  # fmt: skip
    assert {"book", "hat"} <= set(other["occluder_category"]) and other["occluded"].all()


def test_region_groups_keep_to_their_part_of_aligned_faces(tmp_path: Path):
    args = ["--src", shared(ALIGNED), "--region-group", "all", "--pairs", shared("lfw-mini/pairs_mini.txt"), "--both"]
    for jobs, where in ((2, tmp_path), (1, tmp_path / "j1")):
        run("build", *args, "--out", where / "o", "--manifests", where / "m", "--name", "olfw", "-j", jobs, "-q")
    one = {k: v.replace(b"/j1/", b"/") for k, v in files(tmp_path / "j1").items()}
    two = {k: v for k, v in files(tmp_path).items() if not k.startswith("j1/")}
    assert one == two and len(one) > 20  # byte-identical for any worker count (cards once their paths agree)
    face = Face(POINTS)
    nose_y = POINTS[2, 1]
    box = face_area(face, (96, 112))
    for group in ("upper", "lower", "random", "large"):
        manifest = tmp_path / "m" / f"olfw-{group}"
        samples = pd.read_parquet(manifest / "samples.parquet")
        pairs = pd.read_parquet(manifest / "pairs.parquet")
        assert (pairs["protocol"] == "O-O").all() and len(pairs) == 40
        assert samples.set_index("key").loc[pd.concat([pairs["key1"], pairs["key2"]]), "occluded"].all()
        assert (samples["placement"] == f"group-{group}").all() and samples["occluder_category"].nunique() >= 5
        if group == "upper":
            assert (samples["box_y1"] <= nose_y).all() and (samples["box_y0"] >= box[1] - 1).all()
        if group == "lower":
            assert (samples["box_y0"] >= nose_y).all()
        if group in ("upper", "lower", "random"):  # on the face, at a plausible size
            assert ((samples["box_x1"] > box[0]) & (samples["box_x0"] < box[2])).all()
            assert samples["pixel_area_ratio"].between(0.0, 0.4).all()
        if group == "large":
            library = DEFAULT_LIBRARY
            assert all(face_cover(r, library, box) >= LARGE_COVER for _, r in samples.iterrows())
        assert (manifest / "preview.png").is_file() and "O_LFW-style" in (manifest / "README.md").read_text()


def test_region_groups_on_raw_photos_use_each_photos_nose_line(tmp_path: Path):
    landmarks = shared("lfw-mini/landmarks_mediapipe.txt")
    table = read_table(landmarks)
    for group in ("upper", "lower", "large"):
        samples = build(tmp_path, group, "--src", shared("lfw-mini/raw-250x250-deepfunneled"), "--landmarks",
                        landmarks, "--region-group", group)  # fmt: skip
        assert len(samples) == 48
        for _, r in samples.iterrows():
            face = Face(table.points[r.src])
            if group == "upper":
                assert r.box_y1 <= face.nose[1]
            elif group == "lower":
                assert r.box_y0 >= face.nose[1]
            else:
                assert face_cover(r, DEFAULT_LIBRARY, face_area(face, (250, 250))) >= LARGE_COVER


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--placement", "anchored", "--scales", "2"], "drop --scales"),
        (["--region-group", "upper", "--regions"], "drop --scales, --per-scale"),
        (["--landmarks", "x.txt"], "give --placement anchored or --region-group too"),
        (["--region-group", "large", "--occluders", "GLASSES"], "--region-group large needs occluders"),
        (["--placement", "anchored", "--size", "100x100"], "matches no crop template"),
    ],
)
def test_placement_user_errors_are_one_line(tmp_path: Path, extra: list[str], message: str):
    if "GLASSES" in extra:  # open frames only: nothing can cover half a face
        glasses = tmp_path / "glasses" / "eyeglasses"
        glasses.mkdir(parents=True)
        shutil.copy(DEFAULT_LIBRARY / "eyeglasses" / "0002.png", glasses)
        extra = [str(glasses.parent) if e == "GLASSES" else e for e in extra]
    result = run("build", "--src", shared(ALIGNED), *extra, "--out", tmp_path / "o", "--manifests", tmp_path / "m",
                 ok=False)  # fmt: skip
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
