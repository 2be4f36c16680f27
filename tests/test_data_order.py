"""Data order on identity-ordered shards (occgen's own, and tars another tool wrote): batches as well mixed as a full
permutation, and training losses as good as a plain loop that draws a full permutation each epoch. Each data set is
larger than, or as large as, a 1,000-sample shuffle buffer, which these tests would catch."""

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
from PIL import Image

from fromnet.cli import main as fromnet_main
from fromnet.shards import image_size, iter_ordered, read_manifest
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


def write_foreign(out: Path, samples: list[tuple[int, str, bytes]], size: tuple[int, int], shards: int) -> Path:
    """Samples (identity, key, JPEG) written as they come by another tool: Python's tarfile (pax headers, a folder per
    identity), with the shards.json and samples.parquet that make them a manifest."""
    index, rows, per = [], [], len(samples) // shards
    for k in range(shards):
        name = f"{out.name}-{k:06d}"
        with tarfile.open(out / f"{name}.tar", "w", format=tarfile.PAX_FORMAT) as tar:
            for identity, key, jpeg in samples[k * per : (k + 1) * per]:
                for ext, data in (("cls", str(identity).encode()), ("jpg", jpeg)):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                rows.append({"key": key, "shard": name, "identity": identity, "height": size[0], "width": size[1]})
        index.append({"shard": name, "path": f"{name}.tar", "samples": per})
    (out / "shards.json").write_text(json.dumps({"name": out.name, "shards": index}))
    pq.write_table(pa.Table.from_pylist(rows), out / "samples.parquet")
    return out


def jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def foreign_set(out: Path, identities: int = 300, per: int = 8) -> Path:
    """2,400 small generated faces in identity order, 4 tars: more than a 1,000-sample shuffle buffer holds."""
    rng = np.random.default_rng(0)
    faces = [jpeg(Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))) for _ in range(identities)]
    samples = [(i, f"id{i:04d}/{j:02d}", faces[i]) for i in range(identities) for j in range(per)]
    return write_foreign(out, samples, (16, 16), 4)


@pytest.fixture(scope="module")
def lfw_small(tmp_path_factory) -> Path:
    """960 real LFW faces (120 people x 8) scaled to 32x32, in identity order, in 4 tars another tool wrote: small
    enough for a few hundred training steps of a tiny network in seconds."""
    source = shared("lfw-112x96")
    out = tmp_path_factory.mktemp("lfw-small")
    people = [p for p in sorted(source.iterdir()) if p.is_dir() and len(list(p.glob("*.jpg"))) >= 8][:120]
    samples = [
        (i, f"{person.name}/{image.stem}", jpeg(Image.open(image).convert("RGB").resize((32, 32), Image.BILINEAR)))
        for i, person in enumerate(people)
        for image in sorted(person.glob("*.jpg"))[:8]
    ]
    return write_foreign(out, samples, (32, 32), 4)


def trained_identities(manifest: Path, batch: int, epochs: int) -> tuple[list[int], np.ndarray]:
    """Distinct identities of each batch the loader really serves (2 replicas, 2 workers), and the identity of every
    sample in the manifest."""
    m = read_manifest(manifest)
    plan = StreamPlan((Source(m),), batch, 2, 0, image_size(m), flip=False)
    stream = TrainStream(plan, [0, 1], 0, epochs * plan.steps_per_epoch)
    micro = list(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2))
    per_step = [torch.cat([a["label"], b["label"]]) for a, b in zip(micro[::2], micro[1::2])]
    labels = np.array([int(s["cls"]) for s in iter_ordered(m)])
    return [len(set(x.tolist())) for x in per_step], labels


