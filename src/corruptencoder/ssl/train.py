"""Pre-training runs with Lightning: CPU or GPUs (DDP), checkpoints every epoch, ``--resume``.

Output folder::

    OUT/config.yaml              the resolved config (what --resume must match)
    OUT/checkpoints/last.ckpt    full state (model, optimizer, schedule, queues) for --resume
    OUT/encoders/epoch_010.pt    backbone snapshots every ``trainer.snapshot_every`` epochs
    OUT/logs/metrics.csv         loss and learning rate per step / epoch
    OUT/encoder.pt               the final backbone (torch.load(weights_only=True))
    OUT/run.json                 status, epochs, seconds, images/s, data counts, skipped files, hardware
                                 (another CPU's kernels train other weights from the same seed: utils/hardware.py)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml

from corruptencoder.errors import Interrupted, UserError
from corruptencoder.ssl.config import METHODS, PretrainConfig
from corruptencoder.utils.hardware import PeakMemory
from corruptencoder.utils.hardware import describe as describe_hardware
from corruptencoder.utils.outputs import write_json_atomic

if TYPE_CHECKING:
    from corruptencoder.ssl.base import SSLMethod

log = logging.getLogger(__name__)


PREFETCH_FACTOR = 4  # batches each loader worker keeps ready


def prefetch_depth(workers: int) -> int:
    """Batches the loader holds ready before the first step ends (what :class:`Throughput` must not count)."""
    return workers * PREFETCH_FACTOR


def quiet_lightning() -> None:
    """Lightning logs hardware banners and tips at INFO through its own handler; keep warnings only."""
    import warnings

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*litlogger.*")
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")  # CompRess' frozen teacher


def method_class(name: str) -> type[SSLMethod[Any]]:
    """The registered method ``name`` (``ssl/methods/<name>.py``)."""
    return METHODS.get(name)


def pretrain_files(cfg: PretrainConfig) -> Any:
    """The clean collection (optionally a seeded subset) plus the poison folders, as one file list."""
    from corruptencoder.data.folders import ImageCollection, load_collection, read_class_list, stratified_subset
    from corruptencoder.data.poisoned import pretraining_files

    d = cfg.data
    if d.clean:
        root = Path(d.clean)
        classes = read_class_list(d.classes) if d.classes else None
        if classes is not None and (root / d.split).is_dir():
            root = root / d.split
        clean = load_collection(root, classes, what="clean pre-training data")
        if d.exclude:  # a defender's clean subset must never hold a poison, whatever list it came from
            from corruptencoder.poison.manifest import poison_files

            banned = {str(p.resolve()) for folder in d.exclude for p in poison_files(folder)}
            clean = clean.subset([i for i, f in enumerate(clean.files) if str(Path(f).resolve()) not in banned])
        if d.max_images and d.max_images < len(clean):
            clean = stratified_subset(clean, total=d.max_images, seed=cfg.trainer.seed)
        if d.fraction and d.fraction < 1.0:
            clean = stratified_subset(clean, fraction=d.fraction, seed=cfg.trainer.seed)
    else:
        clean = ImageCollection([], None, None, "")
    return pretraining_files(clean, d.poisons)


@dataclass
class PairSources:
    """Clean image-text pairs (CSV or shards) followed by multi-modal poison pairs, as one indexable set."""

    sources: list[Any]
    offsets: list[int]
    num_poisons: int

    def __len__(self) -> int:
        return self.offsets[-1]

    def _locate(self, i: int) -> tuple[Any, int]:
        import bisect

        k = bisect.bisect_right(self.offsets, i) - 1
        return self.sources[k], i - self.offsets[k]

    def load_image(self, i: int) -> Any:
        src, j = self._locate(i)
        return src.load_image(j)

    def names(self) -> list[str]:
        out = []
        for src in self.sources:
            out += [src.name(j) for j in range(len(src))] if hasattr(src, "name") else [str(p) for p in src.images]
        return out

    def captions(self) -> list[str]:
        return [c for src in self.sources for c in src.captions]


def pretrain_pairs(cfg: PretrainConfig) -> PairSources:
    """CLIP's data: ``data.pairs`` (open_clip CSV/TSV or webdataset shards) plus poison folders' pairs.csv."""
    from corruptencoder.data.captions import load_pairs, read_pairs_csv
    from corruptencoder.poison.manifest import PAIRS

    d = cfg.data
    sources: list[Any] = []
    if d.pairs:
        clean = load_pairs(d.pairs, img_key=d.img_key, caption_key=d.caption_key, sep=d.separator) \
            if str(d.pairs).lower().endswith((".csv", ".tsv")) else load_pairs(d.pairs)
        n = len(clean)
        if d.max_images and d.max_images < n:
            n = d.max_images
        if d.fraction and d.fraction < 1.0:  # a defender's clean subset (CompRess of a CLIP image tower)
            n = max(1, int(round(d.fraction * n)))
        if n < len(clean):
            import numpy as np

            keep = np.sort(np.random.default_rng(cfg.trainer.seed).permutation(len(clean))[:n])
            clean = clean.subset(keep.tolist())
        sources.append(clean)
    elif d.clean:
        raise UserError("CLIP trains on image-text pairs: give data.pairs (an open_clip CSV/TSV or tar shards), "
                        "not data.clean")
    n_poison = 0
    for folder in d.poisons:
        csv_path = Path(folder) / PAIRS
        if not csv_path.is_file():
            raise UserError(f"{folder}: no {PAIRS}; CLIP needs multi-modal poisons (craft corruptencoder-mm or "
                            "carlini-terzis)")
        coll = read_pairs_csv(csv_path)
        sources.append(coll)
        n_poison += len(coll)
    offsets = [0]
    for src in sources:
        offsets.append(offsets[-1] + len(src))
    return PairSources(sources, offsets, n_poison)


@dataclass
class PretrainResult:
    out: Path
    encoder: Path
    epochs: int
    seconds: float
    images_per_second: float
    num_images: int
    num_poisons: int


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    c = json.loads(json.dumps(cfg))
    for k in ("accelerator", "devices", "num_nodes", "threads", "progress", "log_every_n_steps", "compile"):
        c.get("trainer", {}).pop(k, None)
    c.get("data", {}).pop("workers", None)
    c.get("data", {}).pop("cache", None)
    c.get("data", {}).pop("decode", None)  # where pixels are decoded, not what is trained (as workers)
    return c


def _diff(a: Any, b: Any, path: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            d = _diff(a.get(k), b.get(k), f"{path}.{k}" if path else k)
            if d:
                return d
        return None
    return None if a == b else f"{path}: {a!r} -> {b!r}"


def _rank_zero() -> bool:
    """Whether this process is the job's global rank 0 (the one that prepares outputs), whoever launched it:
    torchrun sets RANK, srun with several tasks SLURM_PROCID, Lightning's own launcher NODE_RANK + LOCAL_RANK
    (LOCAL_RANK alone would make every node's first process "rank 0")."""
    env = os.environ
    if env.get("RANK", "").strip().isdigit():
        return int(env["RANK"]) == 0
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and env.get("SLURM_PROCID", "").strip().isdigit():
        return int(env["SLURM_PROCID"]) == 0
    return int(env.get("LOCAL_RANK", "0")) == 0 and int(env.get("NODE_RANK", env.get("GROUP_RANK", "0"))) == 0


def plan_output(cfg: PretrainConfig, out: Path, resume: bool, overwrite: bool) -> tuple[Path | None, bool]:
    """Check the output folder against resume / overwrite, writing nothing. Returns the checkpoint to resume
    from (None: start from scratch) and whether a fresh folder is to be made (replacing any old one)."""
    ckpt = out / "checkpoints" / "last.ckpt"
    if not _rank_zero():
        return (ckpt if resume and ckpt.is_file() else None), False  # DDP worker ranks: rank 0 owns the folder
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder; choose another --out")
    if out.exists() and any(out.iterdir()):
        if resume:
            saved = out / "config.yaml"
            if not saved.is_file():
                raise UserError(f"{out}: nothing to resume (no config.yaml); start a new run or pass --overwrite")
            try:
                old = yaml.safe_load(saved.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                old = None
            if not isinstance(old, dict):
                raise UserError(f"{saved}: damaged, so this run cannot be resumed; pass --overwrite to start it again")
            d = _diff(_comparable(old), _comparable(cfg.model_dump(mode="json")))
            if d:
                raise UserError(f"{out}: the config differs from the run being resumed ({d}); use the same config "
                                "or a new --out")
            return (ckpt if ckpt.is_file() else None), False
        if not overwrite:
            raise UserError(f"{out}: output folder exists; pass --resume to continue it, --overwrite to replace it, "
                            "or choose another --out")
        return None, True
    if resume:
        why = "the folder does not exist" if not out.exists() else "the folder is empty"
        raise UserError(f"{out}: nothing to resume ({why}); check --out, or drop --resume to start a new run there")
    return None, True


def create_output(cfg: PretrainConfig, out: Path) -> None:
    """A fresh output folder (replacing an old one) with the resolved config; rank 0 only."""
    try:
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False),
                                         encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{out}: cannot write the output folder ({exc.strerror or exc}); choose another --out or fix "
                        "the folder's permissions or free space") from None


