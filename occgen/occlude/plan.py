"""What each sample will be: its key, its seed and its random choices. Pure functions, no I/O.

Every random choice of a sample comes from a generator seeded by (run seed, key), never from global state,
so a sample does not depend on worker count, shard size, file order or resuming.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from occgen.errors import UserError

_UNSAFE = re.compile(r"[^0-9A-Za-z_-]+")


def parse_scales(text: str) -> tuple[float, ...]:
    """``1:0.5:5`` (start:step:stop, inclusive), ``1,1.5,2`` or ``2.0`` -> sorted distinct positive scales."""
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3:
                raise ValueError
            start, step, stop = parts
            if step <= 0 or stop < start:
                raise UserError(f"--scales {text}: start:step:stop needs step > 0 and stop >= start, e.g. 1:0.5:5")
            n = int(np.floor((stop - start) / step + 1e-9)) + 1
            values = [round(start + i * step, 6) for i in range(n)]
        else:
            values = [float(p) for p in text.split(",")]
    except ValueError:
        raise UserError(
            f"--scales {text!r}: give start:step:stop (1:0.5:5), a list (1,1.5,2) or one number (2.0)"
        ) from None
    if not values or any(not np.isfinite(v) or v <= 0 for v in values):
        raise UserError(f"--scales {text}: scales must be positive numbers")
    return tuple(sorted(set(values)))


def sample_key(rel: str, copy: int) -> str:
    """Stable, unique, dot-free key: the readable relative path, a hash of it (so paths that sanitise alike
    stay distinct) and the copy number. WebDataset splits keys from extensions at the first dot."""
    stem = rel.rsplit(".", 1)[0] if "." in rel.rsplit("/", 1)[-1] else rel
    readable = _UNSAFE.sub("_", stem.replace("/", "__")).strip("_")[:72]  # keeps tar names < 100 bytes
    digest = hashlib.blake2b(rel.encode(), digest_size=4).hexdigest()
    return f"{readable}-{digest}-{copy}"


def sample_seed(seed: int, key: str) -> int:
    """The per-sample seed (a non-negative int64) derived from the run seed and the key."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class SampleRandom:
    """The random stream of one sample: counter-mode BLAKE2b over its seed.

    A fresh numpy Generator per sample costs more than rendering the sample does; this gives independent,
    uniformly distributed 64-bit words for a few microseconds each, with the same draws on every platform.
    """

    def __init__(self, seed: int):
        self._seed = seed.to_bytes(8, "little")
        self._block = 0
        self._words: list[int] = []

    def _next(self) -> int:
        if not self._words:
            digest = hashlib.blake2b(self._seed, digest_size=64, salt=self._block.to_bytes(16, "little")).digest()
            self._words = list(struct.unpack("<8Q", digest))[::-1]
            self._block += 1
        return self._words.pop()

    def integers(self, n: int) -> int:
        """Uniform in 0..n-1 (multiply-shift; bias below 2**-40 for any n < 2**24)."""
        return (self._next() * n) >> 64

    def random(self) -> float:
        """Uniform in [0, 1) with 53 random bits."""
        return (self._next() >> 11) * 2.0**-53


@dataclass(frozen=True)
class Choice:
    occluded: bool
    occluder: int = -1  # index into the occluder library
    center: tuple[int, int] = (0, 0)
    scale: float = 0.0


def draw(
    seed: int,
    face: tuple[int, int],
    scales: tuple[float, ...],
    clean_ratio: float,
    choose_occluder: Callable[[SampleRandom], int],
) -> Choice:
    """The random choices of one sample, in a fixed order: clean or not, occluder, centre, then scale.

    Scale is drawn last so that datasets built per scale (``--per-scale``) put the same occluder at the same
    place in every scale. ``choose_occluder`` is the library's rule (see OccluderLibrary.choose).
    """
    rng = SampleRandom(seed)
    if rng.random() < clean_ratio:
        return Choice(False)
    occ = choose_occluder(rng)
    W, H = face
    center = (rng.integers(W), rng.integers(H))
    return Choice(True, occ, center, scales[rng.integers(len(scales))])
