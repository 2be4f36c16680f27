"""Face verification on pairs: scores -> 10-fold accuracy, TAR at FAR, ROC, and accuracy against occluded area.

A *set* is a label plus where each pair's first and second image come from (two embeddings files, possibly the
same one): clean, N-O (clean first, occluded second), O-O, a named region, ... Results are split by the pairs'
protocol (and part/factor/centered for partial-face sets) where the pairs table has them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fromnet.eval import bootstrap as bs
from fromnet.eval import metrics
from fromnet.eval.pairs import Embeddings, MissingImages, group_columns, pair_origin
from occgen.errors import UserError

DEFAULT_FARS = (1e-3, 1e-4)
#: Edges of the occluded-area bins of the accuracy-vs-area curve (share of the face under the occluder's box).
AREA_BINS = np.round(np.linspace(0.0, 1.0, 11), 6)


@dataclass
class PairSet:
    """Where a set's first and second images come from."""

    label: str
    first: Embeddings
    second: Embeddings


@dataclass
class VerificationResult:
    label: str
    group: dict[str, Any]  # protocol / part / factor / centered values of these pairs ({} for a plain pairs.txt)
    pairs: int
    genuine: int
    impostors: int
    folds: int
    folds_note: str  # where the folds came from
    accuracy: float  # mean over folds
    accuracy_std: float  # population std over folds
    fold_accuracies: list[float]
    fold_thresholds: list[float]
    tar: list[metrics.TarAtFar]
    auc: float
    mean_area: float | None  # mean occluded box area of the pair's images (None: the files do not say)
    area_curve: list[dict[str, float]] = field(default_factory=list)  # per area bin: lo, hi, pairs, accuracy
    balanced_pairs: int | None = None  # all-pairs sets: the pairs accuracy is decided on (None: all of them)
    accuracy_low: float | None = None  # bootstrap interval of the accuracy (None: not drawn)
    accuracy_high: float | None = None
    bootstrap: dict[str, Any] | None = None  # how the intervals were drawn (unit, people, resamples, seed, level)
    roc: tuple[np.ndarray, np.ndarray] | None = None  # (fpr, tpr), for plotting; not written to JSON
    samples: dict[str, np.ndarray] = field(default_factory=dict)  # per-resample values by metric; not in JSON

    @property
    def name(self) -> str:
        """Label plus the group values, e.g. 'occ-2 N-O' or 'partial nose f=0.3'."""
        return " ".join([self.label, *(f"{v}" if k == "protocol" else f"{k}={v}" for k, v in self.group.items())])

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("roc")
        d.pop("samples")
        d["name"] = self.name
        return d


def pair_areas(first: Embeddings, rows1: np.ndarray, second: Embeddings, rows2: np.ndarray) -> np.ndarray | None:
    """Per pair, the larger occluded area of its two images (clean = 0); None if a file lacks the column."""
    a1, a2 = first.column("box_area_ratio"), second.column("box_area_ratio")
    if a1 is None or a2 is None:
        return None
    a1 = np.nan_to_num(np.asarray(a1[rows1], dtype=np.float64))
    a2 = np.nan_to_num(np.asarray(a2[rows2], dtype=np.float64))
    return np.maximum(a1, a2)


def area_curve(areas: np.ndarray, correct: np.ndarray, edges: np.ndarray = AREA_BINS) -> list[dict[str, float]]:
    """Accuracy of the pairs in each occluded-area bin (empty bins left out); a pair's decision is the one its
    own fold's threshold gave."""
    which = np.clip(np.digitize(areas, edges[1:-1]), 0, len(edges) - 2)
    out = []
    for b in range(len(edges) - 1):
        sel = which == b
        if sel.any():
            out.append(
                dict(
                    lo=float(edges[b]),
                    hi=float(edges[b + 1]),
                    pairs=int(sel.sum()),
                    accuracy=float(correct[sel].mean()),
                )
            )
    return out


