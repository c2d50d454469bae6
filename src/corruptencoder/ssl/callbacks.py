"""Training callbacks: encoder snapshots along training, measured throughput, atomic checkpoints, the
state a resumed run needs to continue exactly, and one log line per epoch where bars do not belong."""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from corruptencoder.utils.progress import duration
from corruptencoder.utils.signals import signals_deferred


class EncoderSnapshots(L.Callback):
    """Save ``encoders/epoch_XXX.pt`` every ``every`` epochs (small: backbone only), so the backdoor
    can be scored along training without keeping full checkpoints."""

    def __init__(self, folder: str | Path, every: int) -> None:
        self.folder = Path(folder)
        self.every = every

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        epoch = trainer.current_epoch + 1
        if trainer.is_global_zero and (epoch % self.every == 0 or epoch == trainer.max_epochs):
            pl_module.export(str(self.folder / f"epoch_{epoch:03d}.pt"), {"epoch": epoch})


class Throughput(L.Callback):
    """Images per second of real training (data loading + step) in steady state.

    Each epoch's first ``skip`` batches are excluded: the first is worker start-up and warm-up (compilation, cuDNN
    autotuning), and while it runs the loader workers fill their prefetch queues (``workers x prefetch_factor``
    batches), which the next steps then take at no cost; counting those would report the model's speed, not the
    pipeline's (seen on a GPU: a compiled step over 40 batches with 60 prefetched read 78 % of model-only where the
    loader gives 43 %). An epoch too short to leave ``2 x skip`` batches falls back to excluding only the first.
    """

    def __init__(self, skip: int = 1) -> None:
        self.skip = max(1, skip)
        self.images = 0
        self.seconds = 0.0
        self._t: float | None = None
        self._skip = self.skip

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self._t = None
        batches = trainer.num_training_batches
        self._skip = self.skip if isinstance(batches, int) and batches >= 2 * self.skip else 1

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx + 1 < self._skip:
            return
        now = time.perf_counter()
        if self._t is not None:
            self.seconds += now - self._t
            self.images += int(batch[0][0].shape[0]) * trainer.world_size
        self._t = now

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


class LastCheckpoint(L.Callback):
    """``checkpoints/last.ckpt`` every ``every`` epochs, replaced atomically so a kill while writing
    never leaves a broken file to resume from."""

    def __init__(self, folder: str | Path, every: int = 1) -> None:
        self.folder = Path(folder)
        self.every = every
        self.saved_epoch: int | None = None  # epochs done at the last save of this part

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if (trainer.current_epoch + 1) % self.every and trainer.current_epoch + 1 != trainer.max_epochs:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / ".last.ckpt.tmp"
        with signals_deferred():  # a SIGTERM while saving lets the save finish: the checkpoint is what it keeps
            trainer.save_checkpoint(str(tmp))  # collective under DDP; rank 0 writes
            if trainer.is_global_zero:
                os.replace(tmp, self.folder / "last.ckpt")
        self.saved_epoch = trainer.current_epoch + 1
        trainer.strategy.barrier("last-checkpoint")


def _numpy_global_state() -> dict[str, Any]:
    st = np.random.get_state(legacy=False)
    assert isinstance(st, dict)
    key = st["state"]["key"]  # an array: stored as a tensor, which weights-only loading accepts
    return {**st, "state": {**st["state"], "key": torch.from_numpy(np.asarray(key, dtype=np.int64))}}


def _set_numpy_global_state(st: dict[str, Any]) -> None:
    inner = dict(st["state"])
    inner["key"] = np.asarray(inner["key"].numpy() if hasattr(inner["key"], "numpy") else inner["key"], np.uint32)
    np.random.set_state({**st, "state": inner})


