"""Pre-training runs: outputs, kill-and-resume, DDP on 2 CPU processes, config and data errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import class_folder, free_port
from corruptencoder.cli import main
from corruptencoder.errors import ConfigError, UserError
from corruptencoder.ssl.config import PretrainConfig
from corruptencoder.ssl.encoder import load_encoder
from corruptencoder.ssl.train import pretrain
from corruptencoder.utils.config import load_config


@pytest.fixture()
def tiny_data(tmp_path: Path) -> Path:
    return class_folder(tmp_path / "data", ["c0", "c1", "c2"], 12, (28, 24))


def tiny_config(data: Path, **over: object) -> PretrainConfig:
    base = {
        "method": {"name": "moco", "queue_size": 32, "proj_hidden": 32, "proj_dim": 16},
        "data": {"clean": str(data), "image_size": 16},
        "backbone": {"name": "small_cnn", "width": 0.25},
        "optim": {"batch_size": 12, "epochs": 2, "lr": 0.1},
        "trainer": {"progress": False, "threads": 1},
    }
    for k, v in over.items():
        section, key = k.split(".")
        base.setdefault(section, {})[key] = v  # type: ignore[index]
    return PretrainConfig.model_validate(base)


def test_outputs_and_encoder_roundtrip(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = pretrain(tiny_config(tiny_data, **{"trainer.snapshot_every": 1}), out)
    assert res.epochs == 2 and res.num_images == 36
    for f in ("config.yaml", "encoder.pt", "run.json", "checkpoints/last.ckpt", "logs/metrics.csv",
              "encoders/epoch_001.pt", "encoders/epoch_002.pt"):
        assert (out / f).is_file(), f
    model, spec, meta = load_encoder(out / "encoder.pt")
    assert spec["name"] == "small_cnn" and meta["method"] == "moco"
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, model.out_dim)
    raw = torch.load(out / "encoder.pt", weights_only=True)
    assert set(raw) == {"format", "backbone", "meta", "state_dict"}
    run = json.loads((out / "run.json").read_text())
    hw = run["hardware"]  # what a rerun elsewhere may differ by
    assert hw["torch"] == torch.__version__ and hw["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert run["peak_rss_mb"] > 50  # the training process's own peak (torch alone takes more)


class StopAtEpoch:
    """A Lightning callback that 'kills' the run when ``epoch`` starts (after the previous checkpoint)."""

    def __new__(cls, epoch: int):  # type: ignore[no-untyped-def]
        import lightning as L

        class _Stop(L.Callback):
            def on_train_epoch_start(self, trainer, pl_module):  # type: ignore[no-untyped-def]
                if trainer.current_epoch == epoch:
                    raise RuntimeError("simulated kill")

        return _Stop()


class PauseAtEpochEnd:
    """A Lightning callback that sleeps ``seconds`` at the end of every epoch (wall time, same weights)."""

    def __new__(cls, seconds: float):  # type: ignore[no-untyped-def]
        import time

        import lightning as L

        class _Pause(L.Callback):
            def on_train_epoch_end(self, trainer, pl_module):  # type: ignore[no-untyped-def]
                time.sleep(seconds)

        return _Pause()


class RecordStart:
    def __new__(cls, store: dict):  # type: ignore[no-untyped-def]
        import lightning as L

        class _Rec(L.Callback):
            def on_train_start(self, trainer, pl_module):  # type: ignore[no-untyped-def]
                opt = trainer.optimizers[0]
                store["state_entries"] = len(opt.state)
                store["global_step"] = trainer.global_step
                store["epoch"] = trainer.current_epoch
                store["lr"] = opt.param_groups[0]["lr"]

        return _Rec()


def test_kill_and_resume_restores_optimizer(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = tiny_config(tiny_data, **{"optim.epochs": 3})
    with pytest.raises(RuntimeError, match="simulated kill"):
        pretrain(cfg, out, callbacks=[StopAtEpoch(1)])
    assert (out / "checkpoints" / "last.ckpt").is_file() and not (out / "encoder.pt").exists()
    with pytest.raises(UserError, match="--resume"):
        pretrain(cfg, out)
    seen: dict = {}
    res = pretrain(cfg, out, resume=True, callbacks=[RecordStart(seen)])
    assert res.epochs == 3
    assert seen["epoch"] == 1 and seen["global_step"] == 3, seen  # 3 steps per epoch: epoch 0 kept
    assert seen["state_entries"] > 0, "optimizer momentum buffers were restored, not restarted"
    assert (out / "encoder.pt").is_file()
    import csv

    with open(out / "logs" / "metrics.csv") as fh:
        epochs = {int(r["epoch"]) for r in csv.DictReader(fh) if r.get("epoch")}
    assert epochs == {0, 1, 2}, "the log of the epochs before the kill is kept"
    # a different config cannot resume this run
    with pytest.raises(UserError, match="config differs"):
        pretrain(tiny_config(tiny_data, **{"optim.epochs": 5}), out, resume=True)


@pytest.mark.parametrize("method,stop", [("moco", 1), ("simclr", 2)])
def test_resume_is_bit_exact(tiny_data: Path, tmp_path: Path, method: str, stop: int) -> None:
    """A run stopped after epoch k and resumed ends with the same weights as one never stopped: the
    checkpoint carries the random states (torch, numpy, Python, the in-process crop generator)."""
    cfg = tiny_config(tiny_data, **{"optim.epochs": 3, "trainer.seed": 7})
    if method != "moco":
        cfg = PretrainConfig.model_validate({**cfg.model_dump(), "method": {"name": method, "proj_hidden": 32}})
    pretrain(cfg, tmp_path / "whole")
    with pytest.raises(RuntimeError, match="simulated kill"):
        pretrain(cfg, tmp_path / "parts", callbacks=[PauseAtEpochEnd(0.5), StopAtEpoch(stop)])
    ckpt = torch.load(tmp_path / "parts" / "checkpoints" / "last.ckpt", weights_only=False)  # our own file
    before = next(v["elapsed"] for v in ckpt["callbacks"].values() if isinstance(v, dict) and "elapsed" in v)
    assert before >= 0.5 * stop  # the training time of the part before the interruption, paused in every epoch
    res = pretrain(cfg, tmp_path / "parts", resume=True)
    whole, _, _ = load_encoder(tmp_path / "whole" / "encoder.pt")
    parts, _, _ = load_encoder(tmp_path / "parts" / "encoder.pt")
    for k, v in whole.state_dict().items():
        assert torch.equal(v, parts.state_dict()[k]), k
    run = json.loads((tmp_path / "parts" / "run.json").read_text())
    assert run["seconds"] == pytest.approx(res.seconds, abs=0.01) and res.seconds > before  # the whole run's time


@pytest.mark.parametrize("method", ["simclr", "swav", "byol", "msf"])
def test_every_method_runs_an_epoch(tiny_data: Path, tmp_path: Path, method: str) -> None:
    extra = {"swav": {"n_prototypes": 8, "queue_size": 0, "n_local": 2, "proj_hidden": 32},
             "byol": {"proj_hidden": 32, "proj_dim": 16, "pred_hidden": 32},
             "msf": {"bank_size": 64, "proj_hidden": 32, "proj_dim": 16, "pred_hidden": 32},
             "simclr": {"proj_hidden": 32}}[method]
    cfg = tiny_config(tiny_data, **{"optim.epochs": 1})
    cfg = PretrainConfig.model_validate({**cfg.model_dump(), "method": {"name": method, **extra}})
    res = pretrain(cfg, tmp_path / method)
    assert res.epochs == 1 and (tmp_path / method / "encoder.pt").is_file()


def test_localized_and_no_crop_defences_train(tiny_data: Path, tmp_path: Path) -> None:
    for crop in ("localized", "none"):
        cfg = tiny_config(tiny_data, **{"views.crop": crop, "optim.epochs": 1})
        assert pretrain(cfg, tmp_path / crop).epochs == 1


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text(yaml.safe_dump({"data": {"clean": "x"}, "optim": {"batchsize": 32}}))
    with pytest.raises(ConfigError, match=r"optim\.batchsize: unknown key"):
        load_config(PretrainConfig, bad)
    bad.write_text(yaml.safe_dump({"data": {"clean": "x"}, "optim": {"epochs": "ten"}}))
    with pytest.raises(ConfigError, match=r"optim\.epochs"):
        load_config(PretrainConfig, bad)
    bad.write_text(yaml.safe_dump({"data": {"clean": "x"}, "method": {"name": "mocco"}}))
    with pytest.raises(ConfigError, match=r"method"):
        load_config(PretrainConfig, bad)


def test_missing_data_folder_names_it_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = main(["pretrain", "--data", str(tmp_path / "nowhere"), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: ") and "nowhere" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_unreadable_image_is_skipped_and_counted(tiny_data: Path, tmp_path: Path) -> None:
    (tiny_data / "c0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    res = pretrain(tiny_config(tiny_data, **{"optim.epochs": 1}), tmp_path / "run")
    import json

    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert res.num_images == 37 and run["skipped_images"] == 1


def test_poisons_join_the_pretraining_set(tiny_data: Path, tmp_path: Path, assets: dict[str, Path]) -> None:
    from corruptencoder.poison.config import CraftConfig
    from corruptencoder.poison.craft import craft

    craft(CraftConfig.model_validate({"targets": [{"name": "dog", "num": 6, "trigger_size": 5,
          "references": [str(assets["references"])], "backgrounds": [str(assets["backgrounds"])]}]}),
          tmp_path / "poisons", progress=False)
    cfg = tiny_config(tiny_data, **{"optim.epochs": 1, "data.poisons": [str(tmp_path / "poisons")]})
    res = pretrain(cfg, tmp_path / "run")
    assert res.num_images == 42 and res.num_poisons == 6


@pytest.mark.skipif(sys.platform != "linux", reason="gloo DDP test is run on Linux CI")
def test_ddp_two_cpu_processes(tiny_data: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tiny_data, **{"optim.epochs": 1}).model_dump(mode="json")))
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}
    proc = subprocess.run([sys.executable, "-m", "corruptencoder", "pretrain", "--config", str(cfg), "--out", str(out),
                           "--devices", "2", "--accelerator", "cpu", "--quiet"],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "encoder.pt").is_file()
    ck = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ck["global_step"] == 3  # batch 12 is global: 6 per process x 2 processes -> 36 / 12 = 3 steps


def test_continued_pretraining_starts_from_the_given_encoder(tiny_data: Path, tmp_path: Path) -> None:
    from conftest import random_encoder
    from corruptencoder.ssl.train import method_class

    init = random_encoder(tmp_path / "init.pt", width=0.25, image_size=16, seed=3)
    model = method_class("moco")(tiny_config(tiny_data, **{"backbone.init": str(init)}))
    want, _, _ = load_encoder(init)
    for k, v in want.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[k], v)
        torch.testing.assert_close(model.backbone_k.state_dict()[k], v)  # the key encoder starts there too
    with pytest.raises(ConfigError, match="differs from the configured"):
        method_class("moco")(tiny_config(tiny_data, **{"backbone.init": str(init), "backbone.width": 0.5}))


def test_rank_zero_follows_the_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    from corruptencoder.ssl.train import _rank_zero

    for var in ("RANK", "SLURM_PROCID", "SLURM_NTASKS", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert _rank_zero()
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("GROUP_RANK", "1")  # torchrun on the second node: its first process is not rank 0
    monkeypatch.setenv("RANK", "4")
    assert not _rank_zero()
    monkeypatch.setenv("RANK", "0")
    assert _rank_zero()
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "2")
    assert not _rank_zero()
    monkeypatch.setenv("SLURM_NTASKS", "1")  # one task: Lightning's own launcher decides
    monkeypatch.setenv("NODE_RANK", "0")
    monkeypatch.delenv("GROUP_RANK")
    assert _rank_zero()


def test_global_batch_must_split_over_processes(tiny_data: Path) -> None:
    from corruptencoder.ssl.train import resolve_runtime

    cfg = tiny_config(tiny_data, **{"trainer.devices": 2, "trainer.accelerator": "cpu", "optim.batch_size": 13})
    with pytest.raises(UserError, match="global batch and must split evenly over 2 processes"):
        resolve_runtime(cfg)
    rt = resolve_runtime(tiny_config(tiny_data, **{"trainer.devices": 2, "trainer.accelerator": "cpu"}))
    assert rt["world"] == 2 and rt["per_process_batch"] == 6
    assert rt["strategy"]._ddp_kwargs.get("broadcast_buffers") is False  # per-rank queues stay per rank


@pytest.mark.parametrize("cores,expected", [(1, 0), (2, 0), (3, 1), (4, 2), (6, 4), (64, 4)])
def test_loader_workers_default_on_a_cpu_host(tiny_data: Path, monkeypatch: pytest.MonkeyPatch, cores: int,
                                              expected: int) -> None:
    """A CPU host keeps its cores for the model: the loader runs in the main process on 2 cores, else
    cores - 2 workers, at most 4."""
    from corruptencoder.ssl.train import resolve_runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    rt = resolve_runtime(tiny_config(tiny_data))
    assert rt["gpu"] is False and rt["workers"] == expected
    assert resolve_runtime(tiny_config(tiny_data, **{"data.workers": 3}))["workers"] == 3  # data.workers wins


@pytest.mark.parametrize("cores,devices,expected", [(16, 1, 15), (16, 2, 7), (16, 4, 3), (8, 8, 1), (2, 4, 1)])
def test_loader_workers_default_on_a_gpu_host(tiny_data: Path, monkeypatch: pytest.MonkeyPatch, cores: int,
                                              devices: int, expected: int) -> None:
    """A GPU host: every core but one per device decodes and crops (at least one worker per device)."""
    from corruptencoder.ssl.train import resolve_runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    rt = resolve_runtime(tiny_config(tiny_data, **{"trainer.devices": devices, "optim.batch_size": 24}))
    assert rt["gpu"] is True and rt["workers"] == expected
    auto = resolve_runtime(tiny_config(tiny_data, **{"trainer.devices": "auto", "optim.batch_size": 24}))
    assert auto["workers"] == max(1, cores // 8 - 1)  # auto: every visible GPU (8 here)


@pytest.mark.parametrize("method,keys", [("moco", ["criterion.memory_bank.bank", "criterion.memory_bank.bank_ptr"]),
                                         ("swav", ["queues.0.bank", "queues.1.bank_ptr"]),
                                         ("msf", ["memory.bank", "memory.bank_ptr"])])
def test_memory_banks_are_in_the_checkpoint(tiny_data: Path, tmp_path: Path, method: str, keys: list[str]) -> None:
    """lightly registers its banks as non-persistent buffers: a resumed run would train on random negatives."""
    method_cfg = {"moco": {"queue_size": 32, "proj_hidden": 32, "proj_dim": 16},
                  "swav": {"n_prototypes": 8, "queue_size": 24, "n_local": 0, "proj_hidden": 32, "proj_dim": 16},
                  "msf": {"bank_size": 24, "proj_hidden": 32, "proj_dim": 16, "pred_hidden": 32}}[method]
    cfg = PretrainConfig.model_validate({**tiny_config(tiny_data, **{"optim.epochs": 1}).model_dump(),
                                         "method": {"name": method, **method_cfg}})
    pretrain(cfg, tmp_path / "run")
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    for key in keys:
        assert key in state["state_dict"], key
    bank = state["state_dict"][keys[0]]
    assert bank.ndim == 2 and not torch.equal(bank, torch.zeros_like(bank))


class RecordBanks:
    """A Lightning callback that copies every memory bank (and its pointer) when training starts, i.e. after
    Lightning restored the checkpoint of a resumed run."""

    def __new__(cls, store: dict):  # type: ignore[no-untyped-def]
        import lightning as L

        class _Rec(L.Callback):
            def on_train_start(self, trainer, pl_module):  # type: ignore[no-untyped-def]
                store.update({n: b.detach().clone() for n, b in pl_module.named_buffers()
                              if n.endswith((".bank", ".bank_ptr"))})

        return _Rec()


@pytest.mark.parametrize("method,keys", [("moco", ["criterion.memory_bank.bank", "criterion.memory_bank.bank_ptr"]),
                                         ("swav", ["queues.0.bank", "queues.0.bank_ptr", "queues.1.bank",
                                                   "queues.1.bank_ptr"])])
def test_a_resumed_run_starts_from_the_saved_queue(tiny_data: Path, tmp_path: Path, method: str,
                                                   keys: list[str]) -> None:
    """Issue 17: the queue a resumed run trains against is the one saved in last.ckpt, not a new random one."""
    from corruptencoder.ssl.train import method_class

    # 36 images, 3 steps of 12 an epoch: MoCo's queue of 40 holds 36 keys (pointer 36), SwAV's of 24 wrapped once
    method_cfg = {"moco": {"queue_size": 40, "proj_hidden": 32, "proj_dim": 16},
                  "swav": {"n_prototypes": 8, "queue_size": 24, "n_local": 0, "proj_hidden": 32, "proj_dim": 16}}
    cfg = PretrainConfig.model_validate({**tiny_config(tiny_data, **{"optim.epochs": 2}).model_dump(),
                                         "method": {"name": method, **method_cfg[method]}})
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated kill"):
        pretrain(cfg, out, callbacks=[StopAtEpoch(1)])
    saved = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    torch.manual_seed(cfg.trainer.seed)  # the same random initial queue as the run's
    init = method_class(method)(cfg).state_dict()
    for key in keys:
        assert key in saved, key
    banks = [k for k in keys if k.endswith(".bank")]
    for key in banks:
        assert saved[key].shape == init[key].shape and not torch.equal(saved[key], init[key]), key
    assert int(saved[keys[1]]) == {"moco": 36, "swav": 12}[method]  # where the next batch goes
    # a fresh module that loads the checkpoint holds the saved queue ...
    fresh = method_class(method)(cfg)
    fresh.load_state_dict(saved)
    for key, value in fresh.state_dict().items():
        if key in keys:
            assert torch.equal(value, saved[key]), key
    # ... and so does the resumed run, when its training starts
    seen: dict = {}
    assert pretrain(cfg, out, resume=True, callbacks=[RecordBanks(seen)]).epochs == 2
    assert set(keys) <= set(seen)
    for key in keys:
        assert torch.equal(seen[key], saved[key]), key


def test_final_lr_ratio_floors_the_cosine_and_leaves_cache_keys_alone(tmp_path: Path) -> None:
    """1.0 = constant after warm-up (a short refresh); the default 0 decays to zero and does not enter a stage
    cache key, so every encoder cached before the option existed is still found."""
    from corruptencoder.experiment.runner import Runner, demo_config
    from corruptencoder.ssl.optim import warmup_cosine

    assert warmup_cosine(99, 100, 10, 1.0) == 1.0 and warmup_cosine(0, 100, 10, 1.0) == 0.1
    assert warmup_cosine(99, 100, 0) < 0.01 and abs(warmup_cosine(50, 100, 0, 0.5) - 0.75) < 0.01
    cfg = demo_config()
    runner = Runner(cfg, tmp_path / "run", cache=tmp_path / "cache", progress=False)
    runner.generate = False
    base = next(a for a in runner.arms if a.name == "base")
    pcfg, key, _ = runner.pretrain_setting(base, 0, None)
    assert pcfg.optim.final_lr_ratio == 0.0
    body = pcfg.model_dump(mode="json")
    del body["optim"]["final_lr_ratio"]  # the config as it was before the option: the same key
    assert runner.pretrain_key(type(pcfg).model_validate(body)) == key
    floored = pcfg.model_copy(update={"optim": pcfg.optim.model_copy(update={"final_lr_ratio": 1.0})})
    assert runner.pretrain_key(floored) != key


def test_throughput_skips_the_batches_prefetched_during_the_first_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow first step (start-up, compilation) lets the workers queue ``workers x prefetch_factor`` batches that
    the next steps take at no cost; the steady-state rate is timed after them, or after the first batch alone when
    the epoch is too short to leave as many again."""
    from types import SimpleNamespace

    import corruptencoder.ssl.callbacks as cb
    from corruptencoder.ssl.callbacks import Throughput

    def run(skip: int, batches: int) -> float:
        # batch i ends at: 10 s for the first, then 0 s each for the 4 queued ones, then 1 s each
        now = [0.0]
        monkeypatch.setattr(cb.time, "perf_counter", lambda: now[0])
        tp = Throughput(skip=skip)
        trainer = SimpleNamespace(num_training_batches=batches, world_size=1)
        tp.on_train_epoch_start(trainer, None)  # type: ignore[arg-type]
        batch = ([torch.zeros(8, 3, 2, 2)], None)
        for i in range(batches):
            now[0] += 10.0 if i == 0 else (0.0 if i <= 4 else 1.0)
            tp.on_train_batch_end(trainer, None, None, batch, i)  # type: ignore[arg-type]
        return tp.images_per_second

    assert run(skip=5, batches=20) == pytest.approx(8.0)  # 8 images a second, the steady state
    assert run(skip=1, batches=20) > 8.0 * 1.2  # the queued batches read as free
    assert run(skip=5, batches=8) == run(skip=1, batches=8)  # too short: only the first batch is left out


def test_the_demo_base_keeps_its_cache_key(tmp_path: Path) -> None:
    """The demo's base encoder (12-15 minutes of 2 cores, shared by `corruptencoder demo` and the cpu-small
    configs through --cache) hashes as it has since 2026-12-02. A new pre-training option must stay out of the key
    at its default (runner.ADDED_LATER); were it to change, every cached encoder would be trained again. Update
    the literal only for a change that must retrain (and say so in the commit)."""
    from corruptencoder.experiment.runner import Runner, demo_config

    runner = Runner(demo_config(), tmp_path / "run", cache=tmp_path / "cache", progress=False)
    runner.generate = False
    base = next(a for a in runner.arms if a.name == "base")
    cfg = runner.pretrain_setting(base, 0, None)[0]
    # the key holds the world's folder, which lies under $CORRUPTENCODER_CACHE (the tests' own): fix it
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"clean": "/cache/worlds/world-899e4694afd1/"
                                                                                "pretrain"})})
    assert runner.pretrain_key(cfg) == "6b5e9ea96c8811e5"
