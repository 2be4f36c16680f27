"""The dataset card's Hugging Face snippet runs as written: `datasets` reads occgen's shards as a WebDataset."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_build import run


def test_card_hf_snippet_loads_the_shards(tmp_path: Path):
    pytest.importorskip("datasets", reason="the optional extra 'hf' (datasets) is not installed")
    run("build", "--src", "demo", "--shard-size", "50", "--out", str(tmp_path / "shards"),
        "--manifests", str(tmp_path / "manifests"), "--name", "d", "-q", "-j", "1")  # fmt: skip
    manifest = tmp_path / "manifests" / "d"
    block = next(b for b in re.findall(r"```python\n(.*?)```", (manifest / "README.md").read_text(), re.S)
                 if "load_dataset" in b)  # fmt: skip
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    first = pd.read_parquet(manifest / "samples.parquet").iloc[0]
    assert done.stdout == f"128 (96, 112) {first['identity']} {first['key']}\n"
