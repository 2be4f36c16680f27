"""``occgen verify``: re-read a build's shards and check them against its manifest; rebuild the bad ones.

A shard is checked against ``shards.json`` (its bytes and sha256) and against its manifest part (one sample per
row, members ``KEY.cls``, ``KEY.FORMAT``, ``KEY.json`` in row order, each image's sha256 and each sample's
identity). Repair renders exactly the bad shards again from the inputs and options recorded in ``build.json``;
builds are deterministic, so a repaired shard is byte-identical to the original.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from occgen.errors import UserError
from occgen.occlude.face import read_table
from occgen.occlude.run import LOCK, BuildOptions, Plan, load_occluders, render_shard
from occgen.occlude.run import fingerprint as build_fingerprint
from occgen.occlude.sources import Source, open_path, open_source
from occgen.runner import parallel_map
from occgen.sets.split import select_identities
from occgen.writer import exclusive, member_bytes, shard_paths, writable_shard_folder

#: What can be wrong with a shard, worst first.
PROBLEMS = ("missing", "truncated", "altered")


@dataclass(frozen=True)
class ShardCheck:
    shard: str
    samples: int  # samples the manifest records for it
    problem: str | None = None  # one of PROBLEMS; None: the shard is intact
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.problem is None

    def line(self) -> str:
        return f"{self.shard}: {'ok' if self.ok else self.problem}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class _Task:
    manifest_dir: Path
    stats: dict[str, Any]
    fmt: str
    tar_path: Path  # checked by shard_paths


def read_index(manifest_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(build.json, shards.json's shard list) of a finished build."""
    try:
        fingerprint = json.loads((manifest_dir / "build.json").read_text())
    except (OSError, ValueError):
        raise UserError(
            f"{manifest_dir}: no readable build.json; give a folder made by `occgen build` (manifests/NAME)"
        ) from None
    try:
        shards = json.loads((manifest_dir / "shards.json").read_text())["shards"]
    except (OSError, ValueError, KeyError):
        raise UserError(
            f"{manifest_dir}: no readable shards.json, so the build has not finished; run the same "
            "`occgen build` command again to finish it"
        ) from None
    return fingerprint, shards


def check_shard(task: _Task) -> ShardCheck:
    """Worker: check one shard's tar against shards.json and its manifest part."""
    stats, shard = task.stats, task.stats["shard"]
    part = task.manifest_dir / "samples.parquet" / f"{shard}.parquet"
    try:
        rows = pq.read_table(part, columns=["key", "identity", "sha256"]).to_pylist()
    except (OSError, ValueError) as exc:
        return ShardCheck(shard, stats["samples"], "missing", f"manifest part {part.name} unreadable: {exc}")
    if len(rows) != stats["samples"]:
        return ShardCheck(
            shard,
            stats["samples"],
            "altered",
            f"manifest part has {len(rows)} rows, shards.json says {stats['samples']} samples",
        )
    tar_path = task.tar_path
    try:
        data = tar_path.read_bytes()
    except OSError as exc:
        return ShardCheck(shard, len(rows), "missing", f"{tar_path}: {exc.strerror}")
    if len(data) < stats["bytes"]:
        return ShardCheck(shard, len(rows), "truncated", f"{len(data)} of {stats['bytes']} bytes")
    problem = _members_problem(data, rows, task.fmt)  # the size is whole here: anything wrong is an alteration
    if problem:
        return ShardCheck(shard, len(rows), "altered", problem)
    if len(data) != stats["bytes"] or hashlib.sha256(data).hexdigest() != stats["sha256"]:
        return ShardCheck(shard, len(rows), "altered", "bytes differ from the sha256 in shards.json")
    return ShardCheck(shard, len(rows))


