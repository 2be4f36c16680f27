"""Evaluation reports: one table (terminal + Markdown), one JSON file, and the plots.

Plots (matplotlib, Agg backend, so no display is needed): ROC curves of every set, the paper-style bar chart of
accuracy per occluded region (Fig. 1 / Table 6 regions, drawn when sets are named after them), and accuracy
against occluded area (pairs binned by the larger occluded box area of their two images).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fromnet.eval.identification import IdentificationResult
from fromnet.eval.verification import VerificationResult
from occgen.writer import atomic_write, json_bytes

#: Area bins with fewer pairs are too noisy to draw.
MIN_BIN_PAIRS = 20
#: The nine named regions of the paper's Fig. 1 / Table 6, in its order.
REGIONS = ("left_eye", "right_eye", "eyes", "nose", "mouth", "lower_face", "upper_face", "left_face", "right_face")


LEGEND = (
    "accuracy: mean over the folds, each fold decided at the threshold that maximises accuracy on the others "
    "(all-pairs sets: the share of their balanced pairs decided right, folds of disjoint people); fold std: "
    "population std over the folds; TAR@FAR over all impostor pairs (a FAR below 1/impostors is n/a); "
    "[low, high]: 95 % bootstrap interval that resamples people (see the intervals line above; none where a "
    "resample cannot be scored: too few impostors for the FAR, or a fold drawn without any other); occluded area: "
    "mean box area of the pair's more occluded face."
)


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def with_interval(value: float | None, low: float | None, high: float | None) -> str:
    """'81.23 [79.80, 82.61]' in percent, or the value alone when no interval was drawn."""
    if low is None or high is None:
        return _pct(value)
    return f"{_pct(value)} [{_pct(low)}, {_pct(high)}]"


def bootstrap_line(results) -> str | None:
    """How the intervals of these results were drawn, in words (None: no intervals)."""
    spec = next((r.bootstrap for r in results if r.bootstrap), None)
    if spec is None:
        return None
    return (
        f"{100 * spec['level']:g} % percentile bootstrap over people: {spec['resamples']:,} resamples of the "
        f"people of each set with replacement (seed {spec['seed']}), a pair weighted by how often its people "
        "were drawn"
    )


def verification_table(results: Sequence[VerificationResult]) -> str:
    """Markdown table: one row per set and protocol group."""
    fars = [t.far for t in results[0].tar] if results else []
    head = [
        "set",
        "pairs",
        "impostors",
        "folds",
        "accuracy %",
        "fold std",
        *(f"TAR@FAR={f:g} %" for f in fars),
        "AUC",
        "occluded area %",
    ]
    rows = []
    for r in results:
        tars = [with_interval(t.tar, t.low, t.high) if t.tar is not None else "n/a" for t in r.tar]
        rows.append(
            [
                r.name,
                f"{r.pairs:,}",
                f"{r.impostors:,}",
                str(r.folds),
                with_interval(r.accuracy, r.accuracy_low, r.accuracy_high),
                _pct(r.accuracy_std),
                *tars,
                f"{r.auc:.4f}",
                _pct(r.mean_area),
            ]
        )
    notes = sorted({t.refused for r in results for t in r.tar if t.refused})
    return markdown(head, rows) + ("\n\n" + "\n".join(f"- n/a: {n}" for n in notes) if notes else "")


#: Rows of the PartialLFW table (Hörmann et al., ICIP 2021): (protocol, centered), holistic first.
PARTIAL_ROWS = [("holistic", None)] + [
    (p, c) for c in (False, True) for p in ("partial-holistic", "partial-same", "partial-cross")
]


def partiallfw_summary(results: Sequence[VerificationResult]) -> list[dict[str, Any]]:
    """Per model and PartialLFW protocol, the mean accuracy over its part combinations and the nine factors."""
    rows = []
    for label in dict.fromkeys(r.label for r in results):
        for protocol, centered in PARTIAL_ROWS:
            groups = [
                r
                for r in results
                if r.label == label
                and r.group.get("protocol") == protocol
                and (centered is None or bool(r.group.get("centered")) == centered)
            ]
            if not groups:
                continue
            if centered is None:  # holistic pairs are the same in the centered and non-centered builds
                groups = groups[:1]
            rows.append(
                {
                    "set": label,
                    "protocol": protocol,
                    "centered": centered,
                    "groups": len(groups),
                    "accuracy": float(sum(r.accuracy for r in groups) / len(groups)),
                }
            )
    return rows


def partiallfw_table(summary: Sequence[dict[str, Any]]) -> str:
    """The paper's table: holistic, then non-centered and centered partial-holistic / -same / -cross."""
    head = ["set", "protocol", "crops", "groups", "mean accuracy %"]
    rows = [
        [
            r["set"],
            r["protocol"],
            {None: "-", False: "non-centered", True: "centered"}[r["centered"]],
            str(r["groups"]),
            _pct(r["accuracy"]),
        ]
        for r in summary
    ]
    return markdown(head, rows)


