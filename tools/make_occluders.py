#!/usr/bin/env python3
"""Build the project's own occluder library, ``occluders/``, and calibrate its sizes.

Sources (tool-time only; nothing here is a runtime dependency of occgen):
- Debian ``openclipart-png`` (Open Clip Art Library, public domain), PNGs under /usr/share/openclipart/png;
- npm ``fluentui-emoji`` 1.3.0 (Microsoft Fluent Emoji, MIT), SVGs rendered with ``rsvg-convert``
  (Debian ``librsvg2-bin``);
- drawings made here with Pillow, for the categories the packages barely cover (masks, scarves, glasses).

Regenerate (from the repo root)::

    apt-get update && apt-get install -y openclipart-png librsvg2-bin
    (cd /tmp && npm pack fluentui-emoji@1.3.0 && tar xzf fluentui-emoji-1.3.0.tgz)
    python tools/make_occluders.py --fluent /tmp/package

Every file is cropped to its alpha bounding box and fitted into MAX_SIDE pixels. ``calibrate`` then gives
each file a size on the 112x96 face: its own aspect ratio, an area from a plausible per-category table,
and two global factors fitted so that Algorithm 1's expected clipped-box area matches the FROM paper's LFW
figures (18.76%, 43.09%, 52.00% at s = 1, 2, 3).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import random
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from occgen.occlude.calibrate import BASE_SIZE, TARGETS, Fit, calibrate  # noqa: E402
from occgen.occlude.occluders import CATEGORIES  # noqa: E402

MAX_SIDE = 160
OPENCLIPART_LICENCE = "public domain (Open Clip Art Library)"
FLUENT_LICENCE = "MIT (Microsoft Fluent Emoji)"
DRAWN_LICENCE = "MIT (this project)"
SS = 4  # drawings are made SS times larger and downsampled: Pillow's shapes are not antialiased

RGBA = tuple[int, int, int, int]
Fill = RGBA | Callable[[tuple[int, int]], Image.Image]
Mask = Image.Image
Point = tuple[float, float]


# ----------------------------------------------------------------------------------------------------------
# Drawing helpers: masks in final-pixel units, fills as colours or pattern images, composited at SS x size.


class Canvas:
    """An RGBA drawing SS times its final size; shapes are masks, painted with a colour or a pattern."""

    def __init__(self, w: int, h: int):
        self.size = (w, h)
        self.img = Image.new("RGBA", (w * SS, h * SS), (0, 0, 0, 0))

    def _mask(self, draw: Callable[[ImageDraw.ImageDraw], None]) -> Mask:
        m = Image.new("L", self.img.size, 0)
        draw(ImageDraw.Draw(m))
        return m

    def poly(self, pts: Sequence[Point]) -> Mask:
        return self._mask(lambda d: d.polygon(_sc(pts), fill=255))

    def ellipse(self, box: Sequence[float]) -> Mask:
        return self._mask(lambda d: d.ellipse([v * SS for v in box], fill=255))

    def rrect(self, box: Sequence[float], r: float) -> Mask:
        return self._mask(lambda d: d.rounded_rectangle([v * SS for v in box], radius=r * SS, fill=255))

    def stroke(self, pts: Sequence[Point], width: float, closed: bool = False) -> Mask:
        pts = list(pts) + ([pts[0], pts[1]] if closed else [])
        return self._mask(lambda d: d.line(_sc(pts), fill=255, width=max(1, round(width * SS)), joint="curve"))

    def dots(self, pts: Sequence[Point], r: float) -> Mask:
        def draw(d: ImageDraw.ImageDraw) -> None:
            for x, y in pts:
                d.ellipse([(x - r) * SS, (y - r) * SS, (x + r) * SS, (y + r) * SS], fill=255)

        return self._mask(draw)

    def paint(self, mask: Mask, fill: Fill, opacity: float = 1.0) -> None:
        if isinstance(fill, tuple):
            layer = Image.new("RGBA", self.img.size, fill)
        else:
            layer = fill(self.img.size).convert("RGBA")
        alpha = ImageChops.multiply(layer.getchannel("A"), mask)
        if opacity < 1.0:
            alpha = alpha.point(lambda v: round(v * opacity))
        layer.putalpha(alpha)
        self.img.alpha_composite(layer)

    def done(self) -> Image.Image:
        return self.img.resize(self.size, Image.Resampling.LANCZOS)


def _sc(pts: Sequence[Point]) -> list[tuple[float, float]]:
    return [(x * SS, y * SS) for x, y in pts]


def union(*masks: Mask) -> Mask:
    out = masks[0]
    for m in masks[1:]:
        out = ImageChops.lighter(out, m)
    return out


def minus(a: Mask, b: Mask) -> Mask:
    return ImageChops.subtract(a, b)


def inter(a: Mask, b: Mask) -> Mask:
    return ImageChops.darker(a, b)


def superellipse(
    cx: float, cy: float, a: float, b: float, n: float = 2.0, taper: float = 0.0, lift: float = 0.0, n_pts: int = 120
) -> list[Point]:
    """|x/a|^n + |y/b|^n = 1 around (cx, cy). ``taper`` narrows the bottom (widens the top when negative);
    ``lift`` raises the outer-top quarter (cat-eye), its sign giving which side is outer."""
    pts = []
    for i in range(n_pts):
        t = 2 * math.pi * i / n_pts
        c, s = math.cos(t), math.sin(t)
        x = a * math.copysign(abs(c) ** (2 / n), c)
        y = b * math.copysign(abs(s) ** (2 / n), s)
        x *= 1 - taper * y / b
        if lift and y < 0 and x * lift > 0:
            y -= abs(lift) * (abs(x) / a) ** 3 * b
        pts.append((cx + x, cy + y))
    return pts


def star(cx: float, cy: float, r: float, points: int = 5) -> list[Point]:
    return [
        (
            cx + (r if i % 2 == 0 else r * 0.42) * math.sin(math.pi * i / points),
            cy - (r if i % 2 == 0 else r * 0.42) * math.cos(math.pi * i / points),
        )
        for i in range(2 * points)
    ]


def gradient(top: RGBA, bottom: RGBA, horizontal: bool = False) -> Callable[[tuple[int, int]], Image.Image]:
    def make(size: tuple[int, int]) -> Image.Image:
        n = size[0] if horizontal else size[1]
        t = np.linspace(0.0, 1.0, n)[:, None]
        ramp = np.round(np.array(top) * (1 - t) + np.array(bottom) * t).astype(np.uint8)
        arr = np.broadcast_to(ramp[None, :, :] if horizontal else ramp[:, None, :], (size[1], size[0], 4))
        return Image.fromarray(np.ascontiguousarray(arr), "RGBA")

    return make


def stripes(colours: Sequence[RGBA], width: float, vertical: bool = False) -> Callable[[tuple[int, int]], Image.Image]:
    def make(size: tuple[int, int]) -> Image.Image:
        idx = (np.arange(size[0] if vertical else size[1]) // (width * SS)).astype(int) % len(colours)
        band = np.array(colours, dtype=np.uint8)[idx]
        arr = np.broadcast_to(band[None, :, :] if vertical else band[:, None, :], (size[1], size[0], 4))
        return Image.fromarray(np.ascontiguousarray(arr), "RGBA")

    return make


def plaid(base: RGBA, bands: Sequence[tuple[RGBA, float, float, float]]) -> Callable[[tuple[int, int]], Image.Image]:
    """Tartan: each band (colour, period, offset, width) crosses both ways at half strength."""

    def make(size: tuple[int, int]) -> Image.Image:
        img = np.array(Image.new("RGBA", size, base), dtype=float)
        ys, xs = np.arange(size[1])[:, None] / SS, np.arange(size[0])[None, :] / SS
        for colour, period, offset, width in bands:
            on = (((ys - offset) % period) < width).astype(float) * 0.55 + (((xs - offset) % period) < width) * 0.55
            on = np.clip(on, 0, 0.9)[..., None]
            img = img * (1 - on) + np.array(colour, dtype=float) * on
        return Image.fromarray(np.round(img).astype(np.uint8), "RGBA")

    return make


def knit(base: RGBA, dark: RGBA, pitch: float = 4.0) -> Callable[[tuple[int, int]], Image.Image]:
    """Stocking stitch: columns of small Vs."""

    def make(size: tuple[int, int]) -> Image.Image:
        img = Image.new("RGBA", size, base)
        d = ImageDraw.Draw(img)
        p = pitch * SS
        for x in np.arange(0, size[0] + p, p):
            for y in np.arange(0, size[1] + p, p * 0.8):
                d.line([(x, y), (x + p / 2, y + p * 0.6), (x + p, y)], fill=dark, width=max(1, SS // 2))
        return img

    return make


def speckle(
    base: RGBA, spots: Sequence[RGBA], n: int, r: tuple[float, float], seed: int, shapes: str = "blob"
) -> Callable[[tuple[int, int]], Image.Image]:
    """Scattered spots (tortoise shell) or five-petal flowers, placed by a fixed seed."""

    def make(size: tuple[int, int]) -> Image.Image:
        rnd = random.Random(seed)
        img = Image.new("RGBA", size, base)
        d = ImageDraw.Draw(img)
        for _ in range(n):
            x, y = rnd.uniform(0, size[0]), rnd.uniform(0, size[1])
            rad = rnd.uniform(*r) * SS
            colour = spots[rnd.randrange(len(spots))]
            if shapes == "flower":
                for k in range(5):
                    a = 2 * math.pi * k / 5
                    px, py = x + rad * math.cos(a), y + rad * math.sin(a)
                    d.ellipse([px - rad * 0.7, py - rad * 0.7, px + rad * 0.7, py + rad * 0.7], fill=colour)
                d.ellipse([x - rad * 0.5, y - rad * 0.5, x + rad * 0.5, y + rad * 0.5], fill=(250, 220, 90, 255))
            else:
                d.ellipse([x - rad, y - rad * rnd.uniform(0.5, 1.0), x + rad, y + rad], fill=colour)
        return img

    return make


# ----------------------------------------------------------------------------------------------------------
# Drawn occluders. Each returns an RGBA image at most MAX_SIDE on its long side.


@dataclass(frozen=True)
class Spectacles:
    """Glasses seen from the front: two lenses, a bridge, temple stubs; or one wraparound shield."""

    frame: Fill
    lens: Fill
    frame_width: float
    lens_n: float = 2.0  # superellipse exponent: 2 round, 4+ squarish
    lens_size: tuple[float, float] = (30.0, 24.0)
    taper: float = 0.0
    lift: float = 0.0
    brow: float = 0.0  # extra frame thickness along the top (browline, wayfarer)
    shield: bool = False
    highlight: float = 0.35


def draw_spectacles(spec: Spectacles) -> Image.Image:
    w, h = 160, 64
    cv = Canvas(w, h)
    a, b = spec.lens_size
    cy = h / 2
    if spec.shield:
        top = [(6 + 148 * i / 20, 10 - 5 * math.sin(math.pi * i / 20)) for i in range(21)]
        bottom = [(154 - 148 * i / 20, 52 + 4 * math.sin(math.pi * i / 20)) for i in range(21)]
        lens = minus(cv.poly(top + bottom), cv.ellipse((68, 38, 92, 70)))
        cv.paint(
            union(
                cv.stroke(top + bottom, spec.frame_width, closed=True),
                cv.rrect((0, 12, 12, 20), 3),
                cv.rrect((148, 12, 160, 20), 3),
            ),
            spec.frame,
        )
        cv.paint(lens, spec.lens)
        cv.paint(inter(lens, cv.poly([(20, 12), (60, 12), (40, 48), (10, 48)])), (255, 255, 255, 255), spec.highlight)
        return cv.done()
    centres = (w / 2 - a - 10, w / 2 + a + 10)
    lenses = [
        superellipse(cx, cy, a, b, spec.lens_n, spec.taper, spec.lift * (1 if cx > w / 2 else -1)) for cx in centres
    ]
    rim = union(*(cv.stroke(p, spec.frame_width, closed=True) for p in lenses))
    if spec.brow:
        rim = union(
            rim,
            *(
                inter(
                    cv.stroke(p, spec.frame_width + spec.brow, closed=True),
                    cv.poly([(0, 0), (w, 0), (w, cy - b * 0.2), (0, cy - b * 0.2)]),
                )
                for p in lenses
            ),
        )
    inner_l, inner_r = centres[0] + a, centres[1] - a
    bridge = cv.stroke(
        [(inner_l - 2, cy - b * 0.35), (w / 2, cy - b * 0.6), (inner_r + 2, cy - b * 0.35)],
        max(2.0, spec.frame_width * 0.8),
    )
    temples = union(
        cv.rrect((0, cy - b * 0.75, centres[0] - a + 2, cy - b * 0.75 + max(3, spec.frame_width)), 1.5),
        cv.rrect((centres[1] + a - 2, cy - b * 0.75, w, cy - b * 0.75 + max(3, spec.frame_width)), 1.5),
    )
    glass = union(*(cv.poly(p) for p in lenses))
    cv.paint(glass, spec.lens)
    cv.paint(
        inter(
            glass,
            union(
                *(
                    cv.poly(
                        [
                            (cx - a * 0.7, cy - b),
                            (cx - a * 0.2, cy - b),
                            (cx - a * 0.75, cy + b),
                            (cx - a * 1.1, cy + b),
                        ]
                    )
                    for cx in centres
                )
            ),
        ),
        (255, 255, 255, 255),
        spec.highlight,
    )
    cv.paint(union(rim, bridge, temples), spec.frame)
    return cv.done()


@dataclass(frozen=True)
class SleepMask:
    body: Fill
    strap: RGBA
    trim: RGBA | None = None
    decor: str = ""  # "stars", "eyes", "lace" (scallops in the trim colour) or nothing
    gloss: float = 0.0


def draw_sleep_mask(spec: SleepMask) -> Image.Image:
    w, h = 160, 66
    cv = Canvas(w, h)
    cx, cy = w / 2, 32
    outline = []
    for x, y in superellipse(cx, cy, 62, 27, 2.6, n_pts=160):
        dx = (x - cx) / 22
        if y > cy and abs(dx) < 1:
            y -= 13 * (1 - dx * dx)  # nose notch
        if y < cy and abs(dx) < 1:
            y += 4 * (1 - dx * dx)  # dip over the bridge of the nose
        outline.append((x, y))
    body = cv.poly(outline)
    cv.paint(union(cv.rrect((0, cy - 9, 24, cy + 1), 3), cv.rrect((w - 24, cy - 9, w, cy + 1), 3)), spec.strap)
    if spec.decor == "lace" and spec.trim:
        cv.paint(cv.dots(outline[::4], 3.2), spec.trim)  # scallops: the body covers their inner halves
    cv.paint(body, spec.body)
    if spec.gloss:
        cv.paint(inter(body, cv.ellipse((34, 8, 126, 26))), (255, 255, 255, 255), spec.gloss)
    if spec.trim and spec.decor != "lace":
        cv.paint(cv.stroke(outline, 2.5, closed=True), spec.trim)
    if spec.decor == "stars":
        for x, y, r in ((42, 24, 6), (58, 40, 4), (104, 22, 5), (120, 38, 6.5), (82, 14, 3.5), (30, 38, 3)):
            cv.paint(cv.poly(star(x, y, r)), (250, 214, 80, 255))
        cv.paint(minus(cv.ellipse((72, 30, 90, 48)), cv.ellipse((78, 27, 96, 45))), (245, 240, 200, 255))
    if spec.decor == "eyes":
        for ex in (52, 108):
            lid = [(ex - 15 + 30 * i / 12, 32 + 7 * math.sin(math.pi * i / 12)) for i in range(13)]
            cv.paint(cv.stroke(lid, 2.2), (70, 30, 90, 255))
            for i in (3, 6, 9):
                x, y = lid[i]
                cv.paint(cv.stroke([(x, y), (x + (i - 6) * 0.8, y + 6)], 1.6), (70, 30, 90, 255))
        stitches = superellipse(cx, cy, 57, 22, 2.6, n_pts=60)[::2]
        cv.paint(cv.stroke(stitches, 1.0, closed=True), (250, 250, 250, 255), 0.7)
    return cv.done()


@dataclass(frozen=True)
class FaceMask:
    style: str  # "surgical", "n95", "contour", "cloth", "kn95"
    body: Fill
    loop: RGBA
    detail: RGBA


def draw_face_mask(spec: FaceMask) -> Image.Image:
    w, h = 150, 100
    cv = Canvas(w, h)
    if spec.style in ("surgical", "cloth"):
        top = [(26 + 98 * i / 16, 12 - 4 * math.sin(math.pi * i / 16)) for i in range(17)]
        bottom = [(124 - 98 * i / 16, 84 + 8 * math.sin(math.pi * i / 16)) for i in range(17)]
        outline = top + bottom
        loops = [
            cv.stroke([(28, 16), (8, 22), (4, 50), (10, 76), (28, 80)], 2.2),
            cv.stroke([(122, 16), (142, 22), (146, 50), (140, 76), (122, 80)], 2.2),
        ]
    elif spec.style == "n95":
        outline = superellipse(75, 50, 54, 46, 2.2, taper=0.12)
        loops = [
            cv.rrect((0, 24, 26, 30), 2),
            cv.rrect((124, 24, 150, 30), 2),
            cv.rrect((0, 66, 26, 72), 2),
            cv.rrect((124, 66, 150, 72), 2),
        ]
    else:  # contour and kn95: peaked at the nose and the chin
        side = 24 if spec.style == "contour" else 18
        outline = (
            [
                (side, 30),
                (48, 14),
                (75, 6),
                (102, 14),
                (w - side, 30),
                (w - side, 62),
                (104, 84),
                (75, 94),
                (46, 84),
                (side, 62),
            ]
            if spec.style == "contour"
            else [(side, 50), (36, 26), (75, 8), (114, 26), (w - side, 50), (114, 76), (75, 94), (36, 76)]
        )
        loops = [
            cv.stroke([(side + 4, 26), (6, 30), (2, 50), (6, 70), (side + 4, 72)], 2.2),
            cv.stroke([(w - side - 4, 26), (w - 6, 30), (w - 2, 50), (w - 6, 70), (w - side - 4, 72)], 2.2),
        ]
    body = cv.poly(outline)
    cv.paint(union(*loops), spec.loop)
    cv.paint(body, spec.body)
    if spec.style in ("surgical", "cloth"):
        for y in (34, 50, 66):
            pleat = [(26, y), (124, y)]
            cv.paint(inter(body, cv.stroke(pleat, 2.4)), spec.detail)
            cv.paint(inter(body, cv.stroke([(26, y + 2.5), (124, y + 2.5)], 1.2)), (255, 255, 255, 255), 0.45)
        if spec.style == "surgical":
            cv.paint(cv.stroke([(52, 12), (98, 12)], 2.0), (235, 240, 245, 255))
    elif spec.style == "n95":
        cv.paint(cv.stroke(superellipse(75, 50, 48, 40, 2.2, taper=0.12, n_pts=60), 1.2, closed=True), spec.detail)
        cv.paint(cv.ellipse((88, 46, 112, 70)), (120, 130, 140, 255))
        for k in range(4):
            cv.paint(cv.stroke([(92, 51 + 5 * k), (108, 51 + 5 * k)], 1.4), (70, 78, 88, 255))
        cv.paint(cv.stroke([(54, 12), (96, 12)], 2.2), (180, 185, 190, 255))
    else:
        cv.paint(cv.stroke([(75, 8), (75, 93)], 1.6), spec.detail)
        if spec.style == "kn95":
            inset = superellipse(75, 51, 48, 36, 1.6, n_pts=48)
            cv.paint(inter(body, cv.dots(inset, 0.9)), spec.detail)
    cv.paint(inter(body, cv.ellipse((20, 0, 130, 46))), (255, 255, 255, 255), 0.12)
    return cv.done()


@dataclass(frozen=True)
class Scarf:
    body: Fill
    fringe: RGBA
    tail_right: bool = True


def draw_scarf(spec: Scarf) -> Image.Image:
    w, h = 160, 100
    cv = Canvas(w, h)
    top = [(160 * i / 20, 20 - 10 * math.sin(math.pi * i / 20)) for i in range(21)]
    bottom = [(160 - 160 * i / 20, 62 + 8 * math.sin(math.pi * i / 20)) for i in range(21)]
    band = cv.poly(top + bottom)
    x0 = 96 if spec.tail_right else 30
    tail = cv.poly([(x0, 50), (x0 + 34, 50), (x0 + 38, 90), (x0 + 4, 92)])
    for i in range(10):
        fx = x0 + 5 + 32 * i / 9
        cv.paint(cv.stroke([(fx, 89 + 0.2 * i), (fx + 0.6, 99)], 1.6), spec.fringe)
    cv.paint(tail, spec.body)
    cv.paint(tail, (0, 0, 0, 255), 0.12)
    cv.paint(band, spec.body)
    for y in (34, 48):  # folds
        fold = [(160 * i / 20, y - 8 * math.sin(math.pi * i / 20)) for i in range(21)]
        cv.paint(inter(band, cv.stroke(fold, 3.0)), (0, 0, 0, 255), 0.18)
        cv.paint(inter(band, cv.stroke([(x, y + 3) for x, y in fold], 1.5)), (255, 255, 255, 255), 0.15)
    return cv.done()


DRAWINGS: dict[str, Callable[[], Image.Image]] = {
    # sunglasses
    "aviator sunglasses": partial(
        draw_spectacles,
        Spectacles(
            frame=(196, 160, 70, 255),
            lens=gradient((40, 60, 45, 255), (90, 110, 80, 235)),
            frame_width=1.8,
            lens_n=2.2,
            lens_size=(30, 24),
            taper=0.28,
        ),
    ),
    "wayfarer sunglasses": partial(
        draw_spectacles,
        Spectacles(
            frame=(18, 18, 20, 255),
            lens=gradient((30, 30, 34, 255), (75, 75, 80, 240)),
            frame_width=5.0,
            lens_n=4.0,
            lens_size=(29, 20),
            taper=-0.18,
            brow=3.0,
        ),
    ),
    "round sunglasses": partial(
        draw_spectacles,
        Spectacles(
            frame=(170, 170, 178, 255),
            lens=gradient((110, 60, 30, 250), (200, 130, 70, 230)),
            frame_width=2.0,
            lens_size=(25, 25),
        ),
    ),
    "sport shield sunglasses": partial(
        draw_spectacles,
        Spectacles(
            frame=(230, 60, 40, 255),
            lens=gradient((30, 80, 200, 255), (250, 150, 40, 255), horizontal=True),
            frame_width=3.0,
            shield=True,
            highlight=0.3,
        ),
    ),
    # eyeglasses: clear lenses (alpha below render.ALPHA_COVER) in varied frames
    "round wire eyeglasses": partial(
        draw_spectacles,
        Spectacles(frame=(180, 140, 60, 255), lens=(210, 230, 240, 50), frame_width=1.6, lens_size=(24, 24)),
    ),
    "rectangular black eyeglasses": partial(
        draw_spectacles,
        Spectacles(frame=(25, 25, 28, 255), lens=(210, 230, 240, 45), frame_width=5.0, lens_n=5.0, lens_size=(29, 19)),
    ),
    "tortoise cat-eye eyeglasses": partial(
        draw_spectacles,
        Spectacles(
            frame=speckle(
                (150, 85, 35, 255), [(70, 35, 15, 255), (40, 20, 10, 255), (190, 120, 50, 255)], 240, (1.0, 3.0), seed=7
            ),
            lens=(220, 220, 230, 45),
            frame_width=4.5,
            lens_n=2.8,
            lens_size=(28, 20),
            taper=0.15,
            lift=0.35,
        ),
    ),
    "browline eyeglasses": partial(
        draw_spectacles,
        Spectacles(
            frame=(60, 40, 30, 255),
            lens=(215, 230, 235, 45),
            frame_width=1.6,
            lens_n=3.0,
            lens_size=(28, 21),
            taper=0.1,
            brow=5.0,
        ),
    ),
    "clear acetate eyeglasses": partial(
        draw_spectacles,
        Spectacles(
            frame=(120, 170, 220, 200), lens=(225, 235, 245, 40), frame_width=4.0, lens_n=3.2, lens_size=(27, 22)
        ),
    ),
    # eye masks (sleep masks)
    "black satin sleep mask": partial(
        draw_sleep_mask,
        SleepMask(
            body=gradient((45, 45, 52, 255), (12, 12, 15, 255)),
            strap=(20, 20, 22, 255),
            trim=(110, 110, 120, 255),
            gloss=0.22,
        ),
    ),
    "pink lace sleep mask": partial(
        draw_sleep_mask,
        SleepMask(
            body=gradient((250, 180, 200, 255), (225, 130, 160, 255)),
            strap=(230, 150, 175, 255),
            trim=(255, 250, 250, 255),
            decor="lace",
            gloss=0.15,
        ),
    ),
    "starry night sleep mask": partial(
        draw_sleep_mask,
        SleepMask(body=gradient((30, 40, 110, 255), (15, 20, 60, 255)), strap=(25, 30, 80, 255), decor="stars"),
    ),
    "embroidered eyes sleep mask": partial(
        draw_sleep_mask,
        SleepMask(
            body=knit((190, 160, 225, 255), (170, 140, 205, 255), pitch=3.0),
            strap=(150, 120, 190, 255),
            trim=(120, 90, 160, 255),
            decor="eyes",
        ),
    ),
    # mouth masks
    "blue surgical mask": partial(
        draw_face_mask,
        FaceMask(
            "surgical", gradient((150, 200, 230, 255), (110, 170, 215, 255)), (245, 245, 245, 255), (90, 145, 190, 255)
        ),
    ),
    "white N95 respirator": partial(
        draw_face_mask,
        FaceMask(
            "n95", gradient((250, 250, 248, 255), (215, 215, 210, 255)), (240, 200, 40, 255), (200, 200, 195, 255)
        ),
    ),
    "black contoured cloth mask": partial(
        draw_face_mask,
        FaceMask("contour", gradient((55, 55, 60, 255), (20, 20, 24, 255)), (30, 30, 34, 255), (80, 80, 88, 255)),
    ),
    "floral cloth mask": partial(
        draw_face_mask,
        FaceMask(
            "cloth",
            speckle(
                (40, 130, 140, 255),
                [(245, 245, 245, 255), (240, 140, 160, 255), (250, 200, 90, 255)],
                70,
                (1.6, 2.6),
                seed=11,
                shapes="flower",
            ),
            (250, 250, 250, 255),
            (25, 95, 105, 255),
        ),
    ),
    "white KN95 mask": partial(
        draw_face_mask,
        FaceMask(
            "kn95", gradient((245, 245, 245, 255), (220, 222, 225, 255)), (250, 250, 250, 255), (185, 188, 195, 255)
        ),
    ),
    # scarves
    "red knitted scarf": partial(draw_scarf, Scarf(knit((200, 35, 40, 255), (160, 20, 30, 255)), (200, 35, 40, 255))),
    "tartan scarf": partial(
        draw_scarf,
        Scarf(
            plaid(
                (30, 90, 50, 255),
                [((20, 40, 110, 255), 16, 0, 6), ((200, 30, 30, 255), 16, 9, 1.2), ((240, 220, 90, 255), 32, 13, 0.8)],
            ),
            (30, 90, 50, 255),
            tail_right=False,
        ),
    ),
    "striped wool scarf": partial(
        draw_scarf,
        Scarf(
            stripes(
                [
                    (240, 170, 40, 255),
                    (60, 120, 190, 255),
                    (235, 235, 225, 255),
                    (200, 70, 60, 255),
                    (90, 160, 90, 255),
                ],
                7,
            ),
            (60, 120, 190, 255),
        ),
    ),
    "grey ribbed scarf": partial(
        draw_scarf,
        Scarf(
            stripes([(150, 150, 155, 255), (128, 128, 134, 255)], 2.5, vertical=True),
            (140, 140, 145, 255),
            tail_right=False,
        ),
    ),
}


# ----------------------------------------------------------------------------------------------------------
# The library: which source feeds each category, in file order.


@dataclass(frozen=True)
class Spec:
    category: str
    source: str  # "openclipart" | "fluent" | "drawn"
    ref: str  # path under the openclipart PNG root, a Fluent Emoji icon name, or a key of DRAWINGS


def _specs() -> list[Spec]:
    oc, fl = "openclipart", "fluent"
    table: dict[str, list[tuple[str, str]]] = {
        "book_cover": [
            (oc, "education/books/book_01.png"),
            (oc, "education/books/closed_book_01.png"),
            (oc, "education/books/paperback_book_black_gal_.png"),
            (oc, "education/books/libro_di_ricette_di_cuc_01.png"),
            (oc, "education/books/stara_ksiega_-_old_book_01.png"),
            (oc, "education/books/book_02.png"),
            (fl, "closed-book"),
            (fl, "green-book"),
            (fl, "notebook-with-decorative-cover"),
            (fl, "open-book"),
        ],
        "cup": [
            (oc, "food/beverages/mug.png"),
            (oc, "food/beverages/teacup_ganson.png"),
            (oc, "office/cup_rollandin_francesco_.png"),
            (oc, "food/beverages/coffee_ganson.png"),
            (fl, "hot-beverage"),
            (fl, "cup-with-straw"),
            (fl, "teacup-without-handle"),
            (fl, "beer-mug"),
        ],
        "eye_mask": [(fl, "goggles")] + [("drawn", k) for k in DRAWINGS if k.endswith("sleep mask")],
        "eyeglasses": [(fl, "glasses")] + [("drawn", k) for k in DRAWINGS if k.endswith(" eyeglasses")],
        "hand": [
            (oc, "people/bodypart/reminder-hand_benji_park_01.png"),
            (oc, "people/bodypart/thumbs_up_nathan_eady_01.png"),
            (fl, "raised-hand-light"),
            (fl, "raised-back-of-hand-medium"),
            (fl, "waving-hand-dark"),
            (fl, "hand-with-fingers-splayed-medium-light"),
            (fl, "palm-down-hand-medium-dark"),
            (fl, "ok-hand-default"),
            (fl, "victory-hand-medium"),
        ],
        "mouth_mask": [("drawn", k) for k in DRAWINGS if k.endswith(("mask", "respirator")) and "sleep" not in k],
        "phone": [
            (oc, "office/telephone/mobile.png"),
            (oc, "office/telephone/mobile_phone_01.png"),
            (oc, "office/telephone/slim_cell_phone_israel_c_01.png"),
            (oc, "office/telephone/sprint_cell_phone_joel_r.png"),
            (oc, "office/telephone/handphone_toh_yen_cheng_01.png"),
            (fl, "mobile-phone"),
        ],
        "scarf": [(fl, "scarf")] + [("drawn", k) for k in DRAWINGS if k.endswith("scarf")],
        "sunglasses": [(oc, "people/clothing/sunglasses_01.png"), (fl, "sunglasses")]
        + [("drawn", k) for k in DRAWINGS if k.endswith(" sunglasses")],
    }
    assert sorted(table) == sorted(CATEGORIES)
    return [Spec(cat, src, ref) for cat in CATEGORIES for src, ref in table[cat]]


# ----------------------------------------------------------------------------------------------------------
# Sources and output (I/O).


def tidy(img: Image.Image) -> Image.Image:
    """RGBA cropped to where alpha is visible, fitted into MAX_SIDE, with invisible pixels zeroed (they
    carry no colour and compress better)."""
    img = img.convert("RGBA")
    box = img.getchannel("A").point(lambda v: 255 if v >= 8 else 0).getbbox()
    if box is None:
        raise ValueError("image is fully transparent")
    img = img.crop(box)
    if max(img.size) > MAX_SIDE:
        k = MAX_SIDE / max(img.size)
        img = img.resize((max(1, round(img.width * k)), max(1, round(img.height * k))), Image.Resampling.LANCZOS)
    arr = np.array(img)
    arr[arr[..., 3] == 0] = 0
    return Image.fromarray(arr, "RGBA")


def render_svg(path: Path, side: int = 4 * MAX_SIDE) -> Image.Image:
    png = subprocess.run(
        ["rsvg-convert", "-w", str(side), "-h", str(side), "--keep-aspect-ratio", str(path)],
        check=True,
        capture_output=True,
    ).stdout
    return Image.open(io.BytesIO(png))


def load_source(spec: Spec, openclipart: Path, fluent: Path) -> Image.Image:
    if spec.source == "openclipart":
        with Image.open(openclipart / spec.ref) as im:
            return tidy(im)
    if spec.source == "fluent":
        return tidy(render_svg(fluent / "icons" / "modern" / f"{spec.ref}.svg"))
    return tidy(DRAWINGS[spec.ref]())


def describe(spec: Spec, versions: Mapping[str, str]) -> tuple[str, str]:
    """(source, licence) columns of the catalog."""
    if spec.source == "openclipart":
        source = f"Debian openclipart-png {versions['openclipart']}: /usr/share/openclipart/png/{spec.ref}"
        return source, OPENCLIPART_LICENCE
    if spec.source == "fluent":
        return f"npm fluentui-emoji {versions['fluent']}: icons/modern/{spec.ref}.svg", FLUENT_LICENCE
    return f"drawn by tools/make_occluders.py ({spec.ref})", DRAWN_LICENCE


def _versions(fluent: Path) -> dict[str, str]:
    oc = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "openclipart-png"], capture_output=True, text=True)
    return {
        "openclipart": oc.stdout.strip() or "unknown",
        "fluent": json.loads((fluent / "package.json").read_text())["version"],
    }


README_HEAD = """# Occluder library

