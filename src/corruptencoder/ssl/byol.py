"""BYOL (Grill et al. 2020): online predictor regresses the momentum target's projection; the
target momentum rises from its base to 1 along a cosine over training."""

from __future__ import annotations

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead

from corruptencoder.ssl.base import SSLMethod
from corruptencoder.ssl.config import BYOLConfig
from corruptencoder.ssl.optim import cosine_momentum


class BYOL(SSLMethod):
    name = "byol"

    def build(self) -> None:
        m: BYOLConfig = self.cfg.method  # type: ignore[assignment]
        self.projection = BYOLProjectionHead(self.feat_dim, m.proj_hidden, m.proj_dim)
        self.prediction = BYOLPredictionHead(m.proj_dim, m.pred_hidden, m.proj_dim)
        self.backbone_t = self.momentum_copy(self.backbone)
        self.projection_t = self.momentum_copy(self.projection)
        self.criterion = NegativeCosineSimilarity()

    def momentum(self) -> float:
        m: BYOLConfig = self.cfg.method  # type: ignore[assignment]
        return cosine_momentum(int(self.global_step), self.total_steps, m.momentum)

    def compute_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        mom = self.momentum()
        with torch.no_grad():
            self.ema(self.backbone, self.backbone_t, mom)
            self.ema(self.projection, self.projection_t, mom)
            t0 = self.projection_t(self.backbone_t(views[0])).detach()
            t1 = self.projection_t(self.backbone_t(views[1])).detach()
        p0 = self.prediction(self.projection(self.backbone(views[0])))
        p1 = self.prediction(self.projection(self.backbone(views[1])))
        loss = 0.5 * (self.criterion(p0, t1) + self.criterion(p1, t0))
        return loss, {"momentum": mom}
