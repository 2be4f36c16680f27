"""Training on shards read front to back (pipe: commands, URLs): the streamed order is seeded, the same whatever the
loader workers and processes, resumes at the same sample, mixes identity-ordered shards, and bad data mid-epoch is
one line naming the shard."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from click.testing import CliRunner
from PIL import Image

from fromnet.cli import main as fromnet_main
from fromnet.shards import counted, open_shards, read_manifest
from fromnet.train.data import Source, StreamPlan, TrainStream, build_label_cache, served
from fromnet.train.order import (
    Draws,
    expected_identities_per_batch,
    identities_per_batch,
    interleave,
)
from occgen.errors import UserError

IDENTITIES, PER, SHARDS = 60, 8, 4  # 480 faces in identity order, 4 tars of 120


@pytest.fixture(scope="module")
def ordered(tmp_path_factory) -> Path:
    """Small generated faces (32x32 JPEG) in identity order, written by webdataset's TarWriter as another tool
    would: KEY.jpg + KEY.cls."""
    out = tmp_path_factory.mktemp("stream")
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 255, (IDENTITIES, 32, 32, 3), dtype=np.uint8)
    per_shard = IDENTITIES * PER // SHARDS
    samples = [(i, j) for i in range(IDENTITIES) for j in range(PER)]
    for k in range(SHARDS):
        with wds.TarWriter(str(out / f"faces-{k:06d}.tar")) as sink:
            for i, j in samples[k * per_shard : (k + 1) * per_shard]:
                noisy = np.clip(faces[i].astype(int) + rng.integers(-8, 9, faces[i].shape), 0, 255).astype(np.uint8)
                buf = io.BytesIO()
                Image.fromarray(noisy).save(buf, "JPEG", quality=90)
                sink.write({"__key__": f"id{i:03d}-{j}", "jpg": buf.getvalue(), "cls": str(i).encode()})
    return out


def piped(folder: Path) -> str:
    return f"pipe:cat {folder}/faces-{{000000..{SHARDS - 1:06d}}}.tar"


def stream_plan(spec: str, batch: int = 32, replicas: int = 2, buffer: int = 100, shards: int = 3) -> StreamPlan:
    manifest = counted(open_shards(spec))
    return StreamPlan(
        (Source(manifest),), batch, replicas, 5, (32, 32), order="stream", stream_buffer=buffer, stream_shards=shards
    )


def served_batches(plan: StreamPlan, replicas: list[int], start: int, end: int, workers: int) -> list[dict]:
    stream = TrainStream(plan, replicas, start, end, log_keys=True)
    return list(served(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers)))


def summary(batches: list[dict]) -> list[tuple]:
    return [(b["step"], b["replica"], tuple(b["keys"]), b["label"].tolist(), b["image"].sum().item()) for b in batches]


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 3 workers on a 2-core machine
def test_streamed_batches_do_not_depend_on_workers_or_processes_and_resume_mid_epoch(ordered):
    plan = stream_plan(piped(ordered))
    assert plan.steps_per_epoch == 480 // 32
    end = plan.steps_per_epoch + 4  # into the second epoch
    full = summary(served_batches(plan, [0, 1], 0, end, workers=0))
    assert [(s, r) for s, r, *_ in full[:4]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert summary(served_batches(plan, [0, 1], 0, end, workers=2)) == full
    assert summary(served_batches(plan, [0, 1], 0, end, workers=3)) == full
    assert summary(served_batches(plan, [0, 1], 9, end, workers=2)) == full[18:]  # resumed mid-epoch
    assert summary(served_batches(plan, [1], 0, end, workers=2)) == full[1::2]  # a process running replica 1 alone
    epoch = [k for _, _, keys, *_ in full[: 2 * plan.steps_per_epoch] for k in keys]
    assert len(set(epoch)) == len(epoch) == 480  # one epoch: every sample once
    second = [k for _, _, keys, *_ in full[2 * plan.steps_per_epoch :] for k in keys]
    assert second != epoch[: len(second)]  # each epoch its own order
    # local files take the same order when asked: reading them is the only difference
    local = stream_plan(f"{ordered}/faces-{{000000..{SHARDS - 1:06d}}}.tar")
    assert summary(served_batches(local, [0, 1], 0, 6, workers=2)) == full[:12]


def test_a_resume_reads_only_the_shards_that_still_hold_samples_for_it(ordered):
    """The order is known from the shard sizes: resumed late in an epoch, a worker does not open a shard whose
    samples all came before (here its command would fail), while a run from the start does."""
    import dataclasses

    plan = stream_plan(piped(ordered), buffer=10, shards=1)  # a small buffer: shards leave it soon after being read
    first = plan.units(0)[0].shard
    manifest = plan.sources[0].manifest
    broken = [dataclasses.replace(s, url="pipe:exit 3") if i == first else s for i, s in enumerate(manifest.shards)]
    late = dataclasses.replace(plan, sources=(Source(dataclasses.replace(manifest, shards=tuple(broken))),))
    epoch = plan.steps_per_epoch
    assert (
        summary(served_batches(late, [0, 1], 10, epoch, 2)) == summary(served_batches(plan, [0, 1], 0, epoch, 2))[20:]
    )
    with pytest.raises(UserError, match="pipe:exit 3: the command exited with status 3"):
        served_batches(late, [0, 1], 0, epoch, 2)


def test_fsspec_urls_stream_as_pipes_do(ordered):
    fsspec = pytest.importorskip("fsspec", reason="fsspec (optional) is not installed")
    for k in range(SHARDS):
        with fsspec.open(f"memory://train/faces-{k:06d}.tar", "wb") as f:
            f.write((ordered / f"faces-{k:06d}.tar").read_bytes())
    remote = stream_plan(f"memory://train/faces-{{000000..{SHARDS - 1:06d}}}.tar")
    assert summary(served_batches(remote, [0, 1], 0, 5, 0)) == summary(
        served_batches(stream_plan(piped(ordered)), [0, 1], 0, 5, 0)
    )


def test_weights_and_occgen_labels_in_the_streamed_order(tmp_path):
    """A manifest of weight 1.5 in the streamed order: every sample once plus a seeded half once more per epoch; and
    occgen's pattern labels reach the samples as in the permutation order (the labels file joined by position)."""
    from test_train_data import occgen

    occgen("build", "--src", "demo", "--shard-size", "64", "--out", str(tmp_path / "shards"),
           "--manifests", str(tmp_path / "m"), "--name", "mix", "-q", "--K", "5", "-j", "1")  # fmt: skip
    manifest = read_manifest(tmp_path / "m" / "mix")
    labels = str(build_label_cache(manifest, 5, tmp_path / "mix-k5.npy"))
    settings = dict(batch_size=16, replicas=1, seed=3, image_size=(112, 96), K=5, targets=True, flip=False)
    source = Source(manifest, 1.5, 0, labels)
    stream = StreamPlan((source,), **settings, order="stream", stream_buffer=50, stream_shards=2)  # type: ignore[arg-type]
    perm = StreamPlan((source,), **settings)  # type: ignore[arg-type]
    got = served_batches(stream, [0], 0, stream.steps_per_epoch, workers=2)
    keys = [k for b in got for k in b["keys"]]
    counts = np.unique(np.unique(keys, return_counts=True)[1], return_counts=True)
    assert len(keys) == stream.steps_per_epoch * 16 == int(1.5 * manifest.samples) // 16 * 16
    assert dict(zip(*counts)).keys() == {1, 2} and len(set(keys)) == manifest.samples
    pattern = {k: p for b in got for k, p in zip(b["keys"], b["pattern"].tolist())}
    reference = {k: p for b in served_batches(perm, [0], 0, 4, 0) for k, p in zip(b["keys"], b["pattern"].tolist())}
    assert {k: pattern[k] for k in reference} == reference


