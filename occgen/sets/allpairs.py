"""All-pairs verification sets: every genuine and every (or a seeded sample of the) impostor pair among the faces
of a source (in practice, a split's test people), far more pairs than a pairs list holds.

At most ``max_per_identity`` images of a person are used (a seeded choice), so one person with hundreds of images
(George W Bush has 530 in LFW) cannot dominate. People are dealt into ``folds`` identity-disjoint folds (seeded),
and a *balanced* subset is marked for accuracy: all genuine pairs, and per fold as many impostor pairs as it has
genuine ones, drawn (seeded) among impostor pairs of two people of that fold (topped up, where those are too few,
with pairs of one of its people and someone of another fold). Accuracy is decided on the balanced pairs, each fold
at the threshold chosen on the others (LFW's protocol: a fold's genuine pairs are people no other fold has);
TAR at FAR uses every impostor pair. Every choice hashes (seed, path), so the set is the same for any worker
count and numpy version.

Rows follow the image order (paths sorted): pair (i, j) with i < j, the first image at copy ``c1`` and the
second at ``c2`` of the protocol (N-N, N-O, O-O), as ``occgen build --pairs`` lays out its samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from occgen.errors import UserError
from occgen.occlude.plan import sample_key
from occgen.occlude.sources import Item, Source
from occgen.sets.pairs import PAIRS_SCHEMA, PROTOCOLS
from occgen.sets.split import rank

#: Above this many candidate pairs, ask for a sample (--impostors) or fewer images per person.
MAX_PAIRS = 20_000_000
#: Identity-disjoint folds of the balanced subset (LFW's count).
FOLDS = 10


@dataclass(frozen=True)
class AllPairsOptions:
    max_per_identity: int = 10
    impostors: int | None = None  # None: every impostor pair
    seed: int = 0
    folds: int = FOLDS


@dataclass
class AllPairs:
    table: pa.Table  # PAIRS_SCHEMA rows
    picks: list[tuple[Item, int]]  # the (item, copy) samples the pairs use, in build order

    def describe(self) -> str:
        same = self.table["same"].to_numpy(zero_copy_only=False)
        bal = self.table["balanced"].to_numpy(zero_copy_only=False)
        genuine = int(same.sum())
        return (
            f"{self.table['protocol'][0]}: {len(same):,} pairs ({genuine:,} genuine, {len(same) - genuine:,} "
            f"impostor) among {len({it.rel for it, _ in self.picks}):,} images; balanced subset "
            f"{int(bal.sum()):,} ({int((bal & same).sum()):,} genuine) in {FOLDS} identity folds"
        )


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a fixed, well-spread 64-bit hash of uint64 values."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _hash64(seed: int, tag: str, names) -> np.ndarray:
    return np.array([int.from_bytes(rank(seed, tag, n), "little") for n in names], dtype=np.uint64)


def choose_images(source: Source, max_per_identity: int, seed: int) -> list[Item]:
    """At most ``max_per_identity`` images of each person (the ones first in a seeded order), sorted by path."""
    by_person: dict[str, list[Item]] = {}
    for item in source.items:
        by_person.setdefault(item.identity_name, []).append(item)
    chosen = [
        it
        for items in by_person.values()
        for it in sorted(items, key=lambda it: rank(seed, "image", it.rel))[:max_per_identity]
    ]
    return sorted(chosen, key=lambda it: it.rel)


def identity_folds(names: list[str], seed: int, folds: int) -> dict[str, int]:
    """People dealt in turn into ``folds`` folds, in a seeded order: fold sizes differ by at most one person."""
    order = sorted(names, key=lambda n: rank(seed, "fold", n))
    return {n: i % folds for i, n in enumerate(order)}


def _smallest(keys: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k smallest keys, in position order (all when k >= len)."""
    if k >= len(keys):
        return np.arange(len(keys))
    return np.sort(np.argpartition(keys, k)[:k])


def all_pairs(source: Source, protocol: str, opts: AllPairsOptions) -> AllPairs:
    """The pairs table and the samples it needs, for one protocol."""
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown pairs protocol {protocol!r}: choose from {', '.join(PROTOCOLS)}")
    items = choose_images(source, opts.max_per_identity, opts.seed)
    n = len(items)
    if n * (n - 1) // 2 > MAX_PAIRS:
        raise UserError(
            f"{n:,} images make {n * (n - 1) // 2:,} pairs, more than {MAX_PAIRS:,}: lower --max-per-identity "
            "or build from fewer people (occgen split)"
        )
    names = sorted({it.identity_name for it in items})
    person = {name: k for k, name in enumerate(names)}
    ident = np.array([person[it.identity_name] for it in items], dtype=np.int64)
    fold_of = identity_folds(names, opts.seed, opts.folds)
    fold = np.array([fold_of[name] for name in names], dtype=np.int16)[ident]  # per image
    i, j = np.triu_indices(n, 1)
    same = ident[i] == ident[j]
    h = _hash64(opts.seed, "pair", [it.rel for it in items])
    key = _mix(h[i] ^ _mix(h[j]))  # seeded per pair, independent of the other images
    if opts.impostors is not None and opts.impostors < int((~same).sum()):
        imp = np.flatnonzero(~same)
        keep = np.sort(np.concatenate([np.flatnonzero(same), imp[_smallest(key[imp], opts.impostors)]]))
        i, j, same, key = i[keep], j[keep], same[keep], key[keep]
    pair_fold = np.where(fold[i] == fold[j], fold[i], -1).astype(np.int16)
    balanced = same.copy()
    second = _mix(key ^ np.uint64(0x9E3779B97F4A7C15))  # another draw: the balanced subset is not the sample
    for f in range(opts.folds):
        want = int((same & (pair_fold == f)).sum())
        own = np.flatnonzero(~same & (pair_fold == f))
        chosen = own[_smallest(second[own], want)]
        if len(chosen) < want:  # too few impostor pairs among the fold's people: one of them and another fold's
            cross = np.flatnonzero(~same & (pair_fold == -1) & ((fold[i] == f) | (fold[j] == f)))
            extra = cross[_smallest(second[cross], want - len(chosen))]
            pair_fold[extra] = f
            chosen = np.concatenate([chosen, extra])
        balanced[chosen] = True
    c1, c2 = PROTOCOLS[protocol]
    rels = np.array([it.rel for it in items], dtype=object)
    keys = {c: np.array([sample_key(it.rel, c) for it in items], dtype=object) for c in {c1, c2}}
    count = len(i)
    nulls = pa.nulls(count)
    table = pa.table(
        {
            "pair": pa.array(np.arange(count, dtype=np.int32)),
            "fold": pa.array(pair_fold),
            "same": pa.array(same),
            "key1": pa.array(keys[c1][i], pa.string()),
            "key2": pa.array(keys[c2][j], pa.string()),
            "src1": pa.array(rels[i], pa.string()),
            "src2": pa.array(rels[j], pa.string()),
            "protocol": pa.array(np.full(count, protocol, dtype=object), pa.string()),
            "part1": nulls.cast(pa.string()),
            "part2": nulls.cast(pa.string()),
            "factor": nulls.cast(pa.float32()),
            "centered": nulls.cast(pa.bool_()),
            "balanced": pa.array(balanced),
        },
        schema=PAIRS_SCHEMA,
    )
    used = sorted(
        {(int(a), c1) for a in np.unique(i)} | {(int(b), c2) for b in np.unique(j)},
        key=lambda p: (items[p[0]].rel, p[1]),
    )
    return AllPairs(table, [(items[a], c) for a, c in used])
