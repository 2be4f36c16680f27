"""Confidence intervals that resample people, not pairs.

Pairs of one person are not independent (a hard-to-recognise person makes all their pairs hard), so resampling
pairs would give intervals that are too narrow. Here one resample draws the set's n people with replacement
(person i drawn c_i times, sum c_i = n), and every pair both of whose people are drawn counts with the
product of their multiplicities: a genuine pair of person i weighs c_i, an impostor pair of persons i and j
weighs c_i * c_j (the resampled population's every cross-person pair, pairs of a person with their own copy
aside). A probe (identification) weighs c_i of its person. A statistic is recomputed on the weighted pairs, and
the interval is the 2.5th and 97.5th percentile over resamples (percentile bootstrap).

What is recomputed and what is held fixed:
- TAR@FAR: both the threshold (the weighted impostor quantile) and the accept rate, per resample.
- accuracy: the whole k-fold protocol, each fold's threshold chosen again on the other folds' weighted pairs
  (holding the thresholds fixed gave intervals about a fifth narrower on LFW's tenth fold).
- rank-1: each probe's rank against the whole gallery is held fixed; probes are reweighted by their person.

Paired comparisons use the same seed and the same people, so every model sees the very same resamples, and the
interval of a difference comes from the per-resample differences. Everything is vectorised: weights are summed
per distinct (person, person) combination, so the cost grows with people and combinations, not pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_RESAMPLES = 1000
LEVEL = 0.95
#: Weight-matrix entries handled at once (bounds memory at ~64 MB of float64).
CHUNK = 8_000_000
#: Person x person matrices up to this many entries (~130 MB) are summed densely, by matrix products.
DENSE_MAX = 16_000_000


def identity_of(src: str) -> str:
    """A face's person: the folder of its path (``Name/Name_0001.jpg`` -> ``Name``), true of every occgen source."""
    return Path(str(src)).parent.as_posix()


@dataclass(frozen=True)
class Bootstrap:
    """How intervals are drawn: resamples (0: none), seed, level."""

    resamples: int = DEFAULT_RESAMPLES
    seed: int = 0
    level: float = LEVEL

    def to_json(self, people: int) -> dict:
        return {
            "unit": "identity",
            "people": people,
            "resamples": self.resamples,
            "seed": self.seed,
            "level": self.level,
        }


#: Intervals as `fromnet eval` draws them by default.
DEFAULT = Bootstrap()


@dataclass
class People:
    """Items (pairs or probes) as codes into a sorted list of people; ``second`` is ``n`` (nobody) for items of
    one person (genuine pairs, probes)."""

    names: np.ndarray
    first: np.ndarray
    second: np.ndarray

    @property
    def n(self) -> int:
        return len(self.names)

    @classmethod
    def of_pairs(cls, src1, src2) -> People:
        codes, names = _persons(np.concatenate([np.asarray(src1, dtype=object), np.asarray(src2, dtype=object)]))
        a, b = codes[: len(src1)], codes[len(src1) :]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        return cls(np.asarray(names, dtype=object), lo, np.where(lo == hi, len(names), hi))

    @classmethod
    def of_probes(cls, srcs) -> People:
        codes, names = _persons(np.asarray(srcs, dtype=object))
        return cls(np.asarray(names, dtype=object), codes, np.full(len(codes), len(names)))

    def subset(self, rows) -> People:
        """These items, people numbering kept (a statistic on part of a set's pairs, same resamples)."""
        return People(self.names, self.first[rows], self.second[rows])

    def compact(self) -> People:
        """Only the people these items have, renumbered: a group of pairs resampled as a set of its own."""
        present = np.unique(np.concatenate([self.first, self.second[self.second < self.n]]))
        code = np.full(self.n + 1, len(present))
        code[present] = np.arange(len(present))
        return People(self.names[present], code[self.first], code[self.second])


