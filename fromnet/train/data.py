"""Training streams: shards -> seeded micro-batches of a per-epoch permutation (local tars, random access) or of
the streamed order (pipes and URLs, read front to back), the same whatever the process or worker count."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from fromnet.shards import (
    Manifest,
    decode_face,
    image_size,
    local_path,
    sample_bytes,
    sample_class,
    span_sample,
    tar_samples,
    tar_spans,
)
from fromnet.train.order import (
    PLACE_BITS,
    Unit,
    default_buffer,
    epoch_order,
    micro_batch,
    stream_places,
    stream_units,
    take_slices,
)
from occgen.errors import UserError
from occgen.label.patterns import label_boxes, regression_target
from occgen.manifest import batches, open_parts, open_samples
from occgen.occlude.plan import SampleRandom, sample_seed
from occgen.writer import atomic_path

if TYPE_CHECKING:  # imported where used: only runs with online occlusion need them
    from occgen.occlude.occluders import OccluderLibrary
    from occgen.occlude.run import BuildOptions

# ---------------------------------------------------------------------------------------------------------------
# Training streams
#
# A global batch of B samples is cut into R micro-batches, one per data-parallel *replica* (R is fixed when a run
# starts, normally its world size). Which samples make up each micro-batch is decided by fromnet.train.order: one
# seeded permutation of every sample of the mix per epoch, so batches are as well mixed as a full shuffle whatever
# order the shards hold (occgen writes them in identity order). Samples are read by random access into the tars:
# once per run, the tar headers give every sample's byte range, kept as one flat memory-mapped array per manifest
# (no per-sample Python objects), and a loader worker reads a sample with one pread.
#
# Micro-batches are served whole and round-robin: worker w of n builds consumption indices w, w + n, ... of the
# (step, replica) sequence, and the DataLoader returns them in that order. So the batches of a step depend on
# nothing but (seed, epoch, step): not on the number of processes (a resumed run on fewer processes runs several
# replicas each, accumulating gradients) nor of loader workers; every rank gets the same number of batches;
# replicas train on disjoint samples within an epoch; and a resumed run starts at its step's place in the
# permutation without reading what it skips.
#
# Shards that cannot be read by random access (pipe: commands, remote URLs; or any, with --order stream) take the
# streamed order of fromnet.train.order, and the same contract holds. That order (permuted shard reads,
# interleaved, through a shuffle buffer) is computed from the shard sizes alone, as sample *places*, so a loader
# worker knows before reading anything which places make up its micro-batches. It then reads a shard, whole, when
# the first sample it needs from it is due, and keeps only the bytes of the samples it will decode. Why: a worker
# that read and buffered the raw stream itself would hold the whole buffer (n workers, n buffers) and keep
# several pipes open; this way the workers of a process hold one buffer between them, each opens one stream at a
# time, and a resumed run reads only the shards that still have samples to give, decoding nothing it skips. The
# price that remains: every worker reads (parses the tar of) nearly every shard, since its micro-batches draw from
# all of them, so reading is paid n times and decoding once; tools/bench_stream_read.py measures both. Reading
# once per process would need a process pool of its own in place of torch's DataLoader.
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One manifest of a training mix: its weight (relative sampling rate of its samples), the offset added to its
    identities so that several manifests never share a label, its labels file in shard order (or None), and its
    sample index (byte ranges in shard order, see :func:`build_index_cache`; None: computed in each worker)."""

    manifest: Manifest
    weight: float = 1.0
    identity_offset: int = 0
    labels: str | None = None
    index: str | None = None


def parse_source(text: str) -> tuple[str, float]:
    """``manifests/NAME`` or ``manifests/NAME:WEIGHT`` (also plain shards: ``faces-{000..009}.tar:2``). The path
    stays a string: a URL such as ``file:///data/x.tar`` must not be normalised as a path."""
    path, _, weight = text.rpartition(":") if ":" in text else (text, "", "")
    if not path:
        return text, 1.0
    try:
        value = float(weight)
    except ValueError:
        return text, 1.0  # a ':' that is part of the path
    if not value > 0:
        raise UserError(f"--shards {text}: the weight after ':' must be a positive number")
    return path, value


