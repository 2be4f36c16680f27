"""A manifest's samples read part by part, so that memory stays bounded whatever the number of samples.

``samples.parquet`` is a folder of parts, one per shard, in build order, opened one file at a time. Stages that only
count or add up read it in record batches (``batches``). Stages whose output is sorted by key (labels, statistics,
preview picks) read it in key order, a range of keys at a time (``in_key_order``): the key ranges are cut from a
sample of the keys so that each holds about ``RUN_ROWS`` rows, and each range reads only the parts whose keys reach
into it (keys follow the build order closely, so a range touches few parts). Files sorted by key are written a row
group at a time (``sorted_writer``), in the row groups ``pyarrow.parquet.write_table`` makes, so their bytes are
those of writing the whole table at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from occgen.errors import UserError
from occgen.writer import atomic_path

#: Rows held at once in key order (about 0.5 KB each while a run is read and sorted).
RUN_ROWS = 100_000
#: Rows per batch of a scan in file order.
BATCH_ROWS = 65_536
#: The row group size ``pyarrow.parquet.write_table`` uses (its default): SortedWriter cuts the same ones.
ROW_GROUP = 1024 * 1024
#: One key in this many is kept to choose the key ranges.
_STRIDE = 128


def samples_path(manifest_dir: Path) -> Path:
    """``manifest_dir/samples.parquet``, or a UserError saying how to make it."""
    path = Path(manifest_dir) / "samples.parquet"
    if not path.exists():
        raise UserError(f"no manifest at {manifest_dir}: {path} is missing (build one with `occgen build`)")
    return path


@dataclass(frozen=True)
class Parts:
    """A folder of Parquet parts read as one table (or a single file): the files in name order and their schemas
    unified. Files are opened one at a time and closed, so no part's metadata stays in memory: a dataset of a
    million samples in a thousand parts would otherwise hold about 0.2 MB of footers and statistics per part."""

    path: Path
    files: tuple[Path, ...]
    schema: pa.Schema


def open_parts(path: Path) -> Parts:
    """The parts, their schemas unified: a shard of only clean samples may store its box columns as type null when
    written from Python None values, which the first part's schema alone would not accept."""
    path = Path(path)
    try:
        if path.is_dir():
            files = tuple(sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith((".", "_"))))
        else:
            files = (path,)
        schema = pa.schema([])
        for file in files:
            schema = pa.unify_schemas([schema, pq.read_schema(file)], promote_options="permissive")
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc
    return Parts(path, files, schema)


def open_samples(manifest_dir: Path) -> Parts:
    return open_parts(samples_path(manifest_dir))


def _conform(table: pa.Table | pa.RecordBatch, schema: pa.Schema, columns: Sequence[str]) -> pa.Table:
    """``columns`` of a part's rows with the unified schema's types (null where the part lacks the column)."""
    arrays = []
    for name in columns:
        want = schema.field(name).type
        if name in table.schema.names:
            column = table.column(name)
            arrays.append(column if column.type == want else pc.cast(column, want))
        else:
            arrays.append(pa.nulls(table.num_rows, want))
    return pa.Table.from_arrays(arrays, names=list(columns))


def _read(parts: Parts, file: Path, columns: Sequence[str]) -> Iterator[pa.Table]:
    """One part's rows, a batch at a time."""
    try:
        with pq.ParquetFile(file) as f:
            present = [c for c in columns if c in f.schema_arrow.names]
            for batch in f.iter_batches(BATCH_ROWS, columns=present, use_threads=False):
                yield _conform(batch, parts.schema, columns)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"cannot read {file}: {exc}") from exc


def batches(parts: Parts, columns: Sequence[str]) -> Iterator[pa.Table]:
    """The rows in file order (parts in build order), a batch at a time."""
    for file in parts.files:
        yield from _read(parts, file, columns)


def in_key_order(
    parts: Parts, columns: Sequence[str], rows: int | None = None, column: str = "key"
) -> Iterator[pa.Table]:
    """The rows sorted by ``column`` (unique, non-null keys), as consecutive tables of about ``rows`` (RUN_ROWS)
    rows. Rows whose key is null are left out: callers that need every row check for them first.

    A first pass keeps one key in _STRIDE of each batch and each part's smallest and largest key; the kept keys,
    sorted, cut the key ranges, and each range reads only the parts whose keys reach into it."""
    columns = list(dict.fromkeys([column, *columns]))
    kept = []
    bounds: list[tuple[str, str] | None] = []  # each part's least and greatest key
    for file in parts.files:
        least: list[str] = []
        most: list[str] = []
        for batch in _read(parts, file, [column]):
            keys = pc.drop_null(batch.column(0)).combine_chunks()
            if len(keys):
                kept.append(keys.take(pc.sort_indices(keys))[::_STRIDE])
                both = pc.min_max(keys)
                least.append(both["min"].as_py())
                most.append(both["max"].as_py())
        bounds.append((min(least), max(most)) if least else None)
    if not kept:
        return
    joined = pa.concat_arrays(kept)
    step = max(1, (rows or RUN_ROWS) // _STRIDE)
    cuts: list[str | None] = list(dict.fromkeys(joined.take(pc.sort_indices(joined))[step::step].to_pylist()))
    del kept, joined
    for start, stop in zip([None, *cuts], [*cuts, None]):
        pieces = []
        for file, reach in zip(parts.files, bounds):
            if reach is None or (start is not None and reach[1] < start) or (stop is not None and reach[0] >= stop):
                continue
            for batch in _read(parts, file, columns):
                keys = batch.column(column)
                mask = pc.is_valid(keys)
                if start is not None:
                    mask = pc.and_(mask, pc.greater_equal(keys, start))
                if stop is not None:
                    mask = pc.and_(mask, pc.less(keys, stop))
                pieces.append(batch.filter(mask))
        table = pa.concat_tables(pieces) if pieces else None
        if table is not None and table.num_rows:
            yield table.sort_by(column)


@contextlib.contextmanager
def sorted_writer(path: Path, schema: pa.Schema) -> Iterator[Callable[[pa.Table], None]]:
    """Write tables, in order, to one Parquet file (zstd) with the bytes ``pq.write_table`` gives their
    concatenation: rows are held until a row group is full. The file appears, whole, when the block ends."""
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        held: list[pa.Table] = []
        written = 0

        def write(table: pa.Table) -> None:
            nonlocal written
            held.append(table)
            while sum(t.num_rows for t in held) >= ROW_GROUP:
                rows = pa.concat_tables(held)
                writer.write_table(rows.slice(0, ROW_GROUP), row_group_size=ROW_GROUP)
                held[:] = [rows.slice(ROW_GROUP)]
                written += ROW_GROUP

        yield write
        rest = pa.concat_tables(held) if held else schema.empty_table()
        if rest.num_rows or not written:  # write_table writes one (empty) row group for an empty table
            writer.write_table(rest, row_group_size=ROW_GROUP)
