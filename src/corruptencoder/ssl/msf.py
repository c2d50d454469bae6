"""MSF / mean shift (Koohpayegani, Tejankar, Pirsiavash, ICCV 2021), written by hand (lightly has no MSF).

The online network (backbone, projection MLP, prediction MLP) embeds a strongly augmented view;
the momentum target network embeds a weakly augmented view; the loss pulls the query towards the
k nearest neighbours of the target in a memory bank of past target embeddings:

    loss = mean_b  1/k  sum_{j in kNN(t_b)}  || q_b - m_j ||^2      (all vectors L2-normalised)

The current target is searched together with the bank (so k = 1 reduces to BYOL), then enqueued.
"""

from __future__ import annotations

import torch
from lightly.models.utils import concat_all_gather
from torch import nn

from corruptencoder.ssl.base import SSLMethod
from corruptencoder.ssl.config import MSFConfig


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


class MSF(SSLMethod):
    name = "msf"

    def build(self) -> None:
        m: MSFConfig = self.cfg.method  # type: ignore[assignment]
        self.projection = mlp(self.feat_dim, m.proj_hidden, m.proj_dim)
        self.prediction = mlp(m.proj_dim, m.pred_hidden, m.proj_dim)
        self.backbone_t = self.momentum_copy(self.backbone)
        self.projection_t = self.momentum_copy(self.projection)
        bank = nn.functional.normalize(torch.randn(m.bank_size, m.proj_dim), dim=1)
        self.register_buffer("bank", bank)
        self.register_buffer("bank_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, t: torch.Tensor) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            t = concat_all_gather(t)
        size = self.bank.shape[0]
        t = t[-size:]
        n, ptr = t.shape[0], int(self.bank_ptr)
        self.bank[(torch.arange(n, device=t.device) + ptr) % size] = t
        self.bank_ptr.fill_((ptr + n) % size)

    def compute_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        m: MSFConfig = self.cfg.method  # type: ignore[assignment]
        weak, strong = views[0], views[1]
        with torch.no_grad():
            self.ema(self.backbone, self.backbone_t, m.momentum)
            self.ema(self.projection, self.projection_t, m.momentum)
            t = nn.functional.normalize(self.projection_t(self.backbone_t(weak)), dim=1)
        q = nn.functional.normalize(self.prediction(self.projection(self.backbone(strong))), dim=1)
        loss = mean_shift_loss(q, t.to(q.dtype), self.bank.clone().to(q.dtype), m.topk)
        self.enqueue(t.float())
        return loss, {}
