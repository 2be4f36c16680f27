"""A fixed, untrained face "embedder" for checking the evaluation pipeline: downsampled grey pixels.

Writes an embeddings file the way any outside tool would (its own row ids as keys, LFW paths as src), so it also
exercises `fromnet eval`'s matching by src. Each face becomes its 4x4-average-pooled grey image (28x24 = 672
values for 112x96), centred and scaled to unit norm: a weak but honest baseline (about 60-70% on LFW pairs).

    python tools/pixel_embeddings.py manifests/lfw-clean pixels-clean.parquet
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fromnet.embed import write_embeddings  # noqa: E402
from fromnet.eval.pairs import embeddings_table  # noqa: E402
from fromnet.shards import decode_face, iter_ordered, read_manifest, sample_meta  # noqa: E402

POOL = 4


def pixels(face: np.ndarray) -> np.ndarray:
    grey = face.astype(np.float32).mean(axis=2)
    h, w = grey.shape[0] // POOL * POOL, grey.shape[1] // POOL * POOL
    v = grey[:h, :w].reshape(h // POOL, POOL, w // POOL, POOL).mean(axis=(1, 3)).ravel()
    v -= v.mean()
    return v / max(float(np.linalg.norm(v)), 1e-6)


def main() -> None:
    manifest, out = Path(sys.argv[1]), Path(sys.argv[2])
    srcs, vectors, area = [], [], []
    for sample in iter_ordered(read_manifest(manifest)):
        meta = sample_meta(sample)
        srcs.append(meta["src"])
        area.append(meta.get("box_area_ratio") or 0.0)
        vectors.append(pixels(decode_face(sample)))
    keys = [f"{manifest.name}:{i}" for i in range(len(srcs))]
    write_embeddings(
        embeddings_table(keys, srcs, np.stack(vectors), {"box_area_ratio": np.array(area, np.float32)}), out
    )
    print(f"{len(srcs)} faces -> {out}")


if __name__ == "__main__":
    main()
