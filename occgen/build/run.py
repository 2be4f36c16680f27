"""``occgen build``: the source's images, times copies, through Algorithm 1 into WebDataset shards.

Samples are laid out in a fixed order (sorted inputs, copies inner) and cut into shards of ``shard_size``;
each shard is one task for a worker process, which renders its samples and writes the shard's tar, its manifest
part, its errors part and finally its stats file (the completion mark). A rerun skips shards whose stats file and
tar are present and rebuilds the rest. Results come back in shard order, so outputs are identical for any -j.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from occgen import __version__
from occgen.errors import UserError
from occgen.images import FORMATS, decode_array, encode
from occgen.build.occluders import OccluderLibrary, load_library
from occgen.build.plan import draw, sample_key, sample_seed
from occgen.build.render import Compat, occlude, scaled_size
from occgen.runner import Summary, parallel_map
from occgen.build.sources import Item, Source, read_bytes
from occgen.sets.regions import fit_region
from occgen.writer import (
    ERRORS_SCHEMA, SAMPLES_SCHEMA, atomic_write, json_bytes, parquet_bytes, sha256, write_tar,
)

@dataclass(frozen=True)
class BuildOptions:
    """Everything that decides the bytes of a build (and so must match when a build is resumed)."""

    scales: tuple[float, ...]
    copies: int = 1
    clean_ratio: float = 0.0
    seed: int = 0
    compat: Compat = "paper"
    fmt: str = "jpg"
    quality: int = 95
    shard_size: int = 1000
    occluders: str | None = None  # library folder; None = the project's own
    categories: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    clean_copies: int = 0  # copies numbered below this stay clean (the clean halves of verification pairs)
    region: str | None = None  # a named region (occgen.sets.regions): the occluder is fitted to its box


@dataclass(frozen=True)
class ShardTask:
    index: int
    name: str
    tar_path: Path
    manifest_dir: Path
    source_root: Path | None
    samples: tuple[tuple[str, int, Item, int], ...]  # (key, seed, item, copy)
    options: BuildOptions
    library_digest: str  # which occluder library the workers must use (OccluderLibrary.digest)

    @property
    def shard(self) -> str:
        return f"{self.name}-{self.index:06d}"

    @property
    def stats_path(self) -> Path:
        return self.manifest_dir / "shards" / f"{self.shard}.json"


@dataclass
class BuildResult:
    name: str
    manifest_dir: Path
    shards: list[dict[str, Any]] = field(default_factory=list)
    summary: Summary = field(default_factory=lambda: Summary("build"))


#: Occluder libraries a process has loaded, by digest: each worker loads a library once, and a library whose
#: files changed between two builds in one process is loaded anew.
_LIBRARIES: dict[str, OccluderLibrary] = {}


def _library(opts: BuildOptions, digest: str) -> OccluderLibrary:
    if digest not in _LIBRARIES:
        library = load_library(opts.occluders, opts.categories, opts.exclude)
        if library.digest != digest:
            raise UserError(f"the occluder library {library.root} changed while the build was running; run it again")
        _LIBRARIES[digest] = library
    return _LIBRARIES[digest]


def occlude_sample(face: np.ndarray, seed: int, opts: BuildOptions, lib: OccluderLibrary, clean: bool = False
                   ) -> tuple[np.ndarray, dict[str, Any]]:
    """Algorithm 1 for one sample: draw its choices from its seed and paste (never, when ``clean``). Returns the
    face (a new array when occluded) and its geometry columns. The offline build and fromnet's online occlusion
    both call this."""
    H, W = face.shape[:2]
    choice = draw(seed, (W, H), opts.scales, 1.0 if clean else opts.clean_ratio, lib.choose)
    row: dict[str, Any] = {"occluded": choice.occluded}
    if choice.occluded:
        occ = lib.occluders[choice.occluder]
        if opts.region:
            size, center = fit_region(opts.region, (W, H))
        else:
            size, center = scaled_size(occ.size, choice.scale, (W, H), opts.compat), choice.center
        result = occlude(face, lib.scaled(choice.occluder, size, opts.compat), center)
        face = result.image
        row.update(
            scale=choice.scale, occluder=occ.name, occluder_category=occ.category,
            center_x=center[0], center_y=center[1],
            raw_x0=result.raw_box.x0, raw_y0=result.raw_box.y0, raw_x1=result.raw_box.x1, raw_y1=result.raw_box.y1,
            box_x0=result.box.x0, box_y0=result.box.y0, box_x1=result.box.x1, box_y1=result.box.y1,
            box_area_ratio=result.box.area / (W * H), pixel_area_ratio=result.pixel_area / (W * H),
        )
    return face, row


def render_sample(face: np.ndarray, key: str, seed: int, item: Item, copy: int, shard: str, opts: BuildOptions,
                  lib: OccluderLibrary) -> tuple[dict[str, Any], bytes]:
    """One sample: draw its choices, run Algorithm 1, encode. Returns its manifest row and image bytes."""
    H, W = face.shape[:2]
    face, geometry = occlude_sample(face, seed, opts, lib, clean=copy < opts.clean_copies)
    row: dict[str, Any] = {
        "key": key, "shard": shard, "identity": item.identity, "identity_name": item.identity_name,
        "src": item.rel, "copy": copy, "occluded": geometry.pop("occluded"), "seed": seed, "width": W, "height": H,
        "format": opts.fmt,
    }
    row.update(geometry)
    data = encode(face, opts.fmt, opts.quality)
    row.update(bytes=len(data), sha256=sha256(data))
    return row, data


def render_shard(task: ShardTask) -> dict[str, Any]:
    """Worker: render every sample of one shard and write its tar and manifest parts atomically."""
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    size, digest = write_tar(task.tar_path, _render_samples(task, rows, errors))
    atomic_write(task.manifest_dir / "samples.parquet" / f"{task.shard}.parquet", parquet_bytes(rows, SAMPLES_SCHEMA))
    atomic_write(task.manifest_dir / "errors.parquet" / f"{task.shard}.parquet", parquet_bytes(errors, ERRORS_SCHEMA))
    stats = {"shard": task.shard, "path": os.path.relpath(task.tar_path, task.manifest_dir), "samples": len(rows),
             "errors": len(errors), "bytes": size, "sha256": digest}
    atomic_write(task.stats_path, json_bytes(stats))  # written last: marks the shard complete
    return stats


def _render_samples(task: ShardTask, rows: list[dict[str, Any]], errors: list[dict[str, str]]) -> Iterator[dict[str, Any]]:
    """The shard's WebDataset samples, appending each manifest row and each unreadable input as it goes."""
    library = _library(task.options, task.library_digest)
    face, face_rel = None, None
    for key, seed, item, copy in task.samples:
        if item.rel != face_rel:  # copies of one input are adjacent: decode it once
            face_rel, face = item.rel, None
            try:
                face = decode_array(read_bytes(task.source_root, item.rel), item.rel)
            except UserError as exc:
                if copy == 0:  # recorded once, by the shard that holds the input's first copy
                    errors.append({"input": item.rel, "reason": str(exc).removeprefix(f"{item.rel}: ")})
        if face is None:
            continue
        row, data = render_sample(face, key, seed, item, copy, task.shard, task.options, library)
        meta = json.dumps(row, separators=(",", ":")).encode()  # row order is fixed by render_sample
        rows.append(row)
        yield {"__key__": key, task.options.fmt: data, "cls": str(item.identity).encode(), "json": meta}


