"""`fromnet train` end to end on real shards: one process, and two real Gloo processes under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from fromnet import checkpoint
from fromnet.cli import main as fromnet_main
from occgen.cli import main as occgen_main

TINY = [
    "--backbone",
    "r18",
    "--width-mult",
    "0.25",
    "--batch-size",
    "16",
    "--lr",
    "0.05",
    "--epochs",
    "2",
    "--milestones",
    "1",
    "--log-every",
    "1",
    "--seed",
    "3",
]


@pytest.fixture(scope="module")
def mix(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    result = CliRunner().invoke(
        occgen_main,
        [
            "build",
            "--src",
            "demo",
            "--clean-ratio",
            "0.3333",
            "--shard-size",
            "32",
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
        ],
    )
    assert result.exit_code == 0, result.output
    return root / "manifests" / "mix"


def train(*args: str) -> str:
    result = CliRunner().invoke(fromnet_main, ["train", *args])
    assert result.exit_code == 0, result.output
    return result.output


def metrics(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def losses(run: Path) -> list[float]:
    """Every logged step's loss terms and pattern accuracy, flattened, for comparing two runs."""
    return [r[k] for r in metrics(run) for k in ("step", "loss", "loss_id", "loss_pattern", "pattern_acc")]


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "fromnet",
        "train",
        *args,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_stop_and_resume_equals_an_uninterrupted_run(mix, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    common = ["--shards", str(mix), *TINY, "-j", "0"]
    whole = tmp_path / "whole"
    out = train(*common, "--out", str(whole), "--steps", "6")
    assert "checkpoint" in out and "metrics.jsonl" in out
    assert "note: the paper starts the 'from' variant (stage 2) from a stage-1 Baseline, not from scratch" in out
    part = tmp_path / "part"
    train(*common, "--out", str(part), "--steps", "3")
    out = train("--out", str(part), "--resume", "--steps", "6")
    assert losses(part) == pytest.approx(losses(whole), rel=1e-6)
    state = torch.load(checkpoint.resolve(part), weights_only=True)  # plain tensors and data: no pickled classes
    assert state["step"] == 6 and state["classifier"]["weight"].shape == (16, 512)
    assert (part / "config.toml").read_text().count("steps = 6") == 1


def test_user_errors_are_one_line(mix, tmp_path):
    runner = CliRunner()
    base = ["train", "--shards", str(mix), *TINY, "-j", "0", "--steps", "1"]
    cases = [
        (["--out", str(tmp_path / "a"), "--init", str(tmp_path / "missing.pt")], "no such checkpoint"),
        (["--out", str(tmp_path / "b"), "--K", "4"], "occgen label --K 4"),
        (["--out", str(tmp_path / "c"), "--batch-size", "0"], "Invalid value"),
        (["--out", str(tmp_path / "d"), "--config", "stage9"], "not a shipped config"),
    ]
    for extra, message in cases:
        result = runner.invoke(fromnet_main, base + extra)
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
    train("--shards", str(mix), *TINY, "-j", "0", "--steps", "1", "--out", str(tmp_path / "e"))
    result = runner.invoke(fromnet_main, ["train", "--out", str(tmp_path / "e"), "--resume", "--lr", "0.5"])
    assert result.exit_code == 2 and "lr (0.05 -> 0.5)" in result.output
    result = runner.invoke(fromnet_main, ["train", "--shards", str(mix), "--out", str(tmp_path / "e")])
    assert result.exit_code == 2 and "--resume" in result.output


def test_init_checks_every_tensor(mix, tmp_path):
    stage1 = tmp_path / "stage1"
    train("--shards", str(mix), *TINY, "-j", "0", "--steps", "1", "--variant", "baseline", "--out", str(stage1))

    def from_stage1(variant: str, steps: int, *extra: str) -> str:
        out = tmp_path / variant
        return train(
            "--shards",
            str(mix),
            *TINY,
            "-j",
            "0",
            "--steps",
            str(steps),
            "--variant",
            variant,
            *extra,
            "--init",
            str(stage1),
            "--out",
            str(out),
        )

    out = from_stage1("from", 1)
    assert "initialised from" in out and "pyramid" in out and "classifier loaded" in out
    result = CliRunner().invoke(
        fromnet_main,
        [
            "train",
            "--shards",
            str(mix),
            *TINY,
            "-j",
            "0",
            "--steps",
            "1",
            "--width-mult",
            "0.5",
            "--init",
            str(stage1),
            "--out",
            str(tmp_path / "wide"),
        ],
    )
    assert result.exit_code == 2
    assert "does not fit this model" in result.output and "backbone.stem.0.weight" in result.output
    # The attention variants start from the same stage 1: the default one takes every tensor (classifier too) and
    # adds its attention branch; the pooled one leaves the parts it drops (stage 4, the flat head) unused.
    for variant, said in (
        ("attention", ["new parts: attention_branch", "classifier loaded"]),
        ("attention-pooled", ["left unused", "classifier starts fresh"]),
    ):
        out = from_stage1(variant, 2, "--K", "4", "--margin", "softmax")
        assert all(s in out for s in said), out
        assert [r["loss_pattern"] for r in metrics(tmp_path / variant)] == [None, None]


def test_two_gloo_ranks_read_disjoint_samples_stay_in_sync_and_resume_on_one(mix, tmp_path):
    common = ["--shards", str(mix), *TINY, "-j", "1"]
    ddp = tmp_path / "ddp"
    torchrun(*common, "--out", str(ddp), "--steps", "4", "--log-keys")
    keys = [{line.split()[2] for line in (ddp / "keys" / f"rank-{r}.txt").read_text().splitlines()} for r in (0, 1)]
    assert len(keys[0]) == len(keys[1]) == 4 * 8 and not keys[0] & keys[1]
    state = torch.load(checkpoint.resolve(ddp), weights_only=True)
    sums = state["replica_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]  # DDP replicas ended with identical weights
    # Stopped at step 2 on two processes, resumed on one (it runs both replicas, accumulating gradients).
    part = tmp_path / "part"
    torchrun(*common, "--out", str(part), "--steps", "2")
    train("--out", str(part), "--resume", "--steps", "4", "-j", "1")
    # Same samples, dropout masks and batch-norm batches; only float summation order differs (threads, all-reduce).
    assert losses(part) == pytest.approx(losses(ddp), rel=1e-4)


def test_sharded_classifier_trains_under_torchrun_and_resumes_on_one_process(mix, tmp_path):
    run = tmp_path / "sharded"
    common = ["--shards", str(mix), *TINY, "-j", "0", "--classifier", "sharded"]
    torchrun(*common, "--out", str(run), "--steps", "2")
    state = torch.load(checkpoint.resolve(run), weights_only=True)
    assert state["classifier"]["weight"].shape == (16, 512)  # gathered from both ranks' halves
    assert state["classifier"]["momentum"].shape == (16, 512)
    train("--out", str(run), "--resume", "--steps", "3")
    assert [r["step"] for r in metrics(run)] == [1, 2, 3]


def test_bench_prints_step_and_loader_figures_beside_the_simple_way(mix):
    runner = CliRunner()
    result = runner.invoke(
        fromnet_main,
        [
            "bench",
            "train",
            "--backbone",
            "r18",
            "--width-mult",
            "0.25",
            "--batch-size",
            "2",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--classes",
            "10",
            "--precision",
            "fp32",
            "--precision",
            "bf16",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.output.splitlines() if "s/step" in ln]
    assert [ln.split()[0] for ln in lines] == ["fp32", "fp32", "bf16", "bf16"] and "x1.00 vs simple" in lines[0]
    result = runner.invoke(
        fromnet_main,
        [
            "bench",
            "loader",
            "--shards",
            str(mix),
            "--batches",
            "2",
            "--batch-size",
            "16",
            "-j",
            "0",
            "-j",
            "1",
            "--order",
            "permutation",
            "--order",
            "stream",
        ],  # fmt: skip
    )
    assert result.exit_code == 0, result.output
    assert "plain PIL loop" in result.output and result.output.count("vs plain") == 4
    assert result.output.count("loader, stream ") == 2


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_clipping_and_online_occlusion(mix, tmp_path, precision):
    run = tmp_path / precision
    train(
        "--shards",
        str(mix),
        *TINY,
        "-j",
        "0",
        "--steps",
        "2",
        "--precision",
        precision,
        "--clip-grad",
        "1.0",
        "--occlude-online",
        "1:0.5:3",
        "--out",
        str(run),
    )
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2] and all(r["loss_pattern"] > 0 for r in rows)
    state = torch.load(checkpoint.resolve(run), weights_only=True)
    assert bool(state["scaler"]) == (precision == "fp16")  # the gradient scaler runs (and is saved) for fp16 only
    assert f'precision = "{precision}"' in (run / "config.toml").read_text()


def test_a_diverging_loss_stops_the_run_and_keeps_the_last_good_checkpoint(mix, tmp_path):
    run = tmp_path / "nan"
    result = CliRunner().invoke(
        fromnet_main,
        [
            "train",
            "--shards",
            str(mix),
            *TINY,
            "-j",
            "0",
            "--steps",
            "6",
            "--lr",
            "1e30",
            "--ckpt-every",
            "1",
            "--out",
            str(run),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "the loss became" in result.output and "Traceback" not in result.output
    step = torch.load(checkpoint.resolve(run), weights_only=True)["step"]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in metrics(run) if r["step"] <= step)
