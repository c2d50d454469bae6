"""MoCo-v2 (Chen, Fan, Girshick, He 2020): the paper's default pre-training method.

Query encoder + MLP head; a momentum key encoder; InfoNCE against a queue of past keys
(lightly's NTXentLoss with a memory bank), temperature 0.2. Shuffled BN: with DDP, keys are
gathered into the queue from every device and the key batch is shuffled across devices; on one device,
``bn_splits`` virtual devices normalise their own part of the batch and the key batch is shuffled
between them (:mod:`corruptencoder.ssl.splitbn`), so the key encoder never sees the queries' statistics.
"""

from __future__ import annotations

from typing import Literal

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from lightly.models.utils import batch_shuffle_distributed, batch_unshuffle_distributed
from pydantic import Field
from torch import nn

from corruptencoder.ssl.banks import persistent_banks
from corruptencoder.ssl.base import SSLMethod
from corruptencoder.ssl.config import METHODS, MethodConfig, OptimConfig, OptimDefaults, Patch
from corruptencoder.ssl.splitbn import set_splits, use_split_batchnorm
from corruptencoder.ssl.views import MOCO_V2


class MoCoConfig(MethodConfig):
    """MoCo-v2: queue of keys, momentum key encoder, MLP head, InfoNCE."""

    name: Literal["moco"] = "moco"
    temperature: float = Field(0.2, gt=0.0)
    # 65,536 keys as the authors' main_moco.py (--moco-k default) and MoCo-v2
    queue_size: int = Field(65536, ge=0)
    momentum: float = Field(0.999, ge=0.0, le=1.0)
    bn_splits: int = Field(2, ge=1, description="shuffled BN: virtual devices per device with their own BN "
                           "statistics, key batch shuffled between them (2 = the authors' 2 GPUs on one; 1 = off)")
    shuffle: Literal["virtual", "distributed"] = Field(
        "virtual", description="with several devices: 'virtual' shuffles keys between each device's virtual "
        "devices (no images cross the network); 'distributed' all-gathers the key images and shuffles them "
        "across devices, as the MoCo code (about 77 MB per device per step at 224 px, 128 images, fp32)")
    proj_hidden: int | None = Field(None, description="hidden width of the MLP head (default: feature dim)")
    proj_dim: int = 128
    symmetric: bool = False


@METHODS.register
class MoCo(SSLMethod[MoCoConfig]):
    name = "moco"
    config_model = MoCoConfig
    colours = (MOCO_V2, MOCO_V2)
    crop_scale = (0.2, 1.0)
    # The paper's Appendix B says 0.6, but the code that produced its tables (the authors' run_pretraining.sh,
    # as Saha et al.'s) trains with --lr 0.06 at batch 256: the text's 0.6 is a typo.
    optim = OptimDefaults("sgd", 0.06, 1e-4, 0.0)
    presets = {
        # queues well below the data set size (a queue holding most images' own stale keys stalls MoCo on
        # 5,000 images: measured); SGD at 0.12 per 256 trains the small models (measured)
        "cpu-tiny": Patch(method=MoCoConfig(queue_size=512, proj_hidden=512, temperature=0.2, momentum=0.99),
                          optim=OptimConfig(lr=0.12)),
        "gpu-small": Patch(method=MoCoConfig(queue_size=4096, temperature=0.2, momentum=0.99),
                           optim=OptimConfig(lr=0.12)),
    }

    def build(self) -> None:
        m = self.m
        hidden = m.proj_hidden or self.feat_dim
        use_split_batchnorm(self.backbone, m.bn_splits)  # before the key copy: both encoders split
        self.projection = MoCoProjectionHead(self.feat_dim, hidden, m.proj_dim)
        self.backbone_k = self.momentum_copy(self.backbone)
        self.projection_k = self.momentum_copy(self.projection)
        # gathering is decided at call time (world size 1 = no-op), the process group may not exist yet
        distributed = torch.distributed.is_available()
        self.criterion = NTXentLoss(m.temperature, memory_bank_size=(m.queue_size, m.proj_dim) if m.queue_size else 0,
                                    gather_distributed=distributed)
        persistent_banks(self.criterion)


    @property
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.backbone_k), (self.projection, self.projection_k)]

    def on_fit_start(self) -> None:
        if self.trainer.world_size > 1 and self.m.shuffle == "distributed":  # ranks shuffle instead of splits
            set_splits(self, 1)

    def key(self, x: torch.Tensor) -> torch.Tensor:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed and torch.distributed.get_world_size() > 1 and self.m.shuffle == "distributed":
            x, shuffle = batch_shuffle_distributed(x)
            k = self.projection_k(self.backbone_k(x))
            return batch_unshuffle_distributed(k, shuffle).detach()
        if self.m.bn_splits > 1:  # the keys' virtual devices hold other images than the queries' did (per rank)
            perm = torch.randperm(x.shape[0], device=x.device)
            k = self.projection_k(self.backbone_k(x[perm]))
            return k[torch.argsort(perm)].detach()
        return self.projection_k(self.backbone_k(x)).detach()

    def compute_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        m = self.m
        x0, x1 = views[0], views[1]
        with torch.no_grad():
            self.update_momentum_pairs(m.momentum)
            k1 = self.key(x1)
            k0 = self.key(x0) if m.symmetric else None
        q0 = self.projection(self.backbone(x0))
        loss = self.criterion(q0, k1)
        if m.symmetric and k0 is not None:
            q1 = self.projection(self.backbone(x1))
            loss = 0.5 * (loss + self.criterion(q1, k0))
        return loss, {}

    def online_modules(self) -> list[nn.Module]:
        return [self.backbone, self.projection]