def tar_key(far: float) -> str:
    """The name of a TAR@FAR figure in ``samples`` and comparisons: 'TAR@FAR=0.001'."""
    return f"TAR@FAR={far:g}"


def verify(
    label: str,
    group: dict[str, Any],
    scores: np.ndarray,
    same: np.ndarray,
    folds: np.ndarray,
    fars=DEFAULT_FARS,
    areas: np.ndarray | None = None,
    people: bs.People | None = None,
    boot: bs.Bootstrap = bs.DEFAULT,
    balanced: np.ndarray | None = None,
) -> VerificationResult:
    """All verification figures of one group of pairs, from their scores.

    ``balanced`` (all-pairs sets) marks the pairs accuracy is decided on; TAR@FAR and the ROC use every pair.
    With ``people`` (each pair's persons) and ``boot.resamples`` > 0, intervals are drawn by resampling people
    (fromnet.eval.bootstrap), and the per-resample values kept in ``samples`` for paired comparisons."""
    decided = np.flatnonzero(balanced) if balanced is not None else np.arange(len(scores))
    d_scores, d_same, d_folds = scores[decided], same[decided], folds[decided]
    note = "pairs file"
    if balanced is not None:
        note = f"identity folds of the all-pairs set; accuracy on its balanced subset of {len(decided):,} pairs"
    if len(np.unique(d_folds)) < 2:
        d_folds = metrics.round_robin_folds(d_same)
        note = "dealt round-robin into 10 (the pairs list has one fold)"
    kf = metrics.kfold_accuracy(d_scores, d_same, d_folds)
    fpr, tpr, _ = metrics.roc_curve(scores, same)
    tar = [metrics.tar_at_far(scores, same, far) for far in fars]
    d_areas = None if areas is None else areas[decided]
    result = VerificationResult(
        label=label,
        group=group,
        pairs=len(scores),
        genuine=int(same.sum()),
        impostors=int((~same).sum()),
        folds=len(kf.folds),
        folds_note=note,
        # folds of an all-pairs set differ in size: the share of its pairs decided right, not the fold mean
        accuracy=float(kf.correct.mean()) if balanced is not None else kf.mean,
        accuracy_std=kf.std,
        fold_accuracies=kf.accuracies.tolist(),
        fold_thresholds=kf.thresholds.tolist(),
        tar=tar,
        auc=metrics.auc(fpr, tpr),
        mean_area=None if d_areas is None else float(d_areas.mean()),
        area_curve=[] if d_areas is None else area_curve(d_areas, kf.correct),
        balanced_pairs=None if balanced is None else len(decided),
        roc=(fpr, tpr),
    )
    if people is not None and boot.resamples:
        c = bs.counts(people.n, boot)
        result.samples["accuracy"] = bs.kfold_accuracy(c, people.subset(decided), d_scores, d_same, d_folds)
        result.accuracy_low, result.accuracy_high = bs.interval(result.samples["accuracy"], boot.level) or (None, None)
        for t, values in zip(tar, bs.tar_at_far(c, people, scores, same, fars).T):
            result.samples[tar_key(t.far)] = values
            t.low, t.high = bs.interval(values, boot.level) or (None, None)
        result.bootstrap = boot.to_json(people.n)
    return result


def pair_scores(
    first: Embeddings, rows1: np.ndarray, second: Embeddings, rows2: np.ndarray, metric: str, chunk: int = 1 << 16
) -> np.ndarray:
    """Scores of the pairs (rows1[k], rows2[k]). An all-pairs set pairs few faces many times: cosine scores then
    come from one matrix of the faces' similarities; otherwise embeddings are gathered a chunk at a time (all
    at once would not fit in memory)."""
    u1, inv1 = np.unique(rows1, return_inverse=True)
    u2, inv2 = np.unique(rows2, return_inverse=True)
    if metric == "cosine" and len(u1) * len(u2) <= max(4 * len(rows1), 1 << 20):
        return (unit_rows(first.vectors[u1]) @ unit_rows(second.vectors[u2]).T)[inv1, inv2]
    out = np.empty(len(rows1))
    for s in range(0, len(rows1), chunk):
        out[s : s + chunk] = metrics.METRICS[metric](
            first.vectors[rows1[s : s + chunk]], second.vectors[rows2[s : s + chunk]]
        )
    return out


