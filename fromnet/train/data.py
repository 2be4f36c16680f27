"""Training streams: occgen shards -> shuffled, seeded micro-batches, the same whatever the process or worker count."""

from __future__ import annotations

import hashlib
import io
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import torch
import webdataset as wds

from fromnet.shards import Manifest, Shard, decode_face, image_size, tar_samples
from occgen.errors import UserError
from occgen.label.patterns import label_boxes, regression_target
from occgen.occlude.plan import SampleRandom, sample_seed
from occgen.writer import atomic_write

if TYPE_CHECKING:  # imported where used: only runs with online occlusion need them
    from occgen.occlude.occluders import OccluderLibrary
    from occgen.occlude.run import BuildOptions

# ---------------------------------------------------------------------------------------------------------------
# Training streams
#
# A global batch of B samples is cut into R micro-batches, one per data-parallel *replica* (R is fixed when a run
# starts, normally its world size). Each replica reads from L *lanes*: independent streams of shards -> samples ->
# shuffle buffer -> decoded faces, and the micro-batch of step t comes from lane t mod L. Every stream is seeded
# by (run seed, epoch, replica, lane) and every random choice of a sample by (run seed, epoch, key), so the batches
# of a step depend on nothing else: not on the number of processes (a resumed run on fewer processes runs several
# replicas each, accumulating gradients), nor on the number of loader workers (each worker serves whole lanes, and
# the loader returns them round-robin, in consumption order).
#
# Shards are dealt, not split: an epoch's shard sequence is an endless series of shuffled blocks (each block holds
# every shard of every manifest, repeated by its weight), and stream j of J takes positions j, j+J, j+2J, ... So
# streams read disjoint shards within a block, no stream ever runs dry (every rank gets the same number of
# batches: DDP cannot hang on uneven shards, the point of webdataset's resampled shards), and a resumed run skips
# what it consumed without decoding it.
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One manifest of a training mix: its weight (relative sampling rate of its samples), the offset added to its
    identities so that several manifests never share a label, and its labels file in shard order (or None)."""

    manifest: Manifest
    weight: float = 1.0
    identity_offset: int = 0
    labels: str | None = None


def parse_source(text: str) -> tuple[Path, float]:
    """``manifests/NAME`` or ``manifests/NAME:WEIGHT``."""
    path, _, weight = text.rpartition(":") if ":" in text else (text, "", "")
    if not path:
        return Path(text), 1.0
    try:
        value = float(weight)
    except ValueError:
        return Path(text), 1.0  # a ':' that is part of the path
    if not value > 0:
        raise UserError(f"--shards {text}: the weight after ':' must be a positive number")
    return Path(path), value


#: A labels row in shard order: the key's hash (checks alignment), the pattern, and the box in pixels.
LABEL_DTYPE = np.dtype([("key_hash", "<u8"), ("pattern", "<i2"), ("occluded", "?"), ("box", "<i2", (4,))])


def key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def build_label_cache(manifest: Manifest, K: int, out: Path) -> Path:
    """Put ``labels-kK.parquet`` (sorted by key) into shard order, as one memory-mappable array at ``out``.

    Loader workers then read a shard's labels by offset, holding no per-key dictionary: memory per worker stays
    bounded whatever the manifest's size, and the pages are shared between processes.
    """
    from occgen.label.labels import REG_COLUMNS, labels_path

    path = labels_path(manifest.path, K)
    if not path.is_file():
        raise UserError(
            f"{manifest.path} has no pattern labels for K={K} ({path.name}); "
            f"run `occgen label --K {K} {manifest.path}` first"
        )
    labels = pq.read_table(path, columns=["key", "pattern", *REG_COLUMNS])
    samples = ds.dataset(manifest.path / "samples.parquet", format="parquet").to_table(columns=["key", "shard"])
    order = {s.name: i for i, s in enumerate(manifest.shards)}
    shard_index = np.array([order.get(s, -1) for s in samples["shard"].to_pylist()])
    if (shard_index < 0).any() or len(shard_index) != manifest.samples:
        raise UserError(f"{manifest.path}: samples.parquet and shards.json disagree; rebuild with `occgen build`")
    keys = samples["key"].take(pa.array(np.argsort(shard_index, kind="stable")))
    where = pc.index_in(keys, value_set=labels["key"])
    if where.null_count:
        raise UserError(
            f"{path} lacks labels for {where.null_count} sample(s): it is older than the manifest; "
            f"run `occgen label --K {K} {manifest.path}` again"
        )
    rows = labels.take(where)
    height, width = image_size(manifest)
    reg = np.stack([rows[c].to_numpy() for c in REG_COLUMNS], axis=1).astype(np.float64)
    table = np.zeros(len(keys), LABEL_DTYPE)
    table["key_hash"] = [key_hash(k) for k in keys.to_pylist()]
    table["pattern"] = rows["pattern"].to_numpy()
    table["box"] = np.rint(reg * [width, height, width, height])
    table["occluded"] = (table["box"][:, 2] > table["box"][:, 0]) & (table["box"][:, 3] > table["box"][:, 1])
    buf = io.BytesIO()
    np.save(buf, table, allow_pickle=False)
    atomic_write(out, buf.getvalue())
    return out


class LabelRows:
    """A manifest's label cache, opened lazily in each worker (memory-mapped), read by (shard, position)."""

    def __init__(self, path: str, manifest: Manifest) -> None:
        self.path = path
        starts = np.cumsum([0] + [s.samples for s in manifest.shards])
        self.start = {s.url: int(starts[i]) for i, s in enumerate(manifest.shards)}
        self._rows: np.ndarray | None = None

    def get(self, url: str, position: int, key: str) -> np.void:
        if self._rows is None:
            self._rows = np.load(self.path, mmap_mode="r", allow_pickle=False)
        row = self._rows[self.start[url] + position]
        if row["key_hash"] != key_hash(key):
            raise UserError(
                f"{url}: sample {position} is {key}, not the sample the manifest lists there; "
                "the shard and its manifest differ (rebuild it with `occgen build`)"
            )
        return row


