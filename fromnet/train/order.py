"""The order samples are trained in, and how well it mixes identities.

Each epoch is one seeded permutation of every sample of the training mix (a manifest of weight 2.5 contributes
each of its samples twice plus a seeded half of them once more), cut into global batches, each cut into the
replicas' micro-batches. occgen, like insightface's RecordIO sets, stores samples in identity order; a permutation
of the whole epoch is the only order that does not depend on that: a shuffle buffer or shard interleaving mixes
only what it holds at once (with a 1,000-sample buffer, 46 identities per batch of 64 where a permutation gives 59).

Everything here is a pure function of (sizes, weights, seed, epoch), so a micro-batch is found by position alone:
any process or loader worker can read any micro-batch, and a resumed run starts at its step without reading what it
skips.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np


def order_seed(seed: int, epoch: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{epoch}:order".encode(), digest_size=8).digest()
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
