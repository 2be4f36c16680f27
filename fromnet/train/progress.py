"""What a training run shows and records: a one-line progress bar, metrics.jsonl, TensorBoard when installed."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO


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
