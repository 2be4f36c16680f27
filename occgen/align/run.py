"""``occgen align``, the I/O part: plan, per-chunk work in worker processes, atomic writes, resume, the record.

Every image under ``src`` ends up in ``<record_dir>/align.parquet`` (one row each, sorted by path) with its
landmarks, fit, residual, detector score and status: ``ok`` (aligned with its own landmarks), ``fallback``
(written with the dataset-mean transform, ``--fallback mean``) or ``failed`` (no output; ``problem`` and
``reason`` say why). Outputs are written under a temporary name and renamed, so a present file is complete;
a rerun skips images whose output and record row are both present. Chunk results are saved as
``align-parts/*.parquet`` while the run goes, so an interrupted run loses at most the chunks in flight.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from occgen.align import transform
from occgen.align.landmarks import LandmarkRow, read_landmarks
from occgen.errors import UserError
from occgen.images import IMAGE_EXTENSIONS, load_rgb
from occgen.runner import Summary, parallel_map
from occgen.writer import atomic_write, json_bytes, parquet_bytes

RECORD = "align.parquet"
SETTINGS = "align.json"
PARTS = "align-parts"
FORMATS = {"jpg": "JPEG", "png": "PNG"}

_floats = pa.list_(pa.float64())
SCHEMA = pa.schema(
    [
        ("path", pa.string()),  # source image, relative to src
        ("out_path", pa.string()),  # aligned image, relative to out; null when nothing was written
        ("status", pa.string()),  # ok | fallback | failed
        ("problem", pa.string()),  # "" | unreadable | no_landmarks | no_face | marked | implausible
        ("reason", pa.string()),  # human-readable why, "" for ok
        ("source", pa.string()),  # where the landmarks came from: landmarks | mtcnn
        ("width", pa.int32()),  # source image size
        ("height", pa.int32()),
        ("landmarks", _floats),  # x1, y1, ..., x5, y5 in source pixels (eyes, nose, mouth corners)
        ("score", pa.float64()),  # detector confidence (or the landmark file's score column)
        ("n_faces", pa.int32()),  # faces the detector found (or the landmark file's n_faces column)
        ("face_index", pa.int32()),  # which detection was taken: the one nearest the image centre
        ("centre_dist", pa.float64()),  # its box centre's distance from the image centre, px
        ("box", _floats),  # its box x0, y0, x1, y1
        ("residual", pa.float64()),  # RMS distance (crop px) of the fitted landmarks from the template
        ("outside", pa.float64()),  # share of the crop outside the source image (black)
        ("fit", _floats),  # the image's own similarity fit, row-major 2x3 (source px -> crop px)
        ("transform", _floats),  # the transform the output was made with (= fit, or the dataset mean)
    ]
)


@dataclass(frozen=True)
class AlignSettings:
    """Everything that decides an output's pixels; a resumed run must match the run it continues."""

    size: str  # a key of transform.TEMPLATES
    method: str  # "landmarks" | "mtcnn"
    landmarks: str | None = None  # the landmark file (absolute)
    landmarks_sha256: str | None = None
    fmt: str = "jpg"
    quality: int = 95
    max_residual: float = transform.MAX_RESIDUAL

    @property
    def template(self) -> transform.Template:
        return transform.template_for(self.size)


@dataclass(frozen=True)
class Chunk:
    """A worker's share: fit-and-write ``items`` (phase 1), or write ``rows`` with ``mean`` (fallback)."""

    src: str
    out: str
    settings: AlignSettings
    items: list[tuple[str, LandmarkRow | None]] = field(default_factory=list)  # (path, landmark row)
    rows: list[dict[str, Any]] = field(default_factory=list)
    mean: np.ndarray | None = None


@dataclass
class AlignReport:
    summary: Summary
    record: Path
    fallback: int  # images written with the dataset-mean transform, this run
    failed: list[tuple[str, str]]  # (path, reason) of every image without an output
    ignored_rows: int  # landmark rows naming images not under src (--ignore-missing)
    other_files: int  # files under src without an image extension


def output_name(rel: str, fmt: str) -> str:
    """The aligned image's path: the source's relative path with the output format's extension."""
    return Path(rel).with_suffix("." + fmt).as_posix()


