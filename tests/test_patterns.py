"""The pattern catalog and box labelling, held to a brute-force dense-mask reference written from the definition."""

from __future__ import annotations

import numpy as np
import pytest

from occgen.errors import UserError
from occgen.label.patterns import block_edges, label_boxes, num_patterns, pattern_catalog, regression_target

SIZES = [(112, 96), (112, 112)]


# ---- the reference: dense pixel masks, straight from the definition -------------------------------------------


def reference_grids(K: int, H: int, W: int) -> np.ndarray:
    """(P, H*W) dense masks: clean (all zero) first, then vertex pairs over the (K+1)^2 lattice, row-major."""
    xs = np.linspace(0, W, K + 1).astype(int)  # evenly spaced, truncated
    ys = np.linspace(0, H, K + 1).astype(int)
    vertices = [(y, x) for y in ys for x in xs]
    grids = [np.zeros((H, W), bool)]
    for ys0, xs0 in vertices:
        for ye, xe in vertices:
            if ye > ys0 and xe > xs0:
                g = np.zeros((H, W), bool)
                g[ys0:ye, xs0:xe] = True
                grids.append(g)
    return np.stack(grids).reshape(len(grids), H * W)


def reference_labels(
    boxes: np.ndarray, K: int, H: int, W: int, compat: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels of occluded boxes by counting pixels of dense masks (intersection and union both by counting).

    Returns the first maximum, its IoU, and whether other patterns share that maximum (a tie).
    """
    grids = reference_grids(K, H, W)
    masks = np.zeros((len(boxes), H, W), bool)
    for n, (x0, y0, x1, y1) in enumerate(boxes):
        if compat == "from":
            x1, y1 = min(x1, W - 1), min(y1, H - 1)
        masks[n, y0:y1, x0:x1] = True
    masks = masks.reshape(len(boxes), H * W)
    g, m = grids.astype(np.float32), masks.astype(np.float32)
    inter = (m @ g.T).astype(np.int64)  # |M n G|, exact: float32 sums of 0/1 below 2^24
    union = H * W - ((1 - m) @ (1 - g).T).astype(np.int64)  # |M u G| = all pixels - pixels in neither
    if compat == "from":
        score = inter / (union.astype(np.float64) + 1e-10)
        best = score.argmax(axis=1)
        top = score[np.arange(len(boxes)), best]
        return best, top, (score == top[:, None]).sum(axis=1) > 1
    # Exact first maximum of inter/union by cross-multiplication; two empty sets have IoU 1.
    num, den = inter.copy(), union.copy()
    both_empty = den == 0
    num[both_empty], den[both_empty] = 1, 1
    best = np.zeros(len(boxes), dtype=np.int64)
    rows = np.arange(len(boxes))
    for p in range(1, grids.shape[0]):
        better = num[:, p] * den[rows, best] > num[rows, best] * den[:, p]
        best[better] = p
    top_num, top_den = num[rows, best][:, None], den[rows, best][:, None]
    tied = (num * top_den == top_num * den).sum(axis=1) > 1
    return best, top_num[:, 0] / top_den[:, 0], tied


def random_boxes(rng: np.random.Generator, n: int, H: int, W: int) -> np.ndarray:
    """Clipped boxes as Algorithm 1 makes them (random size and centre), plus the edge cases by hand."""
    w = rng.integers(1, W + 1, n)
    h = rng.integers(1, H + 1, n)
    cx = rng.integers(0, W, n)
    cy = rng.integers(0, H, n)
    x0, y0 = cx - w // 2, cy - h // 2
    alg1 = np.stack([np.maximum(x0, 0), np.maximum(y0, 0), np.minimum(x0 + w, W), np.minimum(y0 + h, H)], axis=1)
    # Small boxes anywhere, including single pixels and the last row/column.
    sx, sy, sw, sh = (rng.integers(0, top, n // 4) for top in (W, H, 4, 4))
    small = np.stack([sx, sy, np.minimum(sx + sw + 1, W), np.minimum(sy + sh + 1, H)], 1)
    special = np.array(
        [
            (0, 0, W, H),  # whole image
            (0, 0, W - 1, H - 1),  # whole image less the last row and column
            (0, 0, 1, 1),
            (W - 1, 0, W, 1),
            (0, H - 1, 1, H),
            (W - 1, H - 1, W, H),  # corner pixels
            (W - 1, 0, W, H),
            (0, H - 1, W, H),  # last column, last row
            (0, 0, W, 1),
            (0, 0, 1, H),  # first row, first column
            (5, 7, 5, 20),
            (3, 3, 9, 3),  # empty boxes
            (19, 22, 38, 44),
            (18, 21, 39, 45),
            (20, 23, 37, 43),  # on, around and inside a K=5 block
        ]
    )
    return np.concatenate([alg1, small, special]).astype(np.int64)


# ---- catalog ---------------------------------------------------------------------------------------------------


def test_counts_match_the_paper():
    assert num_patterns(4) == 101
    assert num_patterns(5) == 226
    for K in range(1, 9):
        assert num_patterns(K) == (K * (K + 1) // 2) ** 2 + 1
        assert len(pattern_catalog(K, 112, 96)) == num_patterns(K)


def test_block_edges_are_truncated_even_points():
    assert block_edges(5, 96).tolist() == [0, 19, 38, 57, 76, 96]
    assert block_edges(5, 112).tolist() == [0, 22, 44, 67, 89, 112]
    for K in range(1, 9):
        for length in range(K, 700):
            assert block_edges(K, length).tolist() == np.linspace(0, length, K + 1, dtype=int).tolist()


@pytest.mark.parametrize("K", range(1, 9))
@pytest.mark.parametrize("H,W", SIZES)
def test_catalog_order_is_the_release_order(K, H, W):
    xs, ys = block_edges(K, W), block_edges(K, H)
    expected = [(0, 0, 0, 0)]
    lattice = [(y, x) for y in range(K + 1) for x in range(K + 1)]
    for i0, j0 in lattice:
        for i1, j1 in lattice:
            if i1 > i0 and j1 > j0:
                expected.append((xs[j0], ys[i0], xs[j1], ys[i1]))
    assert [tuple(r) for r in pattern_catalog(K, H, W).tolist()] == expected


def test_catalog_matches_the_dense_grids():
    for K in (1, 4, 5):
        for H, W in SIZES:
            dense = reference_grids(K, H, W)
            drawn = np.zeros_like(dense).reshape(len(dense), H, W)
            for n, (x0, y0, x1, y1) in enumerate(pattern_catalog(K, H, W)):
                drawn[n, y0:y1, x0:x1] = True
            assert np.array_equal(drawn.reshape(len(dense), -1), dense)


# ---- labelling -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compat", ["paper", "from"])
@pytest.mark.parametrize("H,W", SIZES)
def test_labels_equal_the_dense_reference(compat, H, W):
    rng = np.random.default_rng(100 + H + W)
    for K in range(1, 7):
        boxes = random_boxes(rng, 1200, H, W)
        expected, expected_iou, _ = reference_labels(boxes, K, H, W, compat)
        pattern, iou = label_boxes(boxes, np.ones(len(boxes), bool), K, H, W, compat)
        mismatch = np.flatnonzero(pattern != expected)
        first = mismatch[:5]
        assert mismatch.size == 0, f"K={K}: {boxes[first].tolist()} -> {pattern[first]} != {expected[first]}"
        assert np.array_equal(iou, expected_iou)  # bit for bit


@pytest.mark.parametrize("compat", ["paper", "from"])
@pytest.mark.parametrize(
    "H,W,K",
    [(9, 9, 1), (5, 7, 2), (6, 6, 3), (8, 6, 4), (12, 10, 5), (12, 12, 6), (14, 11, 5), (10, 10, 7), (11, 10, 8)],
)
def test_every_box_of_a_small_image(compat, H, W, K):
    # Small images make exact ties common: every possible box, against the dense reference.
    xs = [(a, b) for a in range(W + 1) for b in range(a, W + 1)]
    ys = [(a, b) for a in range(H + 1) for b in range(a, H + 1)]
    boxes = np.array([(x0, y0, x1, y1) for x0, x1 in xs for y0, y1 in ys])
    expected, expected_iou, tied = reference_labels(boxes, K, H, W, compat)
    pattern, iou = label_boxes(boxes, np.ones(len(boxes), bool), K, H, W, compat)
    assert np.array_equal(pattern, expected) and np.array_equal(iou, expected_iou)
    assert K == 1 or tied.sum() > 0  # the case exercises tie-breaking


def test_ties_go_to_the_first_pattern():
    # K=2 on 8x8: each box has the same IoU (6/19) with two patterns; the earlier one in release order wins.
    H, W = 8, 8
    boxes = np.array([(0, 3, 6, 6), (2, 3, 8, 6)])
    catalog = pattern_catalog(2, H, W)
    pattern, iou = label_boxes(boxes, np.ones(2, bool), 2, H, W)
    assert [tuple(catalog[p]) for p in pattern] == [(0, 0, 4, 8), (4, 0, 8, 8)]  # not (0, 4, 8, 8), index 8
    assert pattern.tolist() == [3, 6] and iou.tolist() == [6 / 19, 6 / 19]
    best, _, tied = reference_labels(boxes, 2, H, W, "paper")
    assert best.tolist() == [3, 6] and tied.all()


def test_from_mode_drops_the_last_row_and_column():
    H, W = 112, 96
    boxes = np.array([(W - 1, 10, W, 20), (10, H - 1, 20, H), (76, 89, 96, 112)])
    pattern, iou = label_boxes(boxes, np.ones(3, bool), 5, H, W, compat="from")
    assert pattern[:2].tolist() == [0, 0] and iou[:2].tolist() == [0.0, 0.0]  # empty once clipped
    assert tuple(pattern_catalog(5, H, W)[pattern[2]]) == (76, 89, 96, 112)
    assert iou[2] == (19 * 22) / (20 * 23 + 1e-10)
    pattern, iou = label_boxes(boxes, np.ones(3, bool), 5, H, W, compat="paper")
    assert iou[2] == 1.0 and pattern[0] > 0


def test_clean_samples_get_the_clean_pattern():
    boxes = np.array([[np.nan] * 4, [10, 10, 50, 60], [np.nan] * 4])
    occluded = np.array([False, True, False])
    for compat, clean_iou in (("paper", 1.0), ("from", 0.0)):
        pattern, iou = label_boxes(boxes, occluded, 5, 112, 96, compat)
        assert pattern[[0, 2]].tolist() == [0, 0] and iou[[0, 2]].tolist() == [clean_iou, clean_iou]
        assert pattern[1] > 0
    assert label_boxes(np.zeros((0, 4)), np.zeros(0, bool), 5, 112, 96)[0].shape == (0,)


def test_regression_target():
    boxes = np.array([[np.nan] * 4, [12, 28, 96, 112]])
    occluded = np.array([False, True])
    paper = regression_target(boxes, occluded, 112, 96)
    assert paper.dtype == np.float32
    assert paper[0].tolist() == [0, 0, 0, 0]
    assert paper[1].tolist() == pytest.approx([12 / 96, 28 / 112, 1.0, 1.0])
    from_target = regression_target(boxes, occluded, 112, 96, "from")
    assert from_target[1].tolist() == pytest.approx([12 / 96, 28 / 112, 95 / 96, 111 / 112])


@pytest.mark.parametrize("K", [0, 9, -1])
def test_k_out_of_range(K):
    with pytest.raises(UserError, match="K must be an integer from 1 to 8"):
        num_patterns(K)
    with pytest.raises(UserError, match="K must be"):
        label_boxes(np.zeros((1, 4)), np.zeros(1, bool), K, 112, 96)


def test_bad_inputs_are_user_errors():
    one = np.ones(1, bool)
    with pytest.raises(UserError, match="too small for K=5"):
        pattern_catalog(5, 4, 96)
    with pytest.raises(UserError, match="not a clipped box"):
        label_boxes(np.array([[0, 0, 97, 10]]), one, 5, 112, 96)
    with pytest.raises(UserError, match="not a clipped box"):
        label_boxes(np.array([[10, 0, 5, 10]]), one, 5, 112, 96)
    with pytest.raises(UserError, match="no box"):
        label_boxes(np.array([[np.nan, 0, 5, 10]]), one, 5, 112, 96)
    with pytest.raises(UserError, match="whole pixels"):
        label_boxes(np.array([[0.5, 0, 5, 10]]), one, 5, 112, 96)
    with pytest.raises(UserError, match="compat must be one of paper, from"):
        label_boxes(np.array([[0, 0, 5, 10]]), one, 5, 112, 96, compat="fast")
