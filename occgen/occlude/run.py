"""``occgen build``: the source's images, times copies, through Algorithm 1 into WebDataset shards.

Samples are laid out in a fixed order (sorted inputs, copies inner) and cut into shards of ``shard_size``;
each shard is one task for a worker process, which renders its samples and writes the shard's tar, its manifest
part, its errors part and finally its stats file (the completion mark). Every file is written under a temporary
name and renamed, so a build killed at any moment (SIGKILL included) leaves only whole files and temporaries; a
rerun removes the temporaries, skips shards whose stats file and parts are present and rebuilds the rest. A lock
on the manifest folder keeps two runs of one build apart. Results come back in shard order, so outputs are
identical for any -j and any backend.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from occgen import __version__
from occgen.errors import UserError
from occgen.images import FORMATS, decode_array, encode, resize
from occgen.occlude.occluders import OccluderLibrary, load_library
from occgen.occlude.plan import draw, sample_key, sample_seed
from occgen.occlude.render import Compat, occlude, scaled_size
from occgen.occlude.sources import Item, Source, read_bytes
from occgen.runner import Backend, Summary, parallel_map
from occgen.sets.regions import fit_region
from occgen.writer import (
    ERRORS_SCHEMA,
    SAMPLES_SCHEMA,
    ShardPlace,
    atomic_write,
    exclusive,
    json_bytes,
    parquet_bytes,
    remove_temporaries,
    sha256,
    write_shard,
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
    size: tuple[int, int] | None = None  # (height, width) of every face; None: the first readable input's
    strict_size: bool = False  # refuse inputs of another size instead of resizing them


@dataclass(frozen=True)
class ShardTask(ShardPlace):
    source_root: Path | None
    picks: tuple[tuple[Item, range], ...]  # its inputs, in order, each with the copies of it the shard holds
    options: BuildOptions
    library_digest: str  # which occluder library the workers must use (OccluderLibrary.digest)
    library_root: Path  # its folder, absolute: workers of a cluster may run in another working directory

    @property
    def size(self) -> int:
        return sum(len(copies) for _, copies in self.picks)

    def samples(self) -> Iterator[tuple[str, int, Item, int]]:
        """(key, seed, input, copy) of each sample, made where the shard is rendered."""
        for item, copies in self.picks:
            for copy in copies:
                key = sample_key(item.rel, copy)
                yield key, sample_seed(self.options.seed, key), item, copy


class Plan(Sequence[ShardTask]):
    """The shard tasks of a build, each made with its inputs only when it is asked for (and dropped after), so the
    process that drives a build never lists it sample by sample: samples are the inputs in order times ``copies``
    (copies inner), or the given (input, copy) picks, cut into shards of ``shard_size``."""

    def __init__(
        self,
        source: Source,
        name: str,
        out: Path,
        manifest_dir: Path,
        opts: BuildOptions,
        library: OccluderLibrary,
        picks: Sequence[tuple[Item, int]] | None = None,
        shards: Sequence[int] | None = None,
    ):
        self.source, self.name, self.opts, self.library, self.picks = source, name, opts, library, picks
        self.out, self.manifest_dir = out, manifest_dir
        self.total = len(picks) if picks is not None else len(source.items) * opts.copies
        self.shards = shards if shards is not None else range(-(-self.total // opts.shard_size))

    def __len__(self) -> int:
        return len(self.shards)

    def place(self, index: int) -> ShardPlace:
        """Where shard ``index`` goes, in absolute paths: workers of a cluster may run in another working directory."""
        tar = self.out.absolute() / f"{self.name}-{index:06d}.tar"
        return ShardPlace(index, self.name, tar, self.manifest_dir.absolute())

    def __getitem__(self, i: int) -> ShardTask:  # type: ignore[override]
        place = self.place(self.shards[i])
        first = place.index * self.opts.shard_size
        return ShardTask(
            place.index,
            place.name,
            place.tar_path,
            place.manifest_dir,
            self.source.root and self.source.root.absolute(),
            self._runs(first, min(first + self.opts.shard_size, self.total)),
            self.opts,
            self.library.digest,
            self.library.root.absolute(),
        )

    def sizes(self) -> list[int]:
        """Samples per shard, without making the tasks."""
        n = self.opts.shard_size
        return [min(n, self.total - i * n) for i in self.shards]

    def only(self, shards: Sequence[int]) -> Plan:
        """The plan of these shard indices alone, in this order."""
        return Plan(self.source, self.name, self.out, self.manifest_dir, self.opts, self.library, self.picks, shards)

    def _runs(self, start: int, stop: int) -> tuple[tuple[Item, range], ...]:
        """Samples start..stop-1 as (input, copies) runs."""
        runs: list[tuple[Item, range]] = []
        if self.picks is None:
            copies, j = self.opts.copies, start
            while j < stop:
                first = j % copies
                last = min(copies, first + stop - j)
                runs.append((self.source.items[j // copies], range(first, last)))
                j += last - first
            return tuple(runs)
        for item, copy in self.picks[start:stop]:
            if runs and runs[-1][0] is item and runs[-1][1].stop == copy:
                runs[-1] = (item, range(runs[-1][1].start, copy + 1))
            else:
                runs.append((item, range(copy, copy + 1)))
        return tuple(runs)


@dataclass
class BuildResult:
    name: str
    manifest_dir: Path
    shards: list[dict[str, Any]] = field(default_factory=list)
    summary: Summary = field(default_factory=lambda: Summary("build"))  # this run's counts
    inputs: int = 0  # input files listed, usable or not
    errors: int = 0  # inputs not used, over the whole build (all runs)
    warnings: int = 0  # inputs used after a fix (resized), over the whole build


#: The lock file in a manifest folder, held by the run that writes it.
LOCK = ".lock"

#: Occluder libraries a process has loaded, by digest: each worker loads a library once, and a library whose
#: files changed between two builds in one process is loaded anew.
_LIBRARIES: dict[str, OccluderLibrary] = {}


def _library(task: ShardTask) -> OccluderLibrary:
    digest = task.library_digest
    if digest not in _LIBRARIES:
        library = load_library(task.library_root, task.options.categories, task.options.exclude)
        if library.digest != digest:
            raise UserError(f"the occluder library {library.root} changed while the build was running; run it again")
        _LIBRARIES[digest] = library
    return _LIBRARIES[digest]


def occlude_sample(
    face: np.ndarray, seed: int, opts: BuildOptions, lib: OccluderLibrary, clean: bool = False
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
            scale=choice.scale,
            occluder=occ.name,
            occluder_category=occ.category,
            center_x=center[0],
            center_y=center[1],
            raw_x0=result.raw_box.x0,
            raw_y0=result.raw_box.y0,
            raw_x1=result.raw_box.x1,
            raw_y1=result.raw_box.y1,
            box_x0=result.box.x0,
            box_y0=result.box.y0,
            box_x1=result.box.x1,
            box_y1=result.box.y1,
            box_area_ratio=result.box.area / (W * H),
            pixel_area_ratio=result.pixel_area / (W * H),
        )
    return face, row


def render_sample(
    face: np.ndarray, key: str, seed: int, item: Item, copy: int, shard: str, opts: BuildOptions, lib: OccluderLibrary
) -> tuple[dict[str, Any], bytes]:
    """One sample: draw its choices, run Algorithm 1, encode. Returns its manifest row and image bytes."""
    H, W = face.shape[:2]
    face, geometry = occlude_sample(face, seed, opts, lib, clean=copy < opts.clean_copies)
    row: dict[str, Any] = {
        "key": key,
        "shard": shard,
        "identity": item.identity,
        "identity_name": item.identity_name,
        "src": item.rel,
        "copy": copy,
        "occluded": geometry.pop("occluded"),
        "seed": seed,
        "width": W,
        "height": H,
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
    return write_shard(task, _render_samples(task, rows, errors), rows, errors, SAMPLES_SCHEMA)


def _load_face(task: ShardTask, item: Item) -> tuple[np.ndarray | None, str | None]:
    """Decode one input and bring it to the build's face size: (face or None, what to record or None)."""
    try:
        face = decode_array(read_bytes(task.source_root, item.rel), item.rel)
    except UserError as exc:
        return None, str(exc).removeprefix(f"{item.rel}: ")
    want, got = task.options.size, face.shape[:2]
    if want is None or got == want:
        return face, None
    if task.options.strict_size:
        return None, f"is {got[0]}x{got[1]}, not {want[0]}x{want[1]} like the other inputs (--strict-size)"
    return resize(face, want), f"resized from {got[0]}x{got[1]} to {want[0]}x{want[1]}"


