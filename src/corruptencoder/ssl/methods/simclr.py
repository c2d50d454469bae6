"""SimCLR (Chen, Kornblith, Norouzi, Hinton 2020): NT-Xent over the batch (gathered across devices)."""

from __future__ import annotations

from typing import Literal

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from pydantic import Field

from corruptencoder.ssl.base import SSLMethod
from corruptencoder.ssl.config import METHODS, MethodConfig, OptimConfig, OptimDefaults, Patch
from corruptencoder.ssl.views import SIMCLR as SIMCLR_COLOURS


class SimCLRConfig(MethodConfig):
    """SimCLR: NT-Xent over the other images of the batch."""

    name: Literal["simclr"] = "simclr"
    temperature: float = Field(0.1, gt=0.0)
    proj_hidden: int | None = None
    proj_dim: int = 128


@METHODS.register
class SimCLR(SSLMethod[SimCLRConfig]):
    name = "simclr"
    config_model = SimCLRConfig
    colours = (SIMCLR_COLOURS, SIMCLR_COLOURS)
    crop_scale = (0.08, 1.0)
    optim = OptimDefaults("lars", 0.3, 1e-6, 10.0)  # lr 1.2 at batch 1024 (the paper's Appendix B)
    presets = {
        "cpu-tiny": Patch(method=SimCLRConfig(temperature=0.2, proj_hidden=512), optim=OptimConfig(lr=0.5)),
        "gpu-small": Patch(method=SimCLRConfig(temperature=0.2), optim=OptimConfig(lr=0.5)),
    }

    def build(self) -> None:
        m = self.m
        self.projection = SimCLRProjectionHead(self.feat_dim, m.proj_hidden or self.feat_dim, m.proj_dim)
        # gathering is decided at call time (world size 1 = no-op), the process group may not exist yet
        distributed = torch.distributed.is_available()
        self.criterion = NTXentLoss(m.temperature, gather_distributed=distributed)

    def compute_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        z0 = self.projection(self.backbone(views[0]))
        z1 = self.projection(self.backbone(views[1]))
        return self.criterion(z0, z1), {}
