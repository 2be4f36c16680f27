"""Closed-set identification: rank-1 of probes against a gallery, with optional distractors (MegaFace-style).

A face's identity is the folder of its ``src`` (``Name/Name_0001.jpg`` -> ``Name``), which holds for every
occgen source. A probe is never matched against its own photo (a gallery entry with the same ``src``, occluded
copy or not), so passing one set as both gallery and probes gives leave-one-out identification. Distractors join
the gallery and match no probe. Probes with no mate left in the gallery are counted and left out of rank-1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fromnet.eval import bootstrap as bs
from fromnet.eval.pairs import Embeddings, src_stem
from occgen.errors import UserError

#: Probes scored against the gallery at once: bounds the score matrix at ~32 MB of float32 per 10k gallery faces.
CHUNK = 1024


@dataclass
class IdentificationResult:
    label: str
    probes: int  # probes evaluated (with a mate in the gallery)
    no_mate: int  # probes left out: no other photo of their identity in the gallery
    gallery: int
    distractors: int
    rank1: float
    rank5: float
    mean_area: float | None  # mean occluded area of the probes evaluated
    rank1_low: float | None = None  # bootstrap interval of rank-1 (None: not drawn)
    rank1_high: float | None = None
    bootstrap: dict[str, Any] | None = None  # how it was drawn (unit, people, resamples, seed, level)
    samples: dict[str, np.ndarray] = field(default_factory=dict)  # per-resample rank-1; not in JSON

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("samples")
        return d


def _normalised(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(n > 0, n, 1)


def similarity(probes: np.ndarray, gallery: np.ndarray, metric: str) -> np.ndarray:
    """(P, G) scores, higher = closer: cosine, or negated Euclidean distance."""
    if metric == "cosine":
        return _normalised(probes) @ _normalised(gallery).T
    if metric == "euclidean":
        p, g = np.asarray(probes, np.float64), np.asarray(gallery, np.float64)
        d2 = (p * p).sum(1)[:, None] + (g * g).sum(1)[None, :] - 2 * p @ g.T
        return -np.sqrt(np.maximum(d2, 0))
    raise UserError(f"metric must be cosine or euclidean; got {metric!r}")


def identify(
    label: str,
    gallery: Embeddings,
    probes: Embeddings,
    distractors: Sequence[Embeddings] = (),
    metric: str = "cosine",
    boot: bs.Bootstrap = bs.DEFAULT,
) -> IdentificationResult:
    """Rank-1 and rank-5 identification rates of ``probes`` against ``gallery`` plus ``distractors``, and a
    rank-1 interval that resamples the probes' people (each probe's rank held fixed; fromnet.eval.bootstrap)."""
    dims = {e.vectors.shape[1] for e in [gallery, probes, *distractors] if len(e)}
    if len(dims) > 1:
        raise UserError(f"identification set {label}: embeddings of different lengths {sorted(dims)}")
    if not len(gallery) or not len(probes):
        raise UserError(f"identification set {label}: empty gallery or probe list")
    g_id = np.array([bs.identity_of(s) for s in gallery.srcs], dtype=object)
    p_id = np.array([bs.identity_of(s) for s in probes.srcs], dtype=object)
    codes, _ = pd.factorize(np.concatenate([g_id, p_id]))
    g_code, p_code = codes[: len(g_id)], codes[len(g_id) :]
    g_stem = pd.Index([src_stem(s) for s in gallery.srcs])
    p_stem = [src_stem(s) for s in probes.srcs]
    vectors = gallery.vectors
    d_count = sum(len(d) for d in distractors)
    if d_count:
        vectors = np.concatenate([vectors, *[d.vectors for d in distractors]])
        g_code = np.concatenate([g_code, np.full(d_count, -1)])
    same_src = pd.Series(np.arange(len(g_stem)), index=g_stem)
    rank = np.full(len(p_code), -1)  # -1: no mate
    for start in range(0, len(p_code), CHUNK):
        stop = min(start + CHUNK, len(p_code))
        s = similarity(probes.vectors[start:stop], vectors, metric)
        for i in range(stop - start):  # the probe's own photo leaves the gallery
            own = same_src.get(p_stem[start + i])
            if own is not None:
                s[i, np.atleast_1d(own)] = -np.inf
        mate = g_code[None, :] == p_code[start:stop, None]
        mate &= np.isfinite(s)
        has = mate.any(axis=1)
        best_mate = np.where(mate, s, -np.inf).max(axis=1)
        # rank of the best mate = how many non-mates score at least as high (a tie counts against the probe)
        higher = ((s >= best_mate[:, None]) & ~mate & np.isfinite(s)).sum(axis=1)
        rank[start:stop] = np.where(has, higher, -1)
    ok = rank >= 0
    areas = probes.column("box_area_ratio")
    result = IdentificationResult(
        label=label,
        probes=int(ok.sum()),
        no_mate=int((~ok).sum()),
        gallery=len(gallery),
        distractors=d_count,
        rank1=float((rank[ok] == 0).mean()) if ok.any() else float("nan"),
        rank5=float((rank[ok] < 5).mean()) if ok.any() else float("nan"),
        mean_area=None
        if areas is None or not ok.any()
        else float(np.nan_to_num(np.asarray(areas, np.float64))[ok].mean()),
    )
    if boot.resamples and ok.any():
        people = bs.People.of_probes(probes.srcs[ok])
        result.samples["rank-1"] = bs.share(bs.counts(people.n, boot), people, rank[ok] == 0)
        result.rank1_low, result.rank1_high = bs.interval(result.samples["rank-1"], boot.level) or (None, None)
        result.bootstrap = boot.to_json(people.n)
    return result
