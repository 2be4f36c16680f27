"""Training streams on real occgen shards: deterministic whatever the workers, resumable, disjoint per replica,
labels joined in shard order (and relabelled when flipped), online occlusion through occgen's own Algorithm 1."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from fromnet.shards import decode_face, iter_ordered, read_manifest, sample_meta
from fromnet.train.data import (
    OnlineOcclusion,
    Source,
    StreamPlan,
    TrainStream,
    build_label_cache,
    key_hash,
    parse_source,
)
from occgen.cli import main as occgen_main
from occgen.errors import UserError
from occgen.label.patterns import label_boxes
from occgen.occlude.occluders import load_library
from occgen.occlude.plan import sample_seed
from occgen.occlude.run import BuildOptions, occlude_sample


def occgen(*args: str) -> None:
    result = CliRunner().invoke(occgen_main, list(args))
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """A small Mix-style demo set: 16 identities x 8 faces x 2 copies, 1/3 clean, 4 shards, labelled at K=5; and the
    same faces clean, in 2 shards."""
    root = tmp_path_factory.mktemp("demo")
    occgen(
        "build",
        "--src",
        "demo",
        "--copies",
        "2",
        "--clean-ratio",
        "0.3333",
        "--shard-size",
        "64",
        "--out",
        str(root / "shards"),
        "--manifests",
        str(root / "manifests"),
        "--name",
        "mix",
        "-q",
        "--K",
        "5",
        "-j",
        "1",
    )
    occgen(
        "build",
        "--src",
        "demo",
        "--clean-ratio",
        "1",
        "--shard-size",
        "64",
        "--out",
        str(root / "shards"),
        "--manifests",
        str(root / "manifests"),
        "--name",
        "clean",
        "-q",
        "-j",
        "1",
    )
    return root / "manifests"


def plan_for(demo: Path, tmp_path: Path, **kw) -> StreamPlan:
    manifest = read_manifest(demo / "mix")
    labels = build_label_cache(manifest, 5, tmp_path / "mix-k5.npy")
    args = dict(batch_size=32, replicas=2, seed=7, image_size=(112, 96), K=5, targets=True)
    args.update(kw)
    return StreamPlan((Source(manifest, 1.0, 0, str(labels)),), **args)


def batches(plan: StreamPlan, replicas: list[int], start: int, end: int, workers: int) -> list[dict]:
    stream = TrainStream(plan, replicas, start, end, log_keys=True)
    return list(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers))


def summary(bs: list[dict]) -> list[tuple]:
    return [(b["step"], b["replica"], tuple(b["keys"]), b["pattern"].tolist(), b["image"].sum().item()) for b in bs]


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 3 workers on a 2-core machine
def test_batches_do_not_depend_on_workers_and_resume_mid_epoch(demo, tmp_path):
    plan = plan_for(demo, tmp_path)
    assert plan.steps_per_epoch == 256 // 32
    full = summary(batches(plan, [0, 1], 0, 20, workers=0))
    assert [(s, r) for s, r, *_ in full[:4]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert summary(batches(plan, [0, 1], 0, 20, workers=2)) == full
    assert summary(batches(plan, [0, 1], 0, 20, workers=3)) == full  # any worker count, not only divisors
    assert summary(batches(plan, [0, 1], 7, 20, workers=2)) == full[14:]  # resumed at step 7, into epoch 1 too
    # A process that runs replica 1 alone sees exactly what replica 1 saw beside replica 0.
    assert summary(batches(plan, [1], 0, 20, workers=1)) == full[1::2]


def test_replicas_train_on_disjoint_samples_within_an_epoch(demo, tmp_path):
    plan = plan_for(demo, tmp_path)
    epoch = plan.steps_per_epoch
    seen = [{k for b in batches(plan, [r], 0, epoch, 1) for k in b["keys"]} for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 128
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == read_manifest(demo / "mix").samples  # one epoch = every sample once


def test_labels_follow_the_labels_file_and_mirror_with_the_flip(demo, tmp_path):
    plan = plan_for(demo, tmp_path)
    manifest = read_manifest(demo / "mix")
    faces = {s["__key__"]: (decode_face(s), sample_meta(s)) for s in iter_ordered(manifest)}
    labels = pq.read_table(demo / "mix" / "labels-k5.parquet").to_pandas().set_index("key")["pattern"]
    flipped = kept = 0
    for batch in batches(plan, [0], 0, 4, 0):
        for i, key in enumerate(batch["keys"]):
            face, meta = faces[key]
            image = batch["image"][i].numpy()
            assert batch["label"][i] == meta["identity"]
            if np.array_equal(image, face):
                kept += 1
                assert batch["pattern"][i] == labels[key]
            else:
                flipped += 1
                assert np.array_equal(image, face[:, ::-1])
                box = (
                    [96 - meta["box_x1"], meta["box_y0"], 96 - meta["box_x0"], meta["box_y1"]]
                    if meta["occluded"]
                    else [0, 0, 0, 0]
                )
                expected = label_boxes(np.array([box], float), np.array([meta["occluded"]]), 5, 112, 96)[0][0]
                assert batch["pattern"][i] == expected
    assert flipped > 10 and kept > 10


def test_online_occlusion_is_occgens_algorithm_1(demo, tmp_path):
    manifest = read_manifest(demo / "clean")
    online = OnlineOcclusion((1.0, 2.0), clean_ratio=0.25)
    plan = StreamPlan((Source(manifest),), 16, 1, 5, (112, 96), 5, True, flip=False, online=online)
    faces = {s["__key__"]: decode_face(s) for s in iter_ordered(manifest)}
    lib, opts = load_library(), BuildOptions(scales=(1.0, 2.0), clean_ratio=0.25)
    occluded = 0
    for batch in batches(plan, [0], 0, 3, 0) + batches(plan, [0], plan.steps_per_epoch, plan.steps_per_epoch + 1, 0):
        epoch = batch["epoch"]
        for i, key in enumerate(batch["keys"]):
            face, geo = occlude_sample(faces[key], sample_seed(5, f"{key}@{epoch}/occlude"), opts, lib)
            assert np.array_equal(batch["image"][i].numpy(), face)
            box = [[geo.get(c, 0) for c in ("box_x0", "box_y0", "box_x1", "box_y1")]]
            assert (
                batch["pattern"][i] == label_boxes(np.array(box, float), np.array([geo["occluded"]]), 5, 112, 96)[0][0]
            )
            occluded += geo["occluded"]
    assert 0 < occluded < 64


def test_missing_labels_and_bad_manifests_say_what_to_run(demo, tmp_path):
    with pytest.raises(UserError, match=r"occgen label --K 4 .*mix"):
        build_label_cache(read_manifest(demo / "mix"), 4, tmp_path / "x.npy")
    with pytest.raises(UserError, match="no shards.json"):
        read_manifest(tmp_path / "nothing")
    with pytest.raises(UserError, match="multiple"):
        plan_for(demo, tmp_path, batch_size=33)
    assert parse_source("manifests/a:2.5") == ("manifests/a", 2.5)
    assert parse_source("manifests/a") == ("manifests/a", 1.0)
    assert parse_source("file:///data/faces-{000..009}.tar") == ("file:///data/faces-{000..009}.tar", 1.0)
    with pytest.raises(UserError, match="positive"):
        parse_source("manifests/a:0")


def test_weights_repeat_a_manifest_and_offsets_separate_identities(demo, tmp_path):
    mix, clean = read_manifest(demo / "mix"), read_manifest(demo / "clean")
    plan = StreamPlan((Source(mix, 1.0, 0), Source(clean, 2.0, mix.num_identities)), 32, 1, 0, (112, 96), flip=False)
    assert plan.epoch_samples == 256 + 2 * 128 and plan.num_identities == 32
    got = batches(plan, [0], 0, plan.steps_per_epoch, 0)
    from_clean = sum(int((b["label"] >= 16).sum()) for b in got)
    assert from_clean == 256  # twice its 128 samples per epoch, with labels offset past the first manifest's


def test_direct_tar_reader_matches_webdataset_and_falls_back_for_other_tars(demo, tmp_path):
    import io
    import tarfile

    import webdataset as wds

    from fromnet.shards import span_sample, tar_samples, tar_spans

    def reference(url: str) -> list[dict]:
        return list(wds.DataPipeline(wds.SimpleShardList([url]), wds.tarfile_to_samples()))

    shard = read_manifest(demo / "mix").shards[0].url
    assert list(tar_samples(shard)) == reference(shard)
    foreign = tmp_path / "foreign.tar"  # GNU long names: tarfile's job
    with tarfile.open(foreign, "w", format=tarfile.GNU_FORMAT) as tar:
        for key in ("a" * 120, "b"):
            for ext, data in (("cls", b"1"), ("txt", b"hello")):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    assert list(tar_samples(str(foreign))) == reference(str(foreign))
    # Random access: each sample's byte range, read alone, gives the same sample, for occgen's and other tars.
    pax = tmp_path / "pax.tar"
    with tarfile.open(pax, "w", format=tarfile.PAX_FORMAT) as tar:
        for key in ("c" * 120, "d", "ü"):
            info = tarfile.TarInfo(f"dir/{key}.txt")
            info.size, info.pax_headers = 2, {"comment": "x" * 600}
            tar.addfile(info, io.BytesIO(b"hi"))
    for url in (shard, str(foreign), str(pax)):
        data = Path(url).read_bytes()
        assert [span_sample(url, data[a:b]) for a, b in tar_spans(url)] == reference(url)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(Path(shard).read_bytes()[:5000])
    with pytest.raises(UserError, match="truncated"):
        list(tar_samples(str(cut)))
    with pytest.raises(UserError, match="truncated"):
        tar_spans(str(cut))


def test_label_cache_is_the_labels_file_in_shard_order(demo, tmp_path):
    """The cache, joined on key hashes a batch at a time, row for row against a join on the keys themselves."""
    manifest = read_manifest(demo / "mix")
    cache = np.load(build_label_cache(manifest, 5, tmp_path / "k5.npy"))
    labels = pq.read_table(demo / "mix" / "labels-k5.parquet").to_pandas().set_index("key")
    keys = [s["__key__"] for s in iter_ordered(manifest)]
    assert len(cache) == len(keys) == manifest.samples
    assert cache["key_hash"].tolist() == [key_hash(k) for k in keys]
    assert cache["pattern"].tolist() == labels.loc[keys, "pattern"].tolist()
    reg = labels.loc[keys, ["reg_x0", "reg_y0", "reg_x1", "reg_y1"]].to_numpy(np.float64)
    assert np.array_equal(cache["box"], np.rint(reg * [96, 112, 96, 112]))
    stale = tmp_path / "stale"  # the same samples with a labels file that misses three of them
    shutil.copytree(demo / "mix" / "samples.parquet", stale / "samples.parquet")
    pq.write_table(pq.read_table(demo / "mix" / "labels-k5.parquet").slice(3), stale / "labels-k5.parquet")
    with pytest.raises(UserError, match="lacks labels for 3 sample"):
        build_label_cache(dataclasses.replace(manifest, path=stale), 5, tmp_path / "stale.npy")
