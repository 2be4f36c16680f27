"""Manifests read part by part (occgen.manifest): key order across parts, row groups as one write makes them, and
stats, labels, the card and preview giving the same bytes however few rows are held at once, and the same as the
whole-table computations they replace."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import shared
from test_label_cli import sample_frame, write_manifest
from test_report import built  # noqa: F401  (lfw-mini, 2,880 samples in 3 shards, labelled for K=5)

from occgen import manifest as parts
from occgen.cli import main
from occgen.label.labels import Samples, label_table, open_manifest, write_labels
from occgen.occlude.run import Plan
from occgen.occlude.sources import from_tree


def run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("rows", [1, 7, 100, 10_000])
def test_key_order_across_parts_whatever_the_run_size(tmp_path, rows):
    rng = np.random.default_rng(rows)
    keys = [f"{rng.integers(0, 10**6)}-{i}" for i in range(900)]
    frame = pd.DataFrame({"key": keys, "v": np.arange(900)})
    dataset = parts.open_samples(write_manifest(tmp_path / "m", frame, shards=6))
    runs = list(parts.in_key_order(dataset, ["v"], rows=rows))
    got = pa.concat_tables(runs)
    assert got["key"].to_pylist() == sorted(keys)
    assert got["v"].to_pylist() == frame.set_index("key").loc[sorted(keys), "v"].tolist()
    if rows < 900:
        assert len(runs) > 1 and max(r.num_rows for r in runs) < 900


@pytest.mark.parametrize("n", [0, 1, 299, 300, 301, 1000])
def test_sorted_writer_gives_the_bytes_of_one_write(tmp_path, monkeypatch, n):
    monkeypatch.setattr(parts, "ROW_GROUP", 300)
    table = pa.table({"key": [f"k{i:05d}" for i in range(n)], "x": np.arange(n, dtype=np.float64)})
    table = table.replace_schema_metadata({"what": "test"})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", row_group_size=300)
    with parts.sorted_writer(tmp_path / "out.parquet", table.schema) as write:
        for start in range(0, n, 77):
            write(table.slice(start, 77))
    assert (tmp_path / "out.parquet").read_bytes() == buf.getvalue()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_labels_in_runs_are_the_whole_table_written_at_once(tmp_path, monkeypatch):
    frame = sample_frame(700)
    manifest = write_manifest(tmp_path / "m", frame, shards=5)
    checked = open_manifest(manifest)
    whole = frame.sort_values("key", ignore_index=True)
    boxes = whole[["box_x0", "box_y0", "box_x1", "box_y1"]].to_numpy(dtype=float, na_value=np.nan)
    samples = Samples(
        pa.array(whole["key"], pa.string()), whole["occluded"].to_numpy(), boxes, checked.height, checked.width
    )
    buf = io.BytesIO()
    pq.write_table(label_table(samples, 4), buf, compression="zstd")  # the way labels were written before
    monkeypatch.setattr(parts, "RUN_ROWS", 50)
    written = write_labels(manifest, 4)
    assert written.path.read_bytes() == buf.getvalue()


def outputs(manifest: Path, out: Path) -> dict[str, bytes]:
    run("label", "--K", "3", str(manifest))
    run("stats", str(manifest), "--out", str(out / "stats"))
    run("preview", str(manifest), "--out", str(out / "preview"), "-n", "4", "--grid", "5", "--boxes")
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    for name in ("labels-k3.parquet", "labels-k5.parquet", "README.md"):
        files[name] = (manifest / name).read_bytes()
    return files


def test_stats_card_labels_and_preview_do_not_depend_on_the_rows_held(built, tmp_path, monkeypatch):  # noqa: F811
    built = built / "manifests" / "mini"
    whole = outputs(built, tmp_path / "whole")  # one run: every key at once
    monkeypatch.setattr(parts, "RUN_ROWS", 100)
    monkeypatch.setattr(parts, "BATCH_ROWS", 64)
    small = outputs(built, tmp_path / "small")
    assert small.keys() == whole.keys() and len(whole) == 12
    assert [name for name in whole if small[name] != whole[name]] == []


def test_stats_equal_those_of_the_whole_table(built, tmp_path):  # noqa: F811
    """The figures of stats.json against pandas over the whole manifest (what `occgen stats` computed before)."""
    built = built / "manifests" / "mini"
    run("stats", str(built), "--out", str(tmp_path))
    stats = json.loads((tmp_path / "stats.json").read_text())
    samples = pd.read_parquet(built / "samples.parquet").sort_values("key", ignore_index=True)
    occluded = samples[samples["occluded"]]

    def areas(rows: pd.DataFrame) -> dict:
        out = {"samples": len(rows)}
        for col, short in (("box_area_ratio", "box"), ("pixel_area_ratio", "pixel")):
            values = rows[col].to_numpy(dtype=np.float64)
            out[f"{short}_mean"], out[f"{short}_median"] = float(values.mean()), float(np.median(values))
        return out

    assert stats["scales"] == [{"scale": float(s), **areas(g)} for s, g in occluded.groupby("scale")]
    assert stats["all_occluded"] == areas(occluded)
    assert stats["categories"] == occluded.groupby("occluder_category").size().to_dict()
    assert stats["shards"] == samples.groupby("shard").size().to_dict()
    per_identity = samples.groupby("identity").size().to_numpy()
    assert stats["identities"]["samples_median"] == float(np.median(per_identity))
    labels = pd.read_parquet(built / "labels-k5.parquet")
    hit = labels[labels["key"].isin(set(occluded["key"])) & (labels["pattern"] > 0)]
    assert stats["labels"]["k5"]["mean_iou_occluded"] == float(hit["iou"].mean())
    assert stats["labels"]["k5"]["patterns_used"] == hit["pattern"].nunique()
    uniq, counts = np.unique(labels["pattern"], return_counts=True)
    assert stats["labels"]["k5"]["histogram"] == {"value": uniq.tolist(), "count": counts.tolist()}


@pytest.mark.parametrize("copies,size", [(1, 7), (3, 5), (5, 11), (4, 4)])
def test_plan_cuts_inputs_times_copies_into_shards_in_order(copies, size):
    from occgen.occlude.occluders import load_library
    from occgen.occlude.plan import sample_key, sample_seed
    from occgen.occlude.run import BuildOptions

    source = from_tree(shared("lfw-mini/aligned-112x96"))
    opts = BuildOptions(scales=(1.0,), copies=copies, shard_size=size, seed=3)
    plan = Plan(source, "x", Path("out"), Path("m"), opts, load_library())
    expected = [(it, c) for it in source.items for c in range(copies)]
    assert len(plan) == -(-len(expected) // size) and sum(plan.sizes()) == len(expected)
    got = [s for task in plan for s in task.samples()]
    assert [(it, c) for _, _, it, c in got] == expected
    assert all(key == sample_key(it.rel, c) and seed == sample_seed(3, key) for key, seed, it, c in got)
    assert [t.size for t in plan] == plan.sizes() and [t.index for t in plan.only([2, 0])] == [2, 0]
    picked = Plan(source, "x", Path("out"), Path("m"), opts, load_library(), expected[::-1])
    assert [(it, c) for t in picked for _, _, it, c in t.samples()] == expected[::-1]
