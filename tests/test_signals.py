"""Interruptions, as a shell, a wrapper script or a batch scheduler sends them.

SIGINT / SIGTERM during ``craft`` with 2 workers and during ``pretrain``: exit status 130 / 143 with one
``error:`` line, no temp folder, no process left running, and the same command works afterwards (crafting
again from scratch, pre-training resumed from the checkpoint). kill -9 cannot clean up: the workers die
with their parent and the next run into the same folder removes the temp folder. Linux only (``/proc``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import class_folder

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc to find child processes")

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _children(pid: int) -> set[int]:
    """Every descendant of ``pid`` (from /proc/*/stat)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2:].split()
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped (os.kill(pid, 0) succeeds on zombies too)."""
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (ProcessLookupError, FileNotFoundError):
        return False
    except PermissionError:
        return True
    return state not in ("Z", "X")


def _wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _assert_all_gone(pids: set[int]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(map(_running, pids)):
        time.sleep(0.1)
    left = sorted(p for p in pids if _running(p))
    assert not left, f"processes still running after their parent ended: {left}"


def _start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "corruptencoder", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def _craft_args(assets: dict[str, Path], out: Path, num: int) -> list[str]:
    return ["craft", "corruptencoder", "--references", str(assets["references"]), "--backgrounds",
            str(assets["backgrounds"]), "--trigger-size", "6", "--num", str(num), "--workers", "2", "--quiet",
            "--out", str(out)]


def _rendering(out: Path) -> bool:
    return len(list(out.parent.glob(f".{out.name}.tmp-*/images/*/*.png"))) >= 4


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_craft_with_two_workers_stops_cleanly(assets: dict[str, Path], tmp_path: Path, sig: int, code: int) -> None:
    out = tmp_path / "poisons"
    proc = _start(_craft_args(assets, out, 20000))
    try:
        _wait_until(lambda: _rendering(out) or proc.poll() is not None, 120, "the workers to render")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        workers = _children(proc.pid)
        assert len(workers) >= 2, "expected 2 pool workers"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)  # returns: no worker holds the pipes open
    finally:
        proc.kill()
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: interrupted by {signal.Signals(sig).name}"), err
    assert not out.exists() and not list(tmp_path.glob(".poisons.tmp-*")), "temp folder left behind"
    _assert_all_gone(workers)
    # the same command works afterwards
    done = subprocess.run([sys.executable, "-m", "corruptencoder", *_craft_args(assets, out, 6)], capture_output=True,
                          text=True, env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 6


def test_craft_killed_with_sigkill_workers_die_and_next_run_cleans_up(assets: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "poisons"
    proc = _start(_craft_args(assets, out, 20000))
    try:
        _wait_until(lambda: _rendering(out) or proc.poll() is not None, 120, "the workers to render")
        workers = _children(proc.pid)
        assert len(workers) >= 2
        proc.kill()
        proc.communicate(timeout=60)  # a worker holding stdout/stderr open would hang this
    finally:
        proc.kill()
    _assert_all_gone(workers)  # PR_SET_PDEATHSIG (or the watchdog) ended them
    stale = list(tmp_path.glob(".poisons.tmp-*"))
    assert len(stale) == 1 and json.loads((stale[0] / ".owner").read_text())["pid"] == proc.pid
    done = subprocess.run([sys.executable, "-m", "corruptencoder", *_craft_args(assets, out, 6)], capture_output=True,
                          text=True, env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not stale[0].exists(), "the next run into the folder removes a dead run's temp folder"
    assert "left behind by an interrupted run" in done.stderr


def _pretrain_args(data: Path, out: Path, epochs: int) -> list[str]:
    return ["pretrain", "--data", str(data), "--image-size", "16", "--backbone", "small_cnn", "--width", "0.25",
            "--batch-size", "12", "--epochs", str(epochs), "--quiet", "--set", "trainer.threads=1",
            "--set", "method.queue_size=32", "--set", "method.proj_hidden=32", "--out", str(out)]


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_pretrain_stops_with_a_checkpoint_and_resumes(tmp_path: Path, sig: int, code: int) -> None:
    data = class_folder(tmp_path / "data", ["c0", "c1", "c2"], 8, (24, 24))
    out = tmp_path / "run"
    args = _pretrain_args(data, out, 50)
    proc = _start(args)
    ckpt = out / "checkpoints" / "last.ckpt"
    try:
        _wait_until(lambda: ckpt.is_file() or proc.poll() is not None, 180, "the first checkpoint")
        assert proc.poll() is None, "training ended before it could be interrupted"
        children = _children(proc.pid)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: interrupted by {signal.Signals(sig).name}"), err
    assert "checkpoint after epoch" in lines[0] and "--resume" in lines[0], lines[0]
    assert ckpt.is_file() and not (out / "encoder.pt").exists()
    _assert_all_gone(children)
    from corruptencoder.cli import main  # resumed in this process: one torch start-up less

    assert main([*args, "--resume"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["epochs"] == 50 and run["resumed_from"] and (out / "encoder.pt").is_file()


def test_run_under_sigterm_exits_143_and_resumes(tmp_path: Path) -> None:
    """A SLURM pre-emption or ``timeout`` during an experiment: non-zero status, one line, and the same command
    continues from the half-trained encoder's checkpoint."""
    import yaml

    data = class_folder(tmp_path / "data", ["c0", "c1", "c2"], 8, (24, 24))
    class_folder(tmp_path / "task" / "train", ["c0", "c1", "c2"], 4, (20, 20), seed=1)
    class_folder(tmp_path / "task" / "test", ["c0", "c1", "c2"], 2, (20, 20), seed=2)
    cfg = {"name": "sig", "preset": "cpu-tiny", "data": {"clean": str(data)},
           "tasks": [{"name": "t", "root": str(tmp_path / "task"), "image_size": 16}],
           "targets": [{"name": "c1", "task": "t"}],
           "defaults": {"epochs": 50, "batch_size": 12, "image_size": 16, "trigger_size": 3},
           "pretrain": {"method": {"queue_size": 32, "proj_hidden": 32}, "trainer": {"threads": 1},
                        "backbone": {"name": "small_cnn", "width": 0.25}},
           "arms": [{"name": "no-attack", "attack": "none"}], "evaluation": {"probe_epochs": 2}}
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump(cfg))
    run_dir = tmp_path / "out"
    proc = _start(["run", str(config), "--out", str(run_dir), "--quiet"])
    try:
        _wait_until(lambda: any(run_dir.glob("cache/encoders/*/checkpoints/last.ckpt")) or proc.poll() is not None,
                    180, "the first checkpoint")
        assert proc.poll() is None, "the run ended before it could be interrupted"
        children = _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: interrupted by SIGTERM"), err
    assert "checkpoint after epoch" in lines[0] and "run the same command again" in lines[0], lines[0]
    assert not (run_dir / "results.json").exists()
    _assert_all_gone(children)
    assert not list(tmp_path.rglob(".*.tmp-*")), "temp folder left behind"
    from corruptencoder.cli import main

    assert main(["run", str(config), "--out", str(run_dir), "--quiet"]) == 0
    assert (run_dir / "results.json").is_file()
    encoder = next(run_dir.glob("cache/encoders/*/run.json"))
    assert json.loads(encoder.read_text())["resumed_from"], "the encoder continued from its checkpoint"