def _render_samples(
    task: ShardTask, rows: list[dict[str, Any]], errors: list[dict[str, str]]
) -> Iterator[dict[str, Any]]:
    """The shard's WebDataset samples, appending each manifest row and each unusable or fixed input as it goes."""
    library = _library(task)
    face, face_rel = None, None
    for key, seed, item, copy in task.samples():
        if item.rel != face_rel:  # copies of one input are adjacent: decode it once
            face_rel = item.rel
            face, note = _load_face(task, item)
            if note and copy == 0:  # recorded once, by the shard that holds the input's first copy
                errors.append({"input": item.rel, "reason": note, "kind": "error" if face is None else "warning"})
        if face is None:
            continue
        row, data = render_sample(face, key, seed, item, copy, task.shard, task.options, library)
        meta = json.dumps(row, separators=(",", ":")).encode()  # row order is fixed by render_sample
        rows.append(row)
        yield {"__key__": key, task.options.fmt: data, "cls": str(item.identity).encode(), "json": meta}


def _complete(task: ShardPlace) -> dict[str, Any] | None:
    """The stats of a shard finished by an earlier run, or None if it must be (re)built."""
    try:
        stats = json.loads(task.stats_path.read_text())
    except (OSError, ValueError):
        return None
    parts = [task.manifest_dir / table / f"{task.shard}.parquet" for table in ("samples.parquet", "errors.parquet")]
    ok = (
        task.tar_path.is_file()
        and task.tar_path.stat().st_size == stats.get("bytes")
        and all(p.is_file() for p in parts)
    )
    return stats if ok else None


