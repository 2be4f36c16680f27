"""The embedding network as ONNX, checked against PyTorch with onnxruntime before it is kept.

The graph takes ``input`` (N, 3, H, W) float32 faces normalised to [-1, 1] (RGB, as `fromnet.shards.to_input` gives)
and returns ``embedding`` (N, D); the batch dimension is dynamic. It is written with torch's TorchScript-based
exporter (``dynamo=False``: the torch.export-based one needs onnxscript, which this project does not install) at
opset 17, and only renamed into place once onnxruntime reproduces PyTorch's embeddings on a batch of a size other
than the one exported with.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fromnet.checkpoint import load_model
from fromnet.embed import import_onnxruntime
from occgen.errors import UserError
from occgen.writer import atomic_write

OPSET = 17
TOLERANCE = 1e-4


class EmbeddingOnly(nn.Module):
    """The network with only the embedding as output (mask and pattern heads are training-time signals)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).embedding


@dataclass
class ExportResult:
    path: Path
    opset: int
    input_size: tuple[int, int]
    embedding_dim: int
    max_abs_diff: float  # onnxruntime vs PyTorch on the check batch
    check_batch: int


def to_onnx_bytes(model: nn.Module, input_size: tuple[int, int], opset: int = OPSET) -> bytes:
    """The ONNX file of ``model``'s embedding path, batch dimension dynamic."""
    wrapper = EmbeddingOnly(model).eval()  # eval on the wrapper too: export restores the wrapper's mode after
    example = torch.zeros(2, 3, *input_size)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice and the shape-check trace warning
        torch.onnx.export(
            wrapper,
            (example,),
            buf,  # type: ignore[arg-type]  # the TorchScript exporter (dynamo=False) writes to file objects too
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["embedding"],
            dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}},
        )
    return buf.getvalue()


def check_onnx(data: bytes, model: nn.Module, input_size: tuple[int, int], batch: int = 3, seed: int = 0) -> float:
    """Largest |onnxruntime - PyTorch| over a random batch of faces in [-1, 1]."""
    ort = import_onnxruntime()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = torch.rand(batch, 3, *input_size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    with torch.inference_mode():
        expected = EmbeddingOnly(model).eval()(x).float().numpy()
    got = session.run(None, {"input": x.numpy()})[0]
    if got.shape != expected.shape:
        raise RuntimeError(f"ONNX output shape {got.shape} differs from PyTorch's {expected.shape}")
    return float(np.abs(got - expected).max())


def export_onnx(run: str | Path, out: str | Path, opset: int = OPSET, tolerance: float = TOLERANCE) -> ExportResult:
    """Export a run's (or checkpoint's) embedding network to ``out`` after checking it with onnxruntime."""
    import_onnxruntime()  # fail before the slow export when the extra is missing
    loaded = load_model(run, "cpu")
    model = loaded.model.float()
    size = loaded.spec.input_size
    data = to_onnx_bytes(model, size, opset)
    diff = check_onnx(data, model, size)
    if not diff <= tolerance:
        raise UserError(
            f"ONNX export of {loaded.path} differs from PyTorch by {diff:.2e} (> {tolerance:g}); not written"
        )
    atomic_write(Path(out), data)
    with torch.inference_mode():
        dim = EmbeddingOnly(model).eval()(torch.zeros(2, 3, *size)).shape[1]
    return ExportResult(Path(out), opset, size, int(dim), diff, 3)
