"""occgen mask: MaskTheFace-layout templates warped onto real LFW faces (aligned crops and raw photos), built like
`occgen build` (byte-identical for any -j, resumable), with unusable landmarks recorded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import files, shared
from conftest import run_cli as run
from PIL import Image

from occgen.align.transform import TEMPLATES
from occgen.images import decode_array
from occgen.occlude.face import Face, problem, read_table
from occgen.occlude.masks import SIDE_VIEW_YAW, homography, load_masks, project, view_of, warp_mask
from occgen.writer import read_tar

MASKS = "occluders-masktheface"


def alpha_at(image: Image.Image, point: np.ndarray) -> int:
    x, y = (int(round(v)) for v in point)
    return image.getchannel("A").getpixel((x, y))


def test_homography_fits_exactly_through_four_points_and_in_least_squares_through_six():
    src = np.array([[0, 0], [10, 0], [10, 10], [0, 10], [5, 0], [5, 10]], dtype=float)
    true = np.array([[1.2, 0.1, 3.0], [-0.2, 0.9, 5.0], [0.01, 0.002, 1.0]])
    np.testing.assert_allclose(project(homography(src, project(true, src)), src), project(true, src), atol=1e-9)
    np.testing.assert_allclose(homography(src[:4], project(true, src[:4])), true, atol=1e-9)


@pytest.mark.parametrize("crop", list(TEMPLATES))
def test_every_mask_covers_mouth_and_nose_tip_and_leaves_the_eyes_on_aligned_faces(crop: str):
    masks = load_masks(shared(MASKS))
    template = TEMPLATES[crop]
    face = Face(template.points)
    assert view_of(face) == "front"
    for kind in masks.kinds:
        warped = warp_mask(masks, kind, face, template.size, None)
        for name, point in zip(("nose tip", "left mouth corner", "right mouth corner"), template.points[2:]):
            assert alpha_at(warped.image, point) >= 128, f"{kind} leaves the {name} bare"
        for name, point in zip(("left eye", "right eye"), template.points[:2]):
            assert alpha_at(warped.image, point) < 128, f"{kind} covers the {name}"
        # the mask is a lower-face mask: nothing of it above the eyes, and it spans the face's width
        x0, y0, x1, y1 = warped.image.getchannel("A").getbbox()
        assert y0 > template.points[:2, 1].max() and x1 - x0 > 1.5 * face.eye_distance


def test_masks_follow_the_landmarks_of_raw_photos():
    """Real raw LFW photos with their MediaPipe landmarks: the view follows the yaw, and the mask covers the nose
    tip and both mouth corners and leaves both eyes visible on nearly every face (a misplaced or mirrored mask
    fails most of them)."""
    root = shared("lfw-mini/raw-250x250-deepfunneled")
    table = read_table(shared("lfw-mini/landmarks_mediapipe.txt"))
    masks = load_masks(shared(MASKS), ("surgical", "N95", "cloth", "KN95"))
    checked = good = 0
    views = set()
    for rel, points in sorted(table.points.items()):
        size = Image.open(root / rel).size
        assert problem(points, size[::-1]) is None, rel
        face = Face(points)
        view = view_of(face)
        views.add(view)
        assert (view == "left") == (face.yaw < -SIDE_VIEW_YAW) and (view == "right") == (face.yaw > SIDE_VIEW_YAW)
        for kind in masks.kinds:
            warped = warp_mask(masks, kind, face, size, None)
            assert warped.template.view == view
            covered = all(alpha_at(warped.image, p) >= 128 for p in points[2:])
            visible = all(alpha_at(warped.image, p) < 128 for p in points[:2])
            checked, good = checked + 1, good + (covered and visible)
    assert checked == 48 * 4 and good >= 0.95 * checked, f"{good} of {checked} masks sit right"
    assert views == {"front", "left", "right"}  # lfw-mini has turned heads both ways


def test_mask_pairs_set_on_aligned_lfw(tmp_path: Path):
    src = shared("lfw-mini/aligned-112x96")
    common = ["mask", "--src", src, "--masks", shared(MASKS), "--pairs", shared("lfw-mini/pairs_mini.txt")]
    common += ["--colors", "original,steelblue,#202020", "--K", "4", "--seed", "7", "--shard-size", "16", "-q"]
    for label, jobs in (("a", 1), ("b", 2)):
        out = run(*common, "-j", jobs, "--out", tmp_path / label / "out", "--manifests", tmp_path / label / "m")
    assert "pairs: N-O: 40 pairs (20 same)" in out.output and "preview ->" in out.output
    a, b = files(tmp_path / "a"), files(tmp_path / "b")
    card = [d.pop("m/mask-aligned-112x96/README.md").replace(b"/b/", b"/a/") for d in (a, b)]
    assert a == b and card[0] == card[1]  # byte-identical for any worker count
    manifest = tmp_path / "a" / "m" / "mask-aligned-112x96"
    samples = pd.read_parquet(manifest / "samples.parquet")
    pairs = pd.read_parquet(manifest / "pairs.parquet")
    by_key = samples.set_index("key")
    assert not by_key.loc[pairs["key1"], "occluded"].any() and by_key.loc[pairs["key2"], "occluded"].all()
    masked = samples[samples["occluded"]]
    assert (masked["placement"] == "mask").all() and (masked["mask_view"] == "front").all()
    assert set(masked["occluder_category"]) <= {
        "surgical",
        "surgical_blue",
        "surgical_green",
        "N95",
        "KN95",
        "cloth",
        "gas",
    }
    assert masked["occluder_category"].nunique() >= 4 and masked["mask_color"].nunique(dropna=False) == 3
    labels = pd.read_parquet(manifest / "labels-k4.parquet")
    assert (labels.set_index("key").loc[masked["key"], "pattern"] > 0).all()
    assert_masks_sit_on_aligned_faces(manifest, src)
    text = (manifest / "README.md").read_text()
    assert "MaskTheFace layout" in text and "occgen mask --src" in text


def assert_masks_sit_on_aligned_faces(manifest: Path, src: Path) -> None:
    """Each masked sample of a set of aligned 112x96 faces: its mask's box holds the nose tip and both mouth
    corners and stays below the eyes, it covers a real share of the face, and the rendered image (read back from
    the shards) keeps both eye centres as they were in the input; every sample's image is in the shards."""
    samples = pd.read_parquet(manifest / "samples.parquet")
    masked = samples[samples["occluded"]]
    points = TEMPLATES["112x96"].points
    for _, r in masked.iterrows():
        assert r.box_x0 <= points[3, 0] and r.box_x1 > points[4, 0] and r.box_y0 <= points[2, 1] < r.box_y1
        assert r.box_y0 > points[:2, 1].max()
    assert len(masked) and masked["pixel_area_ratio"].between(0.12, 0.5).all()
    shards = json.loads((manifest / "shards.json").read_text())["shards"]
    images = {}
    for shard in shards:
        for member, data in read_tar(manifest / shard["path"]):
            if member.endswith(".jpg"):
                images[member[:-4]] = decode_array(data, member)
    assert set(images) == set(samples["key"])
    for _, r in masked.iterrows():
        original = np.asarray(Image.open(src / r.src).convert("RGB"), dtype=np.int16)
        for x, y in points[:2].round().astype(int):
            patch = (slice(y - 2, y + 3), slice(x - 2, x + 3))
            assert np.abs(images[r.key][patch].astype(np.int16) - original[patch]).mean() < 12
    assert (manifest / "preview.png").is_file()


