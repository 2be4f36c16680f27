"""A manifest's samples read part by part, so that memory stays bounded whatever the number of samples.

``samples.parquet`` is a folder of parts, one per shard, in build order. Stages that only count or add up read it in
record batches (``batches``). Stages whose output is sorted by key (labels, statistics, preview picks) read it in
key order, a range of keys at a time (``in_key_order``): the key ranges are cut from a sample of the keys so that
each holds about ``RUN_ROWS`` rows, and each range is read with a filter that Parquet's per-part key statistics turn
into skipping the parts outside it (keys follow the build order closely, so a range touches few parts). Files
sorted by key are written a row group at a time (``SortedWriter``), in the row groups ``pyarrow.parquet.write_table``
makes, so their bytes are those of writing the whole table at once.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from occgen.errors import UserError
from occgen.writer import atomic_path

#: Rows read at once in key order; about 100 bytes each for the columns the stages need.
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


def open_parts(path: Path) -> ds.Dataset:
    """The parts as one dataset, their schemas unified: a shard of only clean samples may store its box columns
    as type null when written from Python None values, which the first part's schema alone would not accept."""
    try:
        dataset = ds.dataset(path, format="parquet")
        schemas = [fragment.physical_schema for fragment in dataset.get_fragments()]
        if not schemas:
            return dataset
        return ds.dataset(path, format="parquet", schema=pa.unify_schemas(schemas, promote_options="permissive"))
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc


def open_samples(manifest_dir: Path) -> ds.Dataset:
    return open_parts(samples_path(manifest_dir))


def batches(dataset: ds.Dataset, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """The rows in file order (parts in build order), a batch at a time."""
    try:
        yield from dataset.to_batches(columns=list(columns), batch_size=BATCH_ROWS, use_threads=False)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"cannot read {_where(dataset)}: {exc}") from exc


def _where(dataset: ds.Dataset) -> str:
    files = dataset.files
    return os.path.dirname(files[0]) if files else "the manifest"


def key_ranges(
    dataset: ds.Dataset, rows: int | None = None, column: str = "key"
) -> list[tuple[str | None, str | None]]:
    """Consecutive [low, high) key ranges (None: an open end) that cover every key, about ``rows`` keys each:
    cut at every so many of one key in _STRIDE of each batch, sorted."""
    kept = []
    for batch in batches(dataset, [column]):
        keys = pc.drop_null(batch.column(0))
        kept.append(keys.take(pc.sort_indices(keys))[::_STRIDE])
    if not kept:
        return [(None, None)]
    joined = pa.concat_arrays(kept)
    step = max(1, (rows or RUN_ROWS) // _STRIDE)
    cuts: list[str | None] = list(dict.fromkeys(joined.take(pc.sort_indices(joined))[step::step].to_pylist()))
    return list(zip([None, *cuts], [*cuts, None]))


def in_key_order(
    dataset: ds.Dataset, columns: Sequence[str], rows: int | None = None, column: str = "key"
) -> Iterator[pa.Table]:
    """The rows sorted by ``column`` (unique, non-null keys), as consecutive tables of about ``rows`` (RUN_ROWS)
    rows.

    Rows whose key is null are left out: callers that need every row check for them first."""
    columns = list(dict.fromkeys([column, *columns]))
    for low, high in key_ranges(dataset, rows, column):
        field = pc.field(column)
        cond = None
        if low is not None:
            cond = field >= low
        if high is not None:
            cond = field < high if cond is None else cond & (field < high)
        try:
            table = dataset.to_table(columns=columns, filter=cond, use_threads=False)
        except (pa.ArrowException, OSError) as exc:
            raise UserError(f"cannot read {_where(dataset)}: {exc}") from exc
        if table.num_rows:
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