def fingerprint(
    source: Source, library: OccluderLibrary, opts: BuildOptions, picks: Sequence[tuple[Item, int]] | None = None
) -> dict[str, Any]:
    """What a resumed build must share with the first run: inputs (and picked samples), occluders, options."""
    listing = hashlib.sha256()  # of the lines "rel<TAB>identity", joined by newlines, input by input
    for n, it in enumerate(source.items):
        listing.update(f"{chr(10) if n else ''}{it.rel}\t{it.identity_name}".encode())
    if picks is not None:
        listing.update(("\npicks:\n" + "\n".join(f"{it.rel}\t{copy}" for it, copy in picks)).encode())
    opts_dict = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(opts).items()}
    return {
        "occgen": __version__,
        "src": source.spec,
        "inputs": len(source.items),
        "inputs_sha256": listing.hexdigest(),
        "occluders_sha256": library.digest,
        "options": opts_dict,
        "src_path": str(source.path) if source.path else None,  # where `occgen verify
        "root": str(source.root.absolute()) if source.root else None,  # --repair` reads the inputs again
        "occluders_path": str(library.root.absolute()),
    }


def _prepare(manifest_dir: Path, out: Path, name: str, fingerprint: dict[str, Any], overwrite: bool) -> None:
    """Refuse to resume a build made with other inputs, occluders or options, unless told to start over."""
    build_json = manifest_dir / "build.json"
    if build_json.is_file() and not overwrite:
        previous = json.loads(build_json.read_text())
        changed = [f"option {k}" for k, v in fingerprint["options"].items() if previous.get("options", {}).get(k) != v]
        changed += [
            what
            for key, what in (
                ("inputs_sha256", "input images"),
                ("occluders_sha256", "occluder images"),
                ("occgen", "occgen version"),
            )
            if previous.get(key) != fingerprint[key]
        ]
        if changed:
            raise UserError(
                f"{manifest_dir} holds a build of {name} with other {', '.join(changed)}; "
                "rerun with --overwrite to replace it, or choose another --name"
            )
    if overwrite and manifest_dir.is_dir():
        for old in manifest_dir.iterdir():
            if old.name != LOCK:
                shutil.rmtree(old) if old.is_dir() else old.unlink()
        for old in out.glob(shard_files(name)):
            old.unlink()
    atomic_write(build_json, json_bytes(fingerprint))


