"""The dataset card, ``manifests/NAME/README.md``: what a build is, how it was made, and how to load it.

Written by every build (and ``occgen partial``) from the files beside it (build.json, shards.json, the samples,
labels and pairs), so it never disagrees with them. Its two loading snippets are meant to run as written
(the tests execute them), from the folder the build ran in.
"""

from __future__ import annotations

import csv
import json
import platform
import re
import shlex
from importlib import metadata
from pathlib import Path
from typing import Any

import click
import pandas as pd
from click.core import ParameterSource

from occgen.occlude.occluders import DEFAULT_LIBRARY
from occgen.occlude.sources import KINDS
from occgen.report.stats import compute, read_labels, table, tally
from occgen.writer import atomic_write

PACKAGES = ("occgen-fromnet", "numpy", "pillow", "simplejpeg", "pyarrow", "pandas", "webdataset", "joblib")


#: Options that change no byte of the output, left out of the recorded command so that the card, like every other
#: file of a build, is the same for any worker count and backend.
NOT_RECORDED = ("jobs", "quiet", "backend", "scheduler", "address", "max_errors")


#: How the card words each placement (occgen.occlude.run.PLACEMENTS).
PLACEMENT_WORDS = {
    "anchored": "anchored (each category where it sits on a face, per the library's anchors.csv)",
    "group-upper": "O_LFW-style upper group (occluders kept above the nose line)",
    "group-lower": "O_LFW-style lower group (occluders kept below the nose line)",
    "group-random": "O_LFW-style random group (occluders anywhere on the face)",
    "group-large": "O_LFW-style large group (occluders covering at least half the face)",
    "mask": "face masks warped through six anchor points (MaskTheFace's method)",
}


def command_line() -> str:
    """The running occgen command with every option the user gave (long names) but NOT_RECORDED, from click's
    context: the same whether it was typed, scripted or invoked in-process."""
    ctx = click.get_current_context()
    words = ["occgen", ctx.info_name or ""]
    for param in ctx.command.params:
        if param.name in NOT_RECORDED or ctx.get_parameter_source(param.name) is not ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        if isinstance(param, click.Argument):
            words.append(str(value))
            continue
        flag = max(param.opts, key=len)
        if getattr(param, "is_flag", False):
            words.append(flag if value else (param.secondary_opts or [flag])[0])
        else:
            words += [w for v in (value if param.multiple else (value,)) for w in (flag, str(v))]
    return shlex.join(words)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _catalog(build: dict[str, Any], used: set[str]) -> list[str]:
    """Markdown rows of the occluders the samples use: file, category, source, licence, calibrated size."""
    options = build.get("options", {})
    root = Path(options.get("occluders") or DEFAULT_LIBRARY)
    if options.get("placement") == "mask":
        return [
            f"Mask templates: `{root}` (MaskTheFace layout: masks.cfg with six anchor points per template; "
            "MaskTheFace's own are MIT-licensed, github.com/aqeelanwar/MaskTheFace). Used: "
            + ", ".join(f"`{name}`" for name in sorted(used)),
        ]
    rows: dict[str, dict[str, str]] = {}
    if (root / "catalog.csv").is_file():
        with (root / "catalog.csv").open(newline="") as f:
            rows = {r["file"]: r for r in csv.DictReader(f)}
    shown = "occgen's own library (`occluders/` in the project)" if root == DEFAULT_LIBRARY else f"`{root}`"
    lines = [
        f"Library: {shown}"
        + (
            "; licence texts in its `LICENSES/` and `README.md`"
            if rows
            else " (no catalog.csv: sources and licences unknown; sizes are native pixels)"
        ),
        "",
        "| file | category | source | licence | size at s=1 |",
        "|---|---|---|---|---|",
    ]
    for name in sorted(used):
        r = rows.get(name, {})
        size = f"{r['width']}x{r['height']}" if r.get("width") else "native"
        lines.append(
            f"| `{name}` | {name.split('/')[0]} | {r.get('source', 'unknown')} | "
            f"{r.get('licence', 'unknown')} | {size} |"
        )
    return lines


