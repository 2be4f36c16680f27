"""Stopping a run cleanly: the first Ctrl-C or SIGTERM (how clusters preempt a job) asks the loop to finish its
step, save a checkpoint and exit; a second one stops at once."""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """While entered, SIGINT and SIGTERM set `signum` instead of killing the process; a second signal raises
    KeyboardInterrupt (with `signum` set to it). Loader workers forked meanwhile inherit the handler and ignore the
    signal with it, so a Ctrl-C sent to the whole terminal group does not kill them under the step that is
    finishing; they exit when the run closes its loader (or, if it is killed, when they see their parent gone)."""

    def __init__(self) -> None:
        self.signum = 0
        self._pid = os.getpid()
        self._previous: dict[int, Any] = {}  # what signal.signal returned: a handler, SIG_DFL or SIG_IGN

    @property
    def requested(self) -> bool:
        return self.signum != 0

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal (130 for Ctrl-C, 143 for SIGTERM)."""
        return 128 + self.signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:  # a loader worker: the run decides when it ends
            return
        if self.signum:
            self.signum = signum
            raise KeyboardInterrupt
        self.signum = signum
        sys.stderr.write(
            f"\n{signal.Signals(signum).name}: stopping after this step and saving a checkpoint "
            "(Ctrl-C again to stop at once, losing the steps since the last checkpoint)\n"
        )
        sys.stderr.flush()

    def __enter__(self) -> StopRequest:
        for s in SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)