The project's own occluders for Algorithm 1 of the FROM paper, in the PDSN layout: `<category>/NNNN.png`
(RGBA, cropped to the visible pixels, at most {max_side} px on the long side), `occluder.txt` (one file a line)
and `catalog.csv` (`file,category,source,licence,width,height`). `width` x `height` is each occluder's calibrated
size in pixels on a 112x96 (H x W) face at scale s = 1; Algorithm 1 multiplies it by s and caps it at the face.
`anchors.csv` (written by hand, kept when the library is regenerated) says where each category sits on a face for
`occgen build --placement anchored`.

Generated by `tools/make_occluders.py`; do not edit by hand. To regenerate:

```
apt-get update && apt-get install -y openclipart-png librsvg2-bin
(cd /tmp && npm pack fluentui-emoji@1.3.0 && tar xzf fluentui-emoji-1.3.0.tgz)
python tools/make_occluders.py --fluent /tmp/package
```

## Calibration

Every file keeps its aspect ratio; its area is its category's area in a plausible table (at s = 1: {base}),
times a global factor {factor:.4f}, with each category's area taken to the power {spread:.2f} relative to the
geometric mean. With the centre uniform over every pixel and the occluder drawn as `OccluderLibrary.choose`
draws it (a category uniformly, then a file), the exact mean clipped-box area is:

