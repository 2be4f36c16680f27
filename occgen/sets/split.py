"""Identity-disjoint train/test splits of a source, and building one side of them.

A split never puts one person on both sides: either the people of a pairs list's test fold(s) are the test side
and everyone else in the source trains (LFW: folds 1-9 vs fold 10), or a seeded share of the people is drawn
for the test side (optionally only people with enough images to form genuine pairs). Random choices are made by
hashing (seed, name), so a person's side does not depend on which other people the source holds or on the numpy
version. The two sides are written as identity lists (one name a line) with a JSON record of how they were made.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from occgen.errors import UserError
from occgen.occlude.sources import Items, Source
from occgen.sets.pairs import Pair
from occgen.writer import atomic_write, json_bytes, sha256

TRAIN_FILE, TEST_FILE, RECORD_FILE = "train.txt", "test.txt", "split.json"


def rank(seed: int, tag: str, name: str) -> bytes:
    """A seeded, order-free sort key: sorting names by it is a random permutation fixed by (seed, tag)."""
    return hashlib.blake2b(f"{seed}\x00{tag}\x00{name}".encode(), digest_size=8).digest()


@dataclass(frozen=True)
class Split:
    train: tuple[str, ...]  # sorted identity names
    test: tuple[str, ...]
    record: dict[str, Any]


def images_per_identity(source: Source) -> Counter:
    return Counter(item.identity_name for item in source.items)


def listing_sha256(source: Source) -> str:
    """Fingerprint of what the source holds (paths and identities), as a build records it."""
    return sha256("\n".join(f"{it.rel}\t{it.identity_name}" for it in source.items).encode())


def _record(source: Source, method: dict[str, Any], train: list[str], test: list[str]) -> dict[str, Any]:
    counts = images_per_identity(source)
    side = lambda names: {  # noqa: E731
        "identities": len(names),
        "images": sum(counts[n] for n in names),
        "identities_with_2_images": sum(counts[n] >= 2 for n in names),
        "list_sha256": sha256(identity_list_bytes(names)),
    }
    return {
        "src": source.spec,
        "src_path": str(source.path) if source.path else None,
        "src_sha256": listing_sha256(source),
        **method,
        "train": side(train),
        "test": side(test),
    }


def split_by_folds(source: Source, pairs: list[Pair], folds: list[int], pairs_path: str) -> Split:
    """Test = every person named in a pair of the test fold(s); train = every other person of the source
    (people of other folds, and people the list never names). A person named in a test fold and in another fold
    is on the test side, so no test pair has a trained person in it."""
    have = sorted({p.fold for p in pairs})
    if not folds or not set(folds) <= set(have):
        raise UserError(
            f"--fold {','.join(map(str, folds))}: the pairs list has folds {have[0]}..{have[-1]} "
            "(numbered from 0 as in pairs.parquet and `fromnet eval --fold`: LFW's tenth fold is 9)"
        )
    names = {img.split("/", 1)[0] for p in pairs if p.fold in folds for img in (p.first, p.second)}
    missing = sorted(names - set(source.identities))
    if missing:
        raise UserError(
            f"the test fold names {len(missing)} people that --src {source.spec} lacks (first: {missing[0]}); "
            "point --src at the aligned faces the pairs list was made for"
        )
    test = sorted(names)
    train = sorted(set(source.identities) - names)
    method = {"method": "folds", "pairs": pairs_path, "folds": sorted(folds)}
    return Split(tuple(train), tuple(test), _record(source, method, train, test))


def split_at_random(source: Source, test_share: float, seed: int, min_test_images: int = 1) -> Split:
    """A seeded ``test_share`` of the people with at least ``min_test_images`` images (rounded, at least one)
    goes to the test side; everyone else trains."""
    if not 0 < test_share < 1:
        raise UserError(f"--test-share {test_share}: give a share between 0 and 1, e.g. 0.2")
    counts = images_per_identity(source)
    eligible = sorted(n for n in source.identities if counts[n] >= min_test_images)
    if not eligible:
        raise UserError(f"no person in --src {source.spec} has {min_test_images} or more images")
    k = max(1, round(test_share * len(eligible)))
    if k >= len(source.identities):
        raise UserError(f"--test-share {test_share} leaves no one to train on; choose a smaller share")
    test = sorted(sorted(eligible, key=lambda n: rank(seed, "split", n))[:k])
    train = sorted(set(source.identities) - set(test))
    method = {
        "method": "random",
        "seed": seed,
        "test_share": test_share,
        "min_test_images": min_test_images,
        "eligible": len(eligible),
    }
    return Split(tuple(train), tuple(test), _record(source, method, train, test))


def identity_list_bytes(names) -> bytes:
    return "".join(f"{n}\n" for n in names).encode()


def write_split(split: Split, out: Path) -> dict[str, Path]:
    out = Path(out)
    paths = {"train": out / TRAIN_FILE, "test": out / TEST_FILE, "record": out / RECORD_FILE}
    atomic_write(paths["train"], identity_list_bytes(split.train))
    atomic_write(paths["test"], identity_list_bytes(split.test))
    atomic_write(paths["record"], json_bytes(split.record))
    return paths


def read_identity_list(path: Path) -> tuple[str, ...]:
    """Names, one a line (blank lines and '#' comments skipped), as `occgen split` writes them."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--identities {path}: cannot read ({exc})") from None
    names = tuple(dict.fromkeys(ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")))
    if not names:
        raise UserError(f"--identities {path}: the list names no one")
    return names


def select_identities(source: Source, names) -> Source:
    """Only the items of these people, numbered 0..N-1 among themselves (a training set's classes must be
    contiguous). Keys and seeds derive from paths, so every kept sample's image is the same as in a build of
    the whole source (its identity number may differ). A name the source lacks is an error: a list made for
    other data would otherwise shrink the set silently."""
    wanted = set(names)
    missing = sorted(wanted - set(source.identities))
    if missing:
        raise UserError(
            f"--identities names {len(missing)} people that --src {source.spec} lacks (first: {missing[0]}); "
            "give the list `occgen split` wrote for this source"
        )
    kept = tuple(n for n in source.identities if n in wanted)  # source order (sorted) is kept
    renumber = np.full(len(source.identities), -1, np.int32)  # old identity number -> new, -1: left out
    for new, old in enumerate(i for i, n in enumerate(source.identities) if n in wanted):
        renumber[old] = new
    identity = renumber[source.items.identity]
    keep = identity >= 0
    offsets = source.items.offsets
    items = Items(
        source.items.rels.filter(pa.array(keep)), identity[keep], kept, None if offsets is None else offsets[keep]
    )
    # inputs that could not be listed stay recorded when they lie in a kept person's folder
    skipped = tuple((rel, why) for rel, why in source.skipped if rel.split("/", 1)[0] in wanted)
    return replace(source, items=items, identities=kept, skipped=skipped, selected=True)
