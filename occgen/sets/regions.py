"""The FROM benchmark's named regions (paper Fig. 1 / Table 6) and its occluder groups (unseen-occlusion test).

A region set occludes one fixed face region in every image: the drawn occluder is resized to the region's box
and pasted over it, so the occluded box *is* the region (its pixel area is what the occluder's alpha covers).
"""

from __future__ import annotations

from occgen.errors import UserError
from occgen.occlude.occluders import CATEGORIES, REFERENCE_FACE

#: Boxes (x0, y0, x1, y1), half-open, on the 112x96 (HxW) SphereFace/CosFace crop, as in the authors' release.
REGIONS: dict[str, tuple[int, int, int, int]] = {
    "left_eye": (10, 30, 50, 70),
    "right_eye": (50, 30, 90, 70),
    "eyes": (10, 30, 90, 70),
    "nose": (34, 48, 62, 86),
    "mouth": (25, 82, 75, 107),
    "lower_face": (8, 60, 92, 110),
    "upper_face": (8, 8, 92, 72),
    "left_face": (8, 8, 50, 100),
    "right_face": (50, 8, 92, 100),
}

#: The nine categories in three alphabetical groups: train on one, test on the other two.
GROUPS: dict[int, tuple[str, ...]] = {g + 1: tuple(sorted(CATEGORIES))[3 * g : 3 * g + 3] for g in range(3)}


def region_box(name: str, face: tuple[int, int]) -> tuple[int, int, int, int]:
    """The region's box on a (W, H) face: as published on 112x96, shifted 8 px right on the 112x112 crop (whose
    template is the 112x96 one shifted by 8 px, occgen.align.transform.TEMPLATES)."""
    if name not in REGIONS:
        raise UserError(f"unknown region {name!r}: choose from {', '.join(REGIONS)}")
    W, H = face
    ref_w, ref_h = REFERENCE_FACE
    if H != ref_h or W < ref_w or (W - ref_w) % 2:
        raise UserError(f"named regions are defined on 112x96 (and 112x112) faces; these faces are {H}x{W} (HxW)")
    dx = (W - ref_w) // 2
    x0, y0, x1, y1 = REGIONS[name]
    return x0 + dx, y0, x1 + dx, y1


def fit_region(name: str, face: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """(size, centre) that make Algorithm 1's placement (render.place) land exactly on the region's box."""
    x0, y0, x1, y1 = region_box(name, face)
    w, h = x1 - x0, y1 - y0
    return (w, h), (x0 + w // 2, y0 + h // 2)


def group_categories(group: int) -> tuple[str, ...]:
    if group not in GROUPS:
        listing = "; ".join(f"{g}: {', '.join(c)}" for g, c in GROUPS.items())
        raise UserError(f"--group {group}: choose 1, 2 or 3 ({listing})")
    return GROUPS[group]