class ResumeState(L.Callback):
    """What a checkpoint needs, beyond Lightning's, for a resumed run to continue as if it had never stopped:
    the random states and the training time so far.

    Saved with every checkpoint (read, never drawn from: an uninterrupted run is unchanged) and restored when
    the resumed run loads its checkpoint: torch's CPU generator (the shuffle order, colour augmentation on the CPU,
    MoCo's shuffled BN), the CUDA generators, numpy's and Python's global generators, and the crop generator
    of the data set when it lives in this process (``data.workers: 0``, the CPU default). With that, a run
    stopped after epoch k and resumed ends with the same weights, bit for bit, as one never stopped.

    Not restored, with loader workers (``data.workers > 0``, the GPU default): each worker draws its crops
    from its own generator, seeded from torch's when the workers start; it lives in the worker processes and
    is not in the checkpoint, so after a resume the crops differ from an uninterrupted run (everything else
    above still continues exactly). Under DDP the states saved are rank 0's."""

    FORMAT = 1

    def __init__(self, dataset: Any = None) -> None:
        self.dataset = dataset
        self.elapsed_before = 0.0  # training seconds of the earlier parts of a resumed run
        self.start_epoch = 0
        self._t0: float | None = None

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    def _dataset_rng(self) -> np.random.Generator | None:
        rng = getattr(self.dataset, "_rng", None)
        return rng if isinstance(rng, np.random.Generator) and getattr(self.dataset, "_pid", None) == os.getpid() \
            else None

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"format": self.FORMAT, "elapsed": self.elapsed, "torch": torch.get_rng_state(),
                                 "numpy": _numpy_global_state(), "python": random.getstate()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]  # untyped in torch
            state["cuda"] = torch.cuda.get_rng_state_all()
        rng = self._dataset_rng()
        if rng is not None:
            state["dataset"] = rng.bit_generator.state
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning calls this when fit() starts from a checkpoint, before it makes the first epoch's data
        # iterator (which draws its base seed from torch's generator): the states must be back by then.
        self.elapsed_before = float(state_dict.get("elapsed", 0.0))
        if state_dict.get("format") != self.FORMAT:
            return
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available() and len(state_dict["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        _set_numpy_global_state(state_dict["numpy"])
        version, internal, gauss = state_dict["python"]
        random.setstate((version, tuple(internal), gauss))
        if "dataset" in state_dict and self.dataset is not None:
            rng = np.random.default_rng()
            rng.bit_generator.state = state_dict["dataset"]
            self.dataset._rng, self.dataset._pid = rng, os.getpid()

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self._t0 = time.perf_counter()
        self.start_epoch = trainer.current_epoch


class EpochLines(L.Callback):
    """One line per epoch on stderr (epoch, loss, images/s, time left), for log files and batch schedulers
    where a progress bar's carriage returns pile up into one unreadable line."""

    def __init__(self) -> None:
        self._t0 = 0.0
        self._te = 0.0
        self._images = 0
        self._first = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self._t0 = time.perf_counter()
        self._first = trainer.current_epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self._te = time.perf_counter()
        self._images = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._images += int(batch[0][0].shape[0]) * trainer.world_size

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        metrics = trainer.callback_metrics  # on every rank: reading them may synchronise
        if not trainer.is_global_zero:
            return
        now = time.perf_counter()
        epoch, total = trainer.current_epoch + 1, trainer.max_epochs or 0
        loss = metrics.get("train/loss_epoch", metrics.get("train/loss"))
        secs = now - self._te
        per_epoch = (now - self._t0) / max(1, epoch - self._first)
        parts = [f"epoch {epoch}/{total}", f"loss {float(loss):.4f}" if loss is not None else "loss n/a",
                 f"{self._images / secs:.0f} img/s" if secs > 0 else "",
                 f"{secs:.1f} s" if secs < 60 else duration(secs),
                 f"{duration(per_epoch * max(0, total - epoch))} left"]
        print(": ".join(parts[:1]) + ": " + ", ".join(p for p in parts[1:] if p), file=sys.stderr, flush=True)
