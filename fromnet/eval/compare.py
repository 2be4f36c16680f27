"""Paired comparison of models scored on exactly the same pairs and probes.

Each model may come as several training seeds. Per set and metric, a model's figure is the mean over its seeds,
with the spread over seeds (sample std, min, max) beside a bootstrap interval; the interval of the mean takes,
in every resample, the mean over seeds of that resample's value. Differences against a reference model are
paired: both models' values come from the very same resamples of people (same set, same people, same seed), so
the interval of a difference is the percentile interval of the per-resample differences. It covers the sampling
of people, not the training seed, whose spread is reported on its own.

A difference is "better" when its whole interval is above 0, "worse" when below, and "within noise" when it
holds 0 (every metric here is higher-is-better).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fromnet.eval import bootstrap as bs
from fromnet.eval.identification import IdentificationResult
from fromnet.eval.verification import VerificationResult, tar_key
from occgen.errors import UserError


@dataclass
class Figure:
    """One model's value of one metric on one set: mean over seeds, interval, spread over seeds."""

    set: str
    metric: str  # accuracy, TAR@FAR=0.001, rank-1
    model: str
    value: float | None
    low: float | None
    high: float | None
    seeds: list[float | None]  # the value of each seed's model
    std: float | None  # sample std over seeds (None for one seed)
    people: int | None
    samples: np.ndarray | None = field(default=None, repr=False)  # per resample, mean over seeds; not in JSON

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("samples")
        finite = [v for v in self.seeds if v is not None]
        d["min"], d["max"] = (min(finite), max(finite)) if finite else (None, None)
        return d


@dataclass
class Difference:
    set: str
    metric: str
    model: str
    reference: str
    value: float | None
    low: float | None
    high: float | None
    verdict: str  # better, worse, within noise, n/a

    def line(self) -> str:
        """'FROM - Baseline-Aug: +1.80 [+0.90, +2.70]: better' (percentage points)."""
        if self.value is None:
            return f"{self.model} - {self.reference}: n/a"
        return f"{self.model} - {self.reference}: {_signed(self.value, self.low, self.high)}: {self.verdict}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def values_of(result: VerificationResult | IdentificationResult) -> dict[tuple[str, str], tuple[float | None, Any]]:
    """(set, metric) -> (value, per-resample values or None) of one evaluation result."""
    if isinstance(result, IdentificationResult):
        return {(result.label, "rank-1"): (result.rank1, result.samples.get("rank-1"))}
    out: dict[tuple[str, str], tuple[float | None, Any]] = {
        (result.name, "accuracy"): (result.accuracy, result.samples.get("accuracy"))
    }
    for t in result.tar:
        out[(result.name, tar_key(t.far))] = (t.tar, result.samples.get(tar_key(t.far)))
    return out


def _people(result) -> int | None:
    return result.bootstrap["people"] if result.bootstrap else None


def figures(models: dict[str, Sequence[Sequence[Any]]], level: float = bs.LEVEL) -> list[Figure]:
    """``models`` maps a model name to its seeds' result lists (each seed scored on the same sets, same order)."""
    out = []
    for name, seeds in models.items():
        per_seed = [
            {key: (value, samples, _people(r)) for r in results for key, (value, samples) in values_of(r).items()}
            for results in seeds
        ]
        for key in per_seed[0]:
            if any(key not in d for d in per_seed):
                raise UserError(f"{name}: its seeds were not scored on the same sets ({key[0]} is missing in one)")
            vals = [d[key][0] for d in per_seed]
            samples = [d[key][1] for d in per_seed]
            finite = [v for v in vals if v is not None and np.isfinite(v)]
            mean = float(np.mean(finite)) if len(finite) == len(vals) else None
            boot = np.mean(samples, axis=0) if all(s is not None for s in samples) else None
            ci = bs.interval(boot, level) if boot is not None else None
            out.append(
                Figure(
                    set=key[0],
                    metric=key[1],
                    model=name,
                    value=mean,
                    low=ci[0] if ci else None,
                    high=ci[1] if ci else None,
                    seeds=[None if v is None else float(v) for v in vals],
                    std=float(np.std(finite, ddof=1)) if len(finite) > 1 else None,
                    people=per_seed[0][key][2],
                    samples=boot,
                )
            )
    return out


