"""MoCo-v2 (Chen, Fan, Girshick, He 2020): the paper's default pre-training method.

Query encoder + MLP head; a momentum key encoder; InfoNCE against a queue of past keys
(lightly's NTXentLoss with a memory bank), temperature 0.2. With DDP, keys are gathered into the
queue from every device and the key batch is shuffled across devices (shuffled BN).
"""

from __future__ import annotations

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from lightly.models.utils import batch_shuffle_distributed, batch_unshuffle_distributed
from torch import nn

from corruptencoder.ssl.base import SSLMethod
from corruptencoder.ssl.config import MoCoConfig
from corruptencoder.ssl.splitbn import set_splits, use_split_batchnorm


class MoCo(SSLMethod):
    name = "moco"

    def build(self) -> None:
        m: MoCoConfig = self.cfg.method  # type: ignore[assignment]
        hidden = m.proj_hidden or self.feat_dim
        use_split_batchnorm(self.backbone, m.bn_splits)  # before the key copy: both encoders split
        self.projection = MoCoProjectionHead(self.feat_dim, hidden, m.proj_dim)
        self.backbone_k = self.momentum_copy(self.backbone)
        self.projection_k = self.momentum_copy(self.projection)
        # gathering is decided at call time (world size 1 = no-op), the process group may not exist yet
        distributed = torch.distributed.is_available()
        self.criterion = NTXentLoss(m.temperature, memory_bank_size=(m.queue_size, m.proj_dim) if m.queue_size else 0,
                                    gather_distributed=distributed)

    def on_fit_start(self) -> None:
        if self.trainer.world_size > 1:  # real devices shuffle BN across ranks: no virtual split on top
            set_splits(self, 1)

    def key(self, x: torch.Tensor) -> torch.Tensor:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed and torch.distributed.get_world_size() > 1:
            x, shuffle = batch_shuffle_distributed(x)
            k = self.projection_k(self.backbone_k(x))
            return batch_unshuffle_distributed(k, shuffle).detach()
        m: MoCoConfig = self.cfg.method  # type: ignore[assignment]
        if m.bn_splits > 1:  # the keys' virtual devices hold other images than the queries' did
            perm = torch.randperm(x.shape[0], device=x.device)
            k = self.projection_k(self.backbone_k(x[perm]))
            return k[torch.argsort(perm)].detach()
        return self.projection_k(self.backbone_k(x)).detach()

    def compute_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        m: MoCoConfig = self.cfg.method  # type: ignore[assignment]
        x0, x1 = views[0], views[1]
        with torch.no_grad():
            self.ema(self.backbone, self.backbone_k, m.momentum)
            self.ema(self.projection, self.projection_k, m.momentum)
            k1 = self.key(x1)
            k0 = self.key(x0) if m.symmetric else None
        q0 = self.projection(self.backbone(x0))
        loss = self.criterion(q0, k1)
        if m.symmetric:
            q1 = self.projection(self.backbone(x1))
            loss = 0.5 * (loss + self.criterion(q1, k0))
        return loss, {}

    def online_modules(self) -> list[nn.Module]:
        return [self.backbone, self.projection]
