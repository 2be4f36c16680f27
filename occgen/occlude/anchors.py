"""Occluders placed where they occur on real faces, from the face's landmarks (occgen.occlude.face): anchored
placement (``occgen build --placement anchored``) and the four O_LFW-style region groups (``--region-group``).

Anchored: a table beside the occluder library, ``anchors.csv`` (columns category, anchor, down, width_min,
width_max, jitter), says for each category where its occluders sit: ``anchor`` is ``eyes``, ``nose`` or ``mouth``
(that landmark, or the midpoint of the pair) moved ``down`` eye-to-mouth distances, or ``anywhere`` (uniformly
over the face); the occluder's width is drawn between ``width_min`` and ``width_max`` eye distances and its
height follows its aspect; the point lands on the occluder's alpha centroid (the lenses of sunglasses, not the
middle of their bounding box), moved by up to ``jitter`` eye distances either way. A library without the file
uses the project's (``occluders/anchors.csv``), whose rows cover the FROM categories and common others.

Region groups, after O_LFW (upper half, lower half, random, large): any occluder of the library, its longer
side drawn from GROUP_SIZE eye distances, kept above the nose line (upper), below it (lower) or anywhere on the face
(random); ``large`` grows it until it covers at least half of the face box (occgen.occlude.face.Face.box). The
nose line is horizontal: faces are upright (aligned crops, deep-funneled photos).

Pure functions: the caller gives the random source (occgen.occlude.plan.SampleRandom).
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from occgen.errors import UserError
from occgen.occlude.face import Face
from occgen.occlude.occluders import DEFAULT_LIBRARY
from occgen.occlude.plan import SampleRandom

ANCHORS_FILE = "anchors.csv"
ANCHOR_POINTS = ("eyes", "nose", "mouth", "anywhere")
#: O_LFW-style groups, in the order their sets are built.
GROUPS = ("upper", "lower", "random", "large")
#: The longer side of an occluder of the upper, lower and random groups, in eye distances.
GROUP_SIZE = (1.0, 2.0)
#: The large group covers at least this share of the face box...
LARGE_COVER = 0.5
#: ...with occluders whose covering pixels fill at least this share of their box (not open frames like glasses),
#: grown at most this many times by 15% when their transparent parts leave too much of the face visible.
SOLID_FILL = 0.6
GROW_STEPS = 8
#: Occluders drawn for one large sample before the last is kept whatever it covers.
LARGE_TRIES = 10


@dataclass(frozen=True)
class Anchor:
    category: str
    anchor: str
    down: float
    width_min: float
    width_max: float
    jitter: float


def read_anchors(root: Path) -> tuple[Path, dict[str, Anchor], str]:
    """The anchor table of a library folder (its own ``anchors.csv``, else the project's): path, rows by
    category, and a digest of its bytes."""
    path = root / ANCHORS_FILE if (root / ANCHORS_FILE).is_file() else DEFAULT_LIBRARY / ANCHORS_FILE
    data = path.read_bytes()
    rows: dict[str, Anchor] = {}
    for n, row in enumerate(csv.DictReader(data.decode().splitlines()), 2):
        try:
            a = Anchor(
                row["category"].strip(),
                row["anchor"].strip(),
                float(row["down"]),
                float(row["width_min"]),
                float(row["width_max"]),
                float(row["jitter"]),
            )
        except (KeyError, ValueError, AttributeError, TypeError):
            raise UserError(
                f"{path} line {n}: needs category, anchor, down, width_min, width_max, jitter (numbers but the "
                "first two)"
            ) from None
        if a.anchor not in ANCHOR_POINTS or not 0 < a.width_min <= a.width_max or a.jitter < 0:
            raise UserError(
                f"{path} line {n}: anchor must be one of {', '.join(ANCHOR_POINTS)}, 0 < width_min <= width_max, "
                "jitter >= 0"
            )
        rows[a.category] = a
    return path, rows, hashlib.sha256(data).hexdigest()


def check_categories(path: Path, rows: dict[str, Anchor], categories: tuple[str, ...]) -> None:
    missing = [c for c in categories if c not in rows]
    if missing:
        raise UserError(
            f"--placement anchored: {path} says nothing about {', '.join(missing)}; add a row per category "
            "(category,anchor,down,width_min,width_max,jitter) to anchors.csv beside the occluders"
        )


def _uniform(rng: SampleRandom, lo: float, hi: float) -> float:
    return lo + (hi - lo) * rng.random()


def _top_left(center: tuple[float, float], size: tuple[int, int]) -> tuple[int, int]:
    """The render centre (render.place puts the top-left corner at cx - w//2) for a box centred at ``center``."""
    w, h = size
    x0, y0 = round(center[0] - w / 2), round(center[1] - h / 2)
    return x0 + w // 2, y0 + h // 2


def _size(width: float, aspect: float) -> tuple[int, int]:
    return max(1, round(width)), max(1, round(width * aspect))


def _in_face(face: Face, rng: SampleRandom, image: tuple[int, int]) -> tuple[float, float]:
    """A point drawn uniformly over the face box, clipped to the image."""
    x0, y0, x1, y1 = face_area(face, image)
    return _uniform(rng, x0, x1), _uniform(rng, y0, y1)


def face_area(face: Face, image: tuple[int, int]) -> tuple[float, float, float, float]:
    """The face box (Face.box) clipped to the (W, H) image."""
    W, H = image
    x0, y0, x1, y1 = face.box()
    return max(0.0, x0), max(0.0, y0), min(float(W), x1), min(float(H), y1)


def anchored(
    face: Face,
    anchor: Anchor,
    aspect: float,
    centroid: tuple[float, float],
    rng: SampleRandom,
    image: tuple[int, int],
) -> tuple[tuple[int, int], tuple[int, int]]:
    """(size, render centre) of an occluder of ``aspect`` (h / w) whose alpha centroid sits at ``centroid``
    (fractions of its width and height)."""
    size = _size(_uniform(rng, anchor.width_min, anchor.width_max) * face.eye_distance, aspect)
    if anchor.anchor == "anywhere":
        x, y = _in_face(face, rng, image)
    else:
        base = {"eyes": face.eye, "nose": face.nose, "mouth": face.mouth}[anchor.anchor]
        point = base + anchor.down * face.length * face.down
        jx, jy = (anchor.jitter * face.eye_distance * (2 * rng.random() - 1) for _ in range(2))
        x, y = point[0] + jx, point[1] + jy
        x, y = x + (0.5 - centroid[0]) * size[0], y + (0.5 - centroid[1]) * size[1]  # centroid -> box centre
    return size, _top_left((x, y), size)


def group_place(
    group: str,
    face: Face,
    aspect: float,
    fill: float,
    rng: SampleRandom,
    image: tuple[int, int],
    cover: Callable[[tuple[int, int], tuple[int, int]], float],
) -> tuple[tuple[int, int], tuple[int, int]]:
    """(size, render centre) of an occluder of ``aspect`` (h / w) whose covering pixels fill ``fill`` of its box,
    for an O_LFW-style ``group``. ``cover(size, centre)`` is the share of the face box it would cover (``large``
    grows the occluder until that reaches LARGE_COVER)."""
    fx0, fy0, fx1, fy1 = face_area(face, image)
    if group == "large":
        target = _uniform(rng, LARGE_COVER, 0.8) * (fx1 - fx0) * (fy1 - fy0) / fill
        width = float(np.sqrt(target / aspect))
        jx, jy = (0.1 * (2 * rng.random() - 1) for _ in range(2))
        centre = ((fx0 + fx1) / 2 + jx * (fx1 - fx0), (fy0 + fy1) / 2 + jy * (fy1 - fy0))
        for _ in range(GROW_STEPS):  # a box that covers the face with a transparent part needs to grow
            size = _size(width, aspect)
            placed = _top_left(centre, size)
            if cover(size, placed) >= LARGE_COVER:
                break
            width *= 1.15
        return size, placed
    longer = _uniform(rng, *GROUP_SIZE) * face.eye_distance
    width = longer if aspect <= 1 else longer / aspect
    if group == "random":
        return _size(width, aspect), _top_left(_in_face(face, rng, image), _size(width, aspect))
    nose_y = float(face.nose[1])
    top, bottom = (fy0, nose_y) if group == "upper" else (nose_y, fy1)
    y_lo, y_end = int(np.ceil(top)), int(np.floor(bottom))  # whole pixel rows of the half
    width = min(width, fx1 - fx0, (y_end - y_lo) / aspect)  # the whole occluder fits in its half
    w, h = _size(width, aspect)
    size = (w, max(1, min(h, y_end - y_lo)))
    x0 = _uniform(rng, fx0 - w / 2, fx1 - w / 2)
    y0 = y_lo + int(rng.integers(max(1, y_end - size[1] - y_lo + 1)))
    return size, (round(x0) + w // 2, y0 + size[1] // 2)


def choose_solid(by_category: tuple[tuple[int, ...], ...], fills: tuple[float, ...]) -> Callable[[SampleRandom], int]:
    """The library's rule (a category uniformly, then one of its occluders) among occluders solid enough to cover
    a large area; a library without any is refused."""
    solid = tuple(m for m in (tuple(i for i in ms if fills[i] >= SOLID_FILL) for ms in by_category) if m)
    if not solid:
        raise UserError(
            f"--region-group large needs occluders whose opaque pixels fill at least {SOLID_FILL:.0%} of their "
            "box; the chosen library has none (add books, hands, scarves or the like)"
        )

    def choose(rng: SampleRandom) -> int:
        members = solid[int(rng.integers(len(solid)))]
        return members[int(rng.integers(len(members)))]

    return choose