def _members_problem(data: bytes, rows: list[dict[str, Any]], fmt: str) -> str | None:
    """What is wrong with the tar's members compared with the manifest rows, or None."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            members = [(m.name, member_bytes(tar, m)) for m in tar if m.isfile()]
    except (tarfile.TarError, EOFError, OSError) as exc:
        return f"not a readable tar ({exc})"
    expected = [(r, ext) for r in rows for ext in sorted(("cls", "json", fmt))]
    if len(members) != len(expected):
        return f"{len(members)} members, the manifest needs {len(expected)}"
    for (name, payload), (row, ext) in zip(members, expected):
        if name != f"{row['key']}.{ext}":
            return f"member {name!r} where the manifest needs {row['key']}.{ext}"
        if ext == fmt and hashlib.sha256(payload).hexdigest() != row["sha256"]:
            return f"image {name} differs from its sha256 in the manifest"
        if ext == "cls" and payload != str(row["identity"]).encode():
            return f"{name} holds {payload[:20]!r}, the manifest says identity {row['identity']}"
    return None


def verify(manifest_dir: Path, jobs: int = 1, quiet: bool = True) -> list[ShardCheck]:
    """Check every shard of the build in ``manifest_dir``; one result per shard, in shard order."""
    fingerprint, shards = read_index(manifest_dir)
    fmt = fingerprint["options"]["fmt"]
    tasks = [_Task(manifest_dir, stats, fmt, p) for stats, p in zip(shards, shard_paths(manifest_dir, shards))]
    return list(
        parallel_map(check_shard, tasks, jobs, f"verify {manifest_dir.name}", [s["samples"] for s in shards], quiet)
    )


def _reopen(fingerprint: dict[str, Any]) -> Source:
    """The build's source, from where build.json says it was."""
    if fingerprint["src"] == "demo":
        return open_source("demo")
    src_path, root = fingerprint.get("src_path"), fingerprint.get("root")
    if not src_path or not Path(src_path).exists():
        raise UserError(
            f"cannot repair: the build's inputs ({src_path or fingerprint['src']}) are not there; "
            "rebuild with `occgen build ... --overwrite`"
        )
    source = open_path(Path(src_path), Path(root) if root else None, fingerprint["src"])
    return select_identities(source, fingerprint["identities"]) if fingerprint.get("identities") else source


def repair(
    manifest_dir: Path, bad: list[ShardCheck], jobs: int = 1, quiet: bool = True, out: Path | None = None
) -> list[ShardCheck]:
    """Render the ``bad`` shards again, byte-identical to the originals; returns their checks afterwards.

    Refuses when the inputs or occluders differ from those recorded in build.json (the shards would differ), and
    writes only shard-named tars into the dataset's own shard folder (``out`` where that lies elsewhere).
    """
    name = manifest_dir.name
    with exclusive(manifest_dir / LOCK, f"a build of {name} is running on {manifest_dir}; wait for it to end"):
        fingerprint, shards = read_index(manifest_dir)
        paths = shard_paths(manifest_dir, shards)
        out = writable_shard_folder(manifest_dir, paths, out)
        if fingerprint["options"].get("kind") == "partial" or (manifest_dir / "pairs.parquet").exists():
            raise UserError(
                f"--repair rebuilds sets made by `occgen build` without --pairs; {name} is a pairs or "
                "partial set: run the command that made it again with --overwrite"
            )
        options: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in fingerprint["options"].items()}
        opts = BuildOptions(**options)
        library = load_occluders(replace(opts, occluders=fingerprint.get("occluders_path") or opts.occluders))
        landmarks = read_table(opts.landmarks) if opts.landmarks else None
        source = _reopen(fingerprint)
        now = build_fingerprint(source, library, opts, landmarks=landmarks)
        changed = [
            what
            for key, what in (
                ("inputs_sha256", "input images"),
                ("occluders_sha256", "occluder images"),
                ("landmarks_sha256", "landmarks"),
            )
            if now[key] != fingerprint.get(key)
        ]
        if changed:
            raise UserError(
                f"cannot repair {name}: its {' and '.join(changed)} changed since it was built, so "
                "rebuilt shards would differ; rebuild it with `occgen build ... --overwrite`"
            )
        by_name = {s["shard"]: (s, p) for s, p in zip(shards, paths)}
        plan = Plan(source, name, out, manifest_dir, opts, library, landmarks=landmarks)
        wanted = {c.shard for c in bad}
        plan = plan.only([i for i in plan.shards if plan.place(i).shard in wanted])
        places = [plan.place(i) for i in plan.shards]
        for place in places:
            place.stats_path.unlink(missing_ok=True)
        with contextlib.closing(
            parallel_map(render_shard, plan, jobs, f"repair {name}", plan.sizes(), quiet)
        ) as rebuilt:
            for _ in rebuilt:
                pass
        fmt = opts.fmt
        return [check_shard(_Task(manifest_dir, by_name[p.shard][0], fmt, by_name[p.shard][1])) for p in places]