@dataclass(frozen=True)
class OnlineOcclusion:
    """Occlude clean shards in the loader with occgen's own Algorithm 1 (how the authors' release trains)."""

    scales: tuple[float, ...]
    clean_ratio: float = 1 / 3
    occluders: str | None = None


@dataclass(frozen=True)
class StreamPlan:
    """Everything that decides which samples make up each micro-batch of each step."""

    sources: tuple[Source, ...]
    batch_size: int  # global
    replicas: int
    lanes: int
    seed: int
    image_size: tuple[int, int]  # (height, width)
    K: int = 5
    targets: bool = False  # produce pattern labels and boxes
    shuffle_buffer: int = 1000
    flip: bool = True
    online: OnlineOcclusion | None = None

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


def shard_block(plan: StreamPlan, epoch: int, block: int) -> list[tuple[int, Shard]]:
    """Block ``block`` of an epoch's shard sequence: every shard of every source, repeated by its weight, shuffled."""
    rng = random.Random(f"{plan.seed}:{epoch}:{block}")
    items: list[tuple[int, Shard]] = []
    for i, source in enumerate(plan.sources):
        shards = [(i, s) for s in source.manifest.shards]
        whole, part = divmod(source.weight, 1.0)
        items += shards * int(whole) + rng.sample(shards, round(part * len(shards)))
    rng.shuffle(items)
    return items


def dealt_blocks(plan: StreamPlan, epoch: int, stream: int, streams: int) -> Iterator[list[tuple[int, Shard]]]:
    """Stream ``stream`` of ``streams``, block by block: its positions stream, stream + streams, ... of the endless
    block sequence, grouped by block (a block may hand a stream no shard when there are more streams than shards)."""
    position, block_no = stream, 0
    while True:
        block = shard_block(plan, epoch, block_no)
        if not block:
            raise UserError("the training mix has no shards (are the weights too small?)")
        mine = []
        while position < (block_no + 1) * len(block):
            mine.append(block[position - block_no * len(block)])
            position += streams
        yield mine
        block_no += 1


class TrainStream(torch.utils.data.IterableDataset):
    """Micro-batches for steps [start, end) of the replicas this process runs, in the order it consumes them.

    Consumption index c runs over (step, replica): worker w of n serves every c = w (mod n). When n divides
    (replicas here) x lanes, each lane is served by exactly one worker, and DataLoader's round-robin returns the
    micro-batches in order whatever n is.
    """

    def __init__(self, plan: StreamPlan, replicas: list[int], start: int, end: int, log_keys: bool = False) -> None:
        super().__init__()
        self.plan, self.replicas, self.start, self.end = plan, list(replicas), start, end
        self.log_keys = log_keys
        self._labels: dict[int, LabelRows] = {}
        self._occluding: tuple[OccluderLibrary, BuildOptions] | None = None  # loaded on first use, in the worker

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        plan, n = self.plan, len(self.replicas)
        per_epoch = plan.steps_per_epoch
        lanes: dict[tuple[int, int, int], Iterator[dict[str, Any]]] = {}
        for c in range(worker, (self.end - self.start) * n, workers):
            step, replica = self.start + c // n, self.replicas[c % n]
            epoch, in_epoch = divmod(step, per_epoch)
            lane = in_epoch % plan.lanes
            if (epoch, replica, lane) not in lanes:
                for old in [k for k in lanes if k[0] < epoch]:
                    del lanes[old]
                lanes[epoch, replica, lane] = self._lane(epoch, replica, lane, skip=in_epoch // plan.lanes)
            batch = next(lanes[epoch, replica, lane])
            batch.update(step=step, replica=replica, epoch=epoch)
            yield batch

    def _lane(self, epoch: int, replica: int, lane: int, skip: int) -> Iterator[dict[str, Any]]:
        """Micro-batches of one lane. Its shuffle buffer is emptied at each block's end, so within an epoch the
        streams of all replicas train on disjoint samples as long as each consumes no more than its share."""
        plan = self.plan
        stream = replica * plan.lanes + lane
        blocks = dealt_blocks(plan, epoch, stream, plan.replicas * plan.lanes)
        shuffled = itertools.chain.from_iterable(
            wds.shuffle(
                plan.shuffle_buffer, initial=min(100, plan.shuffle_buffer), seed=f"{plan.seed}:{epoch}:{stream}:{i}"
            )(self._samples(block))
            for i, block in enumerate(blocks)
        )
        b = plan.micro_batch
        consumed = itertools.islice(shuffled, skip * b, None)  # a resumed run skips undecoded samples
        while True:
            yield self._collate([next(consumed) for _ in range(b)], epoch)

    def _samples(self, shards: list[tuple[int, Shard]]) -> Iterator[dict[str, Any]]:
        """Raw samples shard by shard, each tagged with its source, and its labels row where one is used."""
        for index, shard in shards:
            source = self.plan.sources[index]
            rows = None
            if self.plan.targets and source.labels is not None:
                rows = self._labels.setdefault(index, LabelRows(source.labels, source.manifest))
            for position, sample in enumerate(tar_samples(shard.url)):
                sample["__source__"] = index
                if rows is not None:
                    sample["__labels__"] = rows.get(shard.url, position, sample["__key__"])
                yield sample

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
            labels[i] = int(sample["cls"]) + source.identity_offset
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
