"""Proximate occlusion patterns (FROM, Sec. 3.4): the pattern catalog and box labelling, for any K.

The face (H x W pixels) is split into K x K blocks. A pattern is a rectangle of adjacent blocks; pattern 0 is the
"clean" pattern (no block). There are (K(K+1)/2)^2 + 1 patterns, in the order of the authors' release:

- block edges are evenly spaced points truncated to integers, ``floor(i * L / K)`` for i = 0..K (what the release's
  ``np.linspace(0, L, K + 1, dtype=int)`` gives; the tests check both agree);
- index 0 is clean, then every (top-left vertex, bottom-right vertex) pair of the (K+1) x (K+1) vertex lattice,
  both vertices taken in row-major order (y, then x), skipping pairs that do not span a rectangle. So pattern
  indices run over (i0, j0, i1, j1) in lexicographic order, with i0 < i1 the y-edge and j0 < j1 the x-edge indices.

A sample's label is the pattern with the largest IoU against its occluded box, ties going to the lowest index.
Labelling works on box arrays, never on dense masks, yet equals the dense-mask definition exactly (the tests hold
it to a brute-force dense reference):

- IoU factorises: a box and a pattern overlap in ``ox * oy`` pixels, where ``ox`` and ``oy`` are the 1-D overlaps
  of their x and y intervals, and their union is ``area(box) + area(pattern) - overlap``. So each box needs only
  K(K+1)/2 interval overlaps per axis; the P pattern scores are one outer product away.
- All counts are small integers, exact in float64. Paper mode ranks patterns by the float64 quotient
  overlap / (area(box) + area(pattern)): two different such ratios differ by at least 1/(2HW)^2, far more than
  float64 resolution for any face-sized image (HW up to ~10^7), so float comparison orders and ties patterns
  exactly as exact arithmetic does. From mode evaluates the release's own float64 expression with the same IEEE
  operations on the same integer values, so it gets the same bits.
- The first maximum in release order is found without reordering the scores: each cell carries a priority
  (higher = earlier in release order), and the winner is the highest priority among the cells equal to the max.

Two modes (``compat``):

- ``paper``: the box exactly as stored (half-open, may reach W and H); IoU = |B n P| / |B u P|, with the usual
  convention that two empty sets have IoU 1. A clean sample (or an occluded one whose box is empty) thus gets
  pattern 0 with IoU 1.0: the clean pattern describes it exactly.
- ``from``: bit for bit the release's ``cal_similarity_label``: the box's right and bottom edges are clipped to
  W-1 and H-1 first (the release's mask never covers the last pixel row and column), the score is
  ``overlap / (union + 1e-10)`` in float64, and the first maximum wins. Pattern 0 scores 0, so it wins only when
  the clipped box is empty. A clean sample gets pattern 0 with IoU 0.0 (the release's score for an empty mask).

The regression target of the pattern-regression variant (Sec. 3.4.3) is the box the mode scores, as corner
coordinates normalised by the image size: (x0/W, y0/H, x1/W, y1/H). Clean samples get (0, 0, 0, 0), the empty
box at the origin, so the L2 loss of Eq. 5 applies to every sample with no masking (as the clean pattern is
the paper's "0 x 0 blocks" pattern).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from occgen.errors import UserError
from occgen.occlude.render import COMPAT_MODES, Compat

K_MIN, K_MAX = 1, 8
#: The release adds this to the union so that an empty mask scores 0 instead of 0/0.
FROM_EPSILON = 1e-10
#: Pattern scores held at once (boxes per step x patterns): 2 MB of float64 per array, so memory stays bounded
#: for any N and the arrays stay near the cache.
CHUNK_CELLS = 1 << 18


def check_k(K: int) -> None:
    """K out of range is a user mistake (an option), so it raises UserError."""
    if not isinstance(K, (int, np.integer)) or not K_MIN <= K <= K_MAX:
        raise UserError(
            f"K must be an integer from {K_MIN} to {K_MAX} (the face is split into K x K blocks); got {K!r}"
        )


def check_size(height: int, width: int, K: int) -> None:
    """Each axis needs at least K pixels, or two block edges would coincide and the catalog would shrink."""
    if height < K or width < K:
        raise UserError(f"image size {height}x{width} (HxW) is too small for K={K}: each side needs at least K pixels")


def check_compat(compat: str) -> None:
    if compat not in COMPAT_MODES:
        raise UserError(f"compat must be one of {', '.join(COMPAT_MODES)}; got {compat!r}")


def num_patterns(K: int) -> int:
    """(K(K+1)/2)^2 rectangles of adjacent blocks, plus the clean pattern: 101 for K=4, 226 for K=5."""
    check_k(K)
    return (K * (K + 1) // 2) ** 2 + 1


def block_edges(K: int, length: int) -> np.ndarray:
    """The K+1 block edges along one axis of ``length`` pixels: floor(i * length / K), i = 0..K."""
    check_k(K)
    return np.arange(K + 1, dtype=np.int64) * length // K


@dataclass(frozen=True)
class _Layout:
    """The catalog of one (K, H, W) in the shapes that scoring needs.

    Patterns are scored in "product" layout: cell c = y * Q + x pairs the y-th y-interval with the x-th x-interval
    (Q = K(K+1)/2 intervals per axis, each an edge pair lo < hi in lexicographic order). Every cell is a pattern;
    ``order`` maps release rank r (pattern r + 1) to its cell, ``priority`` maps each cell to Q*Q - r, so that a
    larger priority means earlier in release order.
    """

    x_lo: np.ndarray  # (Q,) int64
    x_hi: np.ndarray
    y_lo: np.ndarray
    y_hi: np.ndarray
    order: np.ndarray  # (Q*Q,) intp, cell of release rank r
    area: np.ndarray  # (Q*Q,) float64, pixel area of each cell
    priority: np.ndarray  # (Q*Q,) int16


def _intervals(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (lo, hi) edge pairs with lo < hi, in lexicographic order of their edge indices."""
    lo, hi = np.triu_indices(len(edges), k=1)
    return edges[lo], edges[hi]


