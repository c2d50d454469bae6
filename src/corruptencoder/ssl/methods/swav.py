"""SwAV (Caron et al. 2020): swapped prediction of Sinkhorn-Knopp codes over learnable prototypes,
with multi-crop and, for small batches, a queue of past features for the Sinkhorn step."""

from __future__ import annotations

import logging
from typing import Any, Literal, cast

import torch
from lightly.loss import SwaVLoss
from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes
from lightly.models.modules.memory_bank import MemoryBankModule
from pydantic import Field
from torch import nn

from corruptencoder.ssl.augment import ColourAugment
from corruptencoder.ssl.banks import bank
from corruptencoder.ssl.base import SSLMethod
from corruptencoder.ssl.config import METHODS, MethodConfig, OptimConfig, OptimDefaults, Patch, PretrainConfig
from corruptencoder.ssl.views import SIMCLR, ViewSpec

log = logging.getLogger(__name__)


def queue_rows_per_rank(queue_size: int, world: int) -> int:
    """Rows of each process's feature queue: ``queue_size`` is the global queue, split over the ``world``
    processes as in SwAV's code (facebookresearch/swav, main_swav.py: each rank allocates
    ``queue_length // world_size`` rows; its Sinkhorn step all-reduces the codes' sums, so the ranks' queues
    together are the configured length). main_swav.py also rounds ``queue_length`` down to a multiple of the
    global batch; lightly's ring buffer needs no such rounding (a batch that overruns the end is cut), so the
    configured size is kept. At least one row per rank when the queue is on."""
    if world < 1:
        raise ValueError(f"world size {world}: at least 1 process")
    return max(1, queue_size // world) if queue_size > 0 else 0


class SwAVConfig(MethodConfig):
    """SwAV: prototypes, Sinkhorn-Knopp codes, swapped prediction, multi-crop."""

    name: Literal["swav"] = "swav"
    temperature: float = Field(0.1, gt=0.0)
    n_prototypes: int = Field(3000, ge=1)
    proj_hidden: int = 2048
    proj_dim: int = 128
    sinkhorn_iterations: int = 3
    sinkhorn_epsilon: float = 0.05
    freeze_prototypes_epochs: float = 1.0
    queue_size: int = Field(3840, ge=0, description="features kept for Sinkhorn with small batches, over all "
                            "processes (each of N keeps queue_size // N, as SwAV does); 0 = off")
    queue_start_epoch: int = 15
    n_local: int = Field(6, ge=0, description="low-resolution multi-crop views (0 = off)")


@METHODS.register
class SwAV(SSLMethod[SwAVConfig]):
    name = "swav"
    config_model = SwAVConfig
    colours = (SIMCLR, SIMCLR)
    crop_scale = (0.14, 1.0)
    optim = OptimDefaults("lars", 0.6, 1e-6, 0.0)  # the batch-256 recipe
    presets = {
        "cpu-tiny": Patch(method=SwAVConfig(n_prototypes=100, queue_size=0, n_local=0, proj_hidden=512),
                          optim=OptimConfig(lr=0.5)),
        "cpu-small": Patch(method=SwAVConfig(n_prototypes=300)),
        "gpu-small": Patch(method=SwAVConfig(n_prototypes=300, queue_size=0, n_local=0), optim=OptimConfig(lr=0.5)),
    }

    @classmethod
    def local_views(cls, cfg: PretrainConfig, scale: tuple[float, float],
                    colour: ColourAugment) -> tuple[ViewSpec, ...]:
        """Multi-crop: ``n_local`` views of 96/224 of the image size from (0.05, low) of its area."""
        m = cfg.method
        assert isinstance(m, SwAVConfig)
        n_local = m.n_local if cfg.views.n_local is None else cfg.views.n_local
        side = max(8, int(round(cfg.data.image_size * 96 / 224)))
        return tuple(ViewSpec(side, (0.05, scale[0]), colour) for _ in range(n_local))

    def build(self) -> None:
        m = self.m
        self.projection = SwaVProjectionHead(self.feat_dim, m.proj_hidden, m.proj_dim)
        self.prototypes = SwaVPrototypes(m.proj_dim, m.n_prototypes)
        # gathering is decided at call time (world size 1 = no-op), the process group may not exist yet
        distributed = torch.distributed.is_available()
        self.criterion = SwaVLoss(m.temperature, m.sinkhorn_iterations, m.sinkhorn_epsilon,
                                  sinkhorn_gather_distributed=distributed)
        n_global = len(self.plan.global_views)
        self.queues = nn.ModuleList([bank(m.queue_size, m.proj_dim) for _ in range(n_global)] if m.queue_size else [])

    def setup(self, stage: str) -> None:
        # the trainer knows the world size here, and Lightning restores a checkpoint only after this hook
        self.split_queues(self.trainer.world_size)

    def split_queues(self, world: int) -> None:
        """Keep ``queue_rows_per_rank`` rows per queue on this process (the first rows of the random initial
        queue: no random draw, so a one-process run is unchanged)."""
        rows = queue_rows_per_rank(self.m.queue_size, world)
        for q in self.queues:
            mb = cast(MemoryBankModule, q)
            if mb.size[0] != rows:
                mb.bank = mb.bank[:rows].clone()  # still a persistent buffer (same name)
                mb.bank_ptr.zero_()
                mb.size = (rows, *mb.size[1:])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # a run resumed on another number of processes has queues of another length per rank: start them again
        # (they refill in queue_size / batch steps) rather than fail on the shape
        state = checkpoint.get("state_dict", {})
        for i, q in enumerate(self.queues):
            mb = cast(MemoryBankModule, q)
            saved = state.get(f"queues.{i}.bank")
            if saved is not None and tuple(saved.shape) != tuple(mb.bank.shape):
                log.warning("SwAV queue %d: the checkpoint holds %d rows per process, this run %d (another number "
                            "of processes); the queue starts again", i, saved.shape[0], mb.bank.shape[0])
                state[f"queues.{i}.bank"] = mb.bank.detach().clone()
                state[f"queues.{i}.bank_ptr"] = torch.zeros_like(mb.bank_ptr)

    def compute_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        m = self.m
        self.prototypes.normalize()
        n_global = len(self.plan.global_views)
        feats = [nn.functional.normalize(self.projection(self.backbone(v)), dim=1) for v in views]
        outs = [self.prototypes(f) for f in feats]
        queue_outs = None
        if self.queues:
            queued = []
            for i, q in enumerate(self.queues):
                _, stored = q(feats[i].detach(), update=True)
                queued.append(stored)  # (queue, dim)
            if self.current_epoch >= m.queue_start_epoch:
                with torch.no_grad():
                    queue_outs = [self.prototypes(b.to(feats[0].dtype)) for b in queued]
        loss = self.criterion(outs[:n_global], outs[n_global:], queue_outs)
        return loss, {}

    def on_after_backward(self) -> None:
        # SwAV keeps the prototypes fixed during the first iterations (gradients dropped, as the
        # official code does, rather than toggling requires_grad, which DDP does not allow)
        if self.global_step < self.m.freeze_prototypes_epochs * self.steps_per_epoch:
            for p in self.prototypes.parameters():
                p.grad = None
