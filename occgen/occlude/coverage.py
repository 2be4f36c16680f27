"""How much of the face Algorithm 1 covers on average with a given occluder library: exact, with no sampling.

Used to calibrate occluder sizes (tools/make_occluders.py) against the FROM paper's figures and to check a
library against them.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

import numpy as np

from occgen.occlude.occluders import REFERENCE_FACE
from occgen.occlude.render import Compat, scaled_size


@cache
def _mean_clipped_length(n: int, compat: Compat) -> np.ndarray:
    """Entry L: the mean length, over all n centres, of a length-L span placed as render.place does and
    clipped to the image; index 0 is unused."""
    centre = np.arange(n)[:, None]
    length = np.arange(n + 1)[None, :]
    start = centre - length // 2
    end = np.minimum(start + length, n - 1 if compat == "from" else n)
    return np.clip(end - np.maximum(start, 0), 0, None).mean(axis=0)


def expected_box_fraction(
    members: Iterable[tuple[str, tuple[int, int]]],
    scale: float,
    face: tuple[int, int] = REFERENCE_FACE,
    compat: Compat = "paper",
) -> float:
    """Exact mean of clipped-box area / (W*H) for Algorithm 1 at one scale, with the centre uniform over
    every pixel and the occluder drawn as OccluderLibrary.choose draws it.

    ``members`` are (category, calibrated size) pairs. The centre's x and y are independent, so a box's mean
    area is the product of its mean clipped width and height: exact, with no sampling.
    """
    W, H = face
    mean_x, mean_y = _mean_clipped_length(W, compat), _mean_clipped_length(H, compat)
    per_category: dict[str, list[float]] = {}
    for category, size in members:
        w, h = scaled_size(size, scale, face, compat)
        per_category.setdefault(category, []).append(mean_x[w] * mean_y[h])
    if not per_category:
        raise ValueError("expected_box_fraction needs at least one occluder")
    return float(np.mean([np.mean(areas) for areas in per_category.values()]) / (W * H))