def test_streamed_order_mixes_identity_ordered_shards(ordered):
    """Shards in identity order (as occgen writes them): with the buffer chosen from the data a streamed batch
    meets about as many identities as a full permutation's; a small buffer still several times those as stored."""
    from fromnet.train.bench import streamed_identities
    from fromnet.train.data import stream_buffer

    manifest = counted(open_shards(piped(ordered)))
    identities = np.repeat(np.arange(IDENTITIES), PER)
    counts = [[s.samples for s in manifest.shards]]
    batch = 32
    plan = StreamPlan((Source(manifest),), batch, 1, 0, (32, 32), order="stream")
    assert stream_buffer(plan) == 480  # 8 x 32 x 8 = 2,048 wanted; one epoch at most

    def mean_identities(buffer: int, seed: int) -> float:
        streamed = streamed_identities([identities], counts, [1.0], seed, 0, buffer, 3)
        assert sorted(streamed) == list(identities)  # every sample once
        return float(identities_per_batch(streamed, batch).mean())

    stored = identities_per_batch(identities, batch).mean()  # 4
    full = expected_identities_per_batch(identities, batch)  # 25.6
    assert np.mean([mean_identities(480, seed) for seed in range(4)]) == pytest.approx(full, rel=0.05)
    assert np.mean([mean_identities(64, seed) for seed in range(4)]) > 3 * stored  # 16.5
    # the loader serves that very order: the labels of its batches, with 2 worker processes
    loaded = served_batches(stream_plan(piped(ordered), batch, 1, 64, 3), [0], 0, 15, 2)
    assert (
        np.concatenate([b["label"].numpy() for b in loaded]).tolist()
        == streamed_identities([identities], counts, [1.0], 5, 0, 64, 3)[: 15 * batch].tolist()
    )


