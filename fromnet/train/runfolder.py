"""The run folder: one run at a time (a lock the OS releases when its holder dies), no silent mixing of two runs'
files, and no leftovers of a killed one."""

from __future__ import annotations

import json
import os
import shlex
import shutil
from contextlib import AbstractContextManager
from pathlib import Path

from fromnet.train.distributed import World
from occgen.writer import atomic_write, exclusive, remove_temporaries

LOCK = ".lock"
#: What a run writes into its folder; --overwrite removes these (and nothing else the user put there).
RUN_FILES = ("config.toml", "metrics.jsonl", "checkpoints", "keys", "tensorboard", "cache")
#: Their presence means the folder holds a run.
RUN_MARKS = ("config.toml", "metrics.jsonl", "checkpoints")


def locked(run: Path) -> AbstractContextManager[None]:
    """Hold the run folder for this process's life (rank 0 holds it for the whole world)."""
    return exclusive(
        run / LOCK, f"another fromnet train is writing to {run}; wait for it to end or choose another --out"
    )


def holds_run(run: Path) -> list[str]:
    """The run files already in `run` (empty for a new or empty folder; an empty checkpoints/ does not count)."""
    return [name for name in RUN_MARKS if (run / name).is_file() or any((run / name).glob("step-*.pt"))]


def clear(run: Path) -> None:
    for name in RUN_FILES:
        path = run / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def remove_leftovers(run: Path) -> int:
    """Delete the temporary files of a run that was killed while writing (only safe under the lock)."""
    return sum(remove_temporaries(folder, ".*.tmp-*") for folder in (run, run / "checkpoints", run / "cache"))


def resume_command(run: Path, world: World) -> str:
    """The command that continues this run, as it must be typed."""
    per_node = os.environ.get("LOCAL_WORLD_SIZE", str(world.size))
    launcher = f"torchrun --nproc-per-node {per_node} -m fromnet" if world.distributed else "fromnet"
    return f"{launcher} train --out {shlex.quote(str(run))} --resume"


def rewind(run: Path, step: int) -> int:
    """Drop what a killed run logged after its checkpoint at `step` (metrics, sample keys), so that the resumed run
    logs those steps once. Returns how many lines were dropped."""
    dropped = 0
    logs = [(run / "metrics.jsonl", lambda line: json.loads(line).get("step", 0) <= step)]
    logs += [(p, lambda line: int(line.split()[0]) < step) for p in sorted((run / "keys").glob("rank-*.txt"))]
    for path, keep in logs:
        if not path.is_file():
            continue
        lines = path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if line.strip() and keep(line)]
        if len(kept) != len(lines):
            dropped += len(lines) - len(kept)
            atomic_write(path, "".join(kept).encode())
    return dropped
