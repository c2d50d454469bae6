"""SwAV (Caron et al. 2020): swapped prediction of Sinkhorn-Knopp codes over learnable prototypes,
with multi-crop and, for small batches, a queue of past features for the Sinkhorn step."""

from __future__ import annotations

import torch
from lightly.loss import SwaVLoss
from lightly.loss.memory_bank import MemoryBankModule
from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes
from torch import nn

from corruptencoder.ssl.base import SSLMethod
from corruptencoder.ssl.config import SwAVConfig


class SwAV(SSLMethod):
    name = "swav"

    def build(self) -> None:
        m: SwAVConfig = self.cfg.method  # type: ignore[assignment]
        self.projection = SwaVProjectionHead(self.feat_dim, m.proj_hidden, m.proj_dim)
        self.prototypes = SwaVPrototypes(m.proj_dim, m.n_prototypes)
        # gathering is decided at call time (world size 1 = no-op), the process group may not exist yet
        distributed = torch.distributed.is_available()
        self.criterion = SwaVLoss(m.temperature, m.sinkhorn_iterations, m.sinkhorn_epsilon,
                                  sinkhorn_gather_distributed=distributed)
        n_global = len(self.plan.global_views)
        self.queues = nn.ModuleList(
            [MemoryBankModule(size=(m.queue_size, m.proj_dim)) for _ in range(n_global)] if m.queue_size else [])

    def compute_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        m: SwAVConfig = self.cfg.method  # type: ignore[assignment]
        self.prototypes.normalize()
        n_global = len(self.plan.global_views)
        feats = [nn.functional.normalize(self.projection(self.backbone(v)), dim=1) for v in views]
        outs = [self.prototypes(f) for f in feats]
        queue_outs = None
        if self.queues:
            queued = []
            for i, q in enumerate(self.queues):
                _, bank = q(feats[i].detach(), update=True)
                queued.append(bank.transpose(0, 1))  # (queue, dim)
            if self.current_epoch >= m.queue_start_epoch:
                with torch.no_grad():
                    queue_outs = [self.prototypes(b.to(feats[0].dtype)) for b in queued]
        loss = self.criterion(outs[:n_global], outs[n_global:], queue_outs)
        return loss, {}

    def on_after_backward(self) -> None:
        # SwAV keeps the prototypes fixed during the first iterations (gradients dropped, as the
        # official code does, rather than toggling requires_grad, which DDP does not allow)
        m: SwAVConfig = self.cfg.method  # type: ignore[assignment]
        if self.global_step < m.freeze_prototypes_epochs * self.steps_per_epoch:
            for p in self.prototypes.parameters():
                p.grad = None
