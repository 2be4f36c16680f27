"""LFW-style verification sets: read a pairs list, pick the clean and occluded copies each pair needs, and write
``pairs.parquet``, which carries everything an evaluation needs (both keys, both sources, same/different, fold).

pairs.txt (LFW view 2): an optional header ``FOLDS N`` (folds of N matched then N mismatched pairs, e.g.
``10 300``), then ``name i j`` (matched) or ``name1 i name2 j`` (mismatched) lines; image i of a person is
``name/name_000i.<ext>`` in the aligned source. Every image a pair needs is rendered into the set's own shards,
a clean copy as copy 0 and an occluded one as copy 1 (so the two get different keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from occgen.errors import UserError
from occgen.formats.binset import folds
from occgen.occlude.plan import sample_key
from occgen.occlude.sources import Item, Source, bin_rels, load_bin
from occgen.writer import atomic_write, table_bytes

#: Copy numbers of the two versions of an input a pairs set may hold.
CLEAN, OCCLUDED = 0, 1
#: Plain verification protocols: (copy of the first image, copy of the second).
PROTOCOLS: dict[str, tuple[int, int]] = {"N-O": (CLEAN, OCCLUDED), "O-O": (OCCLUDED, OCCLUDED), "N-N": (CLEAN, CLEAN)}

#: One row per evaluated pair, in pairs-list order (doubled protocols list a pair twice). ``part1, part2, factor,
#: centered`` describe partial-face sets (occgen.sets.partial) and are null otherwise; ``balanced`` marks the
#: pairs accuracy is decided on in all-pairs sets (occgen.sets.allpairs) and is null otherwise.
PAIRS_SCHEMA = pa.schema(
    [
        ("pair", pa.int32()),
        ("fold", pa.int16()),
        ("same", pa.bool_()),
        ("key1", pa.string()),
        ("key2", pa.string()),
        ("src1", pa.string()),
        ("src2", pa.string()),
        ("protocol", pa.string()),
        ("part1", pa.string()),
        ("part2", pa.string()),
        ("factor", pa.float32()),
        ("centered", pa.bool_()),
        ("balanced", pa.bool_()),
    ]
)


@dataclass(frozen=True)
class Pair:
    index: int  # 0-based position in the list
    fold: int
    same: bool
    first: str  # "name/name_0001": the image's relative path without extension
    second: str


def _image(name: str, number: str, where: str) -> str:
    if not number.isdigit():
        raise UserError(f"{where}: image number {number!r} is not a whole number")
    return f"{name}/{name}_{int(number):04d}"


def read_pairs(path: Path) -> list[Pair]:
    """Parse an LFW pairs list; folds are consecutive blocks of 2N pairs under a ``FOLDS N`` header (one fold
    without a header). Malformed lines and a header that disagrees with the count are errors."""
    try:
        lines = [ln.split() for ln in Path(path).read_text().splitlines()]
    except OSError as exc:
        raise UserError(f"--pairs {path}: cannot read ({exc.strerror})") from None
    numbered = [(n, f) for n, f in enumerate(lines, 1) if f]
    folds, per_fold = 1, None
    if numbered and len(numbered[0][1]) == 2 and all(v.isdigit() for v in numbered[0][1]):
        folds, half = (int(v) for v in numbered[0][1])
        per_fold = 2 * half
        numbered = numbered[1:]
    pairs = []
    for index, (n, fields) in enumerate(numbered):
        where = f"{path}:{n}"
        if len(fields) == 3:
            first, second, same = _image(fields[0], fields[1], where), _image(fields[0], fields[2], where), True
        elif len(fields) == 4:
            first, second, same = _image(fields[0], fields[1], where), _image(fields[2], fields[3], where), False
        else:
            raise UserError(f"{where}: expected 'name i j' or 'name1 i name2 j', got {' '.join(fields)!r}")
        pairs.append(Pair(index, index // per_fold if per_fold else 0, same, first, second))
    if not pairs:
        raise UserError(f"--pairs {path}: no pairs in the file")
    if per_fold and len(pairs) != folds * per_fold:
        raise UserError(
            f"--pairs {path}: the header promises {folds} folds of {per_fold} pairs "
            f"({folds * per_fold}), the file lists {len(pairs)}"
        )
    return pairs


def bin_pairs(source: Source) -> list[Pair]:
    """The pairs of an insightface verification set (a ``.bin`` source), folds as insightface's verification.py
    splits them (consecutive tenths)."""
    if source.kind != "bin" or source.root is None:
        raise UserError(f"--pairs-from-bin: --src {source.spec} is not an insightface verification set (.bin)")
    binset = load_bin(source.root)
    fold = folds(binset.pairs)
    names = bin_rels(source.root, binset.issame)
    return [Pair(k, int(fold[k]), same, names[2 * k], names[2 * k + 1]) for k, same in enumerate(binset.issame)]


def resolve(pairs: list[Pair], source: Source) -> dict[str, Item]:
    """The source item of every image the pairs name (matched on the path without extension)."""
    wanted = dict.fromkeys(img for p in pairs for img in (p.first, p.second))
    by_stem = {stem: item for item in source.items if (stem := item.rel.rsplit(".", 1)[0]) in wanted}
    missing = [img for img in wanted if img not in by_stem]
    if missing:
        raise UserError(
            f"--pairs names {len(missing)} image(s) that --src {source.spec} lacks "
            f"(first: {missing[0]}.*); point --src at the aligned faces the list was made for"
        )
    return {img: by_stem[img] for img in wanted}


def picks(rows: list[dict[str, Any]], items: dict[str, Item]) -> list[tuple[Item, int]]:
    """The distinct (item, copy) samples the pair rows use, inputs sorted and copies inner (as a build orders)."""
    by_key = {}
    for row in rows:
        for n in (1, 2):
            item = items[row[f"_img{n}"]]
            by_key[(item.rel, row[f"_copy{n}"])] = item
    return [(by_key[k], k[1]) for k in sorted(by_key)]


def pair_rows(pairs: list[Pair], items: dict[str, Item], protocol: str) -> list[dict[str, Any]]:
    """One row per pair for a plain protocol (N-O, O-O, N-N), with the image and copy each side uses."""
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown pairs protocol {protocol!r}: choose from {', '.join(PROTOCOLS)}")
    c1, c2 = PROTOCOLS[protocol]
    return [row(p, p.first, c1, p.second, c2, items, protocol) for p in pairs]


def row(
    pair: Pair, img1: str, copy1: int, img2: str, copy2: int, items: dict[str, Item], protocol: str, **extra: Any
) -> dict[str, Any]:
    """A pairs.parquet row; the ``_img``/``_copy`` fields say which samples it needs and are not stored."""
    it1, it2 = items[img1], items[img2]
    return {
        "pair": pair.index,
        "fold": pair.fold,
        "same": pair.same,
        "key1": sample_key(it1.rel, copy1),
        "key2": sample_key(it2.rel, copy2),
        "src1": it1.rel,
        "src2": it2.rel,
        "protocol": protocol,
        "_img1": img1,
        "_img2": img2,
        "_copy1": copy1,
        "_copy2": copy2,
        **extra,
    }


def write_pairs(manifest_dir: Path, rows: list[dict[str, Any]]) -> Path:
    return write_pairs_table(
        manifest_dir,
        pa.Table.from_pydict({f.name: [r.get(f.name) for r in rows] for f in PAIRS_SCHEMA}, schema=PAIRS_SCHEMA),
    )


def write_pairs_table(manifest_dir: Path, table: pa.Table) -> Path:
    path = Path(manifest_dir) / "pairs.parquet"
    atomic_write(path, table_bytes(table))
    return path


def describe(rows: list[dict[str, Any]]) -> str:
    """'6,000 pairs (3,000 same) in 10 folds' per protocol."""
    out = []
    for protocol in dict.fromkeys(r["protocol"] for r in rows):
        sel = [r for r in rows if r["protocol"] == protocol]
        out.append(
            f"{protocol}: {len(sel):,} pairs ({sum(r['same'] for r in sel):,} same) in "
            f"{len({r['fold'] for r in sel})} fold(s)"
        )
    return "; ".join(out)
