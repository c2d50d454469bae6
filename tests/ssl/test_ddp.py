"""Several processes (gloo, 2 CPU processes): per-rank queues stay per rank, and how many bytes MoCo's
shuffled BN moves. Slow (each case starts two training processes); CI runs them with ``-m slow``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import class_folder, free_port

SCRIPT = textwrap.dedent('''
    import json, os, sys
    import lightning as L
    import torch
    import torch.distributed as dist
    from corruptencoder.ssl.config import PretrainConfig
    from corruptencoder.ssl.train import pretrain

    moved = {"bytes": 0, "calls": 0}
    real = dist.all_gather

    def counting(tensor_list, tensor, *a, **k):  # every all_gather: what this rank receives
        moved["bytes"] += tensor.element_size() * tensor.numel() * len(tensor_list)
        moved["calls"] += 1
        return real(tensor_list, tensor, *a, **k)

    dist.all_gather = counting

    class Dump(L.Callback):
        def on_train_end(self, trainer, module):
            rank = trainer.global_rank
            queues = {n: b.detach().cpu().tolist() for n, b in module.named_buffers() if n.endswith(".bank")}
            steps = max(1, trainer.global_step)
            with open(os.path.join(sys.argv[3], f"rank{rank}.json"), "w") as fh:
                json.dump({"queues": queues, "bytes_per_step": moved["bytes"] / steps}, fh)

    cfg = PretrainConfig.model_validate(json.load(open(sys.argv[1])))
    pretrain(cfg, sys.argv[2], progress=False, callbacks=[Dump()])
''')


def _run(tmp_path: Path, method: dict[str, object], name: str) -> list[dict[str, object]]:
    data = class_folder(tmp_path / "data", ["a", "b", "c"], 12, (24, 24))
    cfg = {"method": method, "data": {"clean": str(data), "image_size": 16},
           "backbone": {"name": "small_cnn", "width": 0.25}, "optim": {"batch_size": 12, "epochs": 2, "lr": 0.1},
           "trainer": {"progress": False, "threads": 1, "devices": 2, "accelerator": "cpu", "channels_last": False}}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    (tmp_path / "script.py").write_text(SCRIPT)
    dumps = tmp_path / f"dumps-{name}"
    dumps.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}
    proc = subprocess.run([sys.executable, str(tmp_path / "script.py"), str(tmp_path / "cfg.json"),
                           str(tmp_path / f"out-{name}"), str(dumps)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((dumps / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow
def test_swav_queues_stay_per_rank(tmp_path: Path) -> None:
    ranks = _run(tmp_path, {"name": "swav", "n_prototypes": 8, "queue_size": 12, "queue_start_epoch": 0,
                            "n_local": 0, "proj_hidden": 16, "proj_dim": 8}, "swav")
    q0, q1 = ranks[0]["queues"], ranks[1]["queues"]
    assert set(q0) == set(q1) and q0
    for name in q0:  # each rank filled its queue with its own features (DDP's buffer broadcast is off)
        assert q0[name] != q1[name], name


@pytest.mark.slow
def test_moco_virtual_shuffle_moves_no_images(tmp_path: Path) -> None:
    base = {"name": "moco", "queue_size": 24, "proj_hidden": 16, "proj_dim": 8}
    virtual = _run(tmp_path, {**base, "shuffle": "virtual"}, "virtual")
    gathered = _run(tmp_path, {**base, "shuffle": "distributed"}, "distributed")
    image_bytes = 6 * 3 * 16 * 16 * 4  # one rank's key images (6 per process, 16 px, fp32)
    moved_v, moved_d = virtual[0]["bytes_per_step"], gathered[0]["bytes_per_step"]
    assert moved_d - moved_v >= 2 * image_bytes  # the distributed shuffle gathers every rank's key images
    assert moved_v < image_bytes  # the virtual one moves only keys and losses, never images
    # with the virtual shuffle each rank keeps its own split BN: the gathered queue is the same on both ranks
    assert virtual[0]["queues"] == virtual[1]["queues"]


@pytest.mark.slow
def test_torchrun_launch_trains_once_with_rank_zero_owning_the_folder(tmp_path: Path) -> None:
    data = class_folder(tmp_path / "data", ["a", "b", "c"], 8, (24, 24))
    cfg = {"method": {"name": "simclr", "proj_hidden": 16, "proj_dim": 8},
           "data": {"clean": str(data), "image_size": 16},
           "backbone": {"name": "small_cnn", "width": 0.25}, "optim": {"batch_size": 8, "epochs": 1, "lr": 0.1},
           "trainer": {"progress": False, "threads": 1, "devices": 2, "accelerator": "cpu"}}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    port = str(29700 + os.getpid() % 200)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           port, "-m", "corruptencoder", "pretrain", "--config", str(tmp_path / "cfg.json"),
                           "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "encoder.pt").is_file() and (out / "run.json").is_file()
    run = json.loads((out / "run.json").read_text())
    assert run["devices"] == 2 and run["num_images"] == 24
    assert len(list((out / "logs").glob("part*"))) == 1  # one process wrote the logs