def unit_rows(v: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in float64 (a zero row stays zero, scoring 0 as metrics.cosine_scores does)."""
    v = np.asarray(v, dtype=np.float64)
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norm > 0, norm, 1.0)


@dataclass
class Side:
    """One side of the pairs (first or second images) as codes into its distinct images: looking up an embeddings
    file is then one lookup per image, not per pair (an all-pairs set has ~400 pairs an image)."""

    keys: np.ndarray  # distinct images' keys (None where a pairs list has none)
    srcs: np.ndarray  # and their srcs
    codes: np.ndarray  # (pairs,) int: each pair's image, an index into keys / srcs

    @classmethod
    def of(cls, pairs: pd.DataFrame, side: int) -> Side:
        keys, srcs = pairs[f"key{side}"].to_numpy(), pairs[f"src{side}"].to_numpy()
        codes, distinct = pd.factorize(keys if not pd.isna(keys).any() else srcs)
        first = np.empty(len(distinct), dtype=np.int64)
        first[codes[::-1]] = np.arange(len(codes) - 1, -1, -1)  # each image's first pair
        return cls(keys[first], srcs[first], codes)


@dataclass
class PreparedPairs:
    """What scoring needs of a pairs table and depends on nothing else, made once: a command that scores several
    models (and seeds) on one set reuses it, so each model costs its scores and metrics only."""

    attrs: dict  # the table's: where a pairs list's lines come from, for error messages
    first: Side
    second: Side
    same: np.ndarray
    folds: np.ndarray
    balanced: np.ndarray | None
    people: bs.People
    groups: list[tuple[dict[str, Any], np.ndarray]]  # protocol group -> its pairs

    @classmethod
    def of(cls, pairs: pd.DataFrame) -> PreparedPairs:
        return cls(
            dict(pairs.attrs),
            Side.of(pairs, 1),
            Side.of(pairs, 2),
            pairs["same"].to_numpy(dtype=bool),
            pairs["fold"].to_numpy(),
            balanced_mask(pairs),
            bs.People.of_pairs(pairs["src1"].to_numpy(), pairs["src2"].to_numpy()),
            protocol_groups(pairs),
        )


def protocol_groups(pairs: pd.DataFrame) -> list[tuple[dict[str, Any], np.ndarray]]:
    """(group values, its pairs) per protocol group (protocol, part1/part2/factor/centered); one group of every
    pair when the table has none of those columns."""
    cols = group_columns(pairs)
    if not cols:
        return [({}, np.arange(len(pairs)))]
    groups = []
    for values, idx in pairs.groupby(cols, sort=False, dropna=False).indices.items():
        values = values if isinstance(values, tuple) else (values,)
        group = {c: _plain(v, pairs[c].dtype) for c, v in zip(cols, values) if v is not None and not pd.isna(v)}
        groups.append((group, idx))
    return groups


def evaluate_set(
    pairs: pd.DataFrame | PreparedPairs,
    pair_set: PairSet,
    metric: str = "cosine",
    fars=DEFAULT_FARS,
    boot: bs.Bootstrap = bs.DEFAULT,
) -> list[VerificationResult]:
    """Score every pair of a set and evaluate each protocol group separately (intervals per ``boot``)."""
    if metric not in metrics.METRICS:
        raise UserError(f"metric must be one of {', '.join(metrics.METRICS)}; got {metric!r}")
    ready = pairs if isinstance(pairs, PreparedPairs) else PreparedPairs.of(pairs)
    rows1 = _rows(pair_set.first, ready, 1)
    rows2 = _rows(pair_set.second, ready, 2)
    d1, d2 = pair_set.first.vectors.shape[1], pair_set.second.vectors.shape[1]
    if d1 != d2:
        raise UserError(
            f"set {pair_set.label}: {pair_set.first.name} has {d1}-d embeddings, "
            f"{pair_set.second.name} {d2}-d; both sides must come from the same model"
        )
    scores = pair_scores(pair_set.first, rows1, pair_set.second, rows2, metric)
    areas = pair_areas(pair_set.first, rows1, pair_set.second, rows2)
    return [
        verify(
            pair_set.label,
            group,
            scores[idx],
            ready.same[idx],
            ready.folds[idx],
            fars,
            None if areas is None else areas[idx],
            ready.people.subset(idx).compact() if boot.resamples else None,
            boot,
            None if ready.balanced is None else ready.balanced[idx],
        )
        for group, idx in ready.groups
    ]


def _rows(emb: Embeddings, ready: PreparedPairs, side: int) -> np.ndarray:
    """Where each pair's first (side 1) or second image is in `emb`; a missing one is named with its pair's line."""
    which = "first" if side == 1 else "second"
    images = ready.first if side == 1 else ready.second
    try:
        return emb.find(images.keys, images.srcs, f"{which} images of the pairs")[images.codes]
    except MissingImages as exc:
        origin = pair_origin(ready.attrs, int(np.flatnonzero(images.codes == exc.first)[0]))
        raise UserError(f"{origin}: {exc}" if origin else str(exc)) from None


def balanced_mask(pairs: pd.DataFrame) -> np.ndarray | None:
    """The balanced subset of an all-pairs set (``occgen build --pairs all``), or None for other pairs."""
    if "balanced" not in pairs.columns or not pairs["balanced"].notna().any():
        return None
    return pairs["balanced"].fillna(False).to_numpy(dtype=bool)


def _plain(value: Any, dtype) -> Any:
    """Group values as plain Python, for JSON; float32 factors keep their short form (0.2, not 0.20000000298)."""
    if dtype == np.float32:
        return float(str(np.float32(value)))
    return value.item() if isinstance(value, np.generic) else value


def select_folds(pairs: pd.DataFrame, folds) -> pd.DataFrame:
    """Only the pairs of these folds (e.g. LFW's tenth fold, whose people a model never saw in training)."""
    folds = sorted(set(int(f) for f in folds))
    have = set(pairs["fold"].astype(int))
    if not set(folds) <= have:
        raise UserError(f"fold(s) {sorted(set(folds) - have)} not in the pairs (they have {sorted(have)})")
    return pairs[pairs["fold"].isin(folds)].reset_index(drop=True)


def evaluate_files(
    pairs_path,
    sets: dict[str, tuple],
    metric: str = "cosine",
    fars=DEFAULT_FARS,
    folds=None,
    boot: bs.Bootstrap = bs.DEFAULT,
) -> list[VerificationResult]:
    """Verification of embeddings files: ``sets`` maps a label to (first file, second file).

    For experiments that compare models: e.g. {"FROM N-O s=2": ("from-clean.parquet", "from-occ2.parquet")}
    on ``folds=[9]``. One fold's pairs are dealt round-robin into 10 folds for the accuracy.
    """
    from fromnet.eval.pairs import read_embeddings, read_pairs

    pairs = read_pairs(pairs_path)
    if folds is not None:
        pairs = select_folds(pairs, folds)
    cache: dict[str, Embeddings] = {}

    def load(path) -> Embeddings:
        key = str(path)
        if key not in cache:
            cache[key] = read_embeddings(path)
        return cache[key]

    ready = PreparedPairs.of(pairs)
    results = []
    for label, (first, second) in sets.items():
        results.extend(evaluate_set(ready, PairSet(label, load(first), load(second)), metric, fars, boot))
    return results
