"""Checkpoints: written atomically, loaded with ``torch.load(weights_only=True)``, readable on any world size.

A run folder holds ``checkpoints/step-NNNNNNNN.pt`` and ``checkpoints/latest`` (a one-line file naming the newest,
replaced atomically after the checkpoint itself is complete, so it never names half a file). A checkpoint is a
dict of tensors, numbers and strings only (no pickled classes): the model's ``state_dict``, the classifier's
full weight and momentum (gathered from every rank), the optimizers, schedule and scaler states, RNG states, the
data position, and ``model_spec``, which rebuilds the network without the training config.
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass, field
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


def save(run: Path, step: int, state: dict[str, Any], keep: int = 3) -> Path:
    """Write ``state`` as the checkpoint of ``step``, point ``latest`` at it, and drop all but the newest ``keep``."""
    folder = checkpoint_dir(run)
    path = folder / f"step-{step:08d}.pt"
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    atomic_write(path, buf.getvalue())
    atomic_write(folder / LATEST, f"{path.name}\n".encode())
    for old in sorted(folder.glob("step-*.pt"))[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


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


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint (file or run folder) onto the CPU, safely: tensors and plain data only."""
    path = resolve(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise UserError(f"{path}: cannot load as a fromnet checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not a fromnet checkpoint (format {FORMAT!r} expected)")
    state["path"] = str(path)
    return state


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
    model = build_model(**spec.build_kwargs())
    model.load_state_dict(state["model"])
    return LoadedModel(model.to(device).eval(), spec, Path(state["path"]), int(state.get("step", 0)))
