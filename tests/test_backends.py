"""Backends: a real dask.distributed cluster of processes gives the bytes loky gives; missing extras say what to
install."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from test_build import files, run

COMMON = [
    "build",
    "--src",
    "demo",
    "--copies",
    "2",
    "--clean-ratio",
    "0.25",
    "--shard-size",
    "24",
    "--seed",
    "9",
    "-q",
    "--name",
    "b",
]


def _build(root: Path, *extra: str) -> dict[str, bytes]:
    """Every file a build writes, run from ``root`` with relative paths (the dataset card records them)."""
    root.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        run(*COMMON, "--out", "o", "--manifests", "m", *extra)
    return files(root)


def test_dask_local_cluster_and_joined_cluster_give_loky_bytes(tmp_path: Path):
    pytest.importorskip("distributed", reason="needs the dask extra: pip install 'occgen-fromnet[dask]'")
    from dask.distributed import LocalCluster

    loky = _build(tmp_path / "loky", "-j", "2")
    assert len([f for f in loky if f.endswith(".tar")]) == 11
    assert _build(tmp_path / "dask", "--backend", "dask", "-j", "2") == loky  # a local cluster started for the run
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        joined = _build(tmp_path / "joined", "--backend", "dask", "--scheduler", cluster.scheduler_address)
        assert len(cluster.scheduler_info["workers"]) == 2  # the run left the cluster it joined running
    assert joined == loky


def test_ray_gives_loky_bytes(tmp_path: Path):
    pytest.importorskip(
        "ray",
        reason="needs the ray extra (pip install 'occgen-fromnet[ray]'), not installed in CI: "
        "Ray is large and slow to start on small machines",
    )
    loky = _build(tmp_path / "loky", "-j", "2")
    assert _build(tmp_path / "ray", "--backend", "ray", "-j", "2") == loky


@pytest.mark.parametrize("backend, module", [("dask", "distributed"), ("ray", "ray")])
def test_missing_backend_extra_says_what_to_install(tmp_path: Path, monkeypatch, backend: str, module: str):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    result = run(
        *COMMON, "--out", str(tmp_path / "o"), "--manifests", str(tmp_path / "m"), "--backend", backend, ok=False
    )
    assert result.exit_code == 2
    assert f"--backend {backend} needs the {module} package: pip install 'occgen-fromnet[{backend}]'" in result.output
    assert not (tmp_path / "m").exists()  # refused before anything was written


def test_scheduler_and_address_go_with_their_backend(tmp_path: Path):
    for args in (
        ["--scheduler", "tcp://127.0.0.1:1"],
        ["--backend", "ray", "--scheduler", "tcp://127.0.0.1:1"],
        ["--backend", "dask", "--address", "auto"],
    ):
        result = run(*COMMON, "--out", str(tmp_path / "o"), *args, ok=False)
        assert result.exit_code == 2 and "--scheduler goes with --backend dask" in result.output


def test_unreachable_scheduler_is_a_one_line_error(tmp_path: Path):
    pytest.importorskip("distributed", reason="needs the dask extra: pip install 'occgen-fromnet[dask]'")
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        result = run(
            *COMMON,
            "--out",
            str(tmp_path / "o"),
            "--manifests",
            str(tmp_path / "m"),
            "--backend",
            "dask",
            "--scheduler",
            "tcp://127.0.0.1:9",
            ok=False,
        )
    assert result.exit_code == 2 and "cannot reach the Dask scheduler" in result.output