def render(manifest_dir: Path, command: str) -> str:
    """The card's Markdown text."""
    manifest_dir = Path(manifest_dir)
    build = json.loads((manifest_dir / "build.json").read_text())
    shards = json.loads((manifest_dir / "shards.json").read_text())["shards"]
    samples = tally(manifest_dir)
    labels = read_labels(manifest_dir)
    stats = compute(samples, labels)
    options = build.get("options", {})
    fmt = options.get("fmt", "jpg")
    name = manifest_dir.name
    where = manifest_dir.as_posix()
    has_pairs = (manifest_dir / "pairs.parquet").is_file()
    lines = [
        f"# {name}",
        "",
        f"{stats['samples']:,} face images ({stats['occluded']:,} occluded, {stats['clean']:,} clean) of "
        f"{stats['identities']['count']:,} identities in {len(shards)} WebDataset shard(s), made by occgen "
        f"{build.get('occgen', '?')}.",
        "",
        "## How it was made",
        "",
        "```",
        command,
        "```",
        "",
        f"- source: {_source(build)}, {build.get('inputs', '?'):,} input images "
        f"(listing sha256 `{build.get('inputs_sha256', '?')}`)",
        f"- seed: {options['seed'] if 'seed' in options else 'none (no random choices)'}; every option: `build.json`",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
    ]
    placement = options.get("placement", "random")
    if placement != "random":
        lines.append(
            f"- placement: {PLACEMENT_WORDS.get(placement, placement)}, from each face's five landmarks ("
            + (f"`{options['landmarks']}`" if options.get("landmarks") else "the aligned crop's template")
            + ")"
        )
    if build.get("occluders_sha256"):
        lines.append(f"- occluder images sha256: `{build['occluders_sha256']}`")
    lines += [
        "",
        "## Statistics",
        "",
        "Areas are fractions of the face image (`occgen stats` draws them).",
        "",
        "```",
        table(stats),
        "```",
        "",
    ]
    if samples.visible is not None:
        low, high = samples.visible
        lines += [
            f"Partial faces: the kept rectangle covers {100 * low:.1f}% to {100 * high:.1f}% of "
            "the image (grey 128 elsewhere); geometry in `occgen.sets.partial`.",
            "",
        ]
    if has_pairs:
        pairs = pd.read_parquet(manifest_dir / "pairs.parquet", columns=["protocol", "same", "fold"])
        lines += [
            "## Pairs",
            "",
            "`pairs.parquet`: one row per evaluated pair (keys of this manifest).",
            "",
            "| protocol | pairs | same | folds |",
            "|---|---|---|---|",
        ]
        for protocol, g in pairs.groupby("protocol", sort=False):
            folds = g.loc[g["fold"] >= 0, "fold"].nunique()  # all-pairs sets: -1 marks pairs across folds
            lines.append(f"| {protocol} | {len(g):,} | {int(g['same'].sum()):,} | {folds} |")
        lines.append("")
    if samples.occluders:
        lines += ["## Occluders", "", *_catalog(build, samples.occluders), ""]
    lines += ["## Shards", "", "| shard | samples | bytes | sha256 |", "|---|---|---|---|"]
    lines += [f"| `{s['path']}` | {s['samples']:,} | {s['bytes']:,} | `{s['sha256']}` |" for s in shards]
    lines += [
        "",
        "## Loading",
        "",
        f"From the folder the build ran in (shard paths in `shards.json` are relative to `{where}`):",
        "",
        "```python",
        *webdataset_snippet(where, fmt),
        "```",
        "",
        "```python",
        *pandas_snippet(where, sorted(labels), has_pairs),
        "```",
        "",
        "As a Hugging Face dataset (`pip install 'occgen-fromnet[hf]'`; `push_to_hub` publishes it):",
        "",
        "```python",
        *hf_snippet(where, fmt),
        "```",
        "",
    ]
    return "\n".join(lines)


def _source(build: dict[str, Any]) -> str:
    """What --src was, where it resolved to and in which format: a registered name alone says little."""
    src, path, kind = build.get("src"), build.get("src_path"), build.get("src_kind")
    text = f"`{src}`"
    if path and path != src:
        text += f" = `{path}`"
    return text + (f" ({KINDS[kind]})" if kind in KINDS else "")


def _shard_list(where: str) -> list[str]:
    return [
        "import json",
        "from pathlib import Path",
        "",
        f"manifest = Path({where!r})",
        'shards = [str(manifest / s["path"]) for s in json.loads((manifest / "shards.json").read_text())["shards"]]',
    ]


def webdataset_snippet(where: str, fmt: str) -> list[str]:
    return [
        "import webdataset as wds",
        *_shard_list(where),
        f'dataset = wds.WebDataset(shards, shardshuffle=False).decode("rgb8").to_tuple({fmt!r}, "cls", "json")',
        "image, identity, meta = next(iter(dataset))  # HxWx3 uint8, int, the sample's manifest row",
        'print(image.shape, identity, meta["key"], meta["src"])',
    ]


def hf_snippet(where: str, fmt: str) -> list[str]:
    return [
        "from datasets import load_dataset",
        *_shard_list(where),
        'faces = load_dataset("webdataset", data_files={"train": shards}, split="train")',
        f"row = faces[0]  # {fmt!r}: PIL image, 'cls': identity, 'json': the sample's manifest row, '__key__'",
        f'print(len(faces), row[{fmt!r}].size, row["cls"], row["json"]["key"])',
    ]


def pandas_snippet(where: str, label_names: list[str], has_pairs: bool) -> list[str]:
    lines = [
        "import pandas as pd",
        "",
        f"samples = pd.read_parquet({where + '/samples.parquet'!r})  # one row per sample",
        'print(samples.groupby("scale")[["box_area_ratio", "pixel_area_ratio"]].mean())',
    ]
    if label_names:
        lines += [
            f"labels = pd.read_parquet({where + '/labels-' + label_names[0] + '.parquet'!r})",
            'samples = samples.merge(labels, on="key")  # adds pattern, iou, reg_x0..reg_y1',
        ]
    if has_pairs:
        lines += [
            f"pairs = pd.read_parquet({where + '/pairs.parquet'!r})  # pair, fold, same, key1, key2, ...",
            'print(pairs.groupby("protocol")["same"].agg(["size", "sum"]))',
        ]
    return lines


def write_card(manifest_dir: Path, command: str) -> Path:
    path = Path(manifest_dir) / "README.md"
    atomic_write(path, render(manifest_dir, command).encode())
    return path


def refresh_card(manifest_dir: Path) -> Path | None:
    """Rewrite an existing card (after `occgen label` added labels), keeping the command it records."""
    path = Path(manifest_dir) / "README.md"
    if not path.is_file() or not (Path(manifest_dir) / "build.json").is_file():
        return None
    found = re.search(r"## How it was made\n\n```\n(.*?)\n```", path.read_text())
    return write_card(manifest_dir, found.group(1)) if found else None
