"""The order samples are trained in, and how well it mixes identities.

By default (local tars) each epoch is one seeded permutation of every sample of the training mix (a manifest of
weight 2.5 contributes each of its samples twice plus a seeded half of them once more), cut into global batches,
each cut into the replicas' micro-batches. occgen, like insightface's RecordIO sets, stores samples in identity
order; a permutation of the whole epoch is the only order that does not depend on that: a shuffle buffer or shard
interleaving mixes only what it holds at once (with a 1,000-sample buffer, 46 identities per batch of 64 where a
permutation gives 59). It is a pure function of (sizes, weights, seed, epoch), so a micro-batch is found by position
alone: any process or loader worker can read any micro-batch, and a resumed run starts at its step without reading
what it skips.

Shards that can only be read front to back (``pipe:`` commands, remote URLs) get the streamed order instead, as
webdataset users know it but reproducible: the epoch's shard reads permuted, several shards interleaved sample by
sample, then a shuffle buffer sized from the data. It too is a pure function of (shard sizes, weights, seed, epoch,
buffer, shards at once), computed without reading a byte: the place each sample of the epoch takes (which shard
read, which position there), from which fromnet.train.data reads the samples a loader worker needs.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def order_seed(seed: int, epoch: int, what: str = "order") -> int:
    digest = hashlib.blake2b(f"{seed}:{epoch}:{what}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def epoch_order(sizes: list[int], weights: list[float], seed: int, epoch: int) -> np.ndarray:
    """Sample ids (positions in the concatenation of the sources) of one epoch, permuted.

    A source of weight w contributes floor(w) copies of each sample and a seeded subset of ceil(frac(w) x size)
    more, so an epoch holds at least sum(w x size) samples.
    """
    rng = np.random.Generator(np.random.PCG64(order_seed(seed, epoch)))
    parts, offset = [], 0
    for size, weight in zip(sizes, weights):
        whole, part = divmod(weight, 1.0)
        ids = np.arange(offset, offset + size, dtype=np.int64)
        parts += [ids] * int(whole)
        extra = math.ceil(part * size)
        if extra:
            parts.append(offset + np.sort(rng.choice(size, extra, replace=False)))
        offset += size
    return rng.permutation(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def micro_batch(order: np.ndarray, step_in_epoch: int, replica: int, micro: int, replicas: int) -> np.ndarray:
    """The ids of one replica's micro-batch: global batch ``step_in_epoch`` is order[t B : (t + 1) B]."""
    begin = (step_in_epoch * replicas + replica) * micro
    return order[begin : begin + micro]


# -- the streamed order ---------------------------------------------------------------------------------------------

#: Raw (undecoded) sample bytes the shuffle buffer holds at most, by default, per training process (its loader
#: workers share them: each keeps the bytes of the samples it decodes).
BUFFER_BYTES = 1 << 30

#: Shards the streamed order interleaves at once by default. The buffer does most of the mixing (identities per
#: batch hardly change from 1 to 16 shards at once); several shards keep a batch from leaning on one shard, or one
#: source of a mix, for stretches.
STREAM_SHARDS = 4

#: A sample's place in an epoch of the streamed order: (index of its unit in the epoch's units) << PLACE_BITS | its
#: position in that unit's shard.
PLACE_BITS = 32


@dataclass(frozen=True)
class Unit:
    """One read of one shard in an epoch: source and shard by position, and (fractional weights) the positions in
    the shard that are kept, else None for all."""

    source: int
    shard: int
    keep: tuple[int, ...] | None = None


def stream_units(counts: list[list[int]], weights: list[float], seed: int, epoch: int) -> list[Unit]:
    """The epoch's shard reads, permuted: a source of weight w is read floor(w) times whole, plus once keeping a
    seeded ceil(frac(w) x n) of each shard's n samples, so an epoch holds at least sum(w x size) samples, as in
    :func:`epoch_order`. ``counts``: samples of each shard of each source."""
    rng = np.random.Generator(np.random.PCG64(order_seed(seed, epoch, "units")))
    units: list[Unit] = []
    for source, (sizes, weight) in enumerate(zip(counts, weights)):
        whole, part = divmod(weight, 1.0)
        for shard, size in enumerate(sizes):
            units += [Unit(source, shard)] * int(whole)
            if extra := math.ceil(part * size):
                units.append(Unit(source, shard, tuple(np.sort(rng.choice(size, extra, replace=False)).tolist())))
    return [units[i] for i in rng.permutation(len(units))]


