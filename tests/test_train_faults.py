"""`fromnet train` under faults and misuse, driving the real CLI in subprocesses: Ctrl-C, SIGTERM and SIGKILL,
two runs into one folder, damaged checkpoints, a full disk, recipes too big for the machine."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_train import TINY, losses, metrics, mix  # noqa: F401 (mix is a fixture)

from fromnet import checkpoint
from fromnet.train import memory

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
#: A small, fast run: the baseline (no mask decoder), 2 micro-batches of 4 per step (gradient accumulation).
FAST = [*TINY, "--variant", "baseline", "--batch-size", "8", "--micro-batch", "4"]
STEPS = 12


def fromnet(*args: str) -> list[str]:
    return [sys.executable, "-m", "fromnet", *args]


def start(tmp_path: Path, name: str, *args: str) -> subprocess.Popen:
    """A training process whose output goes to files (a full pipe would block it)."""
    out, err = open(tmp_path / f"{name}.out", "w"), open(tmp_path / f"{name}.err", "w")
    return subprocess.Popen(fromnet("train", *args), stdout=out, stderr=err, env=ENV, start_new_session=True)


def finish(proc: subprocess.Popen, tmp_path: Path, name: str, timeout: float = 300) -> tuple[int, str, str]:
    code = proc.wait(timeout=timeout)
    return code, (tmp_path / f"{name}.out").read_text(), (tmp_path / f"{name}.err").read_text()


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(fromnet(*args), capture_output=True, text=True, env=ENV, timeout=timeout)


def logged_steps(run: Path) -> int:
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return max([json.loads(line)["step"] for line in lines if line.strip()], default=0)


def wait_for_step(run: Path, step: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while logged_steps(run) < step:
        assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before step {step}"
        assert time.monotonic() < deadline, f"no step {step} after {timeout} s"
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def error_line(stderr: str) -> str:
    """The last line of stderr, checked to be the only line that mentions an error (no traceback)."""
    assert "Traceback" not in stderr, stderr
    return stderr.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def whole(mix, tmp_path_factory) -> Path:  # noqa: F811
    """The uninterrupted reference run."""
    run = tmp_path_factory.mktemp("whole") / "run"
    result = cli("train", "--shards", str(mix), *FAST, "-j", "0", "--steps", str(STEPS), "--out", str(run))
    assert result.returncode == 0, result.stderr
    return run


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_finishes_the_step_saves_and_resumes_exactly(mix, whole, tmp_path, sig):  # noqa: F811
    run = tmp_path / "run"
    proc = start(tmp_path, "a", "--shards", str(mix), *FAST, "-j", "1", "--steps", str(STEPS), "--out", str(run))
    wait_for_step(run, 2, proc)
    workers = children(proc.pid)
    assert len(workers) == 1  # the loader's worker process
    os.kill(proc.pid, sig)
    code, out, err = finish(proc, tmp_path, "a")
    assert code == 128 + sig, err
    assert "(2 micro-batches of 4)" in err  # --micro-batch 4 of a batch of 8: gradients accumulated over two
    line = error_line(err)
    step = checkpoint.load(run)["step"]
    assert 2 <= step < STEPS
    assert line == (
        f"{sig.name}: stopped after step {step} of {STEPS}, checkpoint {run}/checkpoints/step-{step:08d}.pt; "
        f"resume with: fromnet train --out {run} --resume"
    )
    assert logged_steps(run) == step
    deadline = time.monotonic() + 30
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(w) for w in workers), "loader workers outlived the run"
    resumed = subprocess.run(line.split("resume with: ")[1], shell=True, capture_output=True, text=True, env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    assert losses(run) == losses(whole)  # exact: same samples, masks and arithmetic


def test_sigkill_at_a_random_step_then_resume_equals_the_uninterrupted_run(mix, whole, tmp_path):  # noqa: F811
    kill_at = random.Random().randint(3, STEPS - 2)
    print(f"killing at step {kill_at}")
    run = tmp_path / "run"
    args = ["--shards", str(mix), *FAST, "-j", "1", "--steps", str(STEPS), "--ckpt-every", "2", "--out", str(run)]
    proc = start(tmp_path, "a", *args)
    wait_for_step(run, kill_at, proc)
    workers = children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    deadline = time.monotonic() + 30  # orphaned workers notice their parent is gone
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(w) for w in workers), "loader workers outlived a killed run"
    # what a kill in the middle of a write leaves behind
    stale = [run / "checkpoints" / ".step-00000099.pt.tmp-999999", run / ".config.toml.tmp-999999"]
    for path in stale:
        path.write_bytes(b"partial")
    result = cli("train", "--out", str(run), "--resume", "-j", "0")
    assert result.returncode == 0, result.stderr
    assert "removed 2 temporary file(s) a killed run left" in result.stderr
    assert not any(p.exists() for p in stale)
    assert losses(run) == losses(whole)


def test_a_second_ctrl_c_stops_at_once(mix, whole, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    args = ["--shards", str(mix), *FAST, "-j", "0", "--steps", str(STEPS), "--ckpt-every", "2", "--out", str(run)]
    proc = start(tmp_path, "a", *args)
    wait_for_step(run, 3, proc)
    os.kill(proc.pid, signal.SIGINT)
    deadline = time.monotonic() + 60
    while "stopping after this step" not in (tmp_path / "a.err").read_text():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGINT)
    code, out, err = finish(proc, tmp_path, "a")
    assert code == 130
    line = error_line(err)
    assert line == (
        "SIGINT: stopped at once, without saving; the steps since the last checkpoint are lost. "
        f"Resume with: fromnet train --out {run} --resume"
    )
    assert not list(run.rglob(".*.tmp-*"))  # an interrupted write leaves no temporary behind
    assert checkpoint.load(run)["step"] <= logged_steps(run) < STEPS
    resumed = subprocess.run(line.split("Resume with: ")[1], shell=True, capture_output=True, text=True, env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    assert losses(run) == losses(whole)


def test_two_runs_into_one_folder_one_is_refused_naming_the_other(mix, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    args = ["--shards", str(mix), *FAST, "-j", "0", "--steps", "4", "--out", str(run)]
    procs = [start(tmp_path, name, *args) for name in ("a", "b")]
    results = [finish(p, tmp_path, name) for p, name in zip(procs, ("a", "b"))]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], results
    loser = next(i for i, r in enumerate(results) if r[0] == 2)
    assert error_line(results[loser][2]) == (
        f"Error: another fromnet train is writing to {run}; wait for it to end or choose another --out "
        f"(held by pid {procs[1 - loser].pid})"
    )
    assert [r["step"] for r in metrics(run)] == [1, 2, 3, 4]  # each step logged once


def test_damaged_checkpoints_are_skipped_and_old_ones_pruned(mix, whole, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    args = ["--shards", str(mix), *FAST, "-j", "0", "--steps", "8", "--ckpt-every", "2", "--keep", "3"]
    result = cli("train", *args, "--out", str(run))
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["latest"] + [f"step-{s:08d}.pt{x}" for s in (4, 6, 8) for x in ("", ".sha256")]
    newest, older = run / "checkpoints" / "step-00000008.pt", run / "checkpoints" / "step-00000006.pt"
    size = newest.stat().st_size
    with open(newest, "r+b") as f:
        f.truncate(size // 2)
    data = bytearray(older.read_bytes())
    data[len(data) // 2] ^= 0xFF
    older.write_bytes(bytes(data))
    result = cli("train", "--out", str(run), "--resume")
    assert result.returncode == 0, result.stderr
    assert f"skipped {newest}: truncated: {size // 2:,} of {size:,} bytes (kept as {newest.name}.damaged)" in (
        result.stderr
    )
    assert (
        f"skipped {older}: corrupted: its SHA-256 differs from the one recorded in {older.name}.sha256 (kept as "
        in (result.stderr)
    )
    assert f"resuming from {run}/checkpoints/step-00000004.pt (step 4)" in result.stderr
    assert losses(run) == losses(whole)[: len(losses(run))] and metrics(run)[-1]["step"] == 8
    assert [p.name for p in checkpoint.checkpoints(run)] == ["step-00000004.pt", "step-00000006.pt", "step-00000008.pt"]
    assert (run / "checkpoints" / "step-00000008.pt.damaged").stat().st_size == size // 2
    for path in checkpoint.checkpoints(run):  # nothing usable left: a clear error
        path.write_bytes(b"")
    result = cli("train", "--out", str(run), "--resume", "--steps", "10")
    assert result.returncode == 2
    assert error_line(result.stderr).startswith(f"Error: --resume: {run} has no usable checkpoint (skipped ")


def test_a_used_folder_needs_resume_or_overwrite_and_resume_needs_a_checkpoint(mix, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    args = ["--shards", str(mix), *FAST, "-j", "0", "--steps", "1", "--out", str(run)]
    assert cli("train", *args).returncode == 0
    result = cli("train", *args)
    assert result.returncode == 2
    assert error_line(result.stderr) == (
        f"Error: {run} already holds a run (config.toml, metrics.jsonl, checkpoints); add --resume to continue "
        "it, --overwrite to start it again, or choose another --out"
    )
    (run / "notes.txt").write_text("mine")
    result = cli("train", *args, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert [r["step"] for r in metrics(run)] == [1] and (run / "notes.txt").read_text() == "mine"
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run / "config.toml", bare / "config.toml")
    result = cli("train", "--out", str(bare), "--resume")
    assert result.returncode == 2
    assert error_line(result.stderr) == (
        f"Error: --resume: {bare} has no checkpoint yet (the run stopped before its first); "
        "start it again with --overwrite instead of --resume"
    )


def test_a_full_disk_is_one_line_and_keeps_the_last_good_checkpoint(mix, tmp_path):  # noqa: F811
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("needs `unshare -rm` (user and mount namespaces) to mount a small tmpfs")
    run, kept = tmp_path / "run", tmp_path / "kept"
    (run / "checkpoints").mkdir(parents=True)
    args = ["--shards", str(mix), *FAST, "-j", "0", "--steps", "4", "--ckpt-every", "2", "--out", str(run)]
    # room for one checkpoint of this model (about 28 MB) but not for a second beside it
    script = (
        f"mount -t tmpfs -o size=42m tmpfs {run}/checkpoints && "
        f"{' '.join(fromnet('train', *args))}; code=$?; cp -a {run}/checkpoints {kept}; exit $code"
    )
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=ENV)
    assert result.returncode == 2, result.stderr
    line = error_line(result.stderr)
    assert re.fullmatch(
        rf"Error: disk full writing {run}/checkpoints/step-00000004\.pt: it needs [\d,]+ bytes, [\d,]+ are free; "
        rf"the last good checkpoint {run}/checkpoints/step-00000002\.pt is intact: free some space, then resume: "
        rf"fromnet train --out {run} --resume",
        line,
    ), line
    assert sorted(p.name for p in kept.iterdir()) == ["latest", "step-00000002.pt", "step-00000002.pt.sha256"]
    assert checkpoint.load(kept / "step-00000002.pt")["step"] == 2  # verifies against its checksum


def test_the_summary_states_the_schedule_and_its_commands_run_as_printed(mix, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    args = [*TINY, "--variant", "baseline", "--batch-size", "32", "--epochs", "1", "--milestones", "1"]
    result = cli("train", "--shards", str(mix), *args, "--steps", "2", "--ckpt-every", "0.01s", "--out", str(run))
    assert result.returncode == 0, result.stderr
    err = result.stderr.splitlines()
    assert err[0] == f"fromnet train -> {run}: reading the data and building the model ..."  # from the first second
    workers = memory.default_workers(1)  # -j from the machine's cores
    assert f"step 0/2: starting {workers or 'no'} loader worker(s), first batch ..." in err
    lines = {line[:11].strip(): line[11:] for line in result.stdout.splitlines() if line[:11].strip()}
    assert lines["steps"] == "0 -> 2 (epoch 0); the schedule ends at step 4 (epoch 1)"
    assert lines["loss curve"] == f"{run}/loss.png" and (run / "loss.png").stat().st_size > 0
    assert [p.name for p in checkpoint.checkpoints(run)] == ["step-00000001.pt", "step-00000002.pt"]  # by time
    command = lines["next"].split("   (")[0]
    assert command == f"fromnet train --out {run} --resume --steps 4"
    resumed = subprocess.run(command, shell=True, capture_output=True, text=True, env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    assert [r["step"] for r in metrics(run)] == [1, 2, 3, 4]
    lines = {line[:11].strip(): line[11:] for line in resumed.stdout.splitlines() if line[:11].strip()}
    assert "next" not in lines
    command = lines["evaluate"].split("   (")[0]
    assert command == f"fromnet eval --model {run} --gallery {mix} --probes {mix} --out {run}/eval"
    evaluated = subprocess.run(command, shell=True, capture_output=True, text=True, env=ENV)
    assert evaluated.returncode == 0, evaluated.stderr
    assert (run / "eval" / "identification.png").stat().st_size > 0 and "rank-1" in evaluated.stdout


def test_sigterm_to_one_rank_under_torchrun_stops_every_rank_at_the_same_step(mix, whole, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m"]
    args = ["fromnet", "train", "--shards", str(mix), *FAST, "-j", "0", "--steps", str(STEPS), "--out", str(run)]
    with open(tmp_path / "ddp.err", "w") as err:
        proc = subprocess.Popen([*launcher, *args], stdout=subprocess.DEVNULL, stderr=err, env=ENV)
    wait_for_step(run, 2, proc)
    ranks = {
        int(dict(v.split("=", 1) for v in Path(f"/proc/{p}/environ").read_text().split("\0") if "=" in v)["RANK"]): p
        for p in children(proc.pid)
    }
    os.kill(ranks[1], signal.SIGTERM)  # rank 0 gets no signal
    assert proc.wait(timeout=300) != 0
    err = (tmp_path / "ddp.err").read_text()
    state = checkpoint.load(run)
    step = state["step"]
    assert len(set(state["replica_checksums"])) == 1 and 2 <= step < STEPS
    line = (
        f"SIGTERM: stopped after step {step} of {STEPS}, checkpoint {run}/checkpoints/step-{step:08d}.pt; "
        f"resume with: torchrun --nproc-per-node 2 -m fromnet train --out {run} --resume"
    )
    assert line in err.splitlines(), err
    resumed = cli("train", "--out", str(run), "--resume")  # on one process: it runs both replicas
    assert resumed.returncode == 0, resumed.stderr
    numbers = [[x for x in losses(r) if x is not None] for r in (run, whole)]  # the baseline has no pattern loss
    assert numbers[0] == pytest.approx(numbers[1], rel=1e-4)  # the summation order differs across processes