def verdict(low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return "n/a"
    return "better" if low > 0 else "worse" if high < 0 else "within noise"


def differences(figs: Sequence[Figure], reference: str, level: float = bs.LEVEL) -> list[Difference]:
    """Every other model minus ``reference``, per set and metric, with the paired-bootstrap interval."""
    ref = {(f.set, f.metric): f for f in figs if f.model == reference}
    out = []
    for f in figs:
        if f.model == reference:
            continue
        r = ref.get((f.set, f.metric))
        if r is None:
            raise UserError(f"{reference} was not scored on {f.set} ({f.metric}); compare models on the same sets")
        if r.people != f.people:
            raise UserError(
                f"{f.model} and {reference} were scored on different people in {f.set}: not a paired comparison"
            )
        value = None if f.value is None or r.value is None else f.value - r.value
        ci = bs.interval(f.samples - r.samples, level) if f.samples is not None and r.samples is not None else None
        lo, hi = ci if ci and value is not None else (None, None)
        out.append(Difference(f.set, f.metric, f.model, reference, value, lo, hi, verdict(lo, hi)))
    return out


def _pct(x: float | None, sign: str = "") -> str:
    return "-" if x is None else f"{100 * x:{sign}.2f}"


def _signed(value: float | None, low: float | None, high: float | None) -> str:
    """'+1.80 [+0.90, +2.70]' in points; the value alone when there is no interval."""
    ci = f" [{_pct(low, '+')}, {_pct(high, '+')}]" if low is not None and high is not None else ""
    return _pct(value, "+") + ci


def _bar(value: float, low: float | None, high: float | None) -> tuple[float, float]:
    """Error bar lengths below and above a value, in points (none without an interval)."""
    if low is None or high is None:
        return 0.0, 0.0
    return 100 * (value - low), 100 * (high - value)


def figures_table(figs: Sequence[Figure]) -> str:
    from fromnet.eval.report import markdown, with_interval

    rows = []
    for f in figs:
        finite = [v for v in f.seeds if v is not None]
        spread = (
            f"{len(f.seeds)}: sd {_pct(f.std)}, {_pct(min(finite))}-{_pct(max(finite))}"
            if len(f.seeds) > 1 and finite
            else "1"
        )
        rows.append([f.set, f.metric, f.model, with_interval(f.value, f.low, f.high), spread])
    return markdown(["set", "metric", "model", "value % [95 % interval]", "seeds: sd, min-max %"], rows)


def differences_table(diffs: Sequence[Difference]) -> str:
    from fromnet.eval.report import markdown

    rows = [
        [
            d.set,
            d.metric,
            f"{d.model} - {d.reference}",
            _signed(d.value, d.low, d.high),
            d.verdict,
        ]
        for d in diffs
    ]
    return markdown(["set", "metric", "models", "difference (points) [95 % interval]", "verdict"], rows)


def plot_differences(diffs: Sequence[Difference], path: Path) -> bool:
    """One panel per metric: each set's difference against the reference, with its interval as error bars, one
    series per model; False when there is nothing to draw."""
    from fromnet.eval.report import pyplot, save

    drawn = [d for d in diffs if d.value is not None]
    if not drawn:
        return False
    plt = pyplot()
    metrics = list(dict.fromkeys(d.metric for d in drawn))
    sets = list(dict.fromkeys(d.set for d in drawn))
    models = list(dict.fromkeys(d.model for d in drawn))
    fig, axes = plt.subplots(
        len(metrics), 1, figsize=(max(6, 0.6 * len(sets) + 3), 3 * len(metrics)), dpi=120, squeeze=False, sharex=True
    )
    for ax, metric in zip(axes[:, 0], metrics):
        for m, model in enumerate(models):
            rows = [d for d in drawn if d.metric == metric and d.model == model]
            xs = [sets.index(d.set) + (m - (len(models) - 1) / 2) * 0.8 / len(models) for d in rows]
            ys = [100 * (d.value or 0.0) for d in rows]
            err = np.array([_bar(d.value or 0.0, d.low, d.high) for d in rows]).T.reshape(2, -1)
            ax.errorbar(xs, ys, yerr=err, fmt="o", capsize=3, label=f"{model} - {rows[0].reference}" if rows else model)
        ax.axhline(0, color="grey", linewidth=1)
        ax.set_ylabel(f"{metric}\ndifference (points)", fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    axes[-1, 0].set_xticks(range(len(sets)), sets, rotation=30, ha="right", fontsize=7)  # shared: under the last
    axes[0, 0].set_title("Paired differences against the reference (bars: 95 % interval over people)", fontsize=9)
    save(fig, path)
    return True
