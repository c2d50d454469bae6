"""MSF / mean shift (Koohpayegani, Tejankar, Pirsiavash, ICCV 2021), written by hand (lightly has no MSF).

The online network (backbone, projection MLP, prediction MLP) embeds a strongly augmented view;
the momentum target network embeds a weakly augmented view; the loss pulls the query towards the
k nearest neighbours of the target in a memory bank of past target embeddings:

    loss = mean_b  1/k  sum_{j in kNN(t_b)}  || q_b - m_j ||^2      (all vectors L2-normalised)

The current target is searched together with the bank (so k = 1 reduces to BYOL), then enqueued
(lightly's memory bank, gathered across devices).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from corruptencoder.ssl.banks import persistent_banks
from corruptencoder.ssl.base import SSLMethod
from corruptencoder.ssl.config import METHODS, MethodConfig, OptimConfig, OptimDefaults, Patch
from corruptencoder.ssl.views import MOCO_V2, WEAK


class MSFConfig(MethodConfig):
    """MSF / mean shift: regress the query to the k nearest neighbours of the weakly-augmented target
    in a memory bank of target embeddings."""

    name: Literal["msf"] = "msf"
    momentum: float = Field(0.99, ge=0.0, le=1.0)
    bank_size: int = Field(128000, ge=1)
    topk: int = Field(5, ge=1)
    proj_hidden: int = 4096
    proj_dim: int = 512
    pred_hidden: int = 4096


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_dim))


def mean_shift_loss(query: torch.Tensor, target: torch.Tensor, bank: torch.Tensor, topk: int) -> torch.Tensor:
    """query, target: (B, D) normalised; bank: (K, D) normalised. Mean squared distance of each query
    to the ``topk`` nearest neighbours of its target among ``[target; bank]``."""
    candidates = torch.cat([target, bank], dim=0)
    # the b-th target's own row must be a candidate for sample b only: mask the other targets
    sim_t = target @ candidates.T
    b = target.shape[0]
    other = ~torch.eye(b, dtype=torch.bool, device=target.device)
    sim_t[:, :b] = sim_t[:, :b].masked_fill(other, float("-inf"))
    k = min(topk, candidates.shape[0] - b + 1)
    idx = sim_t.topk(k, dim=1).indices
    nn_vecs = candidates[idx]  # (B, k, D)
    return (2.0 - 2.0 * torch.einsum("bd,bkd->bk", query, nn_vecs)).mean()


@METHODS.register
class MSF(SSLMethod[MSFConfig]):
    name = "msf"
    config_model = MSFConfig
    colours = (WEAK, MOCO_V2)  # the target's weak view (crop + flip), the query's strong view
    crop_scale = (0.2, 1.0)
    optim = OptimDefaults("sgd", 0.05, 1e-4, 0.0)
    presets = {
        "cpu-tiny": Patch(method=MSFConfig(bank_size=2048, proj_hidden=512, proj_dim=128, pred_hidden=512),
                          optim=OptimConfig(lr=0.1)),
        "cpu-small": Patch(method=MSFConfig(bank_size=4096, proj_hidden=1024, pred_hidden=1024)),
        "gpu-small": Patch(method=MSFConfig(bank_size=8192), optim=OptimConfig(lr=0.1)),
    }

    def build(self) -> None:
        from lightly.models.modules.memory_bank import MemoryBankModule

        m = self.m
        self.projection = mlp(self.feat_dim, m.proj_hidden, m.proj_dim)
        self.prediction = mlp(m.proj_dim, m.pred_hidden, m.proj_dim)
        self.backbone_t = self.momentum_copy(self.backbone)
        self.projection_t = self.momentum_copy(self.projection)
        self.memory = MemoryBankModule(size=(m.bank_size, m.proj_dim), gather_distributed=True, feature_dim_first=False)
        persistent_banks(self.memory)

    @property
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.backbone_t), (self.projection, self.projection_t)]

    @property
    def bank(self) -> torch.Tensor:
        return self.memory.bank

    def compute_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        m = self.m
        weak, strong = views[0], views[1]
        with torch.no_grad():
            self.update_momentum_pairs(m.momentum)
            t = nn.functional.normalize(self.projection_t(self.backbone_t(weak)), dim=1)
        q = nn.functional.normalize(self.prediction(self.projection(self.backbone(strong))), dim=1)
        _, stored = self.memory(t.float(), update=True)  # the bank before this batch is enqueued
        loss = mean_shift_loss(q, t.to(q.dtype), stored.to(q.dtype), m.topk)
        return loss, {}
