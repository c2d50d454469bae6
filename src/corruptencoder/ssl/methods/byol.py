"""BYOL (Grill et al. 2020): online predictor regresses the momentum target's projection; the
target momentum rises from its base to 1 along a cosine over training (lightly's schedule)."""

from __future__ import annotations

from typing import Literal

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from lightly.utils.scheduler import cosine_schedule
from pydantic import Field
from torch import nn

from corruptencoder.ssl.base import SSLMethod
from corruptencoder.ssl.config import METHODS, MethodConfig, OptimConfig, OptimDefaults, Patch
from corruptencoder.ssl.views import BYOL_1, BYOL_2


class BYOLConfig(MethodConfig):
    """BYOL: predictor + momentum target, cosine momentum schedule."""

    name: Literal["byol"] = "byol"
    momentum: float = Field(0.99, ge=0.0, le=1.0, description="base momentum, raised to 1 along a cosine schedule")
    proj_hidden: int = 4096
    proj_dim: int = 256
    pred_hidden: int = 4096


@METHODS.register
class BYOL(SSLMethod[BYOLConfig]):
    name = "byol"
    config_model = BYOLConfig
    colours = (BYOL_1, BYOL_2)
    crop_scale = (0.08, 1.0)
    optim = OptimDefaults("lars", 0.2, 1.5e-6, 10.0)
    presets = {
        "cpu-tiny": Patch(method=BYOLConfig(proj_hidden=512, proj_dim=128, pred_hidden=512), optim=OptimConfig(lr=0.5)),
        "cpu-small": Patch(method=BYOLConfig(proj_hidden=1024, pred_hidden=1024)),
        "gpu-small": Patch(optim=OptimConfig(lr=0.5)),
    }

    def build(self) -> None:
        m = self.m
        self.projection = BYOLProjectionHead(self.feat_dim, m.proj_hidden, m.proj_dim)
        self.prediction = BYOLPredictionHead(m.proj_dim, m.pred_hidden, m.proj_dim)
        self.backbone_t = self.momentum_copy(self.backbone)
        self.projection_t = self.momentum_copy(self.projection)
        self.criterion = NegativeCosineSimilarity()


    @property
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.backbone_t), (self.projection, self.projection_t)]

    def momentum(self) -> float:
        return cosine_schedule(int(self.global_step), self.total_steps, self.m.momentum, 1.0)

    def compute_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        mom = self.momentum()
        with torch.no_grad():
            self.update_momentum_pairs(mom)
            t0 = self.projection_t(self.backbone_t(views[0])).detach()
            t1 = self.projection_t(self.backbone_t(views[1])).detach()
        p0 = self.prediction(self.projection(self.backbone(views[0])))
        p1 = self.prediction(self.projection(self.backbone(views[1])))
        loss = 0.5 * (self.criterion(p0, t1) + self.criterion(p1, t0))
        return loss, {"momentum": mom}
