"""insightface verification sets (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``, ...): a pickle of
``(images, issame)``, where ``images`` lists 2N encoded faces (pair k is images 2k and 2k+1) and ``issame`` N
booleans. Python 2 wrote the images as ``str``, read back here as bytes.

A pickle can call any importable function while it loads, so these files are read by an unpickler that resolves
no global: only the built-in values such a file holds (bytes, lists, tuples, bools, ints) can be built, and
anything else is refused before it runs. The one reference allowed is ``_codecs.encode``, which Python 3 writes
for bytes under protocol 2, and it is answered by a stand-in that only turns text into latin-1 bytes.

The ten folds are consecutive tenths of the pairs, as insightface's verification.py splits them (scikit-learn's
KFold without shuffling), so accuracies compare with the field's tables.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from occgen.errors import UserError

FOLDS = 10


class _Refused(pickle.UnpicklingError):
    """A reference to code the file is not allowed to make."""


def _latin1(text: object, encoding: object = "utf-8") -> bytes:
    """What ``_codecs.encode(text, 'latin1')`` gives, for text only: Python 3's protocol-2 spelling of bytes."""
    if not isinstance(text, str) or encoding != "latin1":
        raise _Refused("it calls _codecs.encode other than to spell bytes (text, 'latin1')")
    return text.encode("latin1")


class _NoGlobals(pickle.Unpickler):
    """Resolves no class or function reference (GLOBAL, STACK_GLOBAL, INST, OBJ, EXT*) and no persistent id, so no
    code can run."""

    def persistent_load(self, pid: object):
        raise _Refused(f"it holds a persistent reference ({pid!r:.40}), and a verification set holds only data")

    def find_class(self, module: str, name: str):
        if (module, name) == ("_codecs", "encode"):
            return _latin1
        raise _Refused(f"it refers to {module}.{name}, and a verification set holds only data")


@dataclass(frozen=True)
class BinSet:
    """A verification set: 2N encoded faces and N same/different flags."""

    path: Path
    images: tuple[bytes, ...]
    issame: tuple[bool, ...]

    @property
    def pairs(self) -> int:
        return len(self.issame)


def folds(n: int, k: int = FOLDS) -> np.ndarray:
    """The fold of each of ``n`` pairs: consecutive blocks, the first ``n % k`` one pair larger (KFold's split)."""
    if n < k:
        return np.zeros(n, dtype=np.int16)
    sizes = np.full(k, n // k)
    sizes[: n % k] += 1
    return np.repeat(np.arange(k, dtype=np.int16), sizes)


def parse(data: bytes, where: str) -> tuple[tuple[bytes, ...], tuple[bool, ...]]:
    """(images, issame) from a .bin file's bytes, refusing anything but the two lists of plain values."""
    try:
        obj = _NoGlobals(io.BytesIO(data), encoding="bytes").load()
    except _Refused as exc:
        raise UserError(
            f"{where}: refused, not a plain insightface verification set ({exc}); nothing was run"
        ) from None
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        MemoryError,
    ) as exc:
        raise UserError(f"{where}: not a readable verification set ({type(exc).__name__}: {exc})") from None
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(v, (list, tuple)) for v in obj)):
        raise UserError(f"{where}: expected a pickled pair (list of images, list of is-same flags)")
    images, issame = obj
    bad = next((i for i, b in enumerate(images) if not isinstance(b, (bytes, bytearray))), None)
    if bad is not None:
        raise UserError(f"{where}: image {bad} is a {type(images[bad]).__name__}, not encoded image bytes")
    bad = next((i for i, v in enumerate(issame) if not isinstance(v, (bool, int)) or v not in (0, 1)), None)
    if bad is not None:
        raise UserError(f"{where}: is-same flag {bad} is {issame[bad]!r}, not a boolean")
    if len(images) != 2 * len(issame) or not issame:
        raise UserError(f"{where}: {len(images)} images for {len(issame)} pairs; a verification set has two per pair")
    return tuple(bytes(b) for b in images), tuple(bool(v) for v in issame)


def read_bin(path: Path) -> BinSet:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    images, issame = parse(data, str(path))
    return BinSet(Path(path), images, issame)
