"""CompRess distillation (Koohpayegani, Tejankar, Pirsiavash, NeurIPS 2020), the training loop of the
CompRess defence (``defend/compress.py``): a fresh student learns a frozen teacher's similarity structure.

For each image, the teacher's and the student's similarities to a memory bank of past samples are
turned into distributions (softmax, temperature 0.04) and the student minimises KL(teacher || student).
CompRess-2q keeps one queue per network (the student's filled by a momentum copy, 0.999); CompRess-1q
compares the student against the teacher's queue. Following the official code, the student's pooled
features are matched directly (no head unless sizes differ under 1q) and the views are random crops +
flips only. Written by hand: lightly has no CompRess loss (its memory bank holds the queues). It runs on
the common pre-training base, so checkpoints, resume, DDP and ``encoder.pt`` work as for every method.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from corruptencoder.ssl.banks import bank
from corruptencoder.ssl.base import SSLMethod
from corruptencoder.ssl.config import METHODS, MethodConfig, OptimConfig, OptimDefaults, Patch
from corruptencoder.ssl.views import WEAK


class DistillConfig(MethodConfig):
    """CompRess: distil a frozen teacher into a student by matching their similarity distributions over a
    memory bank of past samples."""

    name: Literal["compress"] = "compress"
    teacher: str | None = Field(None, description="teacher encoder.pt (loaded with weights_only=True)")
    teacher_backbone: str | None = Field(None, description="backbone of a plain state-dict teacher (encoder.pt knows)")
    teacher_width: float = Field(1.0, gt=0.0)
    variant: Literal["2q", "1q"] = Field("2q", description="2q: each network its own queue; 1q: the teacher's for both")
    queue_size: int = Field(128000, ge=1)
    temperature: float = Field(0.04, gt=0.0, description="softmax temperature of teacher and student (CompRess: 0.04)")
    momentum: float = Field(0.999, ge=0.0, le=1.0, description="EMA of the student copy that fills the student's queue")
    proj_hidden: int | None = Field(None, description="width of an optional student MLP head")
    proj_dim: int | None = Field(None, description="optional student head output size (default: no head)")


def compress_loss(student: torch.Tensor, teacher: torch.Tensor, bank_s: torch.Tensor, bank_t: torch.Tensor,
                  temperature: float) -> torch.Tensor:
    """KL(softmax(t @ bank_t / T) || softmax(s @ bank_s / T)), batch mean; inputs L2-normalised."""
    p_t = torch.softmax(teacher @ bank_t.T / temperature, dim=1)
    log_p_s = torch.log_softmax(student @ bank_s.T / temperature, dim=1)
    return nn.functional.kl_div(log_p_s, p_t, reduction="batchmean")


@METHODS.register
class CompRess(SSLMethod[DistillConfig]):
    name = "compress"
    config_model = DistillConfig
    colours = (WEAK,)  # random crops + flips only, as the official code
    crop_scale = (0.08, 1.0)
    optim = OptimDefaults("sgd", 0.01, 1e-4, 0.0)  # CompRess: lr 0.01 at batch 256
    pretraining = False  # the training loop of the CompRess defence (defend/compress.py), not a CL method
    presets = {
        "cpu-tiny": Patch(method=DistillConfig(queue_size=1024, momentum=0.99),
                          optim=OptimConfig(lr=0.1)),
        "cpu-small": Patch(method=DistillConfig(queue_size=2048)),
        "gpu-small": Patch(method=DistillConfig(queue_size=4096, momentum=0.99),
                           optim=OptimConfig(lr=0.1)),
    }

    def build(self) -> None:
        from corruptencoder.ssl.backbones import backbone_spec
        from corruptencoder.ssl.encoder import load_encoder

        m = self.m
        if not m.teacher:
            from corruptencoder.errors import ConfigError

            raise ConfigError("method.teacher: CompRess needs the teacher encoder.pt to distil")
        spec = (backbone_spec(m.teacher_backbone, m.teacher_width, None, self.cfg.data.image_size)
                if m.teacher_backbone else None)
        teacher, self.teacher_spec, _ = load_encoder(m.teacher, spec)
        for p in teacher.parameters():
            p.requires_grad = False
        self.teacher = teacher.eval()
        with torch.no_grad():
            t_dim = int(getattr(teacher, "out_dim", 0)) or int(teacher(torch.zeros(2, 3, 32, 32)).shape[1])
        # As in the official code the student's pooled features are matched directly; a head is optional
        # (and needed by CompRess-1q when the student's feature size differs from the teacher's).
        s_dim = m.proj_dim or (t_dim if m.variant == "1q" and self.feat_dim != t_dim else None)
        if m.variant == "1q" and s_dim is None and self.feat_dim != t_dim:
            s_dim = t_dim
        if s_dim:
            hidden = m.proj_hidden or self.feat_dim
            self.head: nn.Module = nn.Sequential(nn.Linear(self.feat_dim, hidden), nn.ReLU(inplace=True),
                                                 nn.Linear(hidden, s_dim))
        else:
            self.head, s_dim = nn.Identity(), self.feat_dim
        # the student's queue holds a momentum copy's features (CompReSSMomentum, 0.999)
        self.backbone_k = self.momentum_copy(self.backbone)
        self.head_k = self.momentum_copy(self.head)
        self.queue_t = bank(m.queue_size, t_dim, gather=True)  # the teacher's features
        self.queue_s = bank(m.queue_size, s_dim, gather=True)  # the student's momentum copy's features


    @property
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.backbone, self.backbone_k), (self.head, self.head_k)]

    def train(self, mode: bool = True) -> "CompRess":
        super().train(mode)
        self.teacher.eval()  # the teacher is frozen: its BN statistics never move
        return self

    def compute_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        m = self.m
        x = views[0]
        with torch.no_grad():
            t = nn.functional.normalize(self.teacher(x).float(), dim=1)
            self.update_momentum_pairs(m.momentum)
            s_key = nn.functional.normalize(self.head_k(self.backbone_k(x)).float(), dim=1)
        s = nn.functional.normalize(self.head(self.backbone(x)).float(), dim=1)
        _, bank_t = self.queue_t(t, update=True)  # the banks as they were before this batch
        _, bank_s = self.queue_s(s_key, update=True)
        loss = compress_loss(s, t, bank_t if m.variant == "1q" else bank_s, bank_t, m.temperature)
        return loss, {}

    def export(self, path: str, extra: dict[str, Any] | None = None) -> None:
        m = self.m
        super().export(path, {"teacher": str(m.teacher), "variant": m.variant, **(extra or {})})