def test_mask_all_pairs_of_some_lfw_people_takes_the_faces_and_pairs_build_takes(tmp_path: Path):
    """`occgen mask --pairs all --identities` on real LFW: the same faces and the same pairs (byte for byte) as
    `occgen build --pairs all` and its four O_LFW-style groups with that seed, so a masked set and Algorithm 1 sets
    of the same test people pair up face for face; the masks sit right; any -j gives the same bytes; a killed
    run resumes to them."""
    src = shared("lfw-112x96")
    people = ["AJ_Cook", "Aaron_Peirsol", "Abdullah_Gul", "Adrien_Brody", "Al_Gore"]  # 1, 4, 19, 12, 8 images
    (tmp_path / "ids.txt").write_text("\n".join(people) + "\n")
    common = ["--src", src, "--identities", tmp_path / "ids.txt", "--pairs", "all", "--max-per-identity", 3]
    common += ["--seed", 100, "--shard-size", 8, "-q"]
    where = lambda d: ["--out", tmp_path / d / "out", "--manifests", tmp_path / d / "m"]  # noqa: E731
    masked = run("mask", *common, "--masks", shared(MASKS), "--name", "sm", *where("a"), "-j", 2)
    assert "N-O: 78 pairs (12 genuine, 66 impostor) among 13 images" in masked.output
    run("build", *common, "--scales", 2, "--name", "no", *where("a"), "-j", 1)
    run("build", *common, "--region-group", "all", "--name", "olfw", *where("a"), "-j", 1)
    m = tmp_path / "a" / "m"
    sm = pd.read_parquet(m / "sm" / "samples.parquet").set_index("key")
    for other in ("no", "olfw-upper", "olfw-lower", "olfw-random", "olfw-large"):
        assert (m / other / "pairs.parquet").read_bytes() == (m / "sm" / "pairs.parquet").read_bytes(), other
        samples = pd.read_parquet(m / other / "samples.parquet").set_index("key")
        assert samples.index.equals(sm.index) and (samples["src"] == sm["src"]).all()
        clean = ~samples["occluded"]
        assert (samples.loc[clean, "sha256"] == sm.loc[clean, "sha256"]).all()  # the same unoccluded first images
    pairs = pd.read_parquet(m / "sm" / "pairs.parquet")
    assert set(pairs["src1"].str.split("/").str[0]) | set(pairs["src2"].str.split("/").str[0]) == set(people)
    assert not sm.loc[pairs["key1"], "occluded"].any() and sm.loc[pairs["key2"], "occluded"].all()
    assert_masks_sit_on_aligned_faces(m / "sm", src)
    # -j 1 gives the same bytes as -j 2; a run killed mid-way resumes to them
    run("mask", *common, "--masks", shared(MASKS), "--name", "sm", *where("b"), "-j", 1)
    before = files(tmp_path / "b")
    (tmp_path / "b" / "m" / "sm" / "shards" / "sm-000001.json").unlink()
    (tmp_path / "b" / "out" / "sm-000002.tar").write_bytes(b"truncated")
    again = run("mask", *common, "--masks", shared(MASKS), "--name", "sm", *where("b"), "-j", 1)
    assert "already done" in again.output and files(tmp_path / "b") == before
    card = "m/sm/README.md"
    assert {k: v for k, v in before.items() if k != card} == {
        k: v for k, v in files(tmp_path / "a").items() if k.startswith(("m/sm/", "out/sm-")) and k != card
    }


