"""Training callbacks: encoder snapshots along training, and measured throughput."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import lightning as L


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
    """Images per second of real training (data loading + step), each epoch's first batch excluded
    (worker start-up, warm-up)."""

    def __init__(self) -> None:
        self.images = 0
        self.seconds = 0.0
        self._t: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self._t = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
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

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if (trainer.current_epoch + 1) % self.every and trainer.current_epoch + 1 != trainer.max_epochs:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / ".last.ckpt.tmp"
        trainer.save_checkpoint(str(tmp))  # collective under DDP; rank 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, self.folder / "last.ckpt")
        trainer.strategy.barrier("last-checkpoint")
