"""Validation at epoch ends: identity accuracy (nearest class centre) and pattern accuracy on a held-out manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fromnet.shards import decode_face, iter_ordered, read_manifest, sample_meta, to_input
from fromnet.train.data import Source
from fromnet.train.state import TrainState
from occgen.label.patterns import label_boxes


@torch.no_grad()
def validate(
    state: TrainState, path: Path, sources: tuple[Source, ...], K: int, device: torch.device, batch: int = 128
) -> dict[str, float]:
    manifest = read_manifest(path)
    names = identity_names(sources)
    model = state.model
    model.eval()
    hits = torch.zeros(4, dtype=torch.float64)  # identity hits, identity count, pattern hits, pattern count
    rows: list[dict[str, Any]] = []
    images: list[np.ndarray] = []
    centres = torch.nn.functional.normalize(state.head.full_weight().float(), dim=1)

    def flush() -> None:
        x = to_input(torch.from_numpy(np.stack(images)), device)
        out = model(x)
        emb = torch.nn.functional.normalize(out.embedding.float(), dim=1)
        predicted = (emb @ centres.T).argmax(1).cpu()
        for j, row in enumerate(rows):
            label = names.get(row.get("identity_name", ""))
            if label is not None:
                hits[0] += int(predicted[j] == label)
                hits[1] += 1
        if out.pattern_logits is not None:
            H, W = images[0].shape[:2]
            occluded = np.array([bool(r.get("occluded")) for r in rows])
            boxes = np.array(
                [[r.get(c) or 0 for c in ("box_x0", "box_y0", "box_x1", "box_y1")] for r in rows], dtype=np.float64
            )
            truth = torch.from_numpy(label_boxes(boxes, occluded, K, H, W)[0].astype(np.int64))
            hits[2] += (out.pattern_logits.argmax(1).cpu() == truth).sum()
            hits[3] += len(rows)
        rows.clear()
        images.clear()

    for sample in iter_ordered(manifest):
        rows.append(sample_meta(sample))
        images.append(decode_face(sample))
        if len(images) == batch:
            flush()
    if images:
        flush()
    model.train()
    result = {}
    if hits[1]:
        result["identity_acc"] = hits[0].item() / hits[1].item()
    if hits[3]:
        result["pattern_acc"] = hits[2].item() / hits[3].item()
    return result


def identity_names(sources: tuple[Source, ...]) -> dict[str, int]:
    """Training label of each identity name, over every manifest of the mix."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from occgen.manifest import batches, open_samples

    names: dict[str, int] = {}
    for source in sources:
        for batch in batches(open_samples(source.manifest.folder), ["identity", "identity_name"]):
            codes = pc.dictionary_encode(batch.column(1).combine_chunks())  # names in order of first appearance
            _, first = np.unique(codes.indices.to_numpy(zero_copy_only=False), return_index=True)
            identities = batch.column(0).take(pa.array(first)).to_pylist()
            for name, identity in zip(codes.dictionary.to_pylist(), identities):
                names.setdefault(name, identity + source.identity_offset)
    return names
