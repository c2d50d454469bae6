"""SimCLR (Chen, Kornblith, Norouzi, Hinton 2020): NT-Xent over the batch (gathered across devices)."""

from __future__ import annotations

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead

from corruptencoder.ssl.base import SSLMethod
from corruptencoder.ssl.config import SimCLRConfig


class SimCLR(SSLMethod):
    name = "simclr"

    def build(self) -> None:
        m: SimCLRConfig = self.cfg.method  # type: ignore[assignment]
        self.projection = SimCLRProjectionHead(self.feat_dim, m.proj_hidden or self.feat_dim, m.proj_dim)
        # gathering is decided at call time (world size 1 = no-op), the process group may not exist yet
        distributed = torch.distributed.is_available()
        self.criterion = NTXentLoss(m.temperature, gather_distributed=distributed)

    def compute_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        z0 = self.projection(self.backbone(views[0]))
        z1 = self.projection(self.backbone(views[1]))
        return self.criterion(z0, z1), {}
