"""A run's checkpoints as the training program uses them: saved collectively (the sharded classifier gathered, the
replicas checked to agree), resumed from the newest one that verifies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fromnet import checkpoint
from fromnet.train import distributed
from fromnet.train.distributed import World
from fromnet.train.runfolder import resume_command
from fromnet.train.state import TrainState
from occgen.errors import UserError


def save(state: TrainState, contents: dict[str, Any], run: Path, keep: int, world: World) -> Path | None:
    """Write the checkpoint of `state.step` (rank 0 writes; every rank calls this). On a full disk the error names
    the last good checkpoint, which is left intact."""
    sums = state.replica_checksums(world)
    if len(set(sums)) != 1:
        raise UserError(
            f"the model replicas differ between ranks (weight checksums {sums}); this is a bug in "
            "the distributed setup, please report it with the run's config.toml"
        )
    contents["replica_checksums"] = sums
    path = None
    if world.main:
        try:
            path = checkpoint.save(run, state.step, contents, keep)
        except checkpoint.DiskFull as exc:
            good = checkpoint.checkpoints(run)
            kept = f"the last good checkpoint {good[-1]} is intact" if good else "no checkpoint was written yet"
            raise UserError(f"{exc}; {kept}: free some space, then resume: {resume_command(run, world)}") from None
    distributed.barrier(world)
    return path


def load_for_resume(run: Path, world: World) -> tuple[dict[str, Any], list[str]]:
    """The state to resume from and a note per newer checkpoint skipped as damaged (truncated, corrupted); those
    are renamed to ``*.damaged`` so that the run keeps --keep good ones."""
    if not checkpoint.checkpoints(run):
        raise UserError(
            f"--resume: {run} has no checkpoint yet (the run stopped before its first); "
            "start it again with --overwrite instead of --resume"
        )
    state, skipped = checkpoint.load_newest_good(run)
    distributed.barrier(world)  # every rank has read its checkpoint before rank 0 renames the damaged ones
    notes = []
    for path, problem in skipped:
        aside = checkpoint.set_aside(path) if world.main else path.with_name(path.name + ".damaged")
        notes.append(f"skipped {path}: {problem} (kept as {aside.name})")
    if skipped:
        notes.append(f"resuming from {state['path']} (step {state['step']})")
    return state, notes
