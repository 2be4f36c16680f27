"""Embedding throughput: `fromnet embed`'s batched path against the simple way, in the same run.

The simple way: decode each face with PIL, normalise, run the network on one face at a time (batch 1, fp32).
The batched way is what `fromnet embed` does: the build's libjpeg-turbo decoder, batches of --batch-size,
[-1, 1] floats in channels_last memory; measured with the model's weights in the default (NCHW) layout and in
channels_last. Both ways are checked to give the same embeddings. Model: a freshly initialised network of the
given size (speed does not depend on the weights), or --model RUN.

    python tools/bench_embed.py --shards manifests/NAME [--limit 2000] [--backbone r18 --width-mult 0.25]
"""

from __future__ import annotations

import argparse
import io
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fromnet.checkpoint import load_model  # noqa: E402
from fromnet.embed import TorchEmbedder, batches, embed_faces, pick_device  # noqa: E402
from fromnet.models import build_model  # noqa: E402
from fromnet.shards import image_field, iter_ordered, read_manifest  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", required=True, help="manifest folder")
    ap.add_argument("--model", help="run folder or checkpoint (default: a fresh network of --backbone/--width-mult)")
    ap.add_argument("--backbone", default="r18")
    ap.add_argument("--width-mult", type=float, default=0.25)
    ap.add_argument("--variant", default="from")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--limit", type=int, default=2000, help="faces to embed per way")
    ap.add_argument("--simple-limit", type=int, default=300, help="faces for the (slow) simple way")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--workers", type=int, default=0, help="decoding processes for the batched way")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    if args.model:
        loaded = load_model(args.model, device)
        model, size = loaded.model, tuple(loaded.spec.input_size)
    else:
        torch.manual_seed(0)
        model = build_model(args.variant, 5, (112, 96), backbone=args.backbone, width_mult=args.width_mult)
        model, size = model.to(device).eval(), (112, 96)
    manifest = read_manifest(args.shards)
    print(
        f"model {args.model or f'{args.variant} {args.backbone} x{args.width_mult}'} on {device}, "
        f"{torch.get_num_threads()} threads, {args.precision}; faces from {manifest.name}"
    )

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    # simple way: PIL decode, one face at a time
    samples = list(itertools.islice(iter_ordered(manifest), args.simple_limit))
    start = time.perf_counter()
    simple = []
    with torch.inference_mode():
        for s in samples:
            face = np.asarray(Image.open(io.BytesIO(image_field(s))).convert("RGB"), dtype=np.float32)
            x = torch.from_numpy((face - 127.5) / 127.5).permute(2, 0, 1)[None].contiguous().to(device)
            simple.append(model(x).embedding.float().cpu().numpy())
    sync()
    t_simple = time.perf_counter() - start
    print(f"  simple (PIL, batch 1, NCHW):      {len(samples) / t_simple:8.1f} faces/s  ({len(samples)} faces)")
    simple = np.concatenate(simple)

    bf16 = args.precision == "bf16"
    for layout in ("nchw weights", "channels_last weights"):
        m = model.to(memory_format=torch.channels_last) if layout.startswith("channels_last") else model
        embedder = TorchEmbedder(m, size, device, bf16, "bench")
        warm = next(batches(manifest, min(args.batch_size, 32), size))[1]
        embed_faces(embedder, warm)
        n, out = 0, []
        start = time.perf_counter()
        decode_time = 0.0
        it = batches(manifest, args.batch_size, size, args.workers)
        while n < args.limit:
            t0 = time.perf_counter()
            try:
                _, faces = next(it)
            except StopIteration:
                break
            decode_time += time.perf_counter() - t0
            out.append(embed_faces(embedder, faces))
            n += len(faces)
        sync()
        t = time.perf_counter() - start
        diff = float(np.abs(np.concatenate(out)[: len(simple)] - simple).max())
        print(
            f"  fromnet embed (batch {args.batch_size}, {args.workers} workers, {layout}): {n / t:8.1f} faces/s  "
            f"({n} faces; "
            f"reading+decoding {100 * decode_time / t:.0f}% of the time; max |diff| vs simple {diff:.1e})"
        )


if __name__ == "__main__":
    main()
