"""PNG plots of a manifest's statistics (occgen.report.stats), drawn with matplotlib's Agg backend (no display)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from occgen.occlude.calibrate import TARGETS  # noqa: E402
from occgen.report.stats import Tally  # noqa: E402
from occgen.writer import atomic_write  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})  # no version stamp: stable bytes
    plt.close(fig)
    atomic_write(path, buf.getvalue())
    return path


def area_plot(samples: Tally, stats: dict[str, Any], path: Path, title: str) -> Path:
    """Left: mean and median occluded area per scale (box and pixel). Right: the box-area distribution per scale."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    rows = stats["scales"]
    x = np.arange(len(rows))
    bars = (
        ("box_mean", "box, mean"),
        ("box_median", "box, median"),
        ("pixel_mean", "pixels, mean"),
        ("pixel_median", "pixels, median"),
    )
    for n, (key, label) in enumerate(bars):
        left.bar(x + (n - 1.5) * 0.2, [100 * r[key] for r in rows], width=0.2, label=label)
    paper = [(i, 100 * TARGETS[r["scale"]]) for i, r in enumerate(rows) if r["scale"] in TARGETS]
    if paper:
        left.plot(
            [i - 0.4 for i, _ in paper],
            [v for _, v in paper],
            "k_",
            markersize=14,
            markeredgewidth=2,
            label="FROM paper, box mean",
        )
    left.set_xticks(x, [f"s={r['scale']:g}" for r in rows])
    left.set(ylabel="occluded area (% of the face)", title="Occluded area per scale", ylim=(0, 100))
    left.grid(alpha=0.3, axis="y")
    left.legend(fontsize=8, loc="upper left")
    bins = np.linspace(0, 100, 41)
    groups = [(f"s={s:g}", g["box_area_ratio"]) for s, g in samples.by_scale()]
    scale, areas = samples.areas()
    unscaled = areas["box_area_ratio"][np.isnan(scale)]  # placements sized by the face (masks, anchored, groups)
    if len(unscaled):
        groups.append((samples.unscaled, unscaled))
    for label, box in groups:
        right.hist(
            100 * box.astype(np.float64),
            bins=bins,
            histtype="step",
            linewidth=1.5,
            label=f"{label} (mean {100 * pd.Series(box).mean():.1f}%)",  # pandas' float32 mean, as before
        )
    right.set(xlabel="occluded box area (% of the face)", ylabel="samples", title="Box area distribution")
    right.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def counts_plot(stats: dict[str, Any], path: Path, title: str) -> Path:
    """Samples per occluder category, identities by number of samples, samples per shard."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    cats = stats["categories"]
    axes[0].barh(list(cats), list(cats.values()), color="tab:orange")
    axes[0].set(xlabel="occluded samples", title="Per occluder category")
    hist = stats["identities"]["histogram"]
    axes[1].loglog(hist["value"], hist["count"], "o", markersize=4)
    axes[1].set(xlabel="samples per identity", ylabel="identities", title="Per identity")
    axes[1].grid(alpha=0.3)
    shards = stats["shards"]
    axes[2].bar(range(len(shards)), list(shards.values()), color="tab:green")
    axes[2].set(xlabel="shard index", ylabel="samples", title=f"Per shard ({len(shards)})")
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def labels_plot(name: str, label_stats: dict[str, Any], path: Path, title: str) -> Path:
    """Samples per pattern index (0 = clean) for one labels file."""
    fig, ax = plt.subplots(figsize=(10, 3.5))
    hist = label_stats["histogram"]
    ax.bar(hist["value"], hist["count"], width=1.0, color="tab:red")
    ax.set(
        xlabel="pattern index (0 = clean)",
        ylabel="samples",
        yscale="log",
        title=f"{title}: labels {name}, {label_stats['patterns_used']} patterns used",
    )
    fig.tight_layout()
    return _save(fig, path)


def write_plots(samples: Tally, stats: dict[str, Any], out: Path, title: str) -> list[Path]:
    """Every plot of a manifest into ``out``: area.png, counts.png, labels-<name>.png per labels file."""
    paths = [area_plot(samples, stats, out / "area.png", title), counts_plot(stats, out / "counts.png", title)]
    for name, lab in stats["labels"].items():
        paths.append(labels_plot(name, lab, out / f"labels-{name}.png", title))
    return paths