#: A labels row in shard order: the key's hash (checks alignment), the pattern, and the box in pixels.
LABEL_DTYPE = np.dtype([("key_hash", "<u8"), ("pattern", "<i2"), ("occluded", "?"), ("box", "<i2", (4,))])


def key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def key_hashes(keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """key_hash of each key, as uint64."""
    return np.fromiter((key_hash(k) for k in keys.to_pylist()), np.uint64, len(keys))


def build_label_cache(manifest: Manifest, K: int, out: Path) -> Path:
    """Put ``labels-kK.parquet`` (sorted by key) into shard order, as one memory-mappable array at ``out``.

    Loader workers then read a sample's labels by its index, holding no per-key dictionary: memory per worker stays
    bounded whatever the manifest's size, and the pages are shared between processes. Both files are read a batch
    at a time and joined on 64-bit key hashes, so making the cache holds about 60 bytes a sample and no string.
    """
    from occgen.label.labels import REG_COLUMNS, labels_path

    path = labels_path(manifest.folder, K)
    if not path.is_file():
        raise UserError(
            f"{manifest.path} has no pattern labels for K={K} ({path.name}); "
            f"run `occgen label --K {K} {manifest.path}` first"
        )
    hashes, patterns, regs = [], [], []
    for batch in batches(open_parts(path), ["key", "pattern", *REG_COLUMNS]):
        hashes.append(key_hashes(batch["key"]))
        patterns.append(batch["pattern"].to_numpy())
        regs.append(np.stack([batch[c].to_numpy() for c in REG_COLUMNS], axis=1))
    label_hash = np.concatenate(hashes) if hashes else np.zeros(0, np.uint64)
    by_hash = np.argsort(label_hash, kind="stable")
    label_hash = label_hash[by_hash]
    keys = np.concatenate([key_hashes(b["key"]) for b in batches(open_samples(manifest.folder), ["key"])])
    keys = keys[shard_positions(manifest)]
    where = np.minimum(np.searchsorted(label_hash, keys), max(len(label_hash) - 1, 0))
    missing = int((label_hash[where] != keys).sum()) if len(label_hash) else len(keys)
    if missing:
        raise UserError(
            f"{path} lacks labels for {missing} sample(s): it is older than the manifest; "
            f"run `occgen label --K {K} {manifest.path}` again"
        )
    rows = by_hash[where]
    height, width = image_size(manifest)
    table = np.zeros(len(keys), LABEL_DTYPE)
    table["key_hash"] = keys
    table["pattern"] = np.concatenate(patterns)[rows]
    reg = np.concatenate(regs)[rows].astype(np.float64)
    table["box"] = np.rint(reg * [width, height, width, height])
    table["occluded"] = (table["box"][:, 2] > table["box"][:, 0]) & (table["box"][:, 3] > table["box"][:, 1])
    save_array(out, table)
    return out


def save_array(out: Path, array: np.ndarray) -> None:
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def shard_positions(manifest: Manifest) -> np.ndarray:
    """Where each sample of the manifest's sample index (shards as the manifest lists them, samples as each tar
    holds them) lies in ``samples.parquet`` read in file order (occgen.manifest.batches)."""
    names = pa.array([s.name for s in manifest.shards], pa.string())
    shard_index = []
    for batch in batches(open_samples(manifest.folder), ["shard"]):
        where = pc.index_in(batch["shard"], value_set=names)
        shard_index.append(where.to_numpy(zero_copy_only=False))
    index = np.concatenate(shard_index) if shard_index else np.zeros(0)
    if np.isnan(index).any() or len(index) != manifest.samples:
        raise UserError(f"{manifest.path}: samples.parquet and shards.json disagree; rebuild with `occgen build`")
    return np.argsort(index, kind="stable")


def shard_order(manifest: Manifest, columns: list[str]) -> pa.Table:
    """Columns of ``samples.parquet`` in shard order (shards as the manifest lists them, samples as each tar holds
    them): row i belongs to sample i of the manifest's sample index."""
    table = pa.concat_tables(batches(open_samples(manifest.folder), columns))
    return table.take(pa.array(shard_positions(manifest)))


#: Where a sample lies: its shard (position in the manifest) and its members' byte range in that tar.
INDEX_DTYPE = np.dtype([("shard", "<u4"), ("start", "<u8"), ("size", "<u4")])


def sample_index(manifest: Manifest) -> np.ndarray:
    """Every sample's place, in shard order, read from the tar headers (seconds for a million samples)."""
    parts = []
    for i, shard in enumerate(manifest.shards):
        spans = tar_spans(shard.url)
        if len(spans) != shard.samples:
            raise UserError(
                f"{shard.url} holds {len(spans)} samples where its manifest lists {shard.samples}; "
                "the shard and its manifest differ (rebuild it with `occgen build`)"
            )
        part = np.empty(len(spans), INDEX_DTYPE)
        part["shard"], part["start"], part["size"] = i, spans[:, 0], spans[:, 1] - spans[:, 0]
        parts.append(part)
    return np.concatenate(parts) if parts else np.zeros(0, INDEX_DTYPE)


def shards_digest(manifest: Manifest) -> str:
    """A hash of every shard's URL, and for local files their size and mtime: names a run's caches of a manifest,
    so that a resumed run reuses them and a changed shard gets fresh ones."""
    digest = hashlib.blake2b(digest_size=8)
    for shard in manifest.shards:
        path = local_path(shard.url)
        stat = os.stat(path) if path is not None else None
        digest.update(f"{shard.url}\0{stat and stat.st_size}\0{stat and stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def index_cache_path(manifest: Manifest, folder: Path) -> Path:
    """Where a run keeps a manifest's sample index."""
    return folder / f"{manifest.name}-{shards_digest(manifest)}-index.npy"


def build_index_cache(manifest: Manifest, out: Path) -> Path:
    if not out.is_file():
        save_array(out, sample_index(manifest))
    return out


class LabelRows:
    """A manifest's label cache, opened lazily in each worker (memory-mapped), read by sample index."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._rows: np.ndarray | None = None

    def get(self, index: int, key: str, url: str) -> np.void:
        if self._rows is None:
            self._rows = np.load(self.path, mmap_mode="r", allow_pickle=False)
        row = self._rows[index]
        if row["key_hash"] != key_hash(key):
            raise UserError(
                f"{url}: {key} is not the sample the manifest lists at its place; "
                "the shard and its manifest differ (rebuild it with `occgen build`)"
            )
        return row


@dataclass(frozen=True)
class OnlineOcclusion:
    """Occlude clean shards in the loader with occgen's own Algorithm 1 (how the authors' release trains)."""

    scales: tuple[float, ...]
    clean_ratio: float = 1 / 3
    occluders: str | None = None


def resolve_order(requested: str, manifests: Iterable[Manifest]) -> str:
    """``auto``: the permutation where every shard is a local file, else the streamed order; a permutation
    asked for where some shard is not a local file is refused."""
    remote = next((s.url for m in manifests for s in m.shards if local_path(s.url) is None), None)
    if requested == "auto":
        return "permutation" if remote is None else "stream"
    if requested == "permutation" and remote is not None:
        raise UserError(
            f"{remote}: --order permutation reads samples by random access into local tar files; stream it with "
            "--order stream (the default for pipe: and URLs), or copy the shards to this machine"
        )
    return requested


@dataclass(frozen=True)
class StreamPlan:
    """Everything that decides which samples make up each micro-batch of each step."""

    sources: tuple[Source, ...]
    batch_size: int  # global
    replicas: int
    seed: int
    image_size: tuple[int, int]  # (height, width)
    K: int = 5
    targets: bool = False  # produce pattern labels and boxes
    flip: bool = True
    online: OnlineOcclusion | None = None
    class_field: str | None = None  # plain shards: the JSON field holding the class (None: the .cls member)
    order: str = "permutation"  # or "stream" (fromnet.train.order says what each is)
    stream_buffer: int = 1  # the streamed order: shuffle buffer (samples)
    stream_shards: int = 1  # the streamed order: shards read at once, interleaved

    def __post_init__(self) -> None:
        if self.batch_size % self.replicas:
            raise UserError(
                f"--batch-size {self.batch_size} does not split into {self.replicas} equal "
                "micro-batches (one per data-parallel replica); choose a multiple"
            )

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.replicas

    @property
    def epoch_samples(self) -> float:
        return sum(s.weight * s.manifest.samples for s in self.sources)

    @property
    def steps_per_epoch(self) -> int:
        return max(1, int(self.epoch_samples // self.batch_size))

    @property
    def num_identities(self) -> int:
        last = self.sources[-1]
        return last.identity_offset + last.manifest.num_identities

    def permutation(self, epoch: int) -> np.ndarray:
        """The epoch's permutation of sample ids (positions in the sources' concatenated indexes)."""
        sizes = [s.manifest.samples for s in self.sources]
        order = epoch_order(sizes, [s.weight for s in self.sources], self.seed, epoch)
        if len(order) < self.steps_per_epoch * self.batch_size:
            raise UserError("the training mix has fewer samples than one batch (are the weights too small?)")
        return order

    @property
    def counts(self) -> list[list[int]]:
        """Samples of each shard of each source."""
        return [[shard.samples for shard in s.manifest.shards] for s in self.sources]

    def units(self, epoch: int) -> list[Unit]:
        """The streamed order's shard reads of an epoch, in order."""
        return stream_units(self.counts, [s.weight for s in self.sources], self.seed, epoch)

    def places(self, epoch: int, units: list[Unit]) -> Iterator[int]:
        """The epoch's streamed order, as sample places (order.PLACE_BITS)."""
        return stream_places(units, self.counts, self.stream_shards, self.stream_buffer, self.seed, epoch)