@lru_cache(maxsize=64)
def _layout(K: int, height: int, width: int) -> _Layout:
    check_k(K)
    check_size(height, width, K)
    x_lo, x_hi = _intervals(block_edges(K, width))
    y_lo, y_hi = _intervals(block_edges(K, height))
    pairs = list(zip(*(a.tolist() for a in np.triu_indices(K + 1, k=1))))
    interval = {pair: n for n, pair in enumerate(pairs)}
    q = len(pairs)
    # Release order: top-left vertex (i0, j0) row-major, then bottom-right vertex (i1, j1) row-major.
    order = np.array(
        [
            interval[i0, i1] * q + interval[j0, j1]
            for i0 in range(K + 1)
            for j0 in range(K + 1)
            for i1 in range(i0 + 1, K + 1)
            for j1 in range(j0 + 1, K + 1)
        ],
        dtype=np.intp,
    )
    priority = np.empty(q * q, dtype=np.int16)
    priority[order] = q * q - np.arange(q * q)
    area = np.outer(y_hi - y_lo, x_hi - x_lo).ravel().astype(np.float64)
    for arr in (x_lo, x_hi, y_lo, y_hi, order, area, priority):
        arr.setflags(write=False)
    return _Layout(x_lo, x_hi, y_lo, y_hi, order, area, priority)


def pattern_catalog(K: int, height: int, width: int) -> np.ndarray:
    """The P patterns as half-open pixel rectangles (x0, y0, x1, y1), int64, in release order.

    Row 0, the clean pattern, is the empty rectangle (0, 0, 0, 0).
    """
    lay = _layout(K, height, width)
    yi, xi = np.divmod(lay.order, len(lay.x_lo))
    rects = np.stack([lay.x_lo[xi], lay.y_lo[yi], lay.x_hi[xi], lay.y_hi[yi]], axis=1)
    return np.concatenate([np.zeros((1, 4), dtype=np.int64), rects])