class Draws:
    """Uniform draws from one seeded generator, taken in blocks: one numpy call per sample would cost more than
    the sample's own handling."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self._block: list[float] = []
        self._next = 0

    def below(self, n: int) -> int:
        """A uniform integer in [0, n)."""
        if self._next == len(self._block):
            self._block, self._next = self.rng.random(4096).tolist(), 0
        u = self._block[self._next]
        self._next += 1
        return min(int(u * n), n - 1)


def interleave(streams: Iterable[Iterable[T]], lanes: int, draws: Draws) -> Iterator[T]:
    """Items of ``lanes`` streams at once, each next one from a random open stream; a finished stream's place goes
    to the next of ``streams``."""
    pending = iter(streams)
    open_: list[Iterator[T]] = [iter(s) for s in islice(pending, lanes)]
    end = object()
    while open_:
        k = draws.below(len(open_))
        item = next(open_[k], end)
        if item is not end:
            yield item  # type: ignore[misc]
        elif (following := next(pending, None)) is not None:
            open_[k] = iter(following)
        else:
            del open_[k]


def shuffled(items: Iterable[T], size: int, draws: Draws) -> Iterator[T]:
    """A shuffle buffer of ``size``: filled first, then each arriving item takes the place of a random one, which
    goes out; at the end the rest leave in a random order."""
    buffer: list[T] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        k = draws.below(size)
        out, buffer[k] = buffer[k], item
        yield out
    for k in draws.rng.permutation(len(buffer)):
        yield buffer[k]


def stream_places(
    units: list[Unit], counts: list[list[int]], lanes: int, buffer: int, seed: int, epoch: int
) -> Iterator[int]:
    """One epoch of the streamed order as sample places (see PLACE_BITS): the units read ``lanes`` at a time,
    interleaved, through a shuffle buffer of ``buffer``. Computed from the shard sizes alone, so a reader knows
    which bytes it will need before it reads them."""

    def places(k: int, unit: Unit) -> Iterator[int]:
        positions = range(counts[unit.source][unit.shard]) if unit.keep is None else unit.keep
        return ((k << PLACE_BITS) | i for i in positions)

    mixed = interleave(itertools.starmap(places, enumerate(units)), lanes, Draws(order_seed(seed, epoch, "interleave")))
    return shuffled(mixed, buffer, Draws(order_seed(seed, epoch, "shuffle")))


def take_slices(sequence: Iterable[int], begins: np.ndarray, size: int, chunk: int = 1 << 20) -> np.ndarray:
    """Items [b, b + size) of ``sequence`` for each of the increasing ``begins``, concatenated; the sequence is read
    in chunks, so memory follows what is taken, not the sequence's length."""
    wanted = (np.asarray(begins, np.int64)[:, None] + np.arange(size)).ravel()
    end = int(wanted[-1]) + 1 if len(wanted) else 0
    items, taken, start = iter(sequence), [], 0
    while start < end:
        n = min(chunk, end - start)
        block = np.fromiter(islice(items, n), np.int64, n)
        lo, hi = np.searchsorted(wanted, [start, start + n])
        taken.append(block[wanted[lo:hi] - start])
        start += n
    return np.concatenate(taken) if taken else np.zeros(0, np.int64)


def default_buffer(batch: int, epoch_samples: int, samples_per_identity: float, sample_bytes: float) -> int:
    """The shuffle buffer a streamed run gets unless told: room for the samples of 8 batches' worth of identities
    (8 x batch x the mean samples per identity), so that a batch drawn from it meets about as many identities as
    a full permutation's, within BUFFER_BYTES of raw samples and at most an epoch."""
    want = 8 * batch * max(samples_per_identity, 1.0)
    room = BUFFER_BYTES / max(sample_bytes, 1.0)
    return max(1, int(min(want, room, epoch_samples)))


# -- how well an order mixes identities (fromnet bench order) -------------------------------------------------------


def identities_per_batch(identities: np.ndarray, batch: int) -> np.ndarray:
    """Distinct identities in each whole batch of an epoch's sequence of sample identities."""
    steps = len(identities) // batch
    rows = np.sort(identities[: steps * batch].reshape(steps, batch), axis=1)
    return (np.diff(rows, axis=1) != 0).sum(axis=1) + 1


def steps_per_identity(identities: np.ndarray, batch: int) -> np.ndarray:
    """For each identity present, the number of distinct batches its samples fall in (its spread over the epoch)."""
    steps = len(identities) // batch
    ids = identities[: steps * batch].astype(np.int64)
    step = np.arange(len(ids), dtype=np.int64) // batch
    pairs = np.unique(ids * steps + step)
    return np.unique(pairs // steps, return_counts=True)[1]


def expected_identities_per_batch(identities: np.ndarray, batch: int) -> float:
    """The mean distinct identities of a batch drawn by a full permutation of these samples (hypergeometric):
    an identity with k of the N samples is in a batch with probability 1 - C(N - k, B) / C(N, B)."""
    sizes, identities_of_size = np.unique(np.unique(identities, return_counts=True)[1], return_counts=True)
    n = len(identities)
    return float(sum(m * (1 - _absent(n, int(k), batch)) for k, m in zip(sizes, identities_of_size)))


def _absent(n: int, k: int, batch: int) -> float:
    """C(n - k, B) / C(n, B) as a product of ratios (exact enough, no huge integers)."""
    if n - k < batch:
        return 0.0
    j = np.arange(batch, dtype=np.float64)
    return float(np.exp(np.sum(np.log1p(-k / (n - j)))))
