"""Faces -> embeddings files: a fromnet checkpoint or any ONNX face embedder over an occgen manifest.

An embedder takes a batch of aligned faces as (N, H, W, 3) uint8 RGB and returns (N, D) float32. Flip fusion sums
the embeddings of each face and its mirror image. The output is one Parquet row per sample, in build order:
``key``, ``src``, ``embedding`` (list<float32>), plus the sample's ``occluded`` flag and ``box_area_ratio`` so
that reports can plot accuracy against occluded area without the manifest, and ``image_digest`` (BLAKE2b-128 of
the stored image bytes). Sets built from the same faces share their clean images (N-N, N-O at every s, every
region): with earlier files of the same model as ``reuse``, a face whose bytes were embedded already takes that
vector and is neither decoded nor run again. Keys cannot serve for this: occluded copies of one face in two sets
share a key but not their pixels.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Protocol

import click
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from fromnet.checkpoint import load_model
from fromnet.eval.pairs import embeddings_table
from fromnet.shards import (
    Manifest,
    Shard,
    decode_face,
    image_field,
    iter_ordered,
    open_shards,
    sample_meta,
    to_input,
)
from occgen.errors import UserError
from occgen.images import crop_center, decode_array
from occgen.runner import parallel_map
from occgen.writer import atomic_write, table_bytes

ONNX_PREFIX = "onnx:"
PRECISIONS = ("auto", "fp32", "bf16")


class Embedder(Protocol):
    name: str
    input_size: tuple[int, int]  # (height, width)

    def __call__(self, faces: np.ndarray) -> np.ndarray: ...


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: this machine's torch sees no CUDA GPU; use --device cpu")
    return torch.device(device)


def bf16_supported(device: torch.device) -> bool:
    """bf16 pays off on GPUs that have it; CPU autocast exists but is slower than fp32 without AMX, so no."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


@dataclass
class TorchEmbedder:
    """A fromnet network in eval mode; bf16 autocast where chosen."""

    model: torch.nn.Module
    input_size: tuple[int, int]
    device: torch.device
    bf16: bool
    name: str

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        x = to_input(torch.from_numpy(np.require(faces, requirements=["C", "W"])), self.device)
        with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16):
            out = self.model(x)
        return out.embedding.float().cpu().numpy()


