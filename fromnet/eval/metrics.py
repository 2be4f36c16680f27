"""Verification metrics as pure functions of score arrays: higher score = more likely the same person.

Scores are cosine similarities, or negated Euclidean distances, so one convention serves both. A pair is accepted
as "same" when its score is strictly above the threshold. All functions take ``scores`` (float array) and ``same``
(bool array) of equal length and touch no files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from occgen.errors import UserError


def cosine_scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (N, D) arrays, in float64 (a zero vector scores 0)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.einsum("nd,nd->n", a, b) / np.where(norm > 0, norm, 1.0)


def euclidean_scores(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise negated Euclidean distance of the raw embeddings (no normalisation), so higher = closer."""
    return -np.linalg.norm(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64), axis=1)


METRICS = {"cosine": cosine_scores, "euclidean": euclidean_scores}


def _check(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    if scores.ndim != 1 or scores.shape != same.shape:
        raise ValueError(f"scores and same must be 1-D of equal length; got {scores.shape} and {same.shape}")
    if not np.isfinite(scores).all():
        raise UserError("some pair scores are NaN or infinite: the embeddings file holds NaN/inf values")
    return scores, same


def candidate_thresholds(scores: np.ndarray) -> np.ndarray:
    """Every threshold that separates the scores differently: below the lowest, the midpoints between consecutive
    distinct scores, and the highest score (which accepts nothing)."""
    u = np.unique(scores)
    if len(u) == 0:
        return np.zeros(1)
    return np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2, [u[-1]]])


def accuracy_at(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    """Share of pairs decided right when accepting ``score > threshold``."""
    scores, same = _check(scores, same)
    return float(np.mean((scores > threshold) == same)) if len(scores) else float("nan")


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy on these pairs; ties go to the lowest threshold.

    Exact over all distinct separations (one sort and two cumulative sums), not a grid of guesses.
    """
    scores, same = _check(scores, same)
    if len(scores) == 0:
        raise ValueError("no pairs to choose a threshold on")
    t = candidate_thresholds(scores)
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], same[order]
    # Pairs with score <= t are rejected: count them per candidate with one searchsorted.
    rejected = np.searchsorted(s, t, side="right")
    impostors_below = np.concatenate([[0], np.cumsum(~y)])[rejected]
    genuine_above = y.sum() - np.concatenate([[0], np.cumsum(y)])[rejected]
    correct = impostors_below + genuine_above
    best = int(np.argmax(correct))  # first maximum = lowest threshold
    return float(t[best]), float(correct[best] / len(s))


@dataclass
class FoldResult:
    """k-fold accuracy: each fold decided with the threshold chosen on all other folds."""

    folds: np.ndarray  # the fold ids, sorted
    accuracies: np.ndarray  # per fold
    thresholds: np.ndarray  # per fold, chosen on the other folds
    correct: np.ndarray  # per pair: decided right under its own fold's threshold

    @property
    def mean(self) -> float:
        return float(self.accuracies.mean())

    @property
    def std(self) -> float:
        """Population standard deviation over folds (ddof=0), as LFW results are usually quoted."""
        return float(self.accuracies.std())


def kfold_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> FoldResult:
    """Accuracy of each fold at the threshold chosen on the others (LFW's 10-fold protocol)."""
    scores, same = _check(scores, same)
    folds = np.asarray(folds)
    ids = np.unique(folds)
    if len(ids) < 2:
        raise UserError(f"k-fold accuracy needs at least 2 folds; these pairs have {len(ids)}")
    acc, thr = np.empty(len(ids)), np.empty(len(ids))
    correct = np.zeros(len(scores), dtype=bool)
    for i, f in enumerate(ids):
        test = folds == f
        thr[i], _ = best_threshold(scores[~test], same[~test])
        correct[test] = (scores[test] > thr[i]) == same[test]
        acc[i] = correct[test].mean()
    return FoldResult(ids, acc, thr, correct)


def round_robin_folds(same: np.ndarray, k: int = 10) -> np.ndarray:
    """Fold ids 0..k-1 dealt in turn within the genuine and within the impostor pairs, so every fold has both."""
    same = np.asarray(same, dtype=bool)
    folds = np.empty(len(same), dtype=np.int16)
    for cls in (True, False):
        idx = np.flatnonzero(same == cls)
        folds[idx] = np.arange(len(idx)) % k
    return folds


@dataclass
class TarAtFar:
    far: float  # requested
    tar: float | None  # None when refused
    threshold: float | None
    far_actual: float | None  # impostors strictly above the threshold / impostors (<= far; ties can lower it)
    impostors: int
    refused: str | None = None  # why no value
    low: float | None = None  # bootstrap interval (fromnet.eval.bootstrap), when drawn
    high: float | None = None


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> TarAtFar:
    """True accept rate at the lowest threshold whose false accept rate over ALL impostor scores is <= ``far``.

    The threshold is the (k+1)-th highest impostor score, k = floor(far * impostors); accepting ``score > t``, at
    most k impostors pass (fewer when scores tie at t). A FAR below 1/impostors cannot be measured on these pairs
    and is refused with the reason, never extrapolated.
    """
    scores, same = _check(scores, same)
    impostor = np.sort(scores[~same])[::-1]
    genuine = scores[same]
    n = len(impostor)
    if not 0 < far < 1:
        raise UserError(f"FAR must be between 0 and 1, got {far}")
    if n == 0 or far < 1.0 / n:
        need = int(np.ceil(1.0 / far))
        return TarAtFar(far, None, None, None, n, f"FAR {far:g} needs >= {need:,} impostor pairs; have {n:,}")
    k = min(int(np.floor(far * n + 1e-9)), n - 1)  # 1e-9: far * n may land a hair under a whole number
    t = float(impostor[k])
    tar = float(np.mean(genuine > t)) if len(genuine) else float("nan")
    return TarAtFar(far, tar, t, float(np.mean(impostor > t)), n)


def roc_curve(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct score, accepting ``score >= threshold``, highest first, starting at
    (0, 0, inf): the points of ``sklearn.metrics.roc_curve(same, scores, drop_intermediate=False)``."""
    scores, same = _check(scores, same)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], same[order]
    last = np.concatenate([np.flatnonzero(np.diff(s)), [len(s) - 1]]) if len(s) else np.zeros(0, dtype=int)
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    pos, neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return (np.concatenate([[0.0], fps / neg]), np.concatenate([[0.0], tps / pos]), np.concatenate([[np.inf], s[last]]))


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under a ROC curve (trapezoids)."""
    return float(np.trapezoid(tpr, fpr))
