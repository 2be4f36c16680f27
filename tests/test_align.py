"""The pure alignment layer: templates, the Umeyama fit, plausibility, the warp's pixel convention and border."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from occgen.align import transform
from occgen.errors import UserError

T96 = transform.TEMPLATES["112x96"]


def similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.radians(angle_deg)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.hstack([rot, [[tx], [ty]]])


def test_templates_are_the_published_ones():
    assert T96.size == (96, 112)
    np.testing.assert_allclose(T96.points[0], [30.2946, 51.6963])
    t112 = transform.template_for("112X112")
    assert t112.size == (112, 112)
    # The ArcFace template is the SphereFace one moved 8 px right (the 16 extra columns split evenly).
    np.testing.assert_allclose(t112.points, T96.points + [8, 0])
    np.testing.assert_allclose(t112.points[0], [38.2946, 51.6963])
    with pytest.raises(UserError, match="112x96, 112x112"):
        transform.template_for("128x128")


@pytest.mark.parametrize("angle, scale, tx, ty", [(0, 1, 0, 0), (17.5, 0.42, -31.0, 12.5), (-160, 2.7, 80, -5)])
def test_fit_recovers_an_exact_similarity(angle, scale, tx, ty):
    m = similarity(angle, scale, tx, ty)
    src = transform.apply(transform.invert(m), T96.points)
    fit = transform.fit_similarity(src, T96.points)
    np.testing.assert_allclose(fit, m, atol=1e-9)
    np.testing.assert_allclose(transform.point_errors(src, fit, T96), 0, atol=1e-9)


def test_fit_is_least_squares_and_never_reflects():
    rng = np.random.default_rng(5)
    src = T96.points * 2.1 + rng.normal(0, 1.5, (5, 2)) + [40, 60]
    fit = transform.fit_similarity(src, T96.points)
    cost = (transform.point_errors(src, fit, T96) ** 2).sum()
    # Any small change of the four similarity parameters does worse.
    a, b = fit[0, 0], fit[1, 0]
    for delta in np.eye(4) * 1e-4:
        for sign in (1, -1):
            da, db, dx, dy = sign * delta
            m = np.array([[a + da, -(b + db), fit[0, 2] + dx], [b + db, a + da, fit[1, 2] + dy]])
            assert (transform.point_errors(src, m, T96) ** 2).sum() > cost
    mirrored = src * [-1, 1]
    assert np.linalg.det(transform.fit_similarity(mirrored, T96.points)[:, :2]) > 0
    with pytest.raises(ValueError, match="degenerate"):
        transform.fit_similarity(np.ones((5, 2)), T96.points)


def test_fit_face_flags_implausible_landmarks():
    m = similarity(5, 0.85, -56, -45)
    good = transform.apply(transform.invert(m), T96.points)
    fit = transform.fit_face(good, (250, 250), T96)
    assert fit.problem is None and fit.residual < 1e-9 and fit.outside == 0
    swapped = good[[1, 0, 2, 3, 4]]  # left and right eye exchanged
    assert "residual" in transform.fit_face(swapped, (250, 250), T96).problem
    upside_down = good[[3, 4, 2, 0, 1]]  # mouth where the eyes are
    assert "residual" in transform.fit_face(upside_down, (250, 250), T96).problem
    assert transform.fit_face(swapped, (250, 250), T96, max_residual=100).problem is None
    nan = good.copy()
    nan[2, 0] = np.nan
    assert transform.fit_face(nan, (250, 250), T96).matrix is None
    assert "degenerate" in transform.fit_face(np.full((5, 2), 7.0), (250, 250), T96).problem
    corner = transform.fit_face(good - [115, 115], (250, 250), T96)  # face at the image's top-left corner
    assert corner.outside > 0.5 and "outside" in corner.problem


def test_warp_puts_landmarks_on_the_template():
    """A dot drawn at a source landmark lands on the template point (pixel centres at integers)."""
    m = similarity(-12, 0.8, -50, -40)
    src_points = transform.apply(transform.invert(m), T96.points)
    for k in range(5):
        x, y = np.round(src_points[k]).astype(int)
        canvas = np.zeros((250, 250, 3), np.uint8)
        canvas[y - 2 : y + 3, x - 2 : x + 3] = 255
        # The crop point of the dot's centre, which is the rounded landmark.
        expected = transform.apply(m, [[x, y]])[0]
        crop = np.asarray(transform.warp(Image.fromarray(canvas), m, T96), float)[..., 0]
        assert crop.shape == (112, 96)
        ys, xs = np.mgrid[0:112, 0:96]
        centroid = np.array([(xs * crop).sum(), (ys * crop).sum()]) / crop.sum()
        np.testing.assert_allclose(centroid, expected, atol=0.15)


def test_warp_border_is_black_and_matches_outside_fraction():
    white = Image.new("RGB", (120, 120), (255, 255, 255))
    m = similarity(0, 1.0, 40, -5)  # crop x = source x + 40: the crop's 40 left columns sample x < 0
    crop = np.asarray(transform.warp(white, m, T96))
    black = (crop.max(axis=2) == 0).mean()
    assert crop[:, :39].max() == 0 and crop[:, 41:].min() == 255
    assert abs(black - transform.outside_fraction(m, white.size, T96)) < 0.02


def test_mean_transform_fits_the_mean_landmarks():
    rng = np.random.default_rng(0)
    pts = transform.apply(transform.invert(similarity(0, 0.85, -56, -45)), T96.points) + rng.normal(0, 2, (30, 5, 2))
    np.testing.assert_allclose(
        transform.mean_transform(pts, T96), transform.fit_similarity(pts.mean(axis=0), T96.points), atol=1e-12
    )