def identification_table(results: Sequence[IdentificationResult]) -> str:
    head = ["probes", "evaluated", "no mate", "gallery", "distractors", "rank-1 %", "rank-5 %", "occluded area %"]
    rows = [
        [
            r.label,
            f"{r.probes:,}",
            f"{r.no_mate:,}",
            f"{r.gallery:,}",
            f"{r.distractors:,}",
            with_interval(r.rank1, r.rank1_low, r.rank1_high),
            _pct(r.rank5),
            _pct(r.mean_area),
        ]
        for r in results
    ]
    return markdown(head, rows)


def markdown(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def region_of(label: str) -> str | None:
    """The region a set is named after ('occ-lfw-left_eye', 'left-eye' -> 'left_eye'), or None."""
    norm = re.sub(r"[\s-]+", "_", label.lower())
    return next((r for r in sorted(REGIONS, key=len, reverse=True) if norm == r or norm.endswith("_" + r)), None)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(results: Sequence[VerificationResult], path: Path) -> None:
    """TAR against FAR (log scale from 1/impostors), one curve per set and group."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    low = 1.0
    for r in results:
        if r.roc is None:
            continue
        fpr, tpr = r.roc
        keep = fpr > 0
        ax.step(fpr[keep], tpr[keep], where="post", label=f"{r.name} (acc {_pct(r.accuracy)}%)")
        low = min(low, 1.0 / max(r.impostors, 1))
    ax.set_xscale("log")
    ax.set_xlim(low, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false accept rate (FAR)")
    ax.set_ylabel("true accept rate (TAR)")
    ax.set_title("Verification ROC")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    save(fig, path)


def plot_identification(results: Sequence[IdentificationResult], path: Path) -> None:
    """Rank-1 and rank-5 of each probe set, side by side."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(results) + 2), 4), dpi=120)
    x = list(range(len(results)))
    for shift, rank, name in ((-0.2, "rank1", "rank-1"), (0.2, "rank5", "rank-5")):
        values = [100 * getattr(r, rank) for r in results]
        bars = ax.bar([i + shift for i in x], values, width=0.4, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(x, [f"{r.label}\n({r.probes} probes)" for r in results], fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("identification rate (%)")
    ax.set_title("Identification")
    ax.legend(fontsize=7, loc="lower right")
    save(fig, path)


def plot_regions(results: Sequence[VerificationResult], path: Path) -> bool:
    """Bar chart of accuracy per occluded region (sets named after the nine regions), one bar per protocol group
    (e.g. N-O and O-O) side by side, clean sets as a dashed line; False if no set is named after a region."""
    series: dict[str, dict[str, VerificationResult]] = {}
    for r in results:
        region = region_of(r.label)
        if region:
            group = " ".join(str(v) for v in r.group.values()) or "accuracy"
            series.setdefault(group, {}).setdefault(region, r)
    if not series:
        return False
    plt = pyplot()
    names = [n for n in REGIONS if any(n in s for s in series.values())]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    width = 0.8 / len(series)
    low = 100.0
    for i, (group, by_region) in enumerate(series.items()):
        xs = [k + (i - (len(series) - 1) / 2) * width for k, n in enumerate(names) if n in by_region]
        shown = [by_region[n] for n in names if n in by_region]
        acc = [100 * r.accuracy for r in shown]
        bars = ax.bar(xs, acc, width=width, yerr=_error_bars(shown), capsize=3, label=group)
        ax.bar_label(bars, labels=[f"{a:.1f}" for a in acc], fontsize=7, padding=2)
        low = min(low, *acc)
    for r in results:
        if r.mean_area == 0 and not region_of(r.label):
            ax.axhline(100 * r.accuracy, linestyle="--", linewidth=1, color="grey", label=f"{r.name} (no occlusion)")
            low = min(low, 100 * r.accuracy)
    ax.set_xticks(range(len(names)), [n.replace("_", " ") for n in names], rotation=30, ha="right")
    ax.set_ylabel("verification accuracy % (k-fold; bars: 95 % interval, else fold std)")
    ax.set_ylim(max(0, low - 10), 100)
    ax.set_title("Accuracy per occluded region")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    save(fig, path)
    return True


def _error_bars(results: Sequence[VerificationResult]) -> list[list[float]]:
    """(2, n) error bars in points: the bootstrap interval where drawn, else ± the fold std."""
    below, above = [], []
    for r in results:
        low, high = r.accuracy_low, r.accuracy_high
        below.append(100 * (r.accuracy - low if low is not None else r.accuracy_std))
        above.append(100 * (high - r.accuracy if high is not None else r.accuracy_std))
    return [below, above]


def plot_area(results: Sequence[VerificationResult], path: Path, min_pairs: int = MIN_BIN_PAIRS) -> bool:
    """Accuracy against occluded area, one curve per set with area information (bins of fewer than ``min_pairs``
    pairs left out of the plot, not of the JSON); clean sets are a dashed reference line. False if nothing to draw."""
    curves = [r for r in results if r.area_curve and any(b["lo"] > 0 for b in r.area_curve)]
    if not curves:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    for r in results:
        if r.mean_area == 0:
            ax.axhline(100 * r.accuracy, linestyle="--", linewidth=1, color="grey", label=f"{r.name} (no occlusion)")
    for r in curves:
        bins = [b for b in r.area_curve if b["pairs"] >= min_pairs]
        mid = [100 * (b["lo"] + b["hi"]) / 2 for b in bins]
        acc = [100 * b["accuracy"] for b in bins]
        ax.plot(mid, acc, marker="o", label=r.name)
        for x, y, b in zip(mid, acc, bins) if len(curves) <= 3 else ():  # more curves: numbers would pile up
            ax.annotate(str(b["pairs"]), (x, y), textcoords="offset points", xytext=(0, 5), fontsize=6, ha="center")
    ax.set_xlim(0, 100)
    ax.set_xlabel("occluded area of the pair's more occluded face (box, % of the face)")
    ax.set_ylabel("verification accuracy % (pairs in the bin)")
    counts = "numbers: pairs per bin, " if len(curves) <= 3 else ""
    ax.set_title(f"Accuracy against occluded area ({counts}bins < {min_pairs} pairs not drawn)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    save(fig, path)
    return True


def save(fig, path: Path) -> None:
    import io

    buf = io.BytesIO()
    # bbox_inches="tight" fits any number of legend rows (tight_layout gives up on tall legends, with a warning)
    fig.savefig(buf, format="png", metadata={"Software": None}, bbox_inches="tight")
    pyplot().close(fig)
    atomic_write(path, buf.getvalue())


def write_report(
    out: Path,
    verification: Sequence[VerificationResult],
    identification: Sequence[IdentificationResult],
    info: dict[str, Any],
    partial: Sequence[dict[str, Any]] = (),
) -> str:
    """Write results.json, results.md and the plots into ``out``; return the Markdown text (also printed).
    ``partial`` (from partiallfw_summary) adds the PartialLFW table."""
    out = Path(out)
    parts = [f"# Evaluation\n\n{_info_lines(info)}"]
    if partial:
        parts.append(
            "## PartialLFW\n\n" + partiallfw_table(partial) + "\n\nEach row: the mean of the 10-fold "
            "accuracies of its part combinations and the nine crop factors."
        )
    plots = []
    if verification:
        parts.append("## Verification\n\n" + verification_table(verification) + "\n\n" + LEGEND)
        plot_roc(verification, out / "roc.png")
        plots.append("roc.png")
        if plot_regions(verification, out / "regions.png"):
            plots.append("regions.png")
        if plot_area(verification, out / "area.png"):
            plots.append("area.png")
    if identification:
        parts.append("## Identification\n\n" + identification_table(identification))
        plot_identification(identification, out / "identification.png")
        plots.append("identification.png")
    line = bootstrap_line([*verification, *identification])
    if line:
        parts.insert(1, f"Intervals: {line}.")
    if plots:
        parts.append("\n".join(f"![{p}]({p})" for p in plots))
    text = "\n\n".join(parts) + "\n"
    atomic_write(out / "results.md", text.encode())
    atomic_write(
        out / "results.json",
        json_bytes(
            {
                **info,
                "partiallfw": list(partial),
                "verification": [r.to_json() for r in verification],
                "identification": [r.to_json() for r in identification],
                "plots": plots,
            }
        ),
    )
    return text


def _info_lines(info: dict[str, Any]) -> str:
    return "\n".join(f"- {k}: {v}" for k, v in info.items())