def stream_buffer(plan: StreamPlan) -> int:
    """The streamed order's default shuffle buffer for this data and batch (see order.default_buffer)."""
    samples = sum(s.manifest.samples for s in plan.sources)
    size = sum(sample_bytes(s.manifest) * s.manifest.samples for s in plan.sources) / max(samples, 1)
    per_identity = plan.epoch_samples / max(plan.num_identities, 1)
    return default_buffer(plan.batch_size, int(plan.epoch_samples), per_identity, size)


class SpanReader:
    """Byte ranges of shards by pread, with a bounded set of open files (a permutation touches every shard)."""

    def __init__(self, limit: int = 128) -> None:
        self.limit = limit
        self._files: dict[str, int] = {}

    def read(self, url: str, start: int, size: int) -> bytes:
        fd = self._files.pop(url, None)
        if fd is None:
            if len(self._files) >= self.limit:
                os.close(self._files.pop(next(iter(self._files))))
            fd = os.open(url, os.O_RDONLY)
        self._files[url] = fd  # most recently used last
        data = os.pread(fd, size, start)
        if len(data) != size:
            raise UserError(f"{url}: shorter than when the run indexed it; the shard changed, start the run again")
        return data

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()


class TrainStream(torch.utils.data.IterableDataset):
    """Micro-batches for steps [start, end) of the replicas this process runs, in the order it consumes them.

    Consumption index c runs over (step, replica): worker w of n builds every c = w (mod n), whole, and
    DataLoader's round-robin over workers returns them in order whatever n is. A worker that meets bad data yields
    ``{"error": message}`` and stops, so that the message reaches the user as it was written (see :func:`served`).
    """

    def __init__(self, plan: StreamPlan, replicas: list[int], start: int, end: int, log_keys: bool = False) -> None:
        super().__init__()
        if replicas != sorted(replicas):
            raise ValueError("replicas must be in increasing order: the streamed order is read front to back")
        self.plan, self.replicas, self.start, self.end = plan, list(replicas), start, end
        self.log_keys = log_keys
        self.offsets = np.cumsum([0] + [s.manifest.samples for s in plan.sources])
        self._indexes: dict[int, np.ndarray] = {}
        self._labels: dict[int, LabelRows] = {}
        self._occluding: tuple[OccluderLibrary, BuildOptions] | None = None  # loaded on first use, in the worker

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        n = len(self.replicas)
        wanted = (
            (self.start + c // n, self.replicas[c % n]) for c in range(worker, (self.end - self.start) * n, workers)
        )
        read = self._permuted if self.plan.order == "permutation" else self._streamed
        try:
            for step, replica, epoch, samples in read(wanted):
                batch = self._collate([self._labelled(sample) for sample in samples], epoch)
                batch.update(step=step, replica=replica, epoch=epoch)
                yield batch
        except UserError as exc:
            yield {"error": str(exc)}

    def _permuted(self, wanted: Iterable[tuple[int, int]]) -> Iterator[tuple[int, int, int, list[dict[str, Any]]]]:
        """Micro-batches of the epoch's permutation, each sample read by random access."""
        plan = self.plan
        reader = SpanReader()
        order, order_epoch = np.empty(0, np.int64), -1
        try:
            for step, replica in wanted:
                epoch, in_epoch = divmod(step, plan.steps_per_epoch)
                if epoch != order_epoch:
                    order, order_epoch = plan.permutation(epoch), epoch
                ids = micro_batch(order, in_epoch, replica, plan.micro_batch, plan.replicas)
                yield step, replica, epoch, [self._sample(int(i), reader) for i in ids]
        finally:
            reader.close()

    def _streamed(self, wanted: Iterable[tuple[int, int]]) -> Iterator[tuple[int, int, int, list[dict[str, Any]]]]:
        """Micro-batches of the streamed order, epoch by epoch."""
        steps = self.plan.steps_per_epoch
        for epoch, group in groupby(wanted, key=lambda step_replica: step_replica[0] // steps):
            yield from self._streamed_epoch(epoch, list(group))

    def _streamed_epoch(
        self, epoch: int, wanted: list[tuple[int, int]]
    ) -> Iterator[tuple[int, int, int, list[dict[str, Any]]]]:
        """Micro-batch (t, r) is places [t B + r m, t B + (r + 1) m) of the epoch's streamed order. The places this
        worker needs come from the shard sizes first; then a shard is read, whole, when the first sample it holds
        for this worker is due, and only those samples' bytes are kept until they are."""
        plan, m = self.plan, self.plan.micro_batch
        units = plan.units(epoch)
        begins = np.array([(step % plan.steps_per_epoch) * plan.batch_size + replica * m for step, replica in wanted])
        places = take_slices(plan.places(epoch, units), begins, m)
        by_place = np.sort(places)
        kept: dict[int, dict[str, Any]] = {}
        for j, (step, replica) in enumerate(wanted):
            samples = []
            for place in places[j * m : (j + 1) * m].tolist():
                if place not in kept:
                    k = place >> PLACE_BITS
                    lo, hi = np.searchsorted(by_place, [k << PLACE_BITS, (k + 1) << PLACE_BITS])
                    needed = set((by_place[lo:hi] & ((1 << PLACE_BITS) - 1)).tolist())
                    kept.update(((k << PLACE_BITS) | i, sample) for i, sample in self.read_unit(units[k], needed))
                samples.append(kept.pop(place))
            yield step, replica, epoch, samples

    def read_unit(self, unit: Unit, needed: set[int]) -> Iterator[tuple[int, dict[str, Any]]]:
        """(position, raw sample) of the samples at ``needed`` positions of a unit's shard, tagged with their source
        and index there. The shard is read to its end: one that holds another number of samples than the run
        counted is an error naming it."""
        source = self.plan.sources[unit.source]
        shards = source.manifest.shards
        shard = shards[unit.shard]
        first = sum(s.samples for s in shards[: unit.shard])
        count, samples = 0, tar_samples(shard.url)
        try:
            for position, sample in enumerate(samples):
                count = position + 1
                if count > shard.samples:
                    break
                if position in needed:
                    sample["__source__"], sample["__local__"] = unit.source, first + position
                    yield position, sample
        finally:
            _close(samples)
        if count != shard.samples:
            held = f"more than {shard.samples:,}" if count > shard.samples else f"{count:,}"
            raise UserError(
                f"{shard.url} gave {held} samples where it held {shard.samples:,} when the run counted them: the "
                "shard changed, or its reading stopped part way; check that it reads whole (`tar t`)"
            )

    def _index(self, source: int) -> np.ndarray:
        if source not in self._indexes:
            path = self.plan.sources[source].index
            manifest = self.plan.sources[source].manifest
            self._indexes[source] = np.load(path, mmap_mode="r", allow_pickle=False) if path else sample_index(manifest)
        return self._indexes[source]

    def _sample(self, sample_id: int, reader: SpanReader) -> dict[str, Any]:
        """One raw sample by random access, tagged with its source and its index there."""
        index = int(np.searchsorted(self.offsets, sample_id, side="right")) - 1
        local = sample_id - int(self.offsets[index])
        source = self.plan.sources[index]
        place = self._index(index)[local]
        url = source.manifest.shards[int(place["shard"])].url
        sample = span_sample(url, reader.read(url, int(place["start"]), int(place["size"])))
        sample["__source__"], sample["__local__"] = index, local
        return sample

    def _labelled(self, sample: dict[str, Any]) -> dict[str, Any]:
        """The sample with its labels row, where the run trains on a labels file."""
        source = self.plan.sources[sample["__source__"]]
        if self.plan.targets and source.labels is not None:
            rows = self._labels.setdefault(sample["__source__"], LabelRows(source.labels))
            sample["__labels__"] = rows.get(sample["__local__"], sample["__key__"], sample["__url__"])
        return sample

    def _collate(self, samples: list[dict[str, Any]], epoch: int) -> dict[str, Any]:
        plan = self.plan
        H, W = plan.image_size
        n = len(samples)
        images = np.empty((n, H, W, 3), np.uint8)
        labels = np.empty(n, np.int64)
        occluded = np.zeros(n, bool)
        boxes = np.zeros((n, 4), np.float64)
        patterns = np.zeros(n, np.int64)
        relabel = np.zeros(n, bool)
        keys = []
        for i, sample in enumerate(samples):
            key = sample["__key__"]
            keys.append(key)
            source = plan.sources[sample["__source__"]]
            face = decode_face(sample)
            if face.shape[:2] != (H, W):
                raise UserError(
                    f"{sample['__url__']}: {key} is {face.shape[0]}x{face.shape[1]}, the run trains on "
                    f"{H}x{W}; mix only manifests of one face size"
                )
            labels[i] = sample_class(sample, plan.class_field) + source.identity_offset
            if plan.online is not None:
                face, geometry = self._occlude(plan.online, face, key, epoch)
                occluded[i] = geometry["occluded"]
                if occluded[i]:
                    boxes[i] = [geometry[c] for c in ("box_x0", "box_y0", "box_x1", "box_y1")]
                relabel[i] = True
            elif "__labels__" in sample:
                row = sample["__labels__"]
                occluded[i], boxes[i], patterns[i] = row["occluded"], row["box"], row["pattern"]
            rng = SampleRandom(sample_seed(plan.seed, f"{key}@{epoch}"))
            if plan.flip and rng.random() < 0.5:
                face = face[:, ::-1]
                boxes[i] = [W - boxes[i, 2], boxes[i, 1], W - boxes[i, 0], boxes[i, 3]]
                relabel[i] = True  # block edges are not symmetric: the mirrored box gets its own label
            images[i] = face
        batch: dict[str, Any] = {
            "image": torch.from_numpy(images),
            "label": torch.from_numpy(labels),
            "occluded": torch.from_numpy(occluded),
        }
        if plan.targets:
            if relabel.any():
                patterns[relabel] = label_boxes(boxes[relabel], occluded[relabel], plan.K, H, W)[0]
            batch["pattern"] = torch.from_numpy(patterns)
            batch["box"] = torch.from_numpy(regression_target(boxes, occluded, H, W))
        if self.log_keys:
            batch["keys"] = keys
        return batch

    def _occlude(
        self, online: OnlineOcclusion, face: np.ndarray, key: str, epoch: int
    ) -> tuple[np.ndarray, dict[str, Any]]:
        from occgen.occlude.occluders import load_library
        from occgen.occlude.run import BuildOptions, occlude_sample

        if self._occluding is None:
            self._occluding = (
                load_library(online.occluders),
                BuildOptions(scales=online.scales, clean_ratio=online.clean_ratio),
            )
        library, options = self._occluding
        return occlude_sample(face, sample_seed(self.plan.seed, f"{key}@{epoch}/occlude"), options, library)


def _close(stream: Iterator[Any]) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        close()


def served(batches: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """A loader's micro-batches, with a worker's report of bad data raised here as the UserError it was."""
    for batch in batches:
        if "error" in batch:
            raise UserError(batch["error"])
        yield batch