def test_interleave_takes_from_several_streams_at_once():
    streams = [[f"{c}{i}" for i in range(5)] for c in "abcd"]
    mixed = list(interleave(streams, 2, Draws(1)))
    assert {x[0] for x in mixed[:6]} == {"a", "b"}  # two at once, in the order given
    assert sorted(mixed) == sorted(x for s in streams for x in s)
    assert mixed != sorted(mixed) and mixed == list(interleave(streams, 2, Draws(1)))


def invoke(*args, ok: bool = True):
    result = CliRunner().invoke(fromnet_main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


TINY = ["--variant", "baseline", "--backbone", "r18", "--width-mult", "0.125", "--batch-size", "16", "--epochs", "2",
        "--log-every", "1", "--log-keys", "--seed", "4"]  # fmt: skip


def keys_and_losses(run: Path) -> tuple[list[str], list[float]]:
    keys = (run / "keys" / "rank-0.txt").read_text().splitlines()
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    return keys, losses


def test_fromnet_train_streams_pipes_and_resumes_exactly(ordered, tmp_path):
    """`fromnet train --shards 'pipe:cat ...:0.25'` (a quarter of each shard per epoch): interrupted mid-epoch and
    resumed with another worker count, the run trains on the same batches, with the same losses, as an
    uninterrupted one, into the next epoch."""
    data = [f"{piped(ordered)}:0.25", *TINY, "--stream-buffer", "50"]
    whole = invoke("train", "--shards", *data, "--steps", "10", "-j", "2", "--out", tmp_path / "whole").output
    assert "order: stream (4 shards at once, shuffle buffer 50)" in whole and "7 steps/epoch" in whole
    settled = (tmp_path / "whole" / "config.toml").read_text()
    assert 'order = "stream"' in settled and "stream_buffer = 50" in settled and "stream_shards = 4" in settled
    invoke("train", "--shards", *data, "--steps", "4", "-j", "0", "--out", tmp_path / "part")
    invoke("train", "--out", tmp_path / "part", "--resume", "--steps", "10", "-j", "2")
    keys, losses = keys_and_losses(tmp_path / "whole")
    assert len(keys) == 10 * 16 and len({k.split()[-1] for k in keys[: 7 * 16]}) == 7 * 16
    resumed = keys_and_losses(tmp_path / "part")
    assert resumed[0] == keys
    assert resumed[1] == pytest.approx(losses, rel=1e-5)


def test_a_shard_that_fails_mid_epoch_names_itself_and_how_to_go_on(ordered, tmp_path):
    """After the run counted its shards, one turns truncated, then its command fails: each a one-line error naming
    the shard's URL, and the run resumes from its checkpoint once the shard is back."""
    data = tmp_path / "data"
    shutil.copytree(ordered, data)
    spec, run = piped(data), tmp_path / "run"
    invoke("train", "--shards", spec, *TINY, "--steps", "1", "-j", "0", "--out", run)
    good = (data / "faces-000002.tar").read_bytes()
    (data / "faces-000002.tar").write_bytes(good[: len(good) // 2])
    truncated = invoke("train", "--out", run, "--resume", "--steps", "30", "-j", "2", ok=False)
    assert truncated.exit_code == 2 and "Traceback" not in truncated.output
    message = truncated.output.splitlines()[-1]
    assert f"pipe:cat {data}/faces-000002.tar" in message and "tar t" in message
    assert f"fromnet train --out {run} --resume" in message
    (data / "faces-000002.tar").unlink()
    failed = invoke("train", "--out", run, "--resume", "--steps", "30", "-j", "2", ok=False)
    assert "faces-000002.tar: the command exited with status 1" in failed.output.splitlines()[-1]
    (data / "faces-000002.tar").write_bytes(good)
    invoke("train", "--out", run, "--resume", "--steps", "2", "-j", "2")
    with pytest.raises(UserError, match="random access"):
        from fromnet.train.data import resolve_order

        resolve_order("permutation", [open_shards(spec)])


def test_two_gloo_ranks_stream_the_batches_one_process_trains_on(ordered, tmp_path):
    """Under torchrun each rank streams the same sequence and trains on its own replica's slice: together the very
    samples, step by step, that one process splitting its batches into the same two micro-batches trains on."""
    from test_train import torchrun

    data = ["--shards", f"{piped(ordered)}:0.25", *TINY, "--stream-buffer", "50", "--steps", "3", "-j", "1"]
    torchrun(*data, "--out", str(tmp_path / "ddp"))
    invoke("train", *data, "--micro-batch", "8", "--out", tmp_path / "one")
    ranks = [(tmp_path / "ddp" / "keys" / f"rank-{r}.txt").read_text().splitlines() for r in (0, 1)]
    assert {line.split()[1] for line in ranks[1]} == {"1"}  # rank 1 ran replica 1
    assert sorted(ranks[0] + ranks[1]) == sorted(keys_and_losses(tmp_path / "one")[0])
    assert keys_and_losses(tmp_path / "ddp")[1] == pytest.approx(keys_and_losses(tmp_path / "one")[1], rel=1e-4)