def _complete(task: ShardTask) -> dict[str, Any] | None:
    """The stats of a shard finished by an earlier run, or None if it must be (re)built."""
    try:
        stats = json.loads(task.stats_path.read_text())
    except (OSError, ValueError):
        return None
    ok = task.tar_path.is_file() and task.tar_path.stat().st_size == stats.get("bytes")
    return stats if ok else None


def plan_shards(source: Source, name: str, out: Path, manifest_dir: Path, opts: BuildOptions,
                library_digest: str, picks: Sequence[tuple[Item, int]] | None = None) -> list[ShardTask]:
    """Cut the ordered samples (inputs sorted, copies inner; or the given (item, copy) picks) into shard tasks."""
    picks = picks if picks is not None else [(item, copy) for item in source.items for copy in range(opts.copies)]
    samples = []
    for item, copy in picks:
        key = sample_key(item.rel, copy)
        samples.append((key, sample_seed(opts.seed, key), item, copy))
    n = opts.shard_size
    return [
        ShardTask(i // n, name, out / f"{name}-{i // n:06d}.tar", manifest_dir, source.root, tuple(samples[i:i + n]),
                  opts, library_digest)
        for i in range(0, len(samples), n)
    ]


def _fingerprint(source: Source, library: OccluderLibrary, opts: BuildOptions,
                 picks: Sequence[tuple[Item, int]] | None = None) -> dict[str, Any]:
    """What a resumed build must share with the first run: inputs (and picked samples), occluders, options."""
    listing = "\n".join(f"{it.rel}\t{it.identity_name}" for it in source.items)
    if picks is not None:
        listing += "\npicks:\n" + "\n".join(f"{it.rel}\t{copy}" for it, copy in picks)
    opts_dict = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(opts).items()}
    return {"occgen": __version__, "src": source.spec, "inputs": len(source.items),
            "inputs_sha256": sha256(listing.encode()), "occluders_sha256": library.digest,
            "options": opts_dict}


