"""Algorithm 1 of the FROM paper: paste one scaled occluder at a random centre of one aligned face.

Pure functions, no I/O and no randomness: the caller draws the centre (see plan.py), so a sample is a
deterministic function of (face, occluder, scale, centre).

Two geometries:
- ``paper`` (default): the scaled occluder is capped at the face size (W x H), its box is clipped to the
  image, and it is alpha-composited when it has alpha.
- ``from``: the authors' release: size truncated with int() and capped at (W-1, H-1), the occluder pasted as an
  opaque rectangle, and the stored box's right and bottom edges clipped to W-1 and H-1.

Boxes are half-open pixel rectangles (x0, y0, x1, y1): pixels x0 <= x < x1, y0 <= y < y1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

Compat = Literal["paper", "from"]
COMPAT_MODES: tuple[str, ...] = ("paper", "from")

#: An occluder pixel counts as covering the face when its alpha is at least this (out of 255).
ALPHA_COVER = 128


@dataclass(frozen=True)
class Box:
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def area(self) -> int:
        return max(0, self.x1 - self.x0) * max(0, self.y1 - self.y0)

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x0, self.y0, self.x1, self.y1)


def scaled_size(
    size: tuple[int, int], scale: float, face: tuple[int, int], compat: Compat = "paper"
) -> tuple[int, int]:
    """Size of the occluder after step 2 of Algorithm 1, capped at the face size (W, H)."""
    (w, h), (W, H) = size, face
    if compat == "from":
        return max(1, min(W - 1, int(scale * w))), max(1, min(H - 1, int(scale * h)))
    return max(1, min(W, round(scale * w))), max(1, min(H, round(scale * h)))


def place(
    center: tuple[int, int], size: tuple[int, int], face: tuple[int, int], compat: Compat = "paper"
) -> tuple[Box, Box]:
    """Steps 3-4: the raw box of a (w, h) occluder centred at (cx, cy), and that box clipped to the face."""
    (cx, cy), (w, h), (W, H) = center, size, face
    x0, y0 = cx - w // 2, cy - h // 2
    raw = Box(x0, y0, x0 + w, y0 + h)
    xmax, ymax = (W - 1, H - 1) if compat == "from" else (W, H)
    clipped = Box(max(x0, 0), max(y0, 0), min(raw.x1, xmax), min(raw.y1, ymax))
    return raw, clipped


class ScaledOccluder:
    """An occluder resized to its final size, with what pasting and pixel counting need precomputed.

    Built once per (occluder, size) and reused: resizing dominates the cost of a paste otherwise. Pasting works
    on uint8 RGB arrays, so a JPEG face goes from decoder to encoder without a trip through PIL.
    """

    def __init__(self, rgba: Image.Image, size: tuple[int, int], compat: Compat = "paper"):
        scaled = np.asarray(rgba.convert("RGBA").resize(size, Image.Resampling.BILINEAR))
        self.size = size
        self.compat = compat
        self.rgb = np.ascontiguousarray(scaled[..., :3])
        alpha = scaled[..., 3:].astype(np.uint16)
        self._blend: tuple[np.ndarray, np.ndarray] | None = None
        if compat == "from":  # the release pastes an opaque rectangle
            cover = np.ones(scaled.shape[:2], dtype=np.int64)
        else:
            if alpha.min() < 255:  # premultiplied colour (+128 to round) and inverse alpha
                self._blend = (self.rgb * alpha + 128, 255 - alpha)
            cover = (alpha[..., 0] >= ALPHA_COVER).astype(np.int64)
        # Summed-area table: covered pixels inside any sub-rectangle in O(1).
        self._sat = np.zeros((size[1] + 1, size[0] + 1), dtype=np.int64)
        self._sat[1:, 1:] = cover.cumsum(0).cumsum(1)

    def covered(self, x0: int, y0: int, x1: int, y1: int) -> int:
        """Covering pixels in the occluder-local half-open rectangle [x0, x1) x [y0, y1)."""
        s = self._sat
        return int(s[y1, x1] - s[y0, x1] - s[y1, x0] + s[y0, x0])

    def paste(self, face: np.ndarray, region: Box, origin: tuple[int, int]) -> None:
        """Paste in place over ``region`` of ``face`` (H x W x 3 uint8); ``origin`` is the raw box's corner."""
        ox, oy = region.x0 - origin[0], region.y0 - origin[1]
        local = (slice(oy, oy + region.y1 - region.y0), slice(ox, ox + region.x1 - region.x0))
        target = face[region.y0 : region.y1, region.x0 : region.x1]
        if self._blend is None:
            target[...] = self.rgb[local]
        else:
            premul, inverse = self._blend
            mixed = target * inverse[local]  # uint16: c*a + f*(255-a) + 128 <= 65153 never overflows
            mixed += premul[local]  # y = x + 128; round(x / 255) == (y + (y >> 8)) >> 8 exactly
            mixed += mixed >> 8
            mixed >>= 8
            target[...] = mixed


@dataclass(frozen=True)
class Occlusion:
    image: np.ndarray  # H x W x 3 uint8
    raw_box: Box
    box: Box
    pixel_area: int


def occlude(face: np.ndarray, occluder: ScaledOccluder, center: tuple[int, int]) -> Occlusion:
    """Step 5: paste the scaled occluder centred at ``center`` on a copy of ``face`` (H x W x 3 uint8).

    ``pixel_area`` counts face pixels under the occluder (alpha >= ALPHA_COVER, or the whole box in ``from``
    mode). In ``from`` mode the paste reaches the image border even though the stored box stops one pixel short.
    """
    H, W = face.shape[:2]
    raw, box = place(center, occluder.size, (W, H), occluder.compat)
    out = face.copy()
    visible = Box(max(raw.x0, 0), max(raw.y0, 0), min(raw.x1, W), min(raw.y1, H))
    if visible.area:
        occluder.paste(out, visible, (raw.x0, raw.y0))
    if box.area == 0:
        return Occlusion(out, raw, box, 0)
    pixel_area = occluder.covered(box.x0 - raw.x0, box.y0 - raw.y0, box.x1 - raw.x0, box.y1 - raw.y0)
    return Occlusion(out, raw, box, pixel_area)
