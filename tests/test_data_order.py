"""Data order on identity-ordered shards (occgen's own, and tars another tool wrote): batches as well mixed as a full
permutation, and training losses as good as a plain loop that draws a full permutation each epoch."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from conftest import shared

from fromnet.cli import main as fromnet_main
from fromnet.shards import iter_ordered, read_manifest
from fromnet.train.bench import permutation_loop
from fromnet.train.data import Source, StreamPlan, TrainStream
from fromnet.train.order import expected_identities_per_batch
from fromnet.train.params import TrainConfig, read_toml
from occgen.cli import main as occgen_main
from occgen.errors import UserError

PEOPLE, IMAGES = 48, 8  # 384 real LFW faces, 48 identities


@pytest.fixture(scope="module")
def lfw(tmp_path_factory) -> Path:
    """384 LFW faces (48 people x 8) as occgen builds them: clean, in identity order, 6 shards of 64."""
    source = shared("lfw-112x96")
    root = tmp_path_factory.mktemp("order")
    people = [p for p in sorted(source.iterdir()) if p.is_dir() and len(list(p.glob("*.jpg"))) >= IMAGES][:PEOPLE]
    for person in people:
        (root / "src" / person.name).mkdir(parents=True)
        for image in sorted(person.glob("*.jpg"))[:IMAGES]:
            (root / "src" / person.name / image.name).symlink_to(image)
    args = ["build", "--src", str(root / "src"), "--clean-ratio", "1", "--shard-size", "64", "-q", "-j", "1"]
    result = CliRunner().invoke(
        occgen_main, [*args, "--out", str(root / "shards"), "--manifests", str(root / "m"), "--name", "lfw"]
    )
    assert result.exit_code == 0, result.output
    return root / "m" / "lfw"


def foreign_copy(manifest: Path, out: Path) -> Path:
    """The same samples written in identity order by another tool: Python's tarfile (pax headers, a folder per
    identity), 3 shards, with the shards.json and samples.parquet a manifest needs."""
    samples = sorted(iter_ordered(read_manifest(manifest)), key=lambda s: (int(s["cls"]), s["__key__"]))
    shards, rows = [], []
    for i in range(3):
        name = f"foreign-{i:06d}"
        part = samples[i * len(samples) // 3 : (i + 1) * len(samples) // 3]
        with tarfile.open(out / f"{name}.tar", "w", format=tarfile.PAX_FORMAT) as tar:
            for s in part:
                key = f"id{int(s['cls']):04d}/{s['__key__']}"
                for ext in ("cls", "jpg"):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(s[ext])
                    tar.addfile(info, io.BytesIO(s[ext]))
                rows.append({"key": key, "shard": name, "identity": int(s["cls"]), "height": 112, "width": 96})
        shards.append({"shard": name, "path": f"{name}.tar", "samples": len(part)})
    (out / "shards.json").write_text(json.dumps({"name": "foreign", "shards": shards}))
    pq.write_table(pa.Table.from_pylist(rows), out / "samples.parquet")
    return out


def trained_identities(manifest: Path, batch: int, epochs: int, workers: int) -> tuple[list[int], np.ndarray]:
    """Distinct identities of each batch the loader really serves, and the identity of every sample in the mix."""
    m = read_manifest(manifest)
    plan = StreamPlan((Source(m),), batch, 2, 0, (112, 96), flip=False)
    stream = TrainStream(plan, [0, 1], 0, epochs * plan.steps_per_epoch)
    micro = list(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers))
    per_step = [torch.cat([a["label"], b["label"]]) for a, b in zip(micro[::2], micro[1::2])]
    labels = np.array([int(s["cls"]) for s in iter_ordered(m)])
    return [len(set(x.tolist())) for x in per_step], labels


@pytest.mark.parametrize("written_by", ["occgen", "tarfile"])
def test_batches_hold_as_many_identities_as_a_full_permutation(lfw, tmp_path, written_by):
    manifest = lfw if written_by == "occgen" else foreign_copy(lfw, tmp_path)
    stored = [int(s["cls"]) for s in iter_ordered(read_manifest(manifest))]
    assert stored == sorted(stored)  # identity order: the case a shuffle buffer cannot mix
    distinct, labels = trained_identities(manifest, 32, 8, workers=1)
    expected = expected_identities_per_batch(labels, 32)  # 23.8 of 48: a full permutation's mean
    assert len(distinct) == 8 * 12
    assert np.mean(distinct) == pytest.approx(expected, rel=0.03)


def test_trainer_loss_matches_a_plain_full_permutation_loop(lfw, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    settings = dict(
        variant="baseline", backbone="r18", width_mult=0.25, batch_size=32, lr=0.1, epochs=3, milestones=[2], seed=5
    )
    run = tmp_path / "run"
    options = ["--shards", str(lfw), "--out", str(run), "-j", "0", "--log-every", "1", "--milestones", "2"]
    for key in ("variant", "backbone", "width_mult", "batch_size", "lr", "epochs", "seed"):
        options += [f"--{key.replace('_', '-')}", str(settings[key])]
    result = CliRunner().invoke(fromnet_main, ["train", *options])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    trainer = [r["loss"] for r in rows if "loss" in r]
    plain, _ = permutation_loop(TrainConfig(shards=[str(lfw)], out=str(tmp_path / "plain"), **settings))
    assert len(trainer) == len(plain) == 3 * 12
    for epoch in range(3):
        ours, theirs = np.mean(trainer[epoch * 12 : (epoch + 1) * 12]), np.mean(plain[epoch * 12 : (epoch + 1) * 12])
        assert ours == pytest.approx(theirs, rel=0.05), (epoch, ours, theirs)


def test_bench_order_prints_the_mix_beside_a_full_permutation(lfw):
    result = CliRunner().invoke(fromnet_main, ["bench", "order", "--shards", str(lfw), "--batch-size", "32"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines()[2:]}
    assert "384 samples of 48 identities" in result.output
    assert float(rows["as"][2]) < 6  # as stored: 32 consecutive samples hold 4-5 people
    assert float(rows["fromnet"][2]) == pytest.approx(float(rows["full"][2]), rel=0.05)


def test_a_run_from_the_shuffle_buffer_order_is_refused_with_the_reason(tmp_path):
    old = tmp_path / "config.toml"
    old.write_text('shards = ["m"]\nshuffle_buffer = 1000\nlanes = 4\n')
    with pytest.raises(UserError, match="lanes, shuffle_buffer belonged to the shuffle-buffer data order"):
        read_toml(old)
