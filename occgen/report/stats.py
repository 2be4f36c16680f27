"""``occgen stats``: what a built dataset holds, from its manifest alone (no image is decoded).

Per scale the mean and median occluded area (the clipped box, and the pixels under the occluder's opaque part),
counts per occluder category, per identity and per shard, and the pattern histogram of every labels file beside
the manifest. ``tally`` reads the samples in key order a run at a time (occgen.manifest), so memory stays bounded
but for 12 bytes per occluded sample; ``compute`` turns the tally into a JSON-ready dict; ``table`` words it for a
terminal and for the dataset card; occgen.report.plots draws it.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from occgen.errors import UserError
from occgen.manifest import batches, in_key_order, open_parts, open_samples

AREA_COLUMNS = ("box_area_ratio", "pixel_area_ratio")
#: The columns the statistics read; the partial-face and placement columns when the manifest has them.
COLUMNS = ("key", "shard", "identity", "occluded", "scale", "occluder", "occluder_category", *AREA_COLUMNS)
OPTIONAL_COLUMNS = ("part", "visible_area_ratio", "placement")
_LABELS = re.compile(r"labels-k(\d+)(-from)?\.parquet")


@dataclass
class Tally:
    """What the statistics and the card need from a manifest, added up a run of keys at a time: counts, and the
    areas of the occluded samples in key order (4 bytes each per column, for means and medians as exact as
    those of the whole table at once)."""

    samples: int = 0
    sizes: set[str] = field(default_factory=set)
    per_identity: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    shards: Counter = field(default_factory=Counter)
    categories: Counter = field(default_factory=Counter)
    occluders: set[str] = field(default_factory=set)  # names of the occluders the samples use
    visible: tuple[Any, Any] | None = None  # (min, max) visible_area_ratio of partial faces
    unscaled: str = "occluded"  # the placement of the first occluded sample without a scale (masks, anchored)
    _unscaled_seen: bool = False
    _areas: dict[str, list[np.ndarray]] = field(default_factory=lambda: {"scale": [], **{c: [] for c in AREA_COLUMNS}})

    def add(self, run: pa.Table) -> None:
        self.samples += run.num_rows
        hw = np.stack([run["height"].to_numpy(zero_copy_only=False), run["width"].to_numpy(zero_copy_only=False)], 1)
        self.sizes.update(f"{h}x{w}" for h, w in np.unique(hw, axis=0).tolist())
        identity = pc.drop_null(run["identity"]).to_numpy()
        if len(identity) and identity.min() < 0:
            raise UserError(f"identity {identity.min()} in the manifest: identities are numbered from 0")
        counts = np.bincount(identity) if len(identity) else np.zeros(0, np.int64)
        if len(counts) > len(self.per_identity):
            self.per_identity = np.pad(self.per_identity, (0, len(counts) - len(self.per_identity)))
        self.per_identity[: len(counts)] += counts
        self.shards.update(_counts(run["shard"]))
        occluded = run.filter(pc.fill_null(run["occluded"], False))
        self.categories.update(_counts(occluded["occluder_category"]))
        self.occluders.update(pc.unique(pc.drop_null(occluded["occluder"])).to_pylist())
        scale = pc.cast(occluded["scale"], pa.float32()).to_numpy(zero_copy_only=False)
        if "placement" in run.column_names and np.isnan(scale).any() and not self._unscaled_seen:
            self.unscaled = str(occluded["placement"][int(np.flatnonzero(np.isnan(scale))[0])].as_py())
        self._unscaled_seen = self._unscaled_seen or bool(np.isnan(scale).any())
        self._areas["scale"].append(scale)
        for col in AREA_COLUMNS:
            self._areas[col].append(occluded[col].to_numpy(zero_copy_only=False))
        if "visible_area_ratio" in run.column_names:
            kept = run.filter(pc.not_equal(run["part"], "whole"))["visible_area_ratio"].to_numpy(zero_copy_only=False)
            if len(kept):
                low, high = kept.min(), kept.max()
                self.visible = (
                    (low, high) if self.visible is None else (min(self.visible[0], low), max(self.visible[1], high))
                )

    def areas(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(scale, {column: area}) of the occluded samples, in key order."""
        joined = {c: np.concatenate(v) if v else np.zeros(0, np.float32) for c, v in self._areas.items()}
        self._areas = {c: [v] for c, v in joined.items()}
        return joined.pop("scale"), joined

    def by_scale(self) -> list[tuple[Any, dict[str, np.ndarray]]]:
        """(scale, {column: area}) per scale in ascending order, samples in key order."""
        scale, areas = self.areas()
        return [(s, {c: v[scale == s] for c, v in areas.items()}) for s in np.unique(scale[~np.isnan(scale)])]


