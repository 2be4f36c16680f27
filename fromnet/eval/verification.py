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
    roc: tuple[np.ndarray, np.ndarray] | None = None  # (fpr, tpr), for plotting; not written to JSON

    @property
    def name(self) -> str:
        """Label plus the group values, e.g. 'occ-2 N-O' or 'partial nose f=0.3'."""
        return " ".join([self.label, *(f"{v}" if k == "protocol" else f"{k}={v}" for k, v in self.group.items())])

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("roc")
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


def verify(
    label: str,
    group: dict[str, Any],
    scores: np.ndarray,
    same: np.ndarray,
    folds: np.ndarray,
    fars=DEFAULT_FARS,
    areas: np.ndarray | None = None,
) -> VerificationResult:
    """All verification figures of one group of pairs, from their scores."""
    note = "pairs file"
    if len(np.unique(folds)) < 2:
        folds = metrics.round_robin_folds(same)
        note = "dealt round-robin into 10 (the pairs list has one fold)"
    kf = metrics.kfold_accuracy(scores, same, folds)
    fpr, tpr, _ = metrics.roc_curve(scores, same)
    return VerificationResult(
        label=label,
        group=group,
        pairs=len(scores),
        genuine=int(same.sum()),
        impostors=int((~same).sum()),
        folds=len(kf.folds),
        folds_note=note,
        accuracy=kf.mean,
        accuracy_std=kf.std,
        fold_accuracies=kf.accuracies.tolist(),
        fold_thresholds=kf.thresholds.tolist(),
        tar=[metrics.tar_at_far(scores, same, far) for far in fars],
        auc=metrics.auc(fpr, tpr),
        mean_area=None if areas is None else float(areas.mean()),
        area_curve=[] if areas is None else area_curve(areas, kf.correct),
        roc=(fpr, tpr),
    )


def evaluate_set(
    pairs: pd.DataFrame, pair_set: PairSet, metric: str = "cosine", fars=DEFAULT_FARS
) -> list[VerificationResult]:
    """Score every pair of a set and evaluate each protocol group separately."""
    if metric not in metrics.METRICS:
        raise UserError(f"metric must be one of {', '.join(metrics.METRICS)}; got {metric!r}")
    rows1 = _rows(pair_set.first, pairs, 1)
    rows2 = _rows(pair_set.second, pairs, 2)
    e1, e2 = pair_set.first.vectors[rows1], pair_set.second.vectors[rows2]
    if e1.shape[1] != e2.shape[1]:
        raise UserError(
            f"set {pair_set.label}: {pair_set.first.name} has {e1.shape[1]}-d embeddings, "
            f"{pair_set.second.name} {e2.shape[1]}-d; both sides must come from the same model"
        )
    scores = metrics.METRICS[metric](e1, e2)
    same = pairs["same"].to_numpy(dtype=bool)
    folds = pairs["fold"].to_numpy()
    areas = pair_areas(pair_set.first, rows1, pair_set.second, rows2)
    cols = group_columns(pairs)
    if not cols:
        return [verify(pair_set.label, {}, scores, same, folds, fars, areas)]
    results = []
    for values, idx in pairs.groupby(cols, sort=False, dropna=False).indices.items():
        values = values if isinstance(values, tuple) else (values,)
        group = {c: _plain(v, pairs[c].dtype) for c, v in zip(cols, values) if v is not None and not pd.isna(v)}
        results.append(
            verify(
                pair_set.label, group, scores[idx], same[idx], folds[idx], fars, None if areas is None else areas[idx]
            )
        )
    return results


def _rows(emb: Embeddings, pairs: pd.DataFrame, side: int) -> np.ndarray:
    """Where each pair's first (side 1) or second image is in `emb`; a missing one is named with its pair's line."""
    which = "first" if side == 1 else "second"
    try:
        return emb.find(pairs[f"key{side}"].to_numpy(), pairs[f"src{side}"].to_numpy(), f"{which} images of the pairs")
    except MissingImages as exc:
        origin = pair_origin(pairs, exc.first)
        raise UserError(f"{origin}: {exc}" if origin else str(exc)) from None


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
    pairs_path, sets: dict[str, tuple], metric: str = "cosine", fars=DEFAULT_FARS, folds=None
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

    results = []
    for label, (first, second) in sets.items():
        results.extend(evaluate_set(pairs, PairSet(label, load(first), load(second)), metric, fars))
    return results