def scan(src: Path) -> tuple[list[str], int]:
    """Relative paths of the images under ``src`` (sorted), and how many other files were passed over."""
    images, others = [], 0
    for folder, _, files in os.walk(src, followlinks=True):
        rel_folder = Path(folder).relative_to(src)
        for name in files:
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS and not name.startswith("."):
                images.append((rel_folder / name).as_posix())
            else:
                others += 1
    return sorted(images), others


def _new_row(rel: str, method: str) -> dict[str, Any]:
    row: dict[str, Any] = {name: None for name in SCHEMA.names}
    row.update(path=rel, status="failed", problem="", reason="", source=method)
    return row


def _num(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _stable_reason(exc: UserError, src: Path) -> str:
    """A decode error's message without src's location, so the record does not depend on where src lives."""
    return str(exc).replace(f"{src}/", "", 1)


def _write(image: Image.Image, path: Path, settings: AlignSettings) -> None:
    """Write under a temporary name in the same folder, then rename: a present file is a complete file."""
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    options = {"quality": settings.quality} if settings.fmt == "jpg" else {}
    image.save(tmp, format=FORMATS[settings.fmt], **options)
    os.replace(tmp, path)


def _landmarks_for(
    image: Image.Image, entry: LandmarkRow | None, row: dict[str, Any], settings: AlignSettings
) -> np.ndarray | None:
    """The five points for one image (from the file or the detector), filling the row's provenance columns.

    Returns None, with the row's problem set, when there are none.
    """
    if settings.method == "mtcnn":
        from occgen.align.detect import choose_face, detect_faces

        faces = detect_faces(image)
        row["n_faces"] = len(faces)
        if not faces:
            row.update(problem="no_face", reason="MTCNN found no face")
            return None
        k, dist = choose_face(faces, image.size)
        row.update(face_index=k, centre_dist=dist, score=faces[k].score, box=list(faces[k].box))
        return faces[k].points
    if entry is None:
        row.update(problem="no_landmarks", reason="no row for it in the landmark file")
        return None
    row.update(n_faces=entry.n_faces, score=_num(entry.score))
    if not np.isfinite(entry.points).all():
        status = f" (status {entry.status})" if entry.status else ""
        row.update(problem="no_face", reason=f"the landmark file has no landmarks for it{status}")
        return None
    return entry.points


def _align_one(src: Path, out: Path, settings: AlignSettings, rel: str, entry: LandmarkRow | None) -> dict[str, Any]:
    row = _new_row(rel, settings.method)
    try:
        image = load_rgb(src / rel)
    except UserError as exc:
        row.update(problem="unreadable", reason=_stable_reason(exc, src))
        return row
    row.update(width=image.width, height=image.height)
    points = _landmarks_for(image, entry, row, settings)
    if points is None:
        return row
    template = settings.template
    fit = transform.fit_face(points, image.size, template, settings.max_residual)
    row.update(landmarks=points.ravel().tolist(), residual=_num(fit.residual), outside=_num(fit.outside))
    if fit.matrix is not None:
        row["fit"] = fit.matrix.ravel().tolist()
    if entry is not None and entry.status not in ("", "ok"):
        row.update(problem="marked", reason=f"the landmark file marks it {entry.status!r}")
    elif fit.problem is not None or fit.matrix is None:
        row.update(problem="implausible", reason=fit.problem)
    else:
        out_rel = output_name(rel, settings.fmt)
        _write(transform.warp(image, fit.matrix, template), out / out_rel, settings)
        row.update(status="ok", out_path=out_rel, transform=row["fit"])
    return row


def _fallback_one(
    src: Path, out: Path, settings: AlignSettings, row: dict[str, Any], mean: np.ndarray
) -> dict[str, Any]:
    image = load_rgb(src / row["path"])
    out_rel = output_name(row["path"], settings.fmt)
    _write(transform.warp(image, mean, settings.template), out / out_rel, settings)
    return {**row, "status": "fallback", "out_path": out_rel, "transform": mean.ravel().tolist()}


def run_chunk(chunk: Chunk) -> list[dict[str, Any]]:
    """A worker's job: align the chunk's images (or write its failed ones with the mean) and return their rows."""
    src, out = Path(chunk.src), Path(chunk.out)
    if chunk.mean is not None:
        return [_fallback_one(src, out, chunk.settings, row, chunk.mean) for row in chunk.rows]
    return [_align_one(src, out, chunk.settings, rel, entry) for rel, entry in chunk.items]


def _chunked(seq: list[Any], jobs: int) -> list[list[Any]]:
    size = max(1, min(64, math.ceil(len(seq) / (4 * max(jobs, 1)))))
    return [seq[i : i + size] for i in range(0, len(seq), size)]


def _write_table(rows: Iterable[dict[str, Any]], path: Path) -> None:
    atomic_write(path, parquet_bytes(list(rows), SCHEMA))


def _load_rows(record_dir: Path) -> dict[str, dict[str, Any]]:
    """Rows of earlier runs: the record, then any chunk parts an interrupted run left (newer rows win)."""
    rows: dict[str, dict[str, Any]] = {}
    files = [record_dir / RECORD] if (record_dir / RECORD).is_file() else []
    files += sorted((record_dir / PARTS).glob("*.parquet")) if (record_dir / PARTS).is_dir() else []
    for file in files:
        try:
            table = pq.read_table(file)
        except (OSError, pa.ArrowException) as exc:
            raise UserError(f"{file}: cannot read the earlier run's record ({exc}); delete it to start over") from None
        for row in table.to_pylist():
            rows[row["path"]] = row
    return rows


def _check_settings(record_dir: Path, out: Path, settings: AlignSettings) -> None:
    """Refuse to resume into an output made with other settings (it would mix two kinds of crop)."""
    file = record_dir / SETTINGS
    if not file.is_file():
        return
    try:
        earlier = json.loads(file.read_text())["settings"]
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{file}: unreadable ({exc}); delete it and {record_dir / RECORD} to start over") from None
    changed = [f"{k} {earlier.get(k)!r} -> {v!r}" for k, v in asdict(settings).items() if earlier.get(k) != v]
    if changed:
        raise UserError(
            f"{out} was aligned with other settings ({'; '.join(changed)}): choose a new --out and --name, "
            f"or delete {out} and {record_dir} to redo it"
        )


def _write_settings(record_dir: Path, settings: AlignSettings, extra: dict[str, Any]) -> None:
    atomic_write(record_dir / SETTINGS, json_bytes({"settings": asdict(settings), **extra}))


def make_settings(
    size: str,
    landmarks: str | Path | None,
    detector: str | None,
    fmt: str = "jpg",
    quality: int = 95,
    max_residual: float = transform.MAX_RESIDUAL,
) -> AlignSettings:
    """Validated settings from the command line's choices (exactly one of ``landmarks`` and ``detector``)."""
    transform.template_for(size)
    if (landmarks is None) == (detector is None):
        raise UserError("give exactly one landmark source: --landmarks FILE or --detector mtcnn")
    if detector is not None and detector != "mtcnn":
        raise UserError(f"unknown detector {detector!r}: the only one is mtcnn")
    if fmt not in FORMATS:
        raise UserError(f"unknown output format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if not 1 <= quality <= 100:
        raise UserError(f"--quality {quality} is out of range: give 1..100 (JPEG quality)")
    if not max_residual > 0:
        raise UserError(f"--max-residual {max_residual} must be positive (crop pixels)")
    if landmarks is None:
        return AlignSettings(size, "mtcnn", fmt=fmt, quality=quality, max_residual=max_residual)
    path = Path(landmarks).resolve()
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise UserError(f"{landmarks}: cannot read landmark file ({exc.strerror})") from None
    return AlignSettings(size, "landmarks", str(path), digest, fmt, quality, max_residual)


def _plan_images(src: Path, out: Path, fmt: str) -> tuple[list[str], int]:
    """The images to align (sorted relative paths) and the count of other files; UserError for a bad layout."""
    if not src.is_dir():
        raise UserError(f"--src {src}: not a folder (give the folder of raw <identity>/<image> files)")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise UserError(f"--out {out} lies inside --src {src}: choose a folder outside it")
    images, other_files = scan(src)
    if not images:
        raise UserError(f"--src {src}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    outputs: dict[str, str] = {}
    for rel in images:
        name = output_name(rel, fmt)
        if name in outputs:
            raise UserError(f"{src}: {outputs[name]} and {rel} would both be written as {name}; rename one")
        outputs[name] = rel
    return images, other_files


def _plan_landmarks(
    src: Path, images: list[str], settings: AlignSettings, ignore_missing: bool
) -> tuple[dict[str, LandmarkRow], int]:
    """The landmark file's rows (empty for the detector, which is loaded here to fail early) and how many rows
    name images that are not under ``src``."""
    if settings.landmarks is None:  # method "mtcnn"
        from occgen.align.detect import require_detector

        require_detector()
        return {}, 0
    entries = read_landmarks(settings.landmarks)
    known = set(images)
    missing = [p for p in entries if p not in known]
    if missing and not ignore_missing:
        raise UserError(
            f"{settings.landmarks}: {len(missing)} row(s) name images not under {src}, e.g. "
            f"{', '.join(missing[:3])}: paths must be relative to --src (or pass --ignore-missing to align "
            "only the images that are there)"
        )
    return entries, len(missing)


def run_align(
    src: str | Path,
    out: str | Path,
    settings: AlignSettings,
    record_dir: str | Path,
    jobs: int = 1,
    fallback: str = "none",
    ignore_missing: bool = False,
    quiet: bool = False,
) -> AlignReport:
    """Align every image under ``src`` into ``out`` (same relative paths) and record it in ``record_dir``."""
    src, out, record_dir = Path(src), Path(out), Path(record_dir)
    if fallback not in ("none", "mean"):
        raise UserError(f"unknown --fallback {fallback!r}: choose none or mean")
    images, other_files = _plan_images(src, out, settings.fmt)
    entries, ignored = _plan_landmarks(src, images, settings, ignore_missing)

    record_dir.mkdir(parents=True, exist_ok=True)
    _check_settings(record_dir, out, settings)
    _write_settings(record_dir, settings, {})
    known = set(images)
    rows = {p: r for p, r in _load_rows(record_dir).items() if p in known}
    done = {p for p, r in rows.items() if r["status"] in ("ok", "fallback") and (out / r["out_path"]).is_file()}
    summary = Summary("align", skipped=len(done))
    parts = record_dir / PARTS
    parts.mkdir(exist_ok=True)
    part_no = len(list(parts.glob("*.parquet")))

    def run(chunks: list[Chunk], label: str) -> None:
        nonlocal part_no
        weights = [len(c.items) + len(c.rows) for c in chunks]
        for new in parallel_map(run_chunk, chunks, jobs, label, weights=weights, quiet=quiet):
            _write_table(new, parts / f"{part_no:06d}.parquet")
            part_no += 1
            for row in new:
                rows[row["path"]] = row
                summary.done += row["status"] != "failed"

    todo = [(rel, entries.get(rel)) for rel in images if rel not in done]
    run([Chunk(str(src), str(out), settings, items=c) for c in _chunked(todo, jobs)], "aligning")

    mean = None
    fallback_count = 0
    if fallback == "mean":
        ok = [np.reshape(rows[p]["landmarks"], (5, 2)) for p in images if rows[p]["status"] == "ok"]
        redo = [rows[p] for p in images if rows[p]["status"] == "failed" and rows[p]["problem"] != "unreadable"]
        if ok:
            mean = transform.mean_transform(np.stack(ok), settings.template)
        if redo and mean is None:
            for row in redo:
                row["reason"] += "; no face was aligned, so there is no dataset-mean transform to fall back on"
        elif redo:
            run([Chunk(str(src), str(out), settings, rows=c, mean=mean) for c in _chunked(redo, jobs)], "fallback")
            fallback_count = len(redo)

    final = [rows[p] for p in images]
    _write_table(final, record_dir / RECORD)
    for part in parts.glob("*.parquet"):
        part.unlink()
    parts.rmdir()
    counts = {s: sum(r["status"] == s for r in final) for s in ("ok", "fallback", "failed")}
    _write_settings(
        record_dir,
        settings,
        {"counts": counts, "mean_transform": None if mean is None else mean.ravel().tolist()},
    )
    failed = [(r["path"], r["reason"]) for r in final if r["status"] == "failed"]
    summary.errors = len(failed)
    return AlignReport(summary, record_dir / RECORD, fallback_count, failed, ignored, other_files)