@pytest.mark.parametrize("written_by", ["occgen", "tarfile"])
def test_batches_hold_as_many_identities_as_a_full_permutation(lfw, tmp_path, written_by):
    manifest, batch, epochs = (lfw, 32, 8) if written_by == "occgen" else (foreign_set(tmp_path), 64, 2)
    stored = [int(s["cls"]) for s in iter_ordered(read_manifest(manifest))]
    assert stored == sorted(stored)  # identity order: what a shuffle buffer cannot mix
    distinct, labels = trained_identities(manifest, batch, epochs)
    expected = expected_identities_per_batch(labels, batch)  # a full permutation's mean: 23.8 of 48, 58.2 of 300
    assert len(distinct) == epochs * (len(labels) // batch)
    assert np.mean(distinct) == pytest.approx(expected, rel=0.03)


@pytest.fixture
def one_thread():
    """One intra-op thread: spinning OpenMP threads crawl on a busy machine, and the figures below were taken so."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def epoch_means(losses: list[float], epochs: int) -> np.ndarray:
    return np.array(losses).reshape(epochs, -1).mean(axis=1)


def test_trainer_loss_matches_a_plain_full_permutation_loop(lfw_small, tmp_path, one_thread):
    """Same data, model, schedule and seeds; only the order differs. Per-epoch mean losses, averaged over two seeds
    (one pair of runs differs by up to 2.5 % from chance alone): the trainer's within 5 % of the plain loop's. The
    shuffle-buffer order this replaced was 8 % worse in the last epoch at seed 1."""
    settings = dict(
        variant="baseline", backbone="r18", width_mult=0.125, batch_size=32, lr=0.1, epochs=3, milestones=[2]
    )
    ours, theirs = np.zeros(3), np.zeros(3)
    for seed in (1, 2):
        run = tmp_path / f"run-{seed}"
        options = ["--shards", str(lfw_small), "--out", str(run), "-j", "0", "--log-every", "1", "--milestones", "2"]
        for key in ("variant", "backbone", "width_mult", "batch_size", "lr", "epochs"):
            options += [f"--{key.replace('_', '-')}", str(settings[key])]
        result = CliRunner().invoke(fromnet_main, ["train", *options, "--seed", str(seed)])
        assert result.exit_code == 0, result.output
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        trainer = [r["loss"] for r in rows if "loss" in r]
        plain_cfg = TrainConfig(shards=[str(lfw_small)], out=str(tmp_path / f"plain-{seed}"), seed=seed, **settings)
        plain, _ = permutation_loop(plain_cfg)
        assert len(trainer) == len(plain) == 3 * 960 // 32
        ours += epoch_means(trainer, 3) / 2
        theirs += epoch_means(plain, 3) / 2
    assert ours == pytest.approx(theirs, rel=0.05)


def test_bench_order_prints_the_mix_beside_a_full_permutation(lfw):
    result = CliRunner().invoke(fromnet_main, ["bench", "order", "--shards", str(lfw), "--batch-size", "32"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines()[2:]}
    assert "384 samples of 48 identities" in result.output
    assert float(rows["as"][2]) < 6  # as stored: 32 consecutive samples hold 4-5 people
    assert float(rows["random"][2]) == pytest.approx(float(rows["full"][2]), rel=0.05)
    assert "shuffle buffer 384 (from the data)" in result.output  # 8 x 32 x 8 wanted, one epoch at most
    assert float(rows["streamed"][1]) == pytest.approx(float(rows["full"][2]), rel=0.05)
    small = CliRunner().invoke(
        fromnet_main, ["bench", "order", "--shards", str(lfw), "--batch-size", "32", "--stream-buffer", "64"]
    )
    rows = {line.split()[0]: line.split() for line in small.output.splitlines()[2:]}
    assert 3 * float(rows["as"][2]) < float(rows["streamed"][1]) < float(rows["full"][2])


def test_a_run_from_the_shuffle_buffer_order_is_refused_with_the_reason(tmp_path):
    old = tmp_path / "config.toml"
    old.write_text('shards = ["m"]\nshuffle_buffer = 1000\nlanes = 4\n')
    with pytest.raises(UserError, match="lanes, shuffle_buffer belonged to the shuffle-buffer data order"):
        read_toml(old)
