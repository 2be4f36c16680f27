"""Five-point face alignment, pure: crop templates, the least-squares similarity fit, plausibility, the warp.

Coordinates follow the landmark convention of MTCNN, OpenCV and the published templates: the centre of pixel
(i, j) is at (x=i, y=j). A transform is a 2x3 matrix ``M`` mapping source pixel coordinates to crop coordinates,
``crop = M @ [x, y, 1]``. Landmarks are (5, 2) arrays in the order left eye, right eye, nose, left mouth corner,
right mouth corner. ``warp`` converts M to Pillow's convention (pixel centres at +0.5) internally.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image

from occgen.errors import UserError

#: Defaults for the plausibility checks (see ``fit_face``).
MAX_RESIDUAL = 10.0  # RMS px in the crop; the eyes are ~35 px apart, so 10 px means the points disagree badly
MAX_OUTSIDE = 0.5  # largest share of the crop that may fall outside the source image (filled black)
MIN_SPREAD = 2.0  # px in the source: landmarks closer together than this are degenerate


@dataclass(frozen=True)
class Template:
    """Where the five landmarks go in a crop of ``width`` x ``height`` pixels."""

    name: str
    width: int
    height: int
    points: np.ndarray  # (5, 2) x, y in crop pixels

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)


_SPHEREFACE = np.array(
    [[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366], [33.5493, 92.3655], [62.7299, 92.2041]]
)
#: SphereFace/CosFace 112x96 (FROM's input) and the ArcFace/insightface 112x112 crop, which is the same
#: template shifted 8 px right.
TEMPLATES: dict[str, Template] = {
    "112x96": Template("112x96", 96, 112, _SPHEREFACE),
    "112x112": Template("112x112", 112, 112, _SPHEREFACE + np.array([8.0, 0.0])),
}


def template_for(size: str) -> Template:
    """The template for a ``HEIGHTxWIDTH`` size string (the paper's way of naming 112x96)."""
    try:
        return TEMPLATES[size.strip().lower()]
    except KeyError:
        raise UserError(f"unknown crop size {size!r}: choose one of {', '.join(TEMPLATES)} (height x width)") from None


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) taking ``src`` onto ``dst``.

    Umeyama's closed form (1991). Raises ValueError for degenerate ``src`` (all points equal).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - src_mean, dst - dst_mean
    var = (s**2).sum() / len(src)
    if not var > 1e-12:
        raise ValueError("degenerate landmarks: all points coincide")
    u, sv, vt = np.linalg.svd(d.T @ s / len(src))
    flip = np.array([1.0, 1.0 if np.linalg.det(u) * np.linalg.det(vt) > 0 else -1.0])
    rot = (u * flip) @ vt
    scale = float((sv * flip).sum() / var)
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = dst_mean - scale * rot @ src_mean
    return m


def apply(m: np.ndarray, points: npt.ArrayLike) -> np.ndarray:
    """Map (n, 2) points through a 2x3 transform."""
    return np.asarray(points, dtype=np.float64) @ m[:, :2].T + m[:, 2]


def invert(m: np.ndarray) -> np.ndarray:
    """The inverse of an invertible 2x3 affine transform."""
    a_inv = np.linalg.inv(m[:, :2])
    return np.hstack([a_inv, -(a_inv @ m[:, 2])[:, None]])


def point_errors(points: np.ndarray, m: np.ndarray, template: Template) -> np.ndarray:
    """Distance in crop pixels of each fitted landmark from its template position."""
    return np.linalg.norm(apply(m, points) - template.points, axis=1)


@functools.lru_cache(maxsize=4)
def _pixel_grid(width: int, height: int) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    grid = np.column_stack([xs.ravel(), ys.ravel()]).astype(np.float64)
    grid.setflags(write=False)
    return grid


def outside_fraction(m: np.ndarray, image_size: tuple[int, int], template: Template) -> float:
    """Share of crop pixels whose source position lies outside the image (they come out black)."""
    inverse = invert(m)
    w, h = image_size
    corners = apply(
        inverse, [(0, 0), (template.width - 1, 0), (0, template.height - 1), (template.width - 1, template.height - 1)]
    )
    if ((corners >= -0.5) & (corners <= (w - 0.5, h - 0.5))).all():
        return 0.0  # an affine map sends the crop to a parallelogram: corners inside means all inside
    src = apply(inverse, _pixel_grid(template.width, template.height))
    inside = (src[:, 0] >= -0.5) & (src[:, 0] <= w - 0.5) & (src[:, 1] >= -0.5) & (src[:, 1] <= h - 0.5)
    return float(1.0 - inside.mean())


@dataclass(frozen=True)
class Fit:
    """One face's similarity fit and whether it is plausible."""

    matrix: np.ndarray | None  # 2x3, None when the landmarks cannot be fitted at all
    residual: float  # RMS distance (crop px) of the fitted landmarks from the template; NaN without a fit
    outside: float  # share of the crop outside the source image; NaN without a fit
    problem: str | None  # why the fit is implausible, None when it is fine


def fit_face(
    points: np.ndarray,
    image_size: tuple[int, int],
    template: Template,
    max_residual: float = MAX_RESIDUAL,
) -> Fit:
    """Fit ``points`` (5, 2) to ``template`` and judge the fit.

    Implausible: non-finite or degenerate landmarks, an RMS residual above ``max_residual`` (points that no
    similarity maps onto a face: swapped, mislabelled or from two faces), or a crop more than MAX_OUTSIDE
    outside the image.
    """
    points = np.asarray(points, dtype=np.float64)
    nan = float("nan")
    if points.shape != (5, 2) or not np.isfinite(points).all():
        return Fit(None, nan, nan, "landmarks missing or not finite")
    if np.ptp(points, axis=0).max() < MIN_SPREAD:
        return Fit(None, nan, nan, f"degenerate landmarks (all within {MIN_SPREAD:g} px)")
    m = fit_similarity(points, template.points)
    residual = float(np.sqrt((point_errors(points, m, template) ** 2).mean()))
    outside = outside_fraction(m, image_size, template)
    problem = None
    if residual > max_residual:
        problem = f"implausible fit: landmark residual {residual:.1f} px > {max_residual:g} px"
    elif outside > MAX_OUTSIDE:
        problem = f"implausible fit: {outside:.0%} of the crop lies outside the image"
    return Fit(m, residual, outside, problem)


def mean_transform(points: np.ndarray, template: Template) -> np.ndarray:
    """The dataset-mean transform: the fit of the mean landmarks of ``points`` (n, 5, 2).

    Used for faces without a usable fit, as for the shared LFW crops; it assumes the images are framed alike
    (as LFW's deep-funneled 250x250 images are).
    """
    return fit_similarity(np.asarray(points, dtype=np.float64).mean(axis=0), template.points)


def warp(image: Image.Image, m: np.ndarray, template: Template) -> Image.Image:
    """The aligned crop: bilinear resampling of ``image`` through ``m``.

    Border handling: crop pixels whose source position falls outside the image are constant black (0, 0, 0).
    """
    # Pillow samples output pixel (x, y) at continuous source position inv @ [x + .5, y + .5, 1], pixel
    # centres at +0.5; shift M into that convention before inverting.
    shifted = m.copy()
    shifted[:, 2] += 0.5 - m[:, :2] @ np.array([0.5, 0.5])
    inv = invert(shifted)
    return image.transform(
        template.size,
        Image.Transform.AFFINE,
        tuple(inv.ravel()),
        resample=Image.Resampling.BILINEAR,
        fillcolor=(0, 0, 0),
    )
