"""Checkpoints: written atomically, loaded with ``torch.load(weights_only=True)``, readable on any world size.

A run folder holds ``checkpoints/step-NNNNNNNN.pt`` and ``checkpoints/latest`` (a one-line file naming the newest,
replaced atomically after the checkpoint itself is complete, so it never names half a file). A checkpoint is a
dict of tensors, numbers and strings only (no pickled classes): the model's ``state_dict``, the classifier's
full weight and momentum (gathered from every rank), the optimizers, schedule and scaler states, RNG states, the
data position, and ``model_spec``, which rebuilds the network without the training config.

Beside each checkpoint, ``step-NNNNNNNN.pt.sha256`` holds its SHA-256 and size, written after it: a checkpoint
whose bytes do not match (truncated, corrupted) is refused, and a resume falls back to the newest one that verifies.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fromnet.models import build_model
from occgen.errors import UserError
from occgen.writer import atomic_write

FORMAT = "fromnet-checkpoint-1"
LATEST = "latest"


@dataclass(frozen=True)
class ModelSpec:
    """Enough to rebuild a network: `build_model(**spec.build_kwargs())`."""

    variant: str = "from"
    K: int = 5
    input_size: tuple[int, int] = (112, 96)
    backbone: str = "r50"
    width_mult: float = 1.0
    overrides: dict[str, Any] = field(default_factory=dict)  # extra NetConfig fields

    def build_kwargs(self) -> dict[str, Any]:
        return dict(
            variant=self.variant,
            K=self.K,
            input_size=tuple(self.input_size),
            backbone=self.backbone,
            width_mult=self.width_mult,
            **self.overrides,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        return cls(**{**d, "input_size": tuple(d["input_size"]), "overrides": dict(d.get("overrides", {}))})


def checkpoint_dir(run: Path) -> Path:
    return Path(run) / "checkpoints"


class DiskFull(UserError):
    """No room for a checkpoint: nothing half-written is left, and the checkpoints already there are intact."""

    def __init__(self, path: Path, needed: int) -> None:
        self.path, self.needed = path, needed
        free = shutil.disk_usage(path.parent).free if path.parent.is_dir() else 0
        super().__init__(f"disk full writing {path}: it needs {needed:,} bytes, {free:,} are free")


#: errno values that mean "no room": a full disk, a quota, a file-size limit.
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _write(path: Path, data: bytes) -> None:
    try:
        atomic_write(path, data)
    except OSError as exc:
        if exc.errno in NO_ROOM:
            raise DiskFull(path, len(data)) from None
        raise


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def save(run: Path, step: int, state: dict[str, Any], keep: int = 3) -> Path:
    """Write ``state`` as the checkpoint of ``step`` with its checksum, point ``latest`` at it, and drop all but the
    newest ``keep``. On a full disk raises DiskFull, leaving the earlier checkpoints and ``latest`` as they were."""
    folder = checkpoint_dir(run)
    path = folder / f"step-{step:08d}.pt"
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    data = buf.getvalue()
    _write(path, data)
    _write(checksum_path(path), f"{hashlib.sha256(data).hexdigest()} {len(data)}\n".encode())
    _write(folder / LATEST, f"{path.name}\n".encode())
    for old in checkpoints(run)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
        checksum_path(old).unlink(missing_ok=True)
    return path


def checkpoints(run: Path) -> list[Path]:
    """The run's checkpoint files, oldest first."""
    return sorted(checkpoint_dir(run).glob("step-*.pt"))


def verify(path: Path) -> str | None:
    """Why ``path`` cannot be trusted (its bytes differ from its recorded checksum), or None. A checkpoint with no
    checksum file beside it is left to the loader's own checks."""
    record = checksum_path(path)
    if not record.is_file():
        return None
    try:
        digest, size = record.read_text().split()
        expected = int(size)
    except ValueError:
        return f"its checksum file {record.name} is damaged"
    actual = path.stat().st_size
    if actual < expected:
        return f"truncated: {actual:,} of {expected:,} bytes"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if actual != expected or h.hexdigest() != digest:
        return f"corrupted: its SHA-256 differs from the one recorded in {record.name}"
    return None


def resolve(path: str | os.PathLike) -> Path:
    """A checkpoint file from a path to one, or to a run folder (its latest checkpoint)."""
    path = Path(path)
    if path.is_dir():
        latest = checkpoint_dir(path) / LATEST
        if not latest.is_file():
            raise UserError(f"{path} has no checkpoints/latest: not a fromnet run folder, or no checkpoint yet")
        path = checkpoint_dir(path) / latest.read_text().strip()
    if not path.is_file():
        raise UserError(f"{path}: no such checkpoint file")
    return path


def load(path: str | os.PathLike, what: str = "checkpoint") -> dict[str, Any]:
    """Load a checkpoint (file or run folder) onto the CPU, safely: tensors and plain data only, checksum verified."""
    path = resolve(path)
    state, problem = _try_load(path)
    if problem is not None:
        hint = "give a checkpoint file (RUN/checkpoints/step-N.pt) or a run folder"
        raise UserError(f"{what} {path} cannot be used: {problem}; {hint}")
    return state


def _try_load(path: Path) -> tuple[dict[str, Any], str | None]:
    problem = verify(path)
    if problem is not None:
        return {}, problem
    if not zipfile.is_zipfile(path):
        return {}, "not a PyTorch checkpoint file"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        return {}, f"cannot be read ({type(exc).__name__}: {exc})"
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        return {}, f"not a fromnet checkpoint (format {FORMAT!r} expected)"
    state["path"] = str(path)
    return state, None


def load_newest_good(run: Path) -> tuple[dict[str, Any], list[tuple[Path, str]]]:
    """The newest checkpoint of ``run`` that verifies and loads, and each newer one skipped with the reason."""
    skipped: list[tuple[Path, str]] = []
    for path in reversed(checkpoints(run)):
        state, problem = _try_load(path)
        if problem is None:
            return state, skipped
        skipped.append((path, problem))
    found = "; ".join(f"skipped {p}: {why}" for p, why in skipped) if skipped else "it holds none"
    raise UserError(f"--resume: {run} has no usable checkpoint ({found}); start it again with --overwrite")


def set_aside(path: Path) -> Path:
    """Rename a damaged checkpoint (and its checksum) out of the run's list, so that pruning keeps good ones."""
    aside = path.with_name(path.name + ".damaged")
    os.replace(path, aside)
    if checksum_path(path).is_file():
        os.replace(checksum_path(path), checksum_path(aside))
    return aside


@dataclass
class LoadedModel:
    model: nn.Module
    spec: ModelSpec
    path: Path
    step: int


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """The trained network of a checkpoint or run folder, in eval mode, for embedding and export."""
    state = load(path)
    spec = ModelSpec.from_dict(state["model_spec"])
    if spec.variant == "attention" and any(k.startswith("parts.") for k in state["model"]):
        spec = replace(spec, variant="attention-pooled")  # saved before `attention` took the top part head
    model = build_model(**spec.build_kwargs())
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:  # torch lists every missing and unexpected tensor
        first = str(exc).splitlines()[1].strip()[:200] if "\n" in str(exc) else str(exc)[:200]
        raise UserError(
            f"{state['path']}: its weights do not fit a {spec.variant} {spec.backbone} x{spec.width_mult:g} network "
            f"({first} ...); was it saved by another version of fromnet?"
        ) from None
    return LoadedModel(model.to(device).eval(), spec, Path(state["path"]), int(state.get("step", 0)))