def _as_boxes(boxes: np.ndarray, occluded: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated int64 (N, 4) boxes (clean rows zeroed) and the bool occluded flags.

    Box values of clean rows are ignored (they may be NaN); occluded rows must hold whole numbers inside the image.
    """
    boxes = np.asarray(boxes)
    occluded = np.asarray(occluded)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or occluded.shape != (boxes.shape[0],):
        raise ValueError(
            f"expected boxes of shape (N, 4) and occluded of shape (N,); got {boxes.shape} and {occluded.shape}"
        )
    occluded = occluded.astype(bool)
    occ_rows = boxes[occluded]
    if occ_rows.dtype.kind == "f":
        if not np.isfinite(occ_rows).all():
            raise UserError("an occluded sample has no box (null or NaN box coordinates); rebuild the manifest")
        if (occ_rows != np.round(occ_rows)).any():
            raise UserError("box coordinates must be whole pixels; found fractional values")
    elif occ_rows.dtype.kind not in "iu":
        raise ValueError(f"box coordinates must be numbers; got dtype {boxes.dtype}")
    out = np.zeros(boxes.shape, dtype=np.int64)
    out[occluded] = occ_rows.astype(np.int64)
    x0, y0, x1, y1 = out.T
    bad = occluded & ((x0 < 0) | (y0 < 0) | (x1 > width) | (y1 > height) | (x1 < x0) | (y1 < y0))
    if bad.any():
        n = int(np.flatnonzero(bad)[0])
        raise UserError(
            f"box {tuple(out[n].tolist())} (sample {n}) is not a clipped box inside the {height}x{width} image "
            "(need 0 <= x0 <= x1 <= W and 0 <= y0 <= y1 <= H); the manifest must hold the clipped box"
        )
    return out, occluded


def _scored_boxes(
    boxes: np.ndarray, occluded: np.ndarray, height: int, width: int, compat: Compat
) -> tuple[np.ndarray, np.ndarray]:
    """The boxes a mode scores: as stored (``paper``), or with every coordinate capped at W-1 / H-1 (``from``).

    Capping x0 and y0 too changes no pixel (a box starting at W is empty either way) but keeps x0 <= x1.
    """
    check_compat(compat)
    b, occluded = _as_boxes(boxes, occluded, height, width)
    if compat == "from":
        np.minimum(b, [width - 1, height - 1, width - 1, height - 1], out=b)
    return b, occluded


def _overlaps(lo: np.ndarray, hi: np.ndarray, edge_lo: np.ndarray, edge_hi: np.ndarray) -> np.ndarray:
    """(Q, n) overlap lengths of the n intervals [lo, hi) with the Q intervals [edge_lo, edge_hi), as float64."""
    ov = np.minimum(hi[None, :], edge_hi[:, None])
    ov -= np.maximum(lo[None, :], edge_lo[:, None])
    return np.maximum(ov, 0).astype(np.float64)


@dataclass
class _Buffers:
    """Scratch arrays for one chunk, reused across chunks (fresh multi-MB arrays per chunk cost page faults).

    Pattern areas and priorities are stored spread over all n columns: adding or multiplying a per-row constant
    by broadcasting is a slow loop in numpy, while two contiguous arrays are a fast one.
    """

    inter: np.ndarray  # (Q*Q, n) float64
    key: np.ndarray  # (Q*Q, n) float64
    equal: np.ndarray  # (Q*Q, n) bool
    first: np.ndarray  # (Q*Q, n) int16
    area: np.ndarray  # (Q*Q, n) float64, constant: lay.area down each column
    priority: np.ndarray  # (Q*Q, n) int16, constant: lay.priority down each column

    @classmethod
    def make(cls, lay: _Layout, n: int) -> _Buffers:
        cells = len(lay.area)
        return cls(
            np.empty((cells, n)),
            np.empty((cells, n)),
            np.empty((cells, n), bool),
            np.empty((cells, n), np.int16),
            np.repeat(lay.area[:, None], n, axis=1),
            np.repeat(lay.priority[:, None], n, axis=1),
        )


def _label_chunk(b: np.ndarray, lay: _Layout, compat: Compat, buf: _Buffers) -> tuple[np.ndarray, np.ndarray]:
    """Pattern (0 when every score is 0) and IoU of each box in ``b`` (n, 4), none of them clean.

    Arrays are (cell, box): with boxes on the contiguous axis every step is a long, cache-friendly loop. The key
    is ``overlap / (area(box) + area(pattern))`` in paper mode, which orders patterns as IoU does (IoU = k/(1-k))
    and saves a pass, and the release's score in from mode. The winner is the maximum key that comes first in
    release order: its priority is the largest among the cells equal to the maximum.
    """
    x0, y0, x1, y1 = b.T
    ox = _overlaps(x0, x1, lay.x_lo, lay.x_hi)
    oy = _overlaps(y0, y1, lay.y_lo, lay.y_hi)
    q, n = ox.shape
    inter, key = buf.inter, buf.key
    np.multiply(oy[:, None, :], ox[None, :, :], out=inter.reshape(q, q, n))
    box_area = ((x1 - x0) * (y1 - y0)).astype(np.float64)
    np.add(buf.area, box_area[None, :], out=key)
    if compat == "from":
        key -= inter
        key += FROM_EPSILON
    np.divide(inter, key, out=key)
    top = key.max(axis=0)
    np.equal(key, top[None, :], out=buf.equal)
    np.multiply(buf.equal, buf.priority, out=buf.first)
    rank = q * q - buf.first.max(axis=0).astype(np.intp)
    pattern = np.where(top > 0, rank + 1, 0)
    if compat == "from":
        return pattern, top
    cell = lay.order[rank]
    best = inter[cell, np.arange(n)]
    return pattern, best / (box_area + lay.area[cell] - best)


def label_boxes(
    boxes: np.ndarray,
    occluded: np.ndarray,
    K: int,
    height: int,
    width: int,
    compat: Compat = "paper",
) -> tuple[np.ndarray, np.ndarray]:
    """Pattern index (int16) and IoU (float64) of each of N samples; see the module docstring for both modes.

    ``boxes`` is (N, 4) x0, y0, x1, y1 (half-open, clipped to the image); rows where ``occluded`` is False are
    clean and their box values are ignored.
    """
    lay = _layout(K, height, width)
    b, occluded = _scored_boxes(boxes, occluded, height, width, compat)
    empty_iou = 1.0 if compat == "paper" else 0.0
    pattern = np.zeros(len(b), dtype=np.int16)
    iou = np.full(len(b), empty_iou)
    rows = np.flatnonzero(occluded)
    step = max(64, CHUNK_CELLS // len(lay.area))
    buf = _Buffers.make(lay, min(step, len(rows)))
    for start in range(0, len(rows), step):
        idx = rows[start : start + step]
        if len(idx) < buf.key.shape[1]:
            buf = _Buffers.make(lay, len(idx))
        p, s = _label_chunk(b[idx], lay, compat, buf)
        pattern[idx] = p
        iou[idx] = np.where(p > 0, s, empty_iou)
    return pattern, iou


def regression_target(
    boxes: np.ndarray, occluded: np.ndarray, height: int, width: int, compat: Compat = "paper"
) -> np.ndarray:
    """(N, 4) float32 box corners normalised by the image size, (x0/W, y0/H, x1/W, y1/H); clean rows are 0.

    The box is the one the mode scores (in ``from`` mode, right and bottom edges clipped to W-1 and H-1).
    """
    b, occluded = _scored_boxes(boxes, occluded, height, width, compat)
    scale = np.array([width, height, width, height], dtype=np.float64)
    out = (b / scale).astype(np.float32)
    out[~occluded] = 0.0
    return out