def test_mask_resumes_byte_for_byte(tmp_path: Path):
    args = ["mask", "--src", shared("lfw-mini/aligned-112x96"), "--masks", shared(MASKS), "--types", "surgical,N95"]
    args += ["--shard-size", "12", "--out", tmp_path / "out", "--manifests", tmp_path / "m", "--name", "sm", "-j", "2"]
    run(*args)
    before = files(tmp_path)
    (tmp_path / "m" / "sm" / "shards" / "sm-000001.json").unlink()  # a run killed before shard 1 was marked done
    (tmp_path / "out" / "sm-000002.tar").write_bytes(b"truncated")
    again = run(*args)
    assert "24 samples written" in again.output and "24 already done" in again.output
    assert files(tmp_path) == before
    (tmp_path / "out" / "sm-000000.tar").write_bytes(b"flipped")  # and `occgen verify --repair` restores a shard
    assert "repaired 1 of 1 shards" in run("verify", tmp_path / "m" / "sm", "--repair", "-j", "1").output
    assert files(tmp_path) == before
    changed = run(*args[:-2], "-j", "1", "--types", "surgical", ok=False)
    assert changed.exit_code == 2 and "other option categories" in changed.output


def _raw_tree(tmp_path: Path) -> tuple[Path, Path]:
    """lfw-mini's raw photos plus two from lfw-raw-250 whose landmarks are missing (NA) or marked outlier, and a
    landmark file for them in which one more face has its eyes and mouth swapped (an implausible fit)."""
    mini, raw250 = shared("lfw-mini"), shared("lfw-raw-250")
    root = tmp_path / "raw"
    for person in (mini / "raw-250x250-deepfunneled").iterdir():
        (root / person.name).mkdir(parents=True)
        for image in person.iterdir():
            os.symlink(image, root / person.name / image.name)
    lines = (mini / "landmarks_mediapipe.txt").read_text().splitlines()
    extra = ("Peter_Mugyeni/Peter_Mugyeni_0001.jpg", "Tara_Kirk/Tara_Kirk_0001.jpg")
    for rel in extra:
        (root / rel).parent.mkdir(exist_ok=True)
        os.symlink(raw250 / rel, root / rel)
    lines += [ln for ln in (raw250 / "landmarks_mediapipe.txt").read_text().splitlines() if ln.split("\t")[0] in extra]
    fields = lines[1].split("\t")  # the first face: eyes and mouth corners swapped
    lines[1] = "\t".join([fields[0], *fields[7:11], *fields[5:7], *fields[1:5], *fields[11:]])
    landmarks = tmp_path / "landmarks.tsv"
    landmarks.write_text("\n".join(lines) + "\n")
    return root, landmarks


