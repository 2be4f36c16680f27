"""Verification pairs and embeddings files: reading them, and finding each pair's two embeddings.

Pairs come from a pairs manifest (``manifests/NAME/pairs.parquet``, written by ``occgen build --pairs`` or
``occgen partial``: keys of samples in that manifest, LFW paths, folds, protocols) or from an LFW-format
``pairs.txt`` (LFW paths only). An embeddings file is Parquet with ``key``, ``src`` and ``embedding``
(list<float32>), plus any metadata columns (``fromnet embed`` adds ``occluded`` and ``box_area_ratio``).

A pair's images are found by ``key`` when the file has every key asked for, otherwise by ``src`` with the
extension dropped (``Name/Name_0001``), so files made by other tools, or faces stored as PNG, match LFW's names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from occgen.errors import UserError

PAIRS_FILE = "pairs.parquet"
#: Columns a pairs manifest must have; rows are in pairs.txt order.
PAIR_COLUMNS = ("pair", "fold", "same", "key1", "key2", "src1", "src2", "protocol")
#: Columns results are grouped by, where present (partial-face sets add part1, part2, factor, centered).
GROUP_COLUMNS = ("protocol", "part1", "part2", "factor", "centered")
#: Metadata ``fromnet embed`` copies from each sample's manifest row into the embeddings file.
META_COLUMNS = ("occluded", "box_area_ratio")


def src_stem(src: str) -> str:
    """'Name/Name_0001.jpg' -> 'Name/Name_0001': the name of a face whatever format it is stored in."""
    p = Path(str(src))
    return str(p.with_suffix("")) if p.suffix else str(p)


def lfw_src(name: str, number: str) -> str:
    """The relative path LFW's pairs.txt names: ``Name/Name_0001.jpg``."""
    try:
        n = int(number)
    except ValueError:
        raise UserError(f"image number {number!r} of {name} is not a whole number") from None
    return f"{name}/{name}_{n:04d}.jpg"


