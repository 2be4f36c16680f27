"""The project's occluder library (occluders/), its calibration, and loading other PDSN-layout folders."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from occgen.errors import UserError
from occgen.images import load_rgb
from occgen.occlude.calibrate import calibrate
from occgen.occlude.coverage import expected_box_fraction
from occgen.occlude.occluders import CATEGORIES, DEFAULT_LIBRARY, REFERENCE_FACE, load_library
from occgen.occlude.render import ScaledOccluder, occlude, place, scaled_size
from tests.conftest import shared

#: The FROM paper's mean occluded fraction of the face on LFW for s = 1, 2, 3.
PAPER = {1.0: 0.1876, 2.0: 0.4309, 3.0: 0.5200}
TOLERANCE = 0.03


@pytest.fixture(scope="module")
def library():
    return load_library()


def _catalog() -> list[dict[str, str]]:
    with (DEFAULT_LIBRARY / "catalog.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_default_library_has_every_category_with_rgba_images(library):
    assert library.root == DEFAULT_LIBRARY
    assert library.categories == tuple(sorted(CATEGORIES))
    for category in CATEGORIES:
        members = [o for o in library.occluders if o.category == category]
        assert len(members) >= 4, category
    for o in library.occluders:
        with Image.open(DEFAULT_LIBRARY / o.name) as im:
            assert im.mode == "RGBA", o.name
            assert max(im.size) <= 160, o.name
            alpha = np.asarray(im.getchannel("A"))
        assert alpha[0].any() and alpha[-1].any() and alpha[:, 0].any() and alpha[:, -1].any(), (
            f"{o.name} is not cropped to its visible pixels"
        )
        assert (alpha < 255).any(), f"{o.name} has no transparency"


def test_catalog_matches_files_and_sizes_are_plausible(library):
    rows = _catalog()
    assert list(rows[0]) == ["file", "category", "source", "licence", "width", "height"]
    on_disk = sorted(p.relative_to(DEFAULT_LIBRARY).as_posix() for p in DEFAULT_LIBRARY.glob("*/*.png"))
    listed = (DEFAULT_LIBRARY / "occluder.txt").read_text().split()
    assert sorted(r["file"] for r in rows) == on_disk == sorted(listed)
    assert [o.name for o in library.occluders] == listed
    W, H = REFERENCE_FACE
    by_name = {o.name: o for o in library.occluders}
    for r in rows:
        o = by_name[r["file"]]
        assert r["category"] == o.category == r["file"].split("/")[0]
        assert r["source"] and r["licence"]
        w, h = int(r["width"]), int(r["height"])
        assert o.size == (w, h)
        # At s = 1 an occluder covers part of the face: neither a speck nor more than the face.
        assert 16 <= w <= W and 16 <= h <= H and w * h <= 0.7 * W * H, r
        # Calibration keeps each image's aspect ratio, up to rounding to whole pixels.
        assert abs(w / h - o.image.width / o.image.height) <= (w + 1) / (h - 1) - (w - 1) / (h + 1), r
    total = sum(p.stat().st_size for p in DEFAULT_LIBRARY.rglob("*") if p.is_file())
    assert total < 2_000_000
    readme = (DEFAULT_LIBRARY / "README.md").read_text()
    assert all(f"`{r['file']}`" in readme for r in rows)
    assert (DEFAULT_LIBRARY / "LICENSES" / "fluentui-emoji.LICENSE").is_file()
    assert (DEFAULT_LIBRARY / "LICENSES" / "openclipart-png.copyright").is_file()


def test_expected_box_fraction_equals_enumeration_over_all_centres():
    W, H = REFERENCE_FACE
    members = [("a", (70, 28)), ("a", (1, 1)), ("b", (200, 5)), ("c", (33, 111))]
    for compat in ("paper", "from"):
        for scale in (1.0, 2.5):
            by_cat: dict[str, list[float]] = {}
            for category, size in members:
                sz = scaled_size(size, scale, (W, H), compat)
                total = sum(place((x, y), sz, (W, H), compat)[1].area for x in range(W) for y in range(H))
                by_cat.setdefault(category, []).append(total / (W * H) ** 2)
            brute = np.mean([np.mean(v) for v in by_cat.values()])
            assert expected_box_fraction(members, scale, compat=compat) == pytest.approx(brute, abs=1e-12)


def test_catalog_sizes_meet_the_paper_figures_exactly(library):
    members = [(o.category, o.size) for o in library.occluders]
    for scale, target in PAPER.items():
        assert abs(expected_box_fraction(members, scale) - target) < TOLERANCE, scale


def test_catalog_is_what_the_calibration_gives(library):
    sizes, fit = calibrate([(o.category, o.image.width / o.image.height) for o in library.occluders])
    assert sizes == [o.size for o in library.occluders]
    assert all(abs(fit.achieved[s] - t) < 0.01 for s, t in PAPER.items())


def test_algorithm1_on_real_faces_occludes_as_in_the_paper(library):
    faces_dir = shared("lfw-mini") / "aligned-112x96"
    faces = [np.asarray(load_rgb(p)) for p in sorted(faces_dir.glob("*/*.jpg"))]
    assert len(faces) == 48
    rng = np.random.default_rng(100)
    scaled: dict[tuple[int, tuple[int, int]], ScaledOccluder] = {}
    for scale, target in PAPER.items():
        fractions = []
        for face in faces:
            H, W = face.shape[:2]
            assert (W, H) == REFERENCE_FACE
            for _ in range(100):
                i = library.choose(rng)
                size = scaled_size(library.occluders[i].size, scale, (W, H))
                if (i, size) not in scaled:
                    scaled[i, size] = ScaledOccluder(library.occluders[i].image, size)
                occ = scaled[i, size]
                centre = (int(rng.integers(W)), int(rng.integers(H)))
                result = occlude(face, occ, centre)
                assert result.box.area > 0 and 0 <= result.pixel_area <= result.box.area
                fractions.append(result.box.area / (W * H))
        assert abs(np.mean(fractions) - target) < TOLERANCE, (scale, np.mean(fractions))


def test_loads_the_shared_openclipart_fluent_folder():
    root = shared("occluders-openclipart-fluent")
    lib = load_library(root)
    listed = (root / "occluder.txt").read_text().split()
    assert [o.name for o in lib.occluders] == listed
    assert {"book", "cup", "hand", "phone", "sunglasses"} <= set(lib.categories)
    for o in lib.occluders:
        assert o.image.mode == "RGBA"
        assert o.size == o.image.size  # no catalog: native pixel sizes
    hands = load_library(root, categories=("hand",))
    assert hands.categories == ("hand",) and len(hands.occluders) == 13


def _write(path: Path, image: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def test_rgb_only_folder_without_listing_loads_as_opaque_rgba(tmp_path):
    _write(tmp_path / "cup" / "0001.jpg", Image.new("RGB", (30, 40), (200, 10, 10)))
    _write(tmp_path / "cup" / "0002.png", Image.new("RGB", (20, 20), (10, 200, 10)))
    _write(tmp_path / "hand" / "0001.png", Image.new("L", (25, 35), 90))
    (tmp_path / "notes.txt").write_text("not an occluder")
    lib = load_library(tmp_path)
    assert [o.name for o in lib.occluders] == ["cup/0001.jpg", "cup/0002.png", "hand/0001.png"]
    assert lib.categories == ("cup", "hand")
    for o in lib.occluders:
        assert o.image.mode == "RGBA" and o.image.getchannel("A").getextrema() == (255, 255)
        assert o.size == o.image.size
    # choose draws a category uniformly, then a file of it: the lone hand is half the draws.
    rng = np.random.default_rng(0)
    draws = [lib.choose(rng) for _ in range(4000)]
    assert abs(draws.count(2) / len(draws) - 0.5) < 0.03


def test_category_selection_and_its_errors(library):
    two = load_library(categories=("cup", "phone"))
    assert two.categories == ("cup", "phone")
    assert len(two.occluders) == sum(o.category in ("cup", "phone") for o in library.occluders)
    rest = load_library(exclude=("hand", "scarf"))
    assert set(rest.categories) == set(CATEGORIES) - {"hand", "scarf"}
    with pytest.raises(UserError, match="--categories: unknown category hat"):
        load_library(categories=("cup", "hat"))
    with pytest.raises(UserError, match="--exclude-categories: unknown categories bag, hat"):
        load_library(exclude=("hat", "bag"))
    with pytest.raises(UserError, match="leave no occluders"):
        load_library(categories=("cup",), exclude=("cup",))


def test_missing_empty_and_corrupt_folders_raise_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_library(tmp_path / "nowhere")
    (tmp_path / "empty" / "cup").mkdir(parents=True)
    with pytest.raises(UserError, match="no occluder images in"):
        load_library(tmp_path / "empty")

    corrupt = tmp_path / "corrupt"
    _write(corrupt / "cup" / "0001.png", Image.new("RGBA", (30, 30), (1, 2, 3, 255)))
    (corrupt / "cup" / "0002.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    with pytest.raises(UserError, match=r"cup/0002\.png cannot be read"):
        load_library(corrupt)

    truncated = tmp_path / "truncated"
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 4), dtype=np.uint8)
    _write(truncated / "hand" / "0001.png", Image.fromarray(noise, "RGBA"))
    data = (truncated / "hand" / "0001.png").read_bytes()
    (truncated / "hand" / "0001.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"hand/0001\.png cannot be read"):
        load_library(truncated)


def test_bad_listing_or_catalog_raise_user_errors(tmp_path):
    _write(tmp_path / "cup" / "0001.png", Image.new("RGBA", (30, 30), (1, 2, 3, 255)))
    (tmp_path / "occluder.txt").write_text("cup/0001.png\ncup/0002.png\n")
    with pytest.raises(UserError, match="lists 1 missing file"):
        load_library(tmp_path)
    (tmp_path / "occluder.txt").write_text("0001.png\n")
    with pytest.raises(UserError, match="not in a category folder"):
        load_library(tmp_path)
    (tmp_path / "occluder.txt").write_text("# comment\ncup/0001.png\n")
    (tmp_path / "catalog.csv").write_text("file,width,height\ncup/0009.png,10,10\n")
    with pytest.raises(UserError, match="has no row for 'cup/0001.png'"):
        load_library(tmp_path)
    (tmp_path / "catalog.csv").write_text("file,width,height\ncup/0001.png,ten,10\n")
    with pytest.raises(UserError, match="integer sizes"):
        load_library(tmp_path)
    (tmp_path / "catalog.csv").write_text("file,width,height\ncup/0001.png,0,10\n")
    with pytest.raises(UserError, match="must be positive"):
        load_library(tmp_path)
    (tmp_path / "catalog.csv").write_text("file,width,height\ncup/0001.png,12,34\n")
    assert load_library(tmp_path).occluders[0].size == (12, 34)
