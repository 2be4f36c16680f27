"""`fromnet` misused as a new user would: every mistake is one line naming the file (and line), never a traceback.
Each case runs the real CLI in its own process; they run side by side."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from test_train import TINY, mix  # noqa: F401 (mix is a fixture)
from test_train_faults import ENV, fromnet

from fromnet.eval.pairs import embeddings_table


def run_all(cases: dict[str, list[str]]) -> dict[str, subprocess.CompletedProcess]:
    procs = {
        name: subprocess.Popen(fromnet(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        for name, args in cases.items()
    }
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return results


def one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("Error")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def grey_onnx(path: Path) -> None:
    """A real ONNX embedder that takes one-channel 112x96 faces."""
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    torch.onnx.export(net, torch.zeros(1, 1, 112, 96), str(path), dynamo=False, input_names=["x"])


def test_every_mistake_is_one_line_naming_the_file(mix, tmp_path):  # noqa: F811
    bad_toml, unknown = tmp_path / "bad.toml", tmp_path / "unknown.toml"
    bad_toml.write_text('variant = "from"\nlr 0.1\n')
    unknown.write_text('variant = "from"\nlearning_rate = 0.1\n')
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    empty = tmp_path / "empty.parquet"
    pq.write_table(embeddings_table([], [], np.zeros((0, 4), np.float32)), empty)
    emb = tmp_path / "faces.parquet"
    srcs = ["Ann/Ann_0001.jpg", "Ann/Ann_0002.jpg", "Bob/Bob_0001.jpg"]
    pq.write_table(embeddings_table(["a", "b", "c"], srcs, np.eye(3, 4, dtype=np.float32)), emb)
    garbage, strangers = tmp_path / "garbage.txt", tmp_path / "strangers.txt"
    garbage.write_text("1 1\nAnn 1 2\nthis is not a pair\n")
    strangers.write_text("1 1\nAnn 1 2\nAnn 1 Eve 1\n")
    grey = tmp_path / "grey.onnx"
    grey_onnx(grey)
    train = ["train", "--shards", str(mix), *TINY, "-j", "0", "--steps", "1"]
    results = run_all(
        {
            "toml": [*train, "--config", str(bad_toml), "--out", str(tmp_path / "a")],
            "key": [*train, "--config", str(unknown), "--out", str(tmp_path / "b")],
            "init": [*train, "--init", str(text), "--out", str(tmp_path / "c")],
            "memory": ["train", "--shards", str(mix), "--batch-size", "4096", "--out", str(tmp_path / "d")],
            "empty": ["eval", "--gallery", str(empty), "--probes", str(empty), "--out", str(tmp_path / "e")],
            "garbage": ["eval", "--pairs", str(garbage), "--embeddings", str(emb), "--out", str(tmp_path / "f")],
            "strangers": ["eval", "--pairs", str(strangers), "--embeddings", str(emb), "--out", str(tmp_path / "g")],
            "onnx": ["embed", "--model", f"onnx:{grey}", "--shards", str(mix), "--out", str(tmp_path / "h.parquet")],
        }
    )
    lines = {name: one_line(result) for name, result in results.items()}
    for name, line in lines.items():
        print(f"{name}: {line}")
    assert lines["toml"] == (
        f"Error: {bad_toml}: cannot read as TOML (Expected '=' after a key in a key/value pair (at line 2, column 4)); "
        "write one setting a line, key = value, strings in double quotes (see fromnet/train/configs/)"
    )
    assert lines["key"].startswith(f"Error: {unknown}: unknown setting(s) learning_rate; known: K, backbone,")
    assert lines["init"] == (
        f"Error: --init {text} cannot be used: not a PyTorch checkpoint file; give a checkpoint file "
        "(RUN/checkpoints/step-N.pt) or a run folder"
    )
    assert re.fullmatch(
        r"Error: a step of from r50 x1 on micro-batches of 4096 \(fp32\) needs about [\d.]+ GiB and \S+ has "
        r"[\d.]+ GiB free: pass --micro-batch \d+ \(gradient accumulation, same global batch of 4096\), or a "
        r"smaller --batch-size, --backbone or --width-mult",
        lines["memory"],
    ), lines["memory"]
    assert lines["empty"] == (
        f"Error: {empty}: holds no embeddings (0 rows); embed a set that has faces with `fromnet embed`"
    )
    assert lines["garbage"] == (
        f"Error: {garbage}:3: a pair line has 3 fields (name i j) or 4 (name1 i name2 j); got 5"
    )
    assert lines["strangers"] == (
        f"Error: {strangers}:3: faces.parquet: 1 of 2 second images of the pairs not found by key or by src, "
        "first 'Eve/Eve_0001'; embed the set that holds them"
    )
    assert lines["onnx"] == (
        f"Error: {grey}: input x has shape [1, 1, 112, 96], 1 channel(s) where a face embedder takes 3 (RGB); "
        "if the model is NHWC, pass --layout nhwc"
    )
