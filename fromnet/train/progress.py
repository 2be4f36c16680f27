"""What a training run shows and records: a one-line progress bar, metrics.jsonl, TensorBoard when installed."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO


@dataclass
class Meter:
    """Images per second and the share of step time spent waiting for data, over the steps it was given."""

    images: int = 0
    wait: float = 0.0
    time: float = 0.0

    def add(self, images: int, wait: float, elapsed: float) -> None:
        self.images += images
        self.wait += wait
        self.time += elapsed

    def rates(self) -> dict[str, float]:
        return {"img_s": self.images / max(self.time, 1e-9), "data_wait": self.wait / max(self.time, 1e-9)}


class KeyLog:
    """``--log-keys``: every trained-on sample key, one ``STEP REPLICA KEY`` line, in ``RUN/keys/rank-R.txt``."""

    def __init__(self, run: Path, rank: int, enabled: bool) -> None:
        self.file = None
        if enabled:
            (run / "keys").mkdir(parents=True, exist_ok=True)
            self.file = open(run / "keys" / f"rank-{rank}.txt", "a")

    def write(self, step: int, micro: list[dict[str, Any]]) -> None:
        if self.file is not None:
            for mb in micro:
                self.file.write("".join(f"{step} {mb['replica']} {k}\n" for k in mb["keys"]))

    def __enter__(self) -> KeyLog:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            self.file.close()


class Progress:
    """Rank 0's view of a run. On a terminal the bar redraws in place; elsewhere (logs, CI) it prints a line per
    logged step. Every logged step also goes to ``metrics.jsonl`` (one JSON object a line) and TensorBoard."""

    def __init__(self, run: Path, start: int, end: int, enabled: bool, stream: TextIO | None = None) -> None:
        stream = stream or sys.stderr
        self.start, self.end, self.enabled, self.stream = start, end, enabled, stream
        self.tty = enabled and stream.isatty()
        self.began = time.perf_counter()
        self.metrics = open(run / "metrics.jsonl", "a") if enabled else None
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                pass
            else:
                self.tb = SummaryWriter(str(run / "tensorboard"))

    def log(self, record: dict[str, Any]) -> None:
        if self.metrics is None:  # not enabled
            return
        self.metrics.write(json.dumps(record, sort_keys=True) + "\n")
        self.metrics.flush()
        if self.tb is not None:
            for name, value in record.items():
                if isinstance(value, (int, float)) and name not in ("step", "epoch"):
                    self.tb.add_scalar(f"train/{name}", value, record["step"])
        self.show(record)

    def show(self, record: dict[str, Any]) -> None:
        done = record["step"] - self.start
        total = max(1, self.end - self.start)
        elapsed = time.perf_counter() - self.began
        eta = elapsed / max(done, 1) * (total - done)
        width = 20
        filled = int(width * done / total)
        line = (
            f"step {record['step']}/{self.end} [{'#' * filled}{'.' * (width - filled)}] ep {record['epoch']} "
            f"loss {record['loss']:.3f} (id {record['loss_id']:.3f}"
            + (
                f", pat {record['loss_pattern']:.3f} acc {record['pattern_acc']:.2f}"
                if record.get("loss_pattern") is not None
                else ""
            )
            + f") lr {record['lr']:.2g} {record['img_s']:.0f} img/s wait {record['data_wait']:.0%} "
            f"eta {_clock(eta)}"
        )
        if self.tty:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def status(self, text: str) -> None:
        """What the run is doing before its first step is logged (start-up can take a while): redrawn in place
        on a terminal."""
        if self.enabled:
            self.stream.write(("\r\033[K" + text) if self.tty else text + "\n")
            self.stream.flush()

    def note(self, text: str) -> None:
        """A message between bar updates (checkpoints, validation)."""
        if self.enabled:
            self.stream.write(("\r\033[K" if self.tty else "") + text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.metrics is None:  # not enabled
            return
        if self.tty:
            self.stream.write("\n")
        self.metrics.close()
        if self.tb is not None:
            self.tb.close()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def plot_losses(run: Path) -> Path | None:
    """``RUN/loss.png``: the logged training loss (and its identity and pattern terms) against the step, with the
    validation accuracies when there are any. None when nothing is logged yet."""
    from fromnet.eval.report import pyplot, save

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in rows if "loss" in r]
    if not train:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    steps = [r["step"] for r in train]
    for key, name in (("loss", "loss"), ("loss_id", "identity"), ("loss_pattern", "pattern")):
        if all(r.get(key) is not None for r in train):
            ax.plot(steps, [r[key] for r in train], label=name, linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    val = [r for r in rows if any(k.startswith("val_") for k in r)]
    if val:
        acc = ax.twinx()
        for key in sorted({k for r in val for k in r if k.startswith("val_")}):
            acc.plot([r["step"] for r in val], [r.get(key) for r in val], "o--", label=key, markersize=3)
        acc.set_ylabel("validation accuracy")
        acc.legend(fontsize=7, loc="center right")
    ax.set_title(f"fromnet train: {run.name}")
    path = run / "loss.png"
    save(fig, path)
    return path