def prepare_output(cfg: PretrainConfig, out: Path, resume: bool, overwrite: bool) -> Path | None:
    """Check the output folder against resume/overwrite, make it if needed; return the checkpoint to resume from."""
    ckpt, fresh = plan_output(cfg, out, resume, overwrite)
    if fresh:
        create_output(cfg, out)
    return ckpt


def check_checkpoint(ckpt: Path) -> None:
    """A checkpoint to resume from must load (weights only: tensors and plain data, never code) before anything
    else happens; a damaged one is one line saying what to do."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch reports damage and refusals with many types: one line here
        text = str(exc).strip()
        first = text.splitlines()[0].split(". ")[0][:160] if text else type(exc).__name__
        raise UserError(f"{ckpt}: cannot resume from it (damaged, or it needs arbitrary code to load: {first}); "
                        "delete it to start this run again from scratch with --resume, or pass --overwrite") from None
    if not isinstance(state, dict) or "state_dict" not in state or "loops" not in state:
        raise UserError(f"{ckpt}: not a training checkpoint of this tool; delete it, or pass --overwrite")


def _next_log_version(logs: Path) -> str:
    """One CSV log folder per (re)start, so a resumed run never overwrites the earlier log."""
    n = len(list(logs.glob("part*"))) if logs.is_dir() else 0
    return f"part{n + 1}"


def merge_metrics(logs: Path) -> Path | None:
    """Concatenate every part's metrics.csv into logs/metrics.csv (columns unioned)."""
    import csv

    parts = sorted(logs.glob("part*/metrics.csv"), key=lambda p: int(p.parent.name[4:] or 0))
    if not parts:
        return None
    rows, cols = [], []
    for p in parts:
        with open(p, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            cols += [c for c in reader.fieldnames or [] if c not in cols]
            rows += list(reader)
    target = logs / "metrics.csv"
    with open(target, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=cols)
        writer.writeheader()
        writer.writerows(rows)
    return target


def resolve_runtime(cfg: PretrainConfig) -> dict[str, Any]:
    """Accelerator, precision, strategy and loader workers for this machine."""
    import torch

    t = cfg.trainer
    gpu = torch.cuda.is_available() and t.accelerator in ("auto", "gpu", "cuda")
    if t.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UserError("trainer.accelerator is 'gpu' but no CUDA GPU is visible; use accelerator: cpu or auto")
    accelerator = "gpu" if gpu else ("mps" if t.accelerator == "mps" else "cpu")
    precision = t.precision
    if precision == "auto":
        precision = ("bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed") if gpu else "32-true"
    if not gpu and precision != "32-true":
        precision = "32-true"  # bf16 slows ResNets down on CPU (measured); keep fp32 there
    devices = t.devices
    n_dev = (torch.cuda.device_count() if gpu else 1) if devices == "auto" else int(devices)
    if n_dev < 1:
        raise UserError(f"trainer.devices={devices}: give the number of devices per node (at least 1) or auto")
    if gpu and n_dev > torch.cuda.device_count():
        raise UserError(f"trainer.devices={devices} (--devices) but only {torch.cuda.device_count()} CUDA GPU(s) are "
                        "visible; use at most that many, or auto")
    strategy: Any = "auto"
    if n_dev > 1 or t.num_nodes > 1:
        from lightning.pytorch.strategies import DDPStrategy

        # broadcast_buffers=False: DDP would otherwise copy rank 0's buffers to every rank at each step, which
        # overwrites per-rank state such as SwAV's feature queues (kept per device, as SwAV does); the
        # gathered queues (MoCo, MSF, CompRess) are the same on every rank anyway
        strategy = DDPStrategy(process_group_backend="nccl" if gpu else "gloo", find_unused_parameters=False,
                               broadcast_buffers=False)
    cores = os.cpu_count() or 1
    workers = cfg.data.workers
    if workers is None:
        # a GPU host: every core but one per device decodes and crops (the GPU waits otherwise); a CPU host
        # keeps its cores for the model (the loader runs in the main process on 2 cores: measured fastest)
        workers = max(1, cores // max(1, n_dev) - 1) if gpu else (0 if cores <= 2 else min(4, cores - 2))
    world = n_dev * t.num_nodes
    batch = cfg.optim.batch_size
    if batch % world:
        raise UserError(f"optim.batch_size={batch} is the global batch and must split evenly over {world} processes "
                        f"({n_dev} device(s) x {t.num_nodes} node(s)); use a multiple of {world}")
    return {"accelerator": accelerator, "precision": precision, "devices": devices, "strategy": strategy,
            "workers": workers, "gpu": gpu, "world": world, "per_process_batch": batch // world}


def pretrain(cfg: PretrainConfig, out: str | Path, *, resume: bool = False, overwrite: bool = False,
             progress: bool | None = None, callbacks: list[Any] | None = None) -> PretrainResult:
    """Pre-train an encoder; ``callbacks`` are extra Lightning callbacks (e.g. your own loggers).

    Everything that can fail on bad input (the data, the output folder, the checkpoint to resume from, the
    devices, the model, the trainer's settings) is checked before the output folder is written, so an error
    leaves nothing behind and the same command can simply be run again. A run stopped by SIGINT / SIGTERM
    (through the CLI's handler) raises :class:`Interrupted` with a note on the checkpoint and how to resume.
    """
    import lightning as L
    import torch
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.callbacks import TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader

    from corruptencoder.data.datasets import ImageStore, ViewDataset, collate_views, read_skip_log
    from corruptencoder.ssl.callbacks import EncoderSnapshots, EpochLines, LastCheckpoint, ResumeState, Throughput
    from corruptencoder.utils.progress import bars_wanted

    quiet_lightning()
    out = Path(out)
    clip = method_class(cfg.method.name).data_kind == "pairs"
    # an image method given only image-text pairs trains on their images (captions unused): CompRess distilling
    # a CLIP image tower on the clean pairs
    pair_images = not clip and bool(cfg.data.pairs) and not cfg.data.clean
    # 1. check, writing nothing: the data, the output folder, the checkpoint, the devices
    files: Any = pretrain_pairs(cfg) if clip or pair_images else pretrain_files(cfg)
    if len(files) < 2:
        raise UserError(f"pre-training needs at least 2 images, found {len(files)}; check data.clean / data.poisons")
    ckpt, fresh = plan_output(cfg, out, resume, overwrite)
    if ckpt is not None:
        check_checkpoint(ckpt)
    if resume and ckpt is None and (out / "encoder.pt").is_file():
        log.info("%s: already finished; nothing to resume", out)
    rt = resolve_runtime(cfg)
    # 2. build the model, the data and the trainer (the order of random draws is that of every earlier version)
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    show = cfg.trainer.progress if progress is None else progress
    bars = show and bars_wanted()

    short = cfg.data.cache_short_side or 4 * cfg.data.image_size
    cache_modes: dict[str, bool | str] = {"auto": "auto", "memory": True, "none": False}
    cache = cache_modes[cfg.data.cache]
    model = method_class(cfg.method.name)(cfg)
    collate: Any = collate_views
    decode_on = "host"  # where the training images are decoded and cropped (run.json)
    if clip or pair_images:
        store = ImageStore(files.names(), short, cache, progress=show, loader=files.load_image)
        if clip:
            from corruptencoder.data.datasets import PairDataset
            from corruptencoder.ssl.clip_model import CaptionTokens, context_length

            dataset: Any = PairDataset(store, files.captions(), model.plan.crop,
                                       CaptionTokens(context_length(cast(dict[str, Any], model.clip_spec))))
        else:
            dataset = ViewDataset(store, model.plan.crop)
    else:
        from corruptencoder.data.encoded import EncodedViewDataset, collate_encoded, device_decode_wanted

        store = ImageStore(files.files, short, False if cfg.data.decode == "device" else cache, progress=show)
        if device_decode_wanted(cfg.data.decode, rt["gpu"], store, rt["workers"]):
            dataset = EncodedViewDataset(store, model.plan)
            collate = collate_encoded(tuple(v.size for v in model.plan.views))
            decode_on = "device"
            log.info("decoding and cropping on the device (data.decode=%s)", cfg.data.decode)
        else:
            dataset = ViewDataset(store, model.plan.crop)
    bs = rt["per_process_batch"]  # optim.batch_size is the global batch, as the papers state it
    if rt["world"] > 1 and _rank_zero():
        _, lr, _, _ = cfg.resolved_optim()
        log.info("global batch %d = %d per process x %d processes; learning rate %.4g for the global batch",
                 cfg.optim.batch_size, bs, rt["world"], lr)
    prefetch = PREFETCH_FACTOR if rt["workers"] > 0 else None
    loader = DataLoader(dataset, batch_size=min(bs, len(dataset)), shuffle=True, drop_last=len(dataset) >= bs,
                        num_workers=rt["workers"], collate_fn=collate, pin_memory=rt["gpu"],
                        persistent_workers=rt["workers"] > 0, prefetch_factor=prefetch)
    if cfg.trainer.compile:
        model.backbone = cast(torch.nn.Module, torch.compile(model.backbone))  # an OptimizedModule

    throughput = Throughput(skip=1 + prefetch_depth(rt["workers"]))
    state = ResumeState(dataset if rt["workers"] == 0 else None)  # loader workers hold their own crop generators
    last = LastCheckpoint(out / "checkpoints", cfg.trainer.checkpoint_every)
    callbacks = list(callbacks or []) + [last, throughput, state]
    if cfg.trainer.snapshot_every:
        callbacks.append(EncoderSnapshots(out / "encoders", cfg.trainer.snapshot_every))
    if bars:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, min(20, len(loader) // 10 or 1))))
    elif show:  # a log file or a scheduler: one line per epoch, no carriage returns
        callbacks.append(EpochLines())
    version = "part1" if fresh else _next_log_version(out / "logs")
    try:
        trainer = L.Trainer(
            max_epochs=cfg.optim.epochs, accelerator=rt["accelerator"], devices=rt["devices"],
            num_nodes=cfg.trainer.num_nodes,
            strategy=rt["strategy"], precision=rt["precision"], callbacks=callbacks,
            logger=CSVLogger(str(out), name="logs", version=version), enable_progress_bar=bars,
            enable_model_summary=False,
            enable_checkpointing=False,
            log_every_n_steps=min(cfg.trainer.log_every_n_steps, max(1, len(loader))), default_root_dir=str(out),
            num_sanity_val_steps=0, benchmark=rt["gpu"],
        )
    except (MisconfigurationException, ValueError) as exc:
        raise UserError(f"trainer settings (accelerator {rt['accelerator']}, devices {rt['devices']}, nodes "
                        f"{cfg.trainer.num_nodes}): {str(exc).strip().splitlines()[0]}") from None
    # 3. write: the output folder, the exact training files, the log of unreadable images
    if fresh:
        create_output(cfg, out)
    if _rank_zero():
        # the exact training files (the clean subset of a defence included), for reproducibility
        names = files.names() if clip or pair_images else files.files
        (out / "train_files.txt").write_text("".join(f"{f}\n" for f in names), encoding="utf-8")
    store.log_skipped_to(out / "skipped.txt")
    t0 = time.perf_counter()
    memory = PeakMemory()  # this stage's own peak, though an experiment runs its arms in one process
    caller_group = _process_group_open()  # a caller's own DDP program keeps its group; one Lightning opens is ours
    try:
        trainer.fit(model, loader, ckpt_path=str(ckpt) if ckpt else None)
    except BaseException as exc:
        stopped = _as_interruption(exc)
        if stopped is None:
            raise
        raise Interrupted(stopped, _resume_note(out, trainer, last, state, ckpt)) from None
    seconds = state.elapsed_before + time.perf_counter() - t0  # every part of a resumed run
    encoder = out / "encoder.pt"
    if trainer.is_global_zero:
        merge_metrics(out / "logs")
        skipped = read_skip_log(out / "skipped.txt")
        model.export(str(encoder), {"num_images": len(files), "num_poisons": files.num_poisons})
        write_json_atomic(out / "run.json", {
            "status": "done", "method": cfg.method.name, "epochs": int(trainer.current_epoch),
            "seconds": round(seconds, 2), "images_per_second": round(throughput.images_per_second, 1),
            "num_images": len(files), "num_poisons": files.num_poisons,
            "poison_ratio": round(files.num_poisons / max(1, len(files)), 6),
            "skipped_images": len(skipped), "accelerator": rt["accelerator"], "precision": rt["precision"],
            "devices": rt["devices"] if isinstance(rt["devices"], int) else str(rt["devices"]),
            "resumed_from": str(ckpt) if ckpt else None, "hardware": describe_hardware(), **memory.read(),
            "loader_workers": rt["workers"], "decode_on": decode_on,
        })
        if skipped:
            log.warning("skipped %d unreadable image(s) during training; listed in %s", len(skipped),
                        out / "skipped.txt")
    if not caller_group:
        _close_process_group()
    return PretrainResult(out, encoder, int(trainer.current_epoch), seconds, throughput.images_per_second,
                          len(files), files.num_poisons)


def _process_group_open() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _close_process_group() -> None:
    """Wait for rank zero's files, then tear the process group down while the interpreter is whole: gloo's threads
    left to the interpreter's exit can abort a finished rank ("terminate called without an active exception",
    exit -6; seen in CI's 2-process DDP tests)."""
    import torch.distributed as dist

    if _process_group_open():
        dist.barrier()
        dist.destroy_process_group()


def _as_interruption(exc: BaseException) -> int | None:
    """The signal behind an exception that stopped training, if it was one: our handler's Interrupted, or
    Lightning's SIGTERMException (a SystemExit with code None, which would read as success)."""
    import signal

    if isinstance(exc, Interrupted):
        return exc.signum
    if isinstance(exc, KeyboardInterrupt):
        return int(signal.SIGINT)
    if type(exc).__name__ == "SIGTERMException":
        return int(signal.SIGTERM)
    return None


def _resume_note(out: Path, trainer: Any, last: Any, state: Any, ckpt: Path | None) -> str:
    """Where a stopped run can continue from, and how."""
    saved = out / "checkpoints" / "last.ckpt"
    if not saved.is_file():
        return f"stopped before the first checkpoint; run the same command with --resume (--out {out}) to start again"
    done = last.saved_epoch if last.saved_epoch is not None else (state.start_epoch if ckpt is not None else 0)
    which = f"the checkpoint after epoch {done} of {trainer.max_epochs}" if done else "its last checkpoint"
    return f"{which} is saved in {saved}; resume with the same command plus --resume (--out {out})"
