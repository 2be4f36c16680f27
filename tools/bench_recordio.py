"""RecordIO read throughput (records/s per worker) beside the PIL decode limit, measured in the same run.

An insightface-style set is written to a temporary folder: --records faces from ../shared/data/lfw-112x96 padded
to 112x112 and JPEG-encoded (quality 95), one whole record each after a header record, in face2rec's layout. Then:

- listing: ``occgen.occlude.sources.from_recordio`` (the index plus each record's 24-byte header and label);
- read: every face's encoded bytes through the index (``read_input``, what a build worker does), in one process,
  then split into shards of --shard-size over --workers processes (each seeks to its own records only): wall
  time including the processes' start-up, and the time spent reading inside the workers;
- decode: the same bytes decoded to RGB arrays with PIL (the simple way) and with occgen's decoder (libjpeg-turbo
  through simplejpeg), one process: the limit any reader feeding a decoder runs into.

    python tools/bench_recordio.py [--records 5000] [--workers 2]
"""

from __future__ import annotations

import argparse
import io
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from occgen.images import decode_array  # noqa: E402
from occgen.occlude.sources import Item, from_recordio, read_input  # noqa: E402
from occgen.runner import parallel_map  # noqa: E402

MAGIC = 0xCED7230A


def record(payload: bytes) -> bytes:
    """One whole record, never split (dmlc splits where the magic occurs in the data; a reader takes either)."""
    return struct.pack("<II", MAGIC, len(payload)) + payload + b"\0" * (-len(payload) % 4)


def write_set(folder: Path, faces: list[Path]) -> None:
    """train.rec/.idx: header record 0 (label [N + 1, N + 1]), faces 1..N labelled by person folder."""
    people = {p: i for i, p in enumerate(sorted({f.parent.name for f in faces}))}
    n = len(faces)
    rec, idx = bytearray(), []
    header = struct.pack("<IfQQ", 2, 0.0, 0, 0) + np.array([n + 1, n + 1], "<f4").tobytes()
    for key, payload in enumerate([header] + [_face(f, people[f.parent.name]) for f in faces]):
        idx.append(f"{key}\t{len(rec)}\n")
        rec += record(payload)
    (folder / "train.rec").write_bytes(bytes(rec))
    (folder / "train.idx").write_text("".join(idx))


def _face(path: Path, label: int) -> bytes:
    face = np.asarray(Image.open(path).convert("RGB"))
    buf = io.BytesIO()
    Image.fromarray(np.pad(face, ((0, 0), (8, 8), (0, 0)), mode="edge")).save(buf, "JPEG", quality=95)
    return struct.pack("<IfQQ", 0, float(label), 0, 0) + buf.getvalue()


def read_shard(task: tuple[Path, tuple[Item, ...]]) -> tuple[int, float]:
    """A worker's part: (bytes read, seconds spent reading them)."""
    root, items = task
    t = time.perf_counter()
    return sum(len(read_input(root, item)) for item in items), time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=500)
    args = ap.parse_args()
    faces = sorted((REPO.parent / "shared" / "data" / "lfw-112x96").glob("*/*.jpg"))[: args.records]
    if not faces:
        sys.exit("needs ../shared/data/lfw-112x96")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t = time.perf_counter()
        write_set(folder, faces)
        print(f"wrote {len(faces):,} records, {(folder / 'train.rec').stat().st_size / 2**20:.1f} MiB "
              f"in {time.perf_counter() - t:.1f} s (page cache warm from here on)")  # fmt: skip
        (folder / "train.rec").read_bytes()  # every way below reads from the page cache

        t = time.perf_counter()
        source = from_recordio(folder)
        listing = time.perf_counter() - t
        items = source.items

        t = time.perf_counter()
        encoded = [read_input(source.root, item) for item in items]
        read_one = time.perf_counter() - t
        size = sum(map(len, encoded))

        shards = [(source.root, items[i : i + args.shard_size]) for i in range(0, len(items), args.shard_size)]
        t = time.perf_counter()
        done = list(parallel_map(read_shard, shards, args.workers, "read", quiet=True))
        read_many = time.perf_counter() - t
        assert sum(b for b, _ in done) == size
        in_workers = sum(s for _, s in done) / args.workers  # each worker's own reading time, on average

        t = time.perf_counter()
        for data in encoded:
            np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        pil = time.perf_counter() - t
        t = time.perf_counter()
        for data in encoded:
            decode_array(data)
        turbo = time.perf_counter() - t

    n = len(items)
    rows = [
        ("list faces (index + headers)", 1, listing),
        ("read records (1 process)", 1, read_one),
        (f"read records ({args.workers} processes, wall incl. start-up)", args.workers, read_many),
        (f"read records ({args.workers} processes, time inside workers)", args.workers, in_workers),
        ("decode with PIL (1 process)", 1, pil),
        ("decode with occgen's decoder (1 process)", 1, turbo),
    ]
    print(f"{n:,} records of {size / n / 1024:.1f} KiB on average")
    print(f"{'step':<50} {'seconds':>8} {'records/s':>11} {'per worker':>11}")
    for what, workers, seconds in rows:
        print(f"{what:<50} {seconds:8.2f} {n / seconds:11,.0f} {n / seconds / workers:11,.0f}")


if __name__ == "__main__":
    main()