def _prepare(manifest_dir: Path, out: Path, name: str, fingerprint: dict[str, Any], overwrite: bool) -> None:
    """Refuse to resume a build made with other inputs, occluders or options, unless told to start over."""
    build_json = manifest_dir / "build.json"
    if build_json.is_file() and not overwrite:
        previous = json.loads(build_json.read_text())
        changed = [f"option {k}" for k, v in fingerprint["options"].items() if previous.get("options", {}).get(k) != v]
        changed += [what for key, what in (("inputs_sha256", "input images"), ("occluders_sha256", "occluder images"),
                                           ("occgen", "occgen version")) if previous.get(key) != fingerprint[key]]
        if changed:
            raise UserError(f"{manifest_dir} holds a build of {name} with other {', '.join(changed)}; "
                            "rerun with --overwrite to replace it, or choose another --name")
    if overwrite:
        shutil.rmtree(manifest_dir, ignore_errors=True)
        for old in out.glob(f"{name}-[0-9][0-9][0-9][0-9][0-9][0-9].tar"):
            old.unlink()
    atomic_write(build_json, json_bytes(fingerprint))


def build(source: Source, name: str, out: Path, manifests: Path, opts: BuildOptions, jobs: int,
          overwrite: bool = False, quiet: bool = False,
          picks: Sequence[tuple[Item, int]] | None = None) -> BuildResult:
    """Build (or finish building) dataset ``name``; returns per-shard stats and the run summary.

    ``picks`` (item, copy) replaces the default samples (every input times ``copies``): a pairs set renders
    only the clean and occluded copies its pairs use (occgen.sets.pairs)."""
    if opts.fmt not in FORMATS:
        raise UserError(f"--format {opts.fmt}: choose one of {', '.join(FORMATS)}")
    library = load_library(opts.occluders, opts.categories, opts.exclude)  # fails fast, before any worker starts
    _LIBRARIES[library.digest] = library
    manifest_dir = manifests / name
    _prepare(manifest_dir, out, name, _fingerprint(source, library, opts, picks), overwrite)
    atomic_write(manifest_dir / "errors.parquet" / "listing.parquet",
                 parquet_bytes([{"input": i, "reason": r} for i, r in source.skipped], ERRORS_SCHEMA))
    result = BuildResult(name, manifest_dir)
    result.summary.errors = len(source.skipped)
    tasks = plan_shards(source, name, out, manifest_dir, opts, library.digest, picks)
    done = {t.index: s for t in tasks if (s := _complete(t)) is not None}
    todo = [t for t in tasks if t.index not in done]
    result.summary.skipped = sum(stats["samples"] for stats in done.values())
    fresh = parallel_map(render_shard, todo, jobs, f"build {name}", [len(t.samples) for t in todo], quiet)
    for task, stats in zip(todo, fresh):
        done[task.index] = stats
        result.summary.done += stats["samples"]
        result.summary.errors += stats["errors"]
    result.shards = [done[t.index] for t in tasks]
    atomic_write(manifest_dir / "shards.json", json_bytes({"name": name, "shards": result.shards}))
    return result
