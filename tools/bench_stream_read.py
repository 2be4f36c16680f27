"""What the streamed order costs a loader worker, beside what decoding costs, in the same run.

Every worker of the streamed order computes the epoch's places and reads (parses) nearly every shard, since its
micro-batches draw from all of them, but decodes only its own 1/n of the samples. So with n workers a process
spends, per sample of the epoch, 1/places + 1/read in every worker and 1/decode once: its loader cannot go faster
than 1 / (1/places + 1/read) however many workers it has. Rows, in samples/s of one process: the order's places
(no byte read), a whole epoch's shards read raw from local tars (occgen's direct ustar parser) and through
``pipe:cat`` (fromnet's own stream parser; beside it the simple way, tarfile's stream mode), and the loader's
decoder (libjpeg-turbo) on the same faces.

    python tools/bench_stream_read.py manifests/occ-lfw      # any occgen manifest
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import time
from dataclasses import replace
from pathlib import Path

import webdataset as wds

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fromnet.shards import decode_face, read_manifest  # noqa: E402
from fromnet.train.data import Source, StreamPlan, TrainStream, stream_buffer  # noqa: E402
from fromnet.train.order import STREAM_SHARDS  # noqa: E402
from occgen.writer import member_bytes  # noqa: E402


def rate(work, samples: int) -> float:
    start = time.perf_counter()
    work()
    return samples / (time.perf_counter() - start)


def read_all(plan: StreamPlan) -> None:
    """Every shard of the epoch read raw, keeping nothing: what a worker pays for the samples it skips."""
    stream = TrainStream(plan, [0], 0, 1)
    for unit in plan.units(0):
        for _ in stream.read_unit(unit, set()):
            pass


def tarfile_read_all(plan: StreamPlan) -> None:
    """The simple way: every shard of the epoch through ``pipe:cat`` and tarfile's stream mode."""
    for unit in plan.units(0):
        url = plan.sources[unit.source].manifest.shards[unit.shard].url
        with wds.gopen(f"pipe:cat {url}") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
            for info in tar:
                if info.isfile():
                    member_bytes(tar, info)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    manifest = read_manifest(args.manifest)
    n = manifest.samples
    plan = StreamPlan((Source(manifest),), args.batch_size, 1, 0, (0, 0), order="stream", stream_shards=STREAM_SHARDS)
    plan = replace(plan, stream_buffer=stream_buffer(plan))
    piped = replace(manifest, shards=tuple(replace(s, url=f"pipe:cat {s.url}") for s in manifest.shards))
    places = rate(lambda: sum(1 for _ in plan.places(0, plan.units(0))), n)
    local = rate(lambda: read_all(plan), n)
    pipe = rate(lambda: read_all(replace(plan, sources=(Source(piped),))), n)
    simple = rate(lambda: tarfile_read_all(plan), n)
    stream = TrainStream(plan, [0], 0, 1)
    unit = plan.units(0)[0]
    faces = [s for _, s in stream.read_unit(unit, set(range(plan.counts[unit.source][unit.shard])))]
    decode = rate(lambda: [decode_face(s) for s in faces], len(faces))
    print(f"{manifest.name}: {n:,} samples in {len(manifest.shards)} shards, shuffle buffer {plan.stream_buffer:,}")
    print(f"  places of the epoch           {places:10,.0f} samples/s")
    print(f"  raw read, local tars          {local:10,.0f} samples/s")
    print(f"  raw read, pipe:cat            {pipe:10,.0f} samples/s")
    print(f"  pipe:cat through tarfile      {simple:10,.0f} samples/s (the simple way)")
    print(f"  decode (libjpeg-turbo)        {decode:10,.0f} samples/s")
    for name, read in (("local", local), ("pipe:cat", pipe)):
        ceiling = 1 / (1 / places + 1 / read)
        print(
            f"  streamed loader ceiling, {name:<8} {ceiling:8,.0f} samples/s per process "
            f"(= {ceiling / decode:.1f} decoders)"
        )


if __name__ == "__main__":
    main()
