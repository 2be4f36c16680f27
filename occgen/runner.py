"""Run independent tasks in worker processes (loky, a Dask cluster or a Ray cluster) with a progress bar and a
closing summary.

Shared by every stage that fans out (align, build): the stage gives a pure-ish task function and a list of
tasks; results come back in task order, so what a stage writes does not depend on the worker count or backend.
Every backend goes through joblib's ``Parallel``; a backend only differs in how its workers are started and
stopped. Workers are always stopped when a run ends, also on Ctrl-C or an error: nothing is left running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import click
from joblib import Parallel, delayed, parallel_config

from occgen.errors import UserError

BACKENDS = ("loky", "dask", "ray")
#: The optional packages each backend needs, and the extra that installs them.
_NEEDS = {"dask": ("distributed", "dask"), "ray": ("ray", "ray")}


def default_jobs() -> int:
    """All cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Backend:
    """Where tasks run. ``loky``: processes on this machine. ``dask``: a dask.distributed cluster, the one at
    ``address`` (its scheduler) or a local cluster of processes started for the run. ``ray``: a Ray cluster at
    ``address``, or a local one started for the run."""

    name: str = "loky"
    address: str | None = None

    def __post_init__(self) -> None:
        if self.name not in BACKENDS:
            raise UserError(f"--backend {self.name}: choose one of {', '.join(BACKENDS)}")
        if self.address and self.name == "loky":
            raise UserError("--scheduler/--address need --backend dask or ray; loky runs on this machine only")

    def check(self) -> None:
        """Fail with the install command when the backend's packages are missing (before any work starts)."""
        if self.name not in _NEEDS:
            return
        module, extra = _NEEDS[self.name]
        try:
            __import__(module)
        except ImportError:
            raise UserError(
                f"--backend {self.name} needs the {module} package: pip install 'occgen-fromnet[{extra}]'"
            ) from None


@contextlib.contextmanager
def _workers(backend: Backend, jobs: int) -> Iterator[None]:
    """Start the backend's workers (or join its cluster) for the duration of a run, and stop them after."""
    backend.check()
    if backend.name == "loky":
        try:
            with parallel_config(backend="loky", initializer=_ignore_sigint):
                yield
        finally:
            _stop_loky()
    elif backend.name == "dask":
        from dask.distributed import Client, LocalCluster

        with contextlib.ExitStack() as stack:
            if backend.address:
                try:
                    stack.enter_context(Client(backend.address))  # waits distributed.comm.timeouts.connect
                except OSError as exc:
                    raise UserError(f"--scheduler {backend.address}: cannot reach the Dask scheduler ({exc})") from None
            else:
                with _sigint_ignored():  # inherited by the worker processes: Ctrl-C reaches this process only,
                    cluster = LocalCluster(  # which then closes the cluster
                        n_workers=jobs,
                        threads_per_worker=1,
                        processes=True,
                        dashboard_address=":0",  # a free port
                        silence_logs=logging.ERROR,
                    )
                stack.enter_context(cluster)
                stack.enter_context(Client(cluster))
            with parallel_config(backend="dask", wait_for_workers_timeout=60):
                yield
    else:
        import ray
        from ray.util.joblib import register_ray

        register_ray()
        quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
        if backend.address:
            try:
                ray.init(address=backend.address, **quiet)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise UserError(f"--address {backend.address}: cannot join the Ray cluster ({exc})") from None
        else:
            ray.init(num_cpus=jobs, include_dashboard=False, **quiet)
        try:
            with parallel_config(backend="ray"):
                yield
        finally:
            ray.shutdown()


def _ignore_sigint() -> None:
    """Loky worker initializer: Ctrl-C goes to the whole foreground process group, and only the main process
    should react (it stops the workers and says how to resume) instead of each worker printing a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT while child processes start. Python keeps an inherited "ignore" (it only turns SIGINT into
    KeyboardInterrupt when the parent left it alone), so their Ctrl-C tracebacks do not bury the run's message."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Treat SIGTERM (what batch schedulers and ``kill`` send) like Ctrl-C: a KeyboardInterrupt, so the run stops
    its workers and cleans up instead of dying on the spot."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_loky() -> None:
    """Shut down joblib's reusable loky executor, which would otherwise keep its worker processes alive (idle)
    for minutes after the run; there is no public call for it."""
    from joblib.externals.loky import reusable_executor

    executor = getattr(reusable_executor, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)
        reusable_executor._executor = None


def parallel_map(
    fn: Callable[..., Any],
    tasks: Sequence[Any],
    jobs: int,
    label: str,
    weights: Sequence[int] | None = None,
    quiet: bool = False,
    backend: Backend = Backend(),
) -> Generator[Any, None, None]:
    """Yield ``fn(task)`` for each task, in task order, from ``jobs`` workers of ``backend`` (loky with 1 job:
    this process). The workers are stopped when the generator finishes or is closed.

    ``weights`` (e.g. images per task) drive the progress bar so it moves in images, not tasks.
    """
    weights = list(weights) if weights is not None else [1] * len(tasks)
    jobs = max(1, min(jobs, len(tasks))) if tasks else 1
    show = not quiet and sys.stderr.isatty()
    with contextlib.ExitStack() as stack:
        if not tasks:
            results: Iterator[Any] = iter(())
        elif jobs == 1 and backend.name == "loky":
            results = (fn(t) for t in tasks)
        else:
            stack.enter_context(_workers(backend, jobs))
            stream = backend.name != "ray"  # Ray's joblib backend cannot stream results: they come all at the end
            results = iter(
                Parallel(
                    n_jobs=jobs, return_as="generator" if stream else "list", batch_size=1, pre_dispatch="2*n_jobs"
                )(delayed(fn)(t) for t in tasks)
            )
        bar: _Progress = _NoBar()
        if show:
            bar = stack.enter_context(
                click.progressbar(length=sum(weights), label=label, file=sys.stderr, show_pos=True)
            )
        for w, result in zip(weights, results):
            bar.update(w)
            yield result


class _Progress(Protocol):
    def update(self, n: int) -> None: ...


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        return None


@dataclass(frozen=True)
class ErrorLimit:
    """``--max-errors``: how many inputs may fail before a run counts as failed, as a count or a share."""

    count: int | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, text: str) -> ErrorLimit:
        """'10' -> at most 10 failed inputs; '2.5%' -> at most 2.5% of the inputs."""
        try:
            limit = cls(percent=float(text[:-1])) if text.endswith("%") else cls(count=int(text))
        except ValueError:
            limit = cls(count=-1)
        if (limit.count is not None and limit.count < 0) or (
            limit.percent is not None and not 0 <= limit.percent <= 100
        ):
            raise UserError(f"--max-errors {text}: give a count (10) or a percentage of the inputs (1%)")
        return limit

    def exceeded(self, errors: int, inputs: int) -> bool:
        if self.percent is not None:
            return errors * 100 > self.percent * inputs
        return errors > (self.count or 0)

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else str(self.count)


@dataclass
class Summary:
    """Counts for the closing line of a run."""

    label: str
    done: int = 0
    skipped: int = 0
    errors: int = 0
    warnings: int = 0
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
        if self.warnings:
            parts.append(f"{self.warnings} warning{'s' if self.warnings != 1 else ''}")
        parts.append(f"{secs:.1f} s, {rate:,.0f} {unit}/s")
        return ", ".join(parts)