def first_size(source: Source) -> tuple[int, int] | None:
    """(height, width) of the first input, in build order, that decodes: the size every face is brought to."""
    for item in source.items:
        try:
            return decode_array(read_bytes(source.root, item.rel), item.rel).shape[:2]
        except UserError:
            continue
    return None


def shard_files(name: str) -> str:
    """The glob pattern of a build's tars in ``out``."""
    return f"{glob.escape(name)}-[0-9][0-9][0-9][0-9][0-9][0-9].tar"


def build(
    source: Source,
    name: str,
    out: Path,
    manifests: Path,
    opts: BuildOptions,
    jobs: int,
    overwrite: bool = False,
    quiet: bool = False,
    picks: Sequence[tuple[Item, int]] | None = None,
    backend: Backend = Backend(),
) -> BuildResult:
    """Build (or finish building) dataset ``name``; returns per-shard stats and the run summary.

    ``picks`` (item, copy) replaces the default samples (every input times ``copies``): a pairs set renders
    only the clean and occluded copies its pairs use (occgen.sets.pairs)."""
    if opts.fmt not in FORMATS:
        raise UserError(f"--format {opts.fmt}: choose one of {', '.join(FORMATS)}")
    backend.check()
    library = load_library(opts.occluders, opts.categories, opts.exclude)  # fails fast, before any worker starts
    _LIBRARIES[library.digest] = library
    if opts.size is None:
        opts = replace(opts, size=first_size(source))
    manifest_dir = manifests / name
    with exclusive(manifest_dir / LOCK, f"another run of the build {name} is using {manifest_dir}; wait for it to end"):
        _remove_temporaries(manifest_dir, out, name)  # left by a run that was killed
        _prepare(manifest_dir, out, name, fingerprint(source, library, opts, picks), overwrite)
        try:
            return _run(Plan(source, name, out, manifest_dir, opts, library, picks), jobs, quiet, backend)
        finally:
            _remove_temporaries(manifest_dir, out, name)  # left by workers stopped mid-write (Ctrl-C, an error)


def _remove_temporaries(manifest_dir: Path, out: Path, name: str) -> None:
    remove_temporaries(manifest_dir, "**/.*.tmp-*")
    remove_temporaries(out, f".{shard_files(name)}.tmp-*")


def _run(plan: Plan, jobs: int, quiet: bool, backend: Backend) -> BuildResult:
    source, name, manifest_dir = plan.source, plan.name, plan.manifest_dir
    atomic_write(
        manifest_dir / "errors.parquet" / "listing.parquet",
        parquet_bytes([{"input": i, "reason": r, "kind": "error"} for i, r in source.skipped], ERRORS_SCHEMA),
    )
    result = BuildResult(name, manifest_dir, inputs=len(source.items) + len(source.skipped))
    result.summary.errors = len(source.skipped)
    done = {i: stats for i in plan.shards if (stats := _complete(plan.place(i))) is not None}
    todo = plan.only([i for i in plan.shards if i not in done])
    result.summary.skipped = sum(stats["samples"] for stats in done.values())
    fresh = parallel_map(render_shard, todo, jobs, f"build {name}", todo.sizes(), quiet, backend)
    with contextlib.closing(fresh):  # stops the workers however the loop ends
        for index, stats in zip(todo.shards, fresh):
            done[index] = stats
            result.summary.done += stats["samples"]
            result.summary.errors += stats["errors"]
            result.summary.warnings += stats.get("warnings", 0)
    result.shards = [done[i] for i in plan.shards]
    result.errors = len(source.skipped) + sum(s["errors"] for s in result.shards)
    result.warnings = sum(s.get("warnings", 0) for s in result.shards)
    atomic_write(manifest_dir / "shards.json", json_bytes({"name": name, "shards": result.shards}))
    return result
