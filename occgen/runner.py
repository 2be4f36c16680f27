"""Run independent tasks in joblib worker processes with a progress bar and a closing summary.

Shared by every stage that fans out (align, build): the stage gives a pure-ish task function and a list of
tasks; results come back in task order, so what a stage writes does not depend on the worker count.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import click
from joblib import Parallel, delayed


def default_jobs() -> int:
    """All cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def parallel_map(
    fn: Callable[..., Any],
    tasks: Sequence[Any],
    jobs: int,
    label: str,
    weights: Sequence[int] | None = None,
    quiet: bool = False,
) -> Iterator[Any]:
    """Yield ``fn(task)`` for each task, in task order, from ``jobs`` processes (1 = this process).

    ``weights`` (e.g. images per task) drive the progress bar so it moves in images, not tasks.
    """
    weights = list(weights) if weights is not None else [1] * len(tasks)
    jobs = max(1, min(jobs, len(tasks))) if tasks else 1
    if jobs == 1:
        results: Iterator[Any] = (fn(t) for t in tasks)
    else:
        results = Parallel(n_jobs=jobs, return_as="generator", batch_size=1, pre_dispatch="2*n_jobs")(
            delayed(fn)(t) for t in tasks
        )
    show = not quiet and sys.stderr.isatty()
    with click.progressbar(length=sum(weights), label=label, file=sys.stderr, show_pos=True) if show else _NoBar() as bar:
        for w, result in zip(weights, results):
            bar.update(w)
            yield result


class _NoBar:
    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        return None


@dataclass
class Summary:
    """Counts for the closing line of a run."""

    label: str
    done: int = 0
    skipped: int = 0
    errors: int = 0
    started: float = field(default_factory=time.perf_counter)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def line(self, unit: str = "images") -> str:
        secs = self.seconds
        rate = self.done / secs if secs > 0 else 0.0
        parts = [f"{self.label}: {self.done} {unit} written"]
        if self.skipped:
            parts.append(f"{self.skipped} already done (skipped)")
        parts.append(f"{self.errors} error{'s' if self.errors != 1 else ''}")
        parts.append(f"{secs:.1f} s, {rate:,.0f} {unit}/s")
        return ", ".join(parts)
