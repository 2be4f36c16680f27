"""Algorithm 1 geometry and pasting (occgen.occlude.render), on small generated images."""

from __future__ import annotations

import numpy as np
from PIL import Image

from occgen.occlude.render import Box, ScaledOccluder, occlude, place, scaled_size


def test_scaled_size_is_capped_at_the_face():
    assert scaled_size((60, 80), 1.0, (96, 112)) == (60, 80)
    assert scaled_size((60, 80), 1.5, (96, 112)) == (90, 112)
    assert scaled_size((60, 80), 5.0, (96, 112)) == (96, 112)
    # The authors' release: int() and a cap one pixel short of the face.
    assert scaled_size((60, 80), 1.55, (96, 112), "from") == (93, 111)
    assert scaled_size((60, 80), 5.0, (96, 112), "from") == (95, 111)


def test_place_centres_the_box_and_clips_it_at_the_border():
    raw, box = place((0, 0), (50, 30), (96, 112))
    assert raw == Box(-25, -15, 25, 15) and box == Box(0, 0, 25, 15)
    raw, box = place((95, 111), (51, 31), (96, 112))
    assert raw == Box(70, 96, 121, 127) and box == Box(70, 96, 96, 112)
    _, box = place((95, 111), (51, 31), (96, 112), "from")
    assert box == Box(70, 96, 95, 111)  # right and bottom edges clipped to W-1, H-1
    _, box = place((48, 56), (96, 112), (96, 112))
    assert box == Box(0, 0, 96, 112) and box.area == 96 * 112


def test_occlude_alpha_composites_and_counts_covered_pixels():
    face = np.zeros((112, 96, 3), np.uint8)
    rgba = np.zeros((20, 40, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[5:15, :, 3] = 255  # only the middle band is opaque
    occ = ScaledOccluder(Image.fromarray(rgba, "RGBA"), (40, 20))
    out = occlude(face, occ, (10, 50))
    assert out.raw_box == Box(-10, 40, 30, 60) and out.box == Box(0, 40, 30, 60)
    red = out.image[..., 0] > 0
    assert red.sum() == out.pixel_area == 30 * 10
    assert red[45:55, 0:30].all() and not red[40:45].any()
    assert face.max() == 0  # the input is not modified


def test_alpha_blend_matches_pillow_compositing():
    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, (112, 96, 3), dtype=np.uint8)
    rgba = Image.fromarray(rng.integers(0, 256, (30, 50, 4), dtype=np.uint8), "RGBA")
    out = occlude(face, ScaledOccluder(rgba, (50, 30)), (40, 60))
    ref = Image.fromarray(face)
    ref.paste(rgba.convert("RGB"), (out.raw_box.x0, out.raw_box.y0), rgba.getchannel("A"))
    assert np.abs(out.image.astype(int) - np.asarray(ref).astype(int)).max() <= 1


def test_from_mode_pastes_an_opaque_rectangle():
    face = np.zeros((112, 96, 3), np.uint8)
    rgba = Image.new("RGBA", (40, 20), (255, 0, 0, 0))  # fully transparent, but opaque in 'from' mode
    out = occlude(face, ScaledOccluder(rgba, (40, 20), "from"), (95, 111))
    assert out.box == Box(75, 101, 95, 111)
    assert out.pixel_area == out.box.area
    assert (out.image[..., 0] > 0).sum() == 21 * 11  # pasted up to the last pixel row/column