def test_raw_photos_use_their_landmarks_and_unusable_ones_are_recorded(tmp_path: Path):
    root, landmarks = _raw_tree(tmp_path)
    args = ["mask", "--src", root, "--masks", shared(MASKS), "--landmarks", landmarks, "--out", tmp_path / "out"]
    result = run(*args, "--manifests", tmp_path / "m", "--name", "raw", "-j", "1", "--max-errors", "3", "-q")
    assert "47 samples written, 3 errors" in result.output
    manifest = tmp_path / "m" / "raw"
    errors = pd.read_parquet(manifest / "errors.parquet").set_index("input")["reason"]
    first = sorted(p.relative_to(root).as_posix() for p in root.glob("*/*"))[0]
    assert "implausible fit" in errors[first]
    assert "marks it 'outlier'" in errors["Tara_Kirk/Tara_Kirk_0001.jpg"]
    assert "has none for it" in errors["Peter_Mugyeni/Peter_Mugyeni_0001.jpg"]
    samples = pd.read_parquet(manifest / "samples.parquet")
    assert samples["occluded"].all() and set(samples["mask_view"]) == {"front", "left", "right"}
    table = read_table(landmarks)
    for _, r in samples.iterrows():  # the box follows each photo's own landmarks
        points = table.points[r.src]
        assert r.box_x0 <= points[2:, 0].min() and r.box_x1 > points[2:, 0].max()
        assert r.box_y0 <= points[2, 1] and r.box_y1 > points[3:, 1].max() and r.box_y0 > points[:2, 1].min()
        assert (r.yaw < -SIDE_VIEW_YAW) == (r.mask_view == "left")
    # as a pairs set: the face with swapped landmarks is the clean first image of a pair, which is still written
    pairs = ["--pairs", shared("lfw-mini/pairs_mini.txt"), "--manifests", tmp_path / "m", "--name", "rawpairs"]
    run(*args, *pairs, "-j", "1", "-q", "--max-errors", "3")
    rows = pd.read_parquet(tmp_path / "m" / "rawpairs" / "samples.parquet").set_index("src")
    assert first in rows.index and not rows.loc[[first], "occluded"].any() and rows["yaw"].isna().sum() == 1
    # one error over the limit (3 of 50 = 6% > --max-errors 2): the set is still written, the exit says so
    over = run(*args, "--manifests", tmp_path / "m", "--name", "raw", "-j", "1", "--max-errors", "2", ok=False)
    assert over.exit_code == 1 and "more inputs failed than --max-errors 2" in over.output


def test_landmarks_from_an_align_record(tmp_path: Path):
    mini = shared("lfw-mini")
    src = tmp_path / "raw"
    src.mkdir()
    for person in sorted((mini / "raw-250x250-deepfunneled").iterdir())[:3]:
        os.symlink(person, src / person.name)
    align = ["align", "--src", src, "--out", tmp_path / "aligned", "--landmarks", mini / "landmarks_mediapipe.txt"]
    run(*align, "--manifests", tmp_path / "m", "--name", "al", "--ignore-missing", "-j", "1", "-q")
    record = tmp_path / "m" / "al" / "align.parquet"
    args = ["mask", "--src", src, "--masks", shared(MASKS), "--landmarks", record, "--types", "cloth"]
    run(*args, "--out", tmp_path / "out", "--manifests", tmp_path / "m", "--name", "rec", "-j", "1", "-q")
    samples = pd.read_parquet(tmp_path / "m" / "rec" / "samples.parquet")
    assert len(samples) == 12 and samples["occluded"].all() and set(samples["occluder_category"]) == {"cloth"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--masks", "nowhere"], "no masks.cfg there"),
        (["--types", "snorkel"], "--types: snorkel not in"),
        (["--colors", "blue,notacolour"], "'notacolour' is not a colour"),
        (["--both"], "--both masks both images"),
        (["--impostors", "5"], "--impostors and --max-per-identity shape all-pairs sets: they go with --pairs all"),
        (["--identities", "nowhere.txt"], "nowhere.txt"),
    ],
)
def test_mask_user_errors_are_one_line(tmp_path: Path, extra: list[str], message: str):
    args = ["mask", "--src", shared("lfw-mini/aligned-112x96"), "--masks", shared(MASKS), "-j", "1"]
    if extra[0] == "--masks":
        args = args[:3] + ["--masks", tmp_path / "nowhere", "-j", "1"]
    else:
        args += extra
    result = run(*args, "--out", tmp_path / "o", "--manifests", tmp_path / "m", ok=False)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    if extra[0] == "--masks":
        assert "github.com/aqeelanwar/MaskTheFace" in result.output