def read_pairs_txt(path: Path) -> pd.DataFrame:
    """An LFW-format pairs list as a pairs table (``key1``/``key2`` empty, ``protocol`` null).

    The header is ``FOLDS N`` (each fold: N matched lines ``name i j`` then N mismatched ``name1 i name2 j``) or
    a single ``N`` (one fold). Folds are numbered by block, as in the file.
    """
    try:
        numbered = [(n, ln.split()) for n, ln in enumerate(Path(path).read_text().splitlines(), 1) if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read pairs list ({exc})") from None
    if not numbered:
        raise UserError(f"{path}: empty pairs list")
    numbers, lines = [n for n, _ in numbered], [f for _, f in numbered]
    head, body = lines[0], lines[1:]
    if not all(h.isdigit() for h in head) or len(head) not in (1, 2):
        raise UserError(
            f"{path}:{numbers[0]}: first line must be 'FOLDS PAIRS_PER_CLASS' (LFW's '10 300') or 'N'; "
            f"got {' '.join(head)!r}"
        )
    folds, per = (1, int(head[0])) if len(head) == 1 else (int(head[0]), int(head[1]))
    if len(body) != folds * 2 * per:
        raise UserError(
            f"{path}: header says {folds} fold(s) of {per} matched + {per} mismatched pairs "
            f"({folds * 2 * per} lines) but {len(body)} pair lines follow"
        )
    src1, src2, same = [], [], []
    for n, f in zip(numbers[1:], body):
        try:
            if len(f) == 3:
                first, second, matched = lfw_src(f[0], f[1]), lfw_src(f[0], f[2]), True
            elif len(f) == 4:
                first, second, matched = lfw_src(f[0], f[1]), lfw_src(f[2], f[3]), False
            else:
                raise UserError(f"a pair line has 3 fields (name i j) or 4 (name1 i name2 j); got {len(f)}")
        except UserError as exc:
            raise UserError(f"{path}:{n}: {exc}") from None
        src1.append(first)
        src2.append(second)
        same.append(matched)
    count = len(body)
    table = pd.DataFrame(
        {
            "pair": np.arange(count, dtype=np.int32),
            "fold": (np.arange(count) // (2 * per)).astype(np.int16),
            "same": np.array(same, dtype=bool),
            "key1": pd.Series([None] * count, dtype=object),
            "key2": pd.Series([None] * count, dtype=object),
            "src1": src1,
            "src2": src2,
            "protocol": pd.Series([None] * count, dtype=object),
        }
    )
    table.attrs.update(source=str(path), lines=numbers[1:])  # for errors that name the line of a pair
    return table


def pair_origin(attrs: dict, index: int) -> str:
    """Where pair `index` comes from, by the pairs table's ``attrs``: 'pairs.txt:12' for a text list, else ''."""
    lines = attrs.get("lines")
    return f"{attrs['source']}:{lines[index]}" if lines and index < len(lines) else ""


def read_pairs_manifest(path: Path) -> pd.DataFrame:
    """``manifests/NAME/pairs.parquet`` (or the file itself), checked for the columns evaluation needs."""
    path = Path(path)
    file = path / PAIRS_FILE if path.is_dir() else path
    if not file.is_file():
        raise UserError(
            f"{path}: no {PAIRS_FILE}; build one with `occgen build --pairs pairs.txt`, or pass an LFW pairs.txt"
        )
    try:
        df = pd.read_parquet(file)
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise UserError(f"{file}: cannot read ({exc})") from None
    missing = [c for c in PAIR_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{file}: not a pairs manifest, missing column(s) {', '.join(missing)}")
    return df


def read_pairs(path: str | Path) -> pd.DataFrame:
    """Pairs from a pairs manifest folder, a pairs.parquet file, or an LFW pairs.txt."""
    path = Path(path)
    if path.is_dir() or path.suffix == ".parquet":
        return read_pairs_manifest(path)
    if not path.is_file():
        raise UserError(f"--pairs {path}: no such file or folder")
    return read_pairs_txt(path)


def bin_pairs_table(names: list[str], issame: tuple[bool, ...]) -> pd.DataFrame:
    """The pairs of an insightface verification set whose 2N images are called ``names``: pair k is images 2k and
    2k+1, folds consecutive tenths (insightface's verification.py)."""
    from occgen.formats.binset import folds

    n = len(issame)
    return pd.DataFrame(
        {
            "pair": np.arange(n, dtype=np.int32),
            "fold": folds(n),
            "same": np.array(issame, dtype=bool),
            "key1": names[0::2],
            "key2": names[1::2],
            "src1": names[0::2],
            "src2": names[1::2],
            "protocol": pd.Series([None] * n, dtype=object),
        }
    )


def is_manifest_pairs(pairs: pd.DataFrame) -> bool:
    """True when pairs name sample keys (a pairs manifest), not only LFW paths."""
    return bool(pairs["key1"].notna().all() and pairs["key2"].notna().all())


class MissingImages(UserError):
    """Images a list names that an embeddings set lacks; `first` is the position of the first one in the list."""

    def __init__(self, message: str, first: int) -> None:
        super().__init__(message)
        self.first = first


@dataclass
class Embeddings:
    """One embeddings file in memory: (N, D) float32 rows with their keys, sources and metadata."""

    name: str
    keys: np.ndarray  # (N,) object
    srcs: np.ndarray  # (N,) object
    vectors: np.ndarray  # (N, D) float32
    meta: pd.DataFrame = field(default_factory=pd.DataFrame)  # optional columns, N rows

    def __len__(self) -> int:
        return len(self.keys)

    def column(self, name: str) -> np.ndarray | None:
        return self.meta[name].to_numpy() if name in self.meta.columns else None

    def find(self, keys: np.ndarray | None, srcs: np.ndarray | None, what: str = "images") -> np.ndarray:
        """Row index of each image: by key when all keys are here, else by src (extension dropped)."""
        if keys is not None and not pd.isna(keys).any():
            index = pd.Index(self.keys)
            rows = index.get_indexer(keys) if index.is_unique else np.full(len(keys), -1)
            if (rows >= 0).all():
                return rows
        if srcs is None:
            raise UserError(f"{self.name}: {what} not found by key, and no src names to match them by")
        stems = pd.Index([src_stem(s) for s in self.srcs])
        wanted = [src_stem(s) for s in srcs]
        if not stems.is_unique:
            dup = stems[stems.duplicated()][0]
            raise UserError(
                f"{self.name}: src {dup!r} appears more than once (several copies per image?), so "
                f"{what} cannot be matched by src; embed a one-copy set or use a pairs manifest"
            )
        rows = stems.get_indexer(wanted)
        if (rows < 0).any():
            miss = [w for w, r in zip(wanted, rows) if r < 0]
            raise MissingImages(
                f"{self.name}: {len(miss)} of {len(wanted)} {what} not found by key or by src, "
                f"first {miss[0]!r}; embed the set that holds them",
                int(np.flatnonzero(rows < 0)[0]),
            )
        return rows

    def subset(self, rows: np.ndarray) -> Embeddings:
        return Embeddings(
            self.name, self.keys[rows], self.srcs[rows], self.vectors[rows], self.meta.iloc[rows].reset_index(drop=True)
        )


def embeddings_table(keys, srcs, vectors: np.ndarray, meta: dict[str, np.ndarray] | None = None) -> pa.Table:
    """The embeddings-file schema: key, src, embedding (list<float32>), then metadata columns."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape if vectors.ndim == 2 else (0, 0)
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * d)
    columns = {
        "key": pa.array(list(keys), pa.string()),
        "src": pa.array(list(srcs), pa.string()),
        "embedding": pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1))),
    }
    for name, values in (meta or {}).items():
        columns[name] = pa.array(values, from_pandas=True)  # NaN -> null: "not occluded", not a number
    return pa.table(columns)


def read_embeddings(path: str | Path) -> Embeddings:
    """Load an embeddings file; every row must have an embedding of the same length."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such embeddings file (make one with `fromnet embed`)")
    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise UserError(f"{path}: cannot read as Parquet ({exc})") from None
    missing = [c for c in ("key", "src", "embedding") if c not in table.column_names]
    if missing:
        raise UserError(
            f"{path}: not an embeddings file, missing column(s) {', '.join(missing)} (need key, src, embedding)"
        )
    if table.num_rows == 0:
        raise UserError(f"{path}: holds no embeddings (0 rows); embed a set that has faces with `fromnet embed`")
    emb = table["embedding"].combine_chunks()
    if emb.null_count:
        raise UserError(f"{path}: {emb.null_count} row(s) have no embedding")
    lengths = np.diff(emb.offsets.to_numpy())
    if len(lengths) and (lengths != lengths[0]).any():
        raise UserError(f"{path}: embeddings differ in length ({lengths.min()} to {lengths.max()})")
    dim = int(lengths[0]) if len(lengths) else 0
    start = int(emb.offsets[0].as_py()) if len(emb) else 0
    flat = emb.values.slice(start, dim * len(emb)).to_numpy(zero_copy_only=False)
    vectors = flat.astype(np.float32, copy=False).reshape(len(emb), dim)
    meta = table.drop_columns(["key", "src", "embedding"]).to_pandas()
    return Embeddings(
        path.name,
        table["key"].to_numpy(zero_copy_only=False).astype(object),
        table["src"].to_numpy(zero_copy_only=False).astype(object),
        vectors,
        meta,
    )


def group_columns(pairs: pd.DataFrame) -> list[str]:
    """The grouping columns this pairs table actually fills."""
    return [c for c in GROUP_COLUMNS if c in pairs.columns and pairs[c].notna().any()]
