"""``occgen stats``: what a built dataset holds, from its manifest alone (no image is decoded).

Per scale the mean and median occluded area (the clipped box, and the pixels under the occluder's opaque part),
counts per occluder category, per identity and per shard, and the pattern histogram of every labels file beside
the manifest. ``compute`` is pure (a samples table in, a JSON-ready dict out); ``table`` words it for a terminal
and for the dataset card; occgen.report.plots draws it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from occgen.errors import UserError
from occgen.label.labels import open_samples

AREA_COLUMNS = ("box_area_ratio", "pixel_area_ratio")
_LABELS = re.compile(r"labels-k(\d+)(-from)?\.parquet")


def read_manifest(manifest_dir: Path) -> pd.DataFrame:
    """The samples of a manifest as one DataFrame (shards unified, sorted by key)."""
    path = Path(manifest_dir) / "samples.parquet"
    if not path.exists():
        raise UserError(f"no manifest at {manifest_dir}: {path} is missing (build one with `occgen build`)")
    try:
        frame = open_samples(path).to_table().to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc
    if frame.empty:
        raise UserError(f"{path} has no samples")
    return frame.sort_values("key", ignore_index=True)


def read_labels(manifest_dir: Path) -> dict[str, pd.DataFrame]:
    """Every labels file beside the manifest, by name (``k5``, ``k4-from``), in K order."""
    found = []
    for path in Path(manifest_dir).glob("labels-k*.parquet"):
        m = _LABELS.fullmatch(path.name)
        if m:
            found.append(((int(m.group(1)), bool(m.group(2))), path.stem.removeprefix("labels-"), path))
    return {name: pd.read_parquet(path, columns=["key", "pattern", "iou"]) for _, name, path in sorted(found)}


def _areas(rows: pd.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {"samples": int(len(rows))}
    for col in AREA_COLUMNS:
        values = rows[col].to_numpy(dtype=np.float64)
        short = col.removesuffix("_area_ratio")
        out[f"{short}_mean"] = float(values.mean()) if len(values) else None
        out[f"{short}_median"] = float(np.median(values)) if len(values) else None
    return out


def _histogram(values: np.ndarray) -> dict[str, list[int]]:
    """Counts of each distinct value (images per identity, samples per pattern)."""
    uniq, counts = np.unique(values, return_counts=True)
    return {"value": uniq.astype(int).tolist(), "count": counts.astype(int).tolist()}


def compute(samples: pd.DataFrame, labels: dict[str, pd.DataFrame] | None = None) -> dict[str, Any]:
    """The statistics of one manifest as a JSON-ready dict (areas are fractions of the image area)."""
    occluded = samples[samples["occluded"].astype(bool)]
    per_identity = samples.groupby("identity").size().to_numpy()
    sizes = sorted({f"{h}x{w}" for h, w in zip(samples["height"], samples["width"])})
    stats: dict[str, Any] = {
        "samples": int(len(samples)),
        "occluded": int(len(occluded)),
        "clean": int(len(samples) - len(occluded)),
        "image_size": sizes,
        "scales": [{"scale": float(s), **_areas(g)} for s, g in occluded.groupby("scale", sort=True)],
        "all_occluded": _areas(occluded),
        "categories": {str(c): int(n) for c, n in occluded.groupby("occluder_category").size().items()},
        "identities": {
            "count": int(len(per_identity)),
            "samples_min": int(per_identity.min()),
            "samples_median": float(np.median(per_identity)),
            "samples_max": int(per_identity.max()),
            "histogram": _histogram(per_identity),  # how many identities have `value` samples
        },
        "shards": {str(s): int(n) for s, n in samples.groupby("shard").size().items()},
        "labels": {},
    }
    occ_keys = set(occluded["key"])
    for name, frame in (labels or {}).items():
        hit = frame[frame["key"].isin(occ_keys) & (frame["pattern"] > 0)]
        stats["labels"][name] = {
            "samples": int(len(frame)),
            "patterns_used": int(hit["pattern"].nunique()),
            "mean_iou_occluded": float(hit["iou"].mean()) if len(hit) else None,
            "histogram": _histogram(frame["pattern"].to_numpy()),  # samples per pattern index (0 = clean)
        }
    return stats


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def table(stats: dict[str, Any]) -> str:
    """A short plain-text summary: counts, then occluded area per scale, then label use."""
    ident = stats["identities"]
    lines = [
        f"{stats['samples']:,} samples ({stats['occluded']:,} occluded, {stats['clean']:,} clean), "
        f"{', '.join(stats['image_size'])} (HxW), {ident['count']:,} identities "
        f"({ident['samples_min']}-{ident['samples_max']} samples each, median {ident['samples_median']:g}), "
        f"{len(stats['shards'])} shard(s)",
        "",
        f"{'scale':>7} {'samples':>9} {'box mean':>9} {'box med':>9} {'pix mean':>9} {'pix med':>9}",
    ]
    rows = [(f"{r['scale']:g}", r) for r in stats["scales"]] + [("all", stats["all_occluded"])]
    for label, r in rows:
        lines.append(
            f"{label:>7} {r['samples']:>9,} {_pct(r['box_mean']):>9} {_pct(r['box_median']):>9} "
            f"{_pct(r['pixel_mean']):>9} {_pct(r['pixel_median']):>9}"
        )
    if stats["categories"]:
        lines += ["", "occluders: " + ", ".join(f"{c} {n:,}" for c, n in stats["categories"].items())]
    for name, lab in stats["labels"].items():
        iou = "n/a" if lab["mean_iou_occluded"] is None else f"{lab['mean_iou_occluded']:.3f}"
        lines.append(f"labels {name}: {lab['patterns_used']} patterns used, mean IoU {iou} over occluded samples")
    return "\n".join(lines)
