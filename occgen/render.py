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


def scaled_size(size: tuple[int, int], scale: float, face: tuple[int, int], compat: Compat = "paper") -> tuple[int, int]:
    """Size of the occluder after step 2 of Algorithm 1, capped at the face size (W, H)."""
    (w, h), (W, H) = size, face
    if compat == "from":
        return max(1, min(W - 1, int(scale * w))), max(1, min(H - 1, int(scale * h)))
    return max(1, min(W, round(scale * w))), max(1, min(H, round(scale * h)))


def place(center: tuple[int, int], size: tuple[int, int], face: tuple[int, int], compat: Compat = "paper") -> tuple[Box, Box]:
    """Steps 3-4: the raw box of a (w, h) occluder centred at (cx, cy), and that box clipped to the face."""
    (cx, cy), (w, h), (W, H) = center, size, face
    x0, y0 = cx - w // 2, cy - h // 2
    raw = Box(x0, y0, x0 + w, y0 + h)
    xmax, ymax = (W - 1, H - 1) if compat == "from" else (W, H)
    clipped = Box(max(x0, 0), max(y0, 0), min(raw.x1, xmax), min(raw.y1, ymax))
    return raw, clipped


class ScaledOccluder:
    """An occluder resized to its final size, with what pasting and pixel counting need precomputed.

    Built once per (occluder, size) and reused: resizing dominates the cost of a paste otherwise.
    """

    def __init__(self, rgba: Image.Image, size: tuple[int, int], compat: Compat = "paper"):
        scaled = rgba.resize(size, Image.Resampling.BILINEAR)
        self.size = size
        self.compat = compat
        if compat == "from":
            self.rgb = scaled.convert("RGB")
            self.mask = None
            cover = np.ones((size[1], size[0]), dtype=np.int64)
        else:
            self.rgb = scaled.convert("RGB")
            alpha = scaled.getchannel("A")
            self.mask = None if alpha.getextrema()[0] == 255 else alpha
            cover = (np.asarray(alpha) >= ALPHA_COVER).astype(np.int64)
        # Summed-area table: covered pixels inside any sub-rectangle in O(1).
        self._sat = np.zeros((size[1] + 1, size[0] + 1), dtype=np.int64)
        self._sat[1:, 1:] = cover.cumsum(0).cumsum(1)

    def covered(self, x0: int, y0: int, x1: int, y1: int) -> int:
        """Covering pixels in the occluder-local half-open rectangle [x0, x1) x [y0, y1)."""
        s = self._sat
        return int(s[y1, x1] - s[y0, x1] - s[y1, x0] + s[y0, x0])


@dataclass(frozen=True)
class Occlusion:
    image: Image.Image
    raw_box: Box
    box: Box
    pixel_area: int


def occlude(face: Image.Image, occluder: ScaledOccluder, center: tuple[int, int]) -> Occlusion:
    """Step 5: paste the scaled occluder centred at ``center``; returns the new image and its geometry.

    ``pixel_area`` counts face pixels under the occluder (alpha >= ALPHA_COVER, or the whole box in
    ``from`` mode).
    """
    W, H = face.size
    raw, box = place(center, occluder.size, (W, H), occluder.compat)
    out = face.copy()
    out.paste(occluder.rgb, (raw.x0, raw.y0), occluder.mask)
    if box.area == 0:
        return Occlusion(out, raw, box, 0)
    pixel_area = occluder.covered(box.x0 - raw.x0, box.y0 - raw.y0, box.x1 - raw.x0, box.y1 - raw.y0)
    return Occlusion(out, raw, box, pixel_area)