@dataclass
class LabelTally:
    """A labels file added up in file order (key order): pattern counts and the IoU of occluded samples."""

    samples: int = 0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    hit_iou: list[np.ndarray] = field(default_factory=list)  # samples with a pattern (only occluded ones have one)

    def add(self, batch: pa.RecordBatch) -> None:
        pattern, iou = batch["pattern"].to_numpy(zero_copy_only=False), batch["iou"].to_numpy(zero_copy_only=False)
        self.samples += len(pattern)
        counts = np.bincount(pattern) if len(pattern) else np.zeros(0, np.int64)
        if len(counts) > len(self.counts):
            self.counts = np.pad(self.counts, (0, len(counts) - len(self.counts)))
        self.counts[: len(counts)] += counts
        self.hit_iou.append(iou[pattern > 0])


def _counts(column: pa.ChunkedArray) -> dict[str, int]:
    counts = pc.value_counts(pc.drop_null(column))
    return dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))


def tally(manifest_dir: Path) -> Tally:
    """Read the manifest's samples in key order, a run at a time, into a Tally."""
    parts = open_samples(manifest_dir)
    optional = [c for c in OPTIONAL_COLUMNS if c in parts.schema.names]
    out = Tally()
    for run in in_key_order(parts, [*COLUMNS, "height", "width", *optional]):
        out.add(run)
    if out.samples == 0:
        raise UserError(f"{Path(manifest_dir) / 'samples.parquet'} has no samples")
    return out


def label_files(manifest_dir: Path) -> dict[str, Path]:
    """Every labels file beside the manifest, by name (``k5``, ``k4-from``), in K order."""
    found = []
    for path in Path(manifest_dir).glob("labels-k*.parquet"):
        m = _LABELS.fullmatch(path.name)
        if m:
            found.append(((int(m.group(1)), bool(m.group(2))), path.stem.removeprefix("labels-"), path))
    return {name: path for _, name, path in sorted(found)}


def read_labels(manifest_dir: Path) -> dict[str, LabelTally]:
    """Every labels file beside the manifest added up, by name, in K order."""
    out = {}
    for name, path in label_files(manifest_dir).items():
        out[name] = LabelTally()
        for batch in batches(open_parts(path), ["pattern", "iou"]):
            out[name].add(batch)
    return out


def _areas(values: dict[str, np.ndarray]) -> dict[str, Any]:
    out: dict[str, Any] = {"samples": int(len(values[AREA_COLUMNS[0]]))}
    for col in AREA_COLUMNS:
        v = values[col].astype(np.float64)
        short = col.removesuffix("_area_ratio")
        out[f"{short}_mean"] = float(v.mean()) if len(v) else None
        out[f"{short}_median"] = float(np.median(v)) if len(v) else None
    return out


def _histogram(values: np.ndarray, counts: np.ndarray) -> dict[str, list[int]]:
    """Counts of each distinct value (images per identity, samples per pattern)."""
    return {"value": values.astype(int).tolist(), "count": counts.astype(int).tolist()}


def compute(samples: Tally, labels: dict[str, LabelTally] | None = None) -> dict[str, Any]:
    """The statistics of one manifest as a JSON-ready dict (areas are fractions of the image area)."""
    scale, areas = samples.areas()
    per_identity = samples.per_identity[samples.per_identity > 0]
    stats: dict[str, Any] = {
        "samples": samples.samples,
        "occluded": int(len(scale)),
        "clean": int(samples.samples - len(scale)),
        "image_size": sorted(samples.sizes),
        "scales": [{"scale": float(s), **_areas(g)} for s, g in samples.by_scale()],
        "all_occluded": _areas(areas),
        "categories": {str(c): int(samples.categories[c]) for c in sorted(samples.categories)},
        "identities": {
            "count": int(len(per_identity)),
            "samples_min": int(per_identity.min()),
            "samples_median": float(np.median(per_identity)),
            "samples_max": int(per_identity.max()),
            "histogram": _histogram(*np.unique(per_identity, return_counts=True)),  # identities with `value` samples
        },
        "shards": {str(s): int(samples.shards[s]) for s in sorted(samples.shards)},
        "labels": {},
    }
    for name, lab in (labels or {}).items():
        hit = pd.Series(np.concatenate(lab.hit_iou) if lab.hit_iou else np.zeros(0))
        used = np.flatnonzero(lab.counts)
        stats["labels"][name] = {
            "samples": lab.samples,
            "patterns_used": int((used > 0).sum()),
            "mean_iou_occluded": float(hit.mean()) if len(hit) else None,
            "histogram": _histogram(used, lab.counts[used]),  # samples per pattern index (0 = clean)
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