def _per_channel(text: str, what: str) -> np.ndarray:
    try:
        values = [float(v) for v in str(text).split(",")]
    except ValueError:
        raise UserError(f"--{what} must be one number or three comma-separated numbers; got {text!r}") from None
    if len(values) not in (1, 3):
        raise UserError(f"--{what} must be one number or three (one per channel); got {text!r}")
    return np.array(values * (3 // len(values)), dtype=np.float32)


@dataclass(frozen=True)
class OnnxOptions:
    """How an ONNX embedder wants its input: size, channel order, normalisation (x - mean) / std, layout."""

    input_size: tuple[int, int] | None = None  # None: read from the model's input shape
    channels: str = "rgb"  # or "bgr"
    mean: str = "127.5"
    std: str = "127.5"
    layout: str = "nchw"  # or "nhwc"


class OnnxEmbedder:
    """Any ONNX face model through onnxruntime (GPU provider first when installed)."""

    def __init__(self, path: Path, options: OnnxOptions = OnnxOptions()) -> None:
        ort = import_onnxruntime()
        if not Path(path).is_file():
            raise UserError(f"--model onnx:{path}: no such file")
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise UserError(f"{path}: onnxruntime cannot load it ({exc})") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.nchw = options.layout.lower() == "nchw"
        if options.layout.lower() not in ("nchw", "nhwc"):
            raise UserError(f"--layout must be nchw or nhwc; got {options.layout!r}")
        if options.channels.lower() not in ("rgb", "bgr"):
            raise UserError(f"--channels must be rgb or bgr; got {options.channels!r}")
        self.bgr = options.channels.lower() == "bgr"
        shape = list(inp.shape)
        if len(shape) != 4:
            raise UserError(f"{path}: input {inp.name} has shape {shape}; a face embedder takes 4-D image batches")
        hw = shape[2:4] if self.nchw else shape[1:3]
        channels = shape[1] if self.nchw else shape[3]
        if isinstance(channels, int) and channels != 3:
            other = "nhwc" if self.nchw else "nchw"
            raise UserError(
                f"{path}: input {inp.name} has shape {shape}, {channels} channel(s) where a face embedder takes 3 "
                f"(RGB); if the model is {other.upper()}, pass --layout {other}"
            )
        if options.input_size is not None:
            self.input_size = options.input_size
        elif all(isinstance(v, int) for v in hw):
            self.input_size = (int(hw[0]), int(hw[1]))
        else:
            raise UserError(f"{path}: the input size is not fixed in the model ({shape}); give --input-size HxW")
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.mean = _per_channel(options.mean, "mean")
        self.std = _per_channel(options.std, "std")
        self.name = f"onnx:{path}"

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        x = faces.astype(np.float32)
        if self.bgr:
            x = x[..., ::-1]
        x = (x - self.mean) / self.std
        if self.nchw:
            x = x.transpose(0, 3, 1, 2)
        x = np.ascontiguousarray(x)
        if self.fixed_batch == 1:  # models exported with batch 1 take one face at a time
            return np.concatenate([self._run(x[i : i + 1]) for i in range(len(x))])
        return self._run(x)

    def _run(self, x: np.ndarray) -> np.ndarray:
        try:
            out = self.session.run(None, {self.input_name: x})[0]
        except Exception as exc:  # onnxruntime's own types: the model and these inputs disagree
            raise UserError(
                f"{self.name}: the model rejects a batch of shape {list(x.shape)} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0]}); check --layout, --input-size and --channels"
            ) from None
        return np.asarray(out, dtype=np.float32).reshape(len(x), -1)


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise UserError("ONNX models need onnxruntime: pip install 'occgen-fromnet[onnx]'") from None
    return onnxruntime


def open_embedder(
    model: str, device: str = "auto", precision: str = "auto", onnx: OnnxOptions = OnnxOptions()
) -> Embedder:
    """A fromnet run folder / checkpoint, or ``onnx:PATH``."""
    if model.startswith(ONNX_PREFIX):
        return OnnxEmbedder(Path(model[len(ONNX_PREFIX) :]), onnx)
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    dev = pick_device(device)
    if precision == "bf16" and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("--precision bf16: this GPU has no bf16; use fp32")
    loaded = load_model(model, dev)
    bf16 = precision == "bf16" or (precision == "auto" and bf16_supported(dev))
    return TorchEmbedder(loaded.model, loaded.spec.input_size, dev, bf16, str(loaded.path))


def embed_faces(embedder: Embedder, faces: np.ndarray, flip: bool = False) -> np.ndarray:
    """(N, D) float32 embeddings; with ``flip``, the sum of the face's and its mirror's."""
    out = embedder(faces)
    if flip:
        out = out + embedder(np.ascontiguousarray(faces[:, :, ::-1]))
    return out


def _check_size(face: np.ndarray, size: tuple[int, int], what: str) -> None:
    if face.shape[:2] != tuple(size):
        crop = " (--crop 112x96 takes FROM's crop from 112x112 ArcFace crops)" if face.shape[:2] == (112, 112) else ""
        raise UserError(
            f"{what} is {face.shape[0]}x{face.shape[1]} (HxW) but the model takes {size[0]}x{size[1]}; "
            f"embed faces aligned to that size{crop}"
        )


def image_digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _face_row(
    sample: dict, size: tuple[int, int], where: str, known: frozenset[str] = frozenset()
) -> tuple[dict, np.ndarray | None]:
    """A sample's metadata row and its decoded face, or None for the face when its digest is in ``known``."""
    digest = image_digest(image_field(sample))
    meta = sample_meta(sample)
    row = dict(
        key=sample["__key__"],
        src=meta.get("src", sample["__key__"]),
        occluded=bool(meta.get("occluded", False)),
        box_area_ratio=meta.get("box_area_ratio"),
        image_digest=digest,
    )
    if digest in known:
        return row, None
    face = decode_face(sample)
    _check_size(face, size, f"{where}: sample {sample['__key__']}")
    return row, face


def _stack(faces: list[np.ndarray | None], size: tuple[int, int]) -> np.ndarray:
    kept = [f for f in faces if f is not None]
    return np.stack(kept) if kept else np.zeros((0, *size, 3), np.uint8)


def decode_shard(
    shard: Shard, manifest: Manifest, size: tuple[int, int], known: frozenset[str] = frozenset()
) -> tuple[list[dict], np.ndarray]:
    """Every sample's row of one shard, in tar order, and the faces not in ``known`` (a worker process's task)."""
    pairs = [
        _face_row(s, size, str(manifest.path or shard.url), known)
        for s in iter_ordered(replace(manifest, shards=(shard,)))
    ]
    return [row for row, _ in pairs], _stack([face for _, face in pairs], size)


def batches(
    manifest: Manifest, batch_size: int, size: tuple[int, int], workers: int = 0, known: frozenset[str] = frozenset()
) -> Iterator[tuple[list[dict], np.ndarray]]:
    """(metadata rows, (M, H, W, 3) uint8 faces) in build order, M <= rows: the faces of the rows whose digest is
    not in ``known``, in row order; faces of another size are an error.

    With ``workers`` > 1, whole shards are decoded in that many processes (results still in shard order), so a
    GPU is not left waiting on one process's JPEG decoding; otherwise faces stream from this process.
    """
    where = str(manifest.path or manifest.name)
    chunks: Iterator[tuple[list[dict], np.ndarray]]
    if workers > 1:
        chunks = iter(
            parallel_map(
                partial(decode_shard, manifest=manifest, size=size, known=known),
                list(manifest.shards),
                workers,
                "decode",
                quiet=True,
            )
        )
    else:
        chunks = (
            ([row], _stack([face], size))
            for row, face in (_face_row(s, size, where, known) for s in iter_ordered(manifest))
        )
    rows: list[dict] = []
    faces: list[np.ndarray] = []
    for chunk_rows, chunk_faces in chunks:
        rows.extend(chunk_rows)
        faces.append(chunk_faces)
        while len(rows) >= batch_size:
            block = np.concatenate(faces)
            take = sum(r["image_digest"] not in known for r in rows[:batch_size])
            yield rows[:batch_size], block[:take]
            rows, faces = rows[batch_size:], [block[take:]]
    if rows:
        yield rows, np.concatenate(faces)


def read_known(paths: Sequence[str | Path], signature: str) -> dict[str, np.ndarray]:
    """image digest -> vector of earlier embeddings files, which must come from the same model and settings."""
    from fromnet.eval.pairs import read_embeddings

    known: dict[str, np.ndarray] = {}
    for path in paths:
        emb = read_embeddings(path)
        digests = emb.column("image_digest")
        if digests is None:
            raise UserError(f"--reuse {path}: has no image_digest column (embed it again with this fromnet)")
        made_by = pq.read_schema(path).metadata or {}
        theirs = made_by.get(b"fromnet.embedder", b"").decode()
        if theirs != signature:
            raise UserError(
                f"--reuse {path}: made by {theirs or 'an unrecorded model'}, not {signature}; reuse only "
                "embeddings of the same model and settings"
            )
        known.update(zip(digests, emb.vectors))
    return known


def embed_manifest(
    manifest_path: str | Path,
    embedder: Embedder,
    batch_size: int = 256,
    flip: bool = False,
    quiet: bool = False,
    workers: int = 0,
    reuse: Mapping[str, np.ndarray] | None = None,
) -> pa.Table:
    """Embed every sample of a manifest (or of plain WebDataset shards: fromnet.shards.open_shards), in build
    order, as an embeddings table; faces whose image digest is in ``reuse`` take that vector instead."""
    manifest = open_shards(manifest_path)
    reuse = reuse or {}
    known = frozenset(reuse)
    total = manifest.samples  # 0 for plain shards: no counting pass just for a progress bar
    rows: list[dict] = []
    vectors: list[np.ndarray] = []
    show = not quiet and sys.stderr.isatty() and total > 0
    bar = (
        click.progressbar(length=total, label=f"embed {manifest.name}", file=sys.stderr, show_pos=True)
        if show
        else None
    )
    for meta, faces in batches(manifest, batch_size, embedder.input_size, workers, known):
        fresh = iter(embed_faces(embedder, faces, flip)) if len(faces) else iter(())
        vectors.append(
            np.stack([reuse[r["image_digest"]] if r["image_digest"] in known else next(fresh) for r in meta])
        )
        rows.extend(meta)
        if bar is not None:
            bar.update(len(meta))
    if bar is not None:
        bar.render_finish()
    dim = vectors[0].shape[1] if vectors else 0
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)
    if not np.isfinite(matrix).all():
        raise UserError(f"{embedder.name}: the model gave NaN/inf embeddings for {manifest_path}")
    if not rows:
        raise UserError(f"{manifest_path}: no samples to embed")
    area = np.array([np.nan if r["box_area_ratio"] is None else r["box_area_ratio"] for r in rows], np.float32)
    table = embeddings_table(
        [r["key"] for r in rows],
        [r["src"] for r in rows],
        matrix,
        {
            "occluded": np.array([r["occluded"] for r in rows], bool),
            "box_area_ratio": area,
            "image_digest": np.array([r["image_digest"] for r in rows], object),
        },
    )
    return table.replace_schema_metadata({"fromnet.embedder": embedder_signature(embedder, flip)})


def embedder_signature(embedder: Embedder, flip: bool) -> str:
    """What made an embeddings file, for --reuse to check: the model and the settings that change a vector."""
    bf16 = getattr(embedder, "bf16", False)
    return f"{embedder.name}" + (" +flip" if flip else "") + (" bf16" if bf16 else "")


def embed_encoded(
    embedder: Embedder,
    images: Sequence[bytes],
    names: Sequence[str],
    batch_size: int = 256,
    flip: bool = False,
    crop: tuple[int, int] | None = None,
) -> np.ndarray:
    """(N, D) embeddings of encoded faces that are not in a manifest (a verification set's), decoded batch by batch
    and, with ``crop``, cut to that centred window first."""
    vectors = []
    for start in range(0, len(images), batch_size):
        faces = []
        for name, data in zip(names[start : start + batch_size], images[start : start + batch_size]):
            face = decode_array(data, name)
            face = crop_center(face, crop) if crop else face
            _check_size(face, embedder.input_size, name)
            faces.append(face)
        vectors.append(embed_faces(embedder, np.stack(faces), flip))
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, 0), np.float32)
    if not np.isfinite(matrix).all():
        raise UserError(f"{embedder.name}: the model gave NaN/inf embeddings")
    return matrix


def write_embeddings(table: pa.Table, path: str | Path) -> None:
    atomic_write(Path(path), table_bytes(table))