| s | this library | FROM paper, LFW |
|---|---|---|
{rows}

## Sources and licences

- **Open Clip Art Library** via Debian package `openclipart-png` {oc_version}: public domain (Creative Commons
  Public Domain Dedication); the package's copyright file is `LICENSES/openclipart-png.copyright`.
- **Microsoft Fluent Emoji** via npm package `fluentui-emoji` {fl_version}: the artwork is Copyright (c)
  Microsoft Corporation under the MIT licence, repackaged under the MIT licence (Copyright (c) 2022 Mohammad
  Abu Mattar, `LICENSES/fluentui-emoji.LICENSE`). SVGs rendered with `rsvg-convert`, cropped and downsized.
- **Drawn** by `tools/make_occluders.py` with Pillow: MIT, like the rest of this project.

| file | category | source | licence | width | height |
|---|---|---|---|---|---|
"""


def write_library(
    out: Path,
    specs: Sequence[Spec],
    images: Sequence[Image.Image],
    sizes: Sequence[tuple[int, int]],
    fit: Fit,
    versions: Mapping[str, str],
    openclipart_copyright: Path,
    fluent: Path,
) -> list[dict[str, str]]:
    anchors = out / "anchors.csv"  # hand-written (where each category sits on a face): kept across regenerations
    kept = anchors.read_bytes() if anchors.is_file() else None
    if out.exists():
        shutil.rmtree(out)
    (out / "LICENSES").mkdir(parents=True)
    if kept is not None:
        anchors.write_bytes(kept)
    rows, counters = [], dict.fromkeys(CATEGORIES, 0)
    for spec, img, (w, h) in zip(specs, images, sizes):
        counters[spec.category] += 1
        name = f"{spec.category}/{counters[spec.category]:04d}.png"
        (out / spec.category).mkdir(exist_ok=True)
        img.save(out / name, optimize=True)
        source, licence = describe(spec, versions)
        rows.append(
            {
                "file": name,
                "category": spec.category,
                "source": source,
                "licence": licence,
                "width": str(w),
                "height": str(h),
            }
        )
    with (out / "catalog.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    (out / "occluder.txt").write_text("".join(r["file"] + "\n" for r in rows))
    shutil.copyfile(openclipart_copyright, out / "LICENSES" / "openclipart-png.copyright")
    shutil.copyfile(fluent / "LICENSE", out / "LICENSES" / "fluentui-emoji.LICENSE")
    readme = README_HEAD.format(
        max_side=MAX_SIDE,
        factor=fit.factor,
        spread=fit.spread,
        base=", ".join(f"{c} {w}x{h}" for c, (w, h) in BASE_SIZE.items()),
        rows="\n".join(f"| {s:g} | {100 * fit.achieved[s]:.2f}% | {100 * t:.2f}% |" for s, t in TARGETS.items()),
        oc_version=versions["openclipart"],
        fl_version=versions["fluent"],
    )
    readme += "".join(
        f"| `{r['file']}` | {r['category']} | {r['source']} | {r['licence']} | {r['width']} | {r['height']} |\n"
        for r in rows
    )
    (out / "README.md").write_text(readme)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "occluders")
    ap.add_argument(
        "--openclipart",
        type=Path,
        default=Path("/usr/share/openclipart/png"),
        help="PNG root of Debian openclipart-png",
    )
    ap.add_argument("--openclipart-copyright", type=Path, default=Path("/usr/share/doc/openclipart-png/copyright"))
    ap.add_argument(
        "--fluent",
        type=Path,
        default=Path("/tmp/package"),
        help="the unpacked npm package fluentui-emoji (npm pack fluentui-emoji@1.3.0; tar xzf ...)",
    )
    args = ap.parse_args(argv)
    missing = [str(p) for p in (args.openclipart, args.openclipart_copyright, args.fluent / "icons") if not p.exists()]
    if missing or shutil.which("rsvg-convert") is None:
        sys.exit(
            f"missing {', '.join(missing) or 'rsvg-convert'}; run: apt-get install -y openclipart-png "
            "librsvg2-bin; (cd /tmp && npm pack fluentui-emoji@1.3.0 && tar xzf fluentui-emoji-1.3.0.tgz)"
        )
    specs = _specs()
    images = [load_source(s, args.openclipart, args.fluent) for s in specs]
    sizes, fit = calibrate([(s.category, im.width / im.height) for s, im in zip(specs, images)])
    rows = write_library(
        args.out, specs, images, sizes, fit, _versions(args.fluent), args.openclipart_copyright, args.fluent
    )
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    counts = {c: sum(r["category"] == c for r in rows) for c in CATEGORIES}
    print(f"{len(rows)} occluders in {args.out}: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
    print(f"calibration: factor {fit.factor:.4f}, spread {fit.spread:.3f}")
    for s, t in TARGETS.items():
        print(f"  s={s:g}: expected clipped-box area {100 * fit.achieved[s]:.2f}% (paper {100 * t:.2f}%)")
    print(f"library size: {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