def _persons(srcs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(code per face, sorted person names): each distinct path's person worked out once."""
    path_codes, paths = pd.factorize(srcs)
    person_codes, names = pd.factorize(np.array([identity_of(p) for p in paths], dtype=object), sort=True)
    return person_codes[path_codes], np.asarray(names, dtype=object)


def counts(n: int, spec: Bootstrap) -> np.ndarray:
    """(resamples, n + 1) multiplicities: row b says how often each person is drawn in resample b; the last
    column is 1, the weight factor of 'nobody' (so a one-person item weighs c_i * 1)."""
    rng = np.random.default_rng(spec.seed)
    draws = rng.integers(0, n, size=(spec.resamples, n))
    flat = (draws + (n * np.arange(spec.resamples))[:, None]).ravel()
    c = np.bincount(flat, minlength=spec.resamples * n).reshape(spec.resamples, n).astype(np.float64)
    return np.concatenate([c, np.ones((spec.resamples, 1))], axis=1)


def weighted_sums(c: np.ndarray, people: People, values: np.ndarray) -> np.ndarray:
    """(resamples, k): per resample, the sum over items of weight * values (values (items, k))."""
    values = np.asarray(values, dtype=np.float64)
    values = values[:, None] if values.ndim == 1 else values
    code = people.first.astype(np.int64) * (people.n + 1) + people.second
    uniq, inv = np.unique(code, return_inverse=True)
    agg = np.zeros((len(uniq), values.shape[1]))
    for k in range(values.shape[1]):
        agg[:, k] = np.bincount(inv, weights=values[:, k], minlength=len(uniq))
    a, b = uniq // (people.n + 1), uniq % (people.n + 1)
    out = np.zeros((len(c), values.shape[1]))
    if (people.n + 1) ** 2 <= min(DENSE_MAX, 16 * len(uniq)):
        # many combinations of few people: sum_ij c_i N_ij c_j as one matrix product per value column
        for k in range(values.shape[1]):
            dense = np.zeros((people.n + 1, people.n + 1))
            dense[a, b] = agg[:, k]
            out[:, k] = np.einsum("bi,bi->b", c @ dense, c)
        return out
    step = max(1, CHUNK // len(c))
    for s in range(0, len(uniq), step):
        out += (c[:, a[s : s + step]] * c[:, b[s : s + step]]) @ agg[s : s + step]
    return out


def share(c: np.ndarray, people: People, hit: np.ndarray) -> np.ndarray:
    """Per resample, the weighted share of items where ``hit`` (accuracy, rank-1)."""
    hit = np.asarray(hit, dtype=np.float64)
    sums = weighted_sums(c, people, np.stack([hit, np.ones_like(hit)], axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[:, 0] / sums[:, 1]


def kfold_accuracy(
    c: np.ndarray, people: People, scores: np.ndarray, same: np.ndarray, folds: np.ndarray
) -> np.ndarray:
    """Per resample, k-fold accuracy as metrics.kfold_accuracy gives it on the resample written out: each fold
    decided at the threshold that maximises the weighted right decisions on the other folds (the lowest such
    threshold, midway between the present scores around it), then the weighted share decided right. NaN where a
    fold's pairs are drawn but no other fold's are.

    Weights are whole numbers, summed in float32: exact below 2**24, far above any set's total weight."""
    scores, same, folds = np.asarray(scores, dtype=np.float64), np.asarray(same, dtype=bool), np.asarray(folds)
    order = np.argsort(scores, kind="stable")
    s, y, f, a, b = scores[order], same[order], folds[order], people.first[order], people.second[order]
    n = len(s)
    cut_ok = np.ones(n, dtype=bool)  # cut after position p: only between two different scores
    cut_ok[:-1] = s[:-1] < s[1:]
    # a cut after p rejects positions 0..p; relative to rejecting nothing (all genuine right) it gains the
    # impostors and loses the genuine pairs below it
    sign = np.where(y, -1.0, 1.0).astype(np.float32)[:, None]
    ct = np.ascontiguousarray(c.T, dtype=np.float32)  # (people + 1, resamples): pairs x resamples, below
    out = np.full(len(c), np.nan)
    step = max(1, CHUNK // (4 * max(n, 1)))
    for lo in range(0, len(c), step):
        w = ct[a, lo : lo + step] * ct[b, lo : lo + step]  # (pairs, resamples): cumsums run down columns
        cols = np.arange(w.shape[1])
        right = np.zeros(w.shape[1])
        for fold in np.unique(f):
            test = f == fold
            train = w * (~test)[:, None]
            gain = np.cumsum(train * sign, axis=0)
            gain[~cut_ok] = -np.inf
            p = np.argmax(gain, axis=0)
            k = np.where(gain[p, cols] > 0, p + 1, 0)  # pairs rejected; ties go to the lowest threshold
            drawn = np.cumsum(train > 0, axis=0, dtype=np.int32)  # training pairs drawn up to each position
            before = np.where(k > 0, drawn[np.maximum(k - 1, 0), cols], 0)
            later = drawn > before[None, :]
            above = np.where(later[-1], np.argmax(later, axis=0), n)  # the first drawn training pair over the cut
            lo_s = s[np.maximum(k - 1, 0)]  # the score under the cut is a drawn training score's (or ties it)
            hi_s = s[np.minimum(above, n - 1)]
            t = np.where(k == 0, hi_s - 1.0, np.where(above >= n, lo_s, (lo_s + hi_s) / 2))
            t = np.where((k == 0) & (above >= n), np.nan, t)  # no other fold drawn
            decided = (s[test][:, None] > t[None, :]) == y[test][:, None]
            right += np.where(np.isnan(t), np.nan, (decided * w[test]).sum(axis=0))
        out[lo : lo + step] = right / w.sum(axis=0)
    return out


def tar_at_far(c: np.ndarray, people: People, scores: np.ndarray, same: np.ndarray, fars) -> np.ndarray:
    """(resamples, len(fars)) TAR at each FAR on the weighted pairs, the threshold re-chosen per resample as
    metrics.tar_at_far chooses it on the resample written out (the (k+1)-th highest impostor score, k =
    floor(far * impostor weight)). NaN where a resample's impostor weight is below 1 / far."""
    scores, same = np.asarray(scores, dtype=np.float64), np.asarray(same, dtype=bool)
    imp, gen = np.flatnonzero(~same), np.flatnonzero(same)
    out = np.full((len(c), len(fars)), np.nan)
    if not len(imp) or not len(gen):
        return out
    total_imp = weighted_sums(c, people.subset(imp), np.ones(len(imp)))[:, 0]
    order = imp[np.argsort(-scores[imp], kind="stable")]
    s_imp, a_imp, b_imp = scores[order], people.first[order], people.second[order]
    g_order = gen[np.argsort(scores[gen], kind="stable")]
    s_gen, a_gen = scores[g_order], people.first[g_order]
    step = max(1, CHUNK // max(len(gen), 1))
    for lo in range(0, len(c), step):
        cb = c[lo : lo + step]
        wg = np.cumsum(cb[:, a_gen], axis=1)  # genuine weights, ascending score
        for f, far in enumerate(fars):
            weight = total_imp[lo : lo + step]
            k = np.floor(far * weight + 1e-9)
            ok = far * weight >= 1 - 1e-9  # as metrics.tar_at_far refuses a FAR below 1 / impostors
            t = _weighted_threshold(cb, a_imp, b_imp, s_imp, k)
            pos = np.searchsorted(s_gen, t, side="right")  # genuine at or below t are rejected
            below = np.where(pos > 0, wg[np.arange(len(cb)), np.maximum(pos - 1, 0)], 0.0)
            with np.errstate(invalid="ignore", divide="ignore"):  # a resample without genuine pairs: NaN
                tar = (wg[:, -1] - below) / wg[:, -1]
            out[lo : lo + step, f] = np.where(ok, tar, np.nan)
    return out


def _weighted_threshold(c: np.ndarray, a: np.ndarray, b: np.ndarray, s: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Per resample, the impostor score (descending ``s``) where the cumulative weight first exceeds k: only a
    prefix of the impostors is weighed, lengthened until every resample's crossing lies in it."""
    length = min(len(s), int(2 * k.max()) + 1024)
    while True:
        cw = np.cumsum(c[:, a[:length]] * c[:, b[:length]], axis=1)
        crossed = cw[:, -1] > k
        if crossed.all() or length == len(s):
            idx = np.where(crossed, np.argmax(cw > k[:, None], axis=1), length - 1)
            return s[idx]
        length = min(len(s), 4 * length)


def interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float] | None:
    """Percentile interval; None when some resample has no value (e.g. too few impostors for the FAR)."""
    samples = np.asarray(samples, dtype=np.float64)
    if not len(samples) or not np.isfinite(samples).all():
        return None
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return float(lo), float(hi)
