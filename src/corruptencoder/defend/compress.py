"""CompRess distillation defence (Section 5, Table 4): distil a suspect encoder on clean data.

The defender holds a clean subset of the pre-training data (5 % or 20 % in the paper) and trains a
fresh student to reproduce the frozen teacher's similarity structure (Koohpayegani, Tejankar,
Pirsiavash, NeurIPS 2020, as Saha et al. 2022 used it): for each image, the teacher's and the
student's similarities to a memory bank of past samples are turned into distributions (softmax,
temperature 0.04) and the student minimises KL(teacher || student). CompRess-2q keeps one queue
per network (the student's filled by a momentum copy, 0.999); CompRess-1q compares the student
against the teacher's queue. Following the official code, the student's pooled features are matched
directly (no head unless sizes differ under 1q) and the views are random crops + flips only.
Written by hand: lightly has no CompRess loss. It runs on the
common pre-training base (``corruptencoder.ssl.base``), so checkpoints, resume, DDP and
``encoder.pt`` work as for every method.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from corruptencoder.ssl.base import SSLMethod
from corruptencoder.ssl.config import DistillConfig


def compress_loss(student: torch.Tensor, teacher: torch.Tensor, bank_s: torch.Tensor, bank_t: torch.Tensor,
                  temperature: float) -> torch.Tensor:
    """KL(softmax(t @ bank_t / T) || softmax(s @ bank_s / T)), batch mean; inputs L2-normalised."""
    p_t = torch.softmax(teacher @ bank_t.T / temperature, dim=1)
    log_p_s = torch.log_softmax(student @ bank_s.T / temperature, dim=1)
    return nn.functional.kl_div(log_p_s, p_t, reduction="batchmean")


class CompRess(SSLMethod):
    name = "compress"

    def build(self) -> None:
        from corruptencoder.ssl.backbones import backbone_spec
        from corruptencoder.ssl.encoder import load_encoder

        m: DistillConfig = self.cfg.method  # type: ignore[assignment]
        spec = backbone_spec(m.teacher_backbone, m.teacher_width, None, self.cfg.data.image_size) if m.teacher_backbone else None
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
        g = torch.Generator().manual_seed(self.cfg.trainer.seed)
        self.register_buffer("bank_t", nn.functional.normalize(torch.rand(m.queue_size, t_dim, generator=g) - 0.5, dim=1))
        self.register_buffer("bank_s", nn.functional.normalize(torch.rand(m.queue_size, s_dim, generator=g) - 0.5, dim=1))
        self.register_buffer("bank_ptr", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> "CompRess":
        super().train(mode)
        self.teacher.eval()  # the teacher is frozen: its BN statistics never move
        return self

    @torch.no_grad()
    def _enqueue(self, t: torch.Tensor, s: torch.Tensor) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            from lightly.models.utils import concat_all_gather

            t, s = concat_all_gather(t), concat_all_gather(s)
        size = self.bank_t.shape[0]
        t, s = t[-size:], s[-size:]
        idx = (torch.arange(t.shape[0], device=t.device) + int(self.bank_ptr)) % size
        self.bank_t[idx] = t
        self.bank_s[idx] = s
        self.bank_ptr.fill_((int(self.bank_ptr) + t.shape[0]) % size)

    def compute_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        m: DistillConfig = self.cfg.method  # type: ignore[assignment]
        x = views[0]
        with torch.no_grad():
            t = nn.functional.normalize(self.teacher(x).float(), dim=1)
            self.ema(self.backbone, self.backbone_k, m.momentum)
            self.ema(self.head, self.head_k, m.momentum)
            s_key = nn.functional.normalize(self.head_k(self.backbone_k(x)).float(), dim=1)
        s = nn.functional.normalize(self.head(self.backbone(x)).float(), dim=1)
        bank_s = self.bank_t if m.variant == "1q" else self.bank_s
        loss = compress_loss(s, t, bank_s.clone(), self.bank_t.clone(), m.temperature)
        self._enqueue(t, s_key)
        return loss, {}

    def export(self, path: str, extra: dict[str, Any] | None = None) -> None:
        m: DistillConfig = self.cfg.method  # type: ignore[assignment]
        super().export(path, {"teacher": str(m.teacher), "variant": m.variant, **(extra or {})})


def distill_config(teacher: str | Path, clean: str, fraction: float | None, *, base: dict[str, Any] | None = None,
                   files: str | None = None, exclude: list[str] | None = None) -> dict[str, Any]:
    """A pre-training config dict for CompRess on a clean subset (``fraction`` of ``clean``)."""
    from corruptencoder.presets import _merge

    body: dict[str, Any] = {"method": {"name": "compress", "teacher": str(teacher)},
                            "data": {"clean": files or clean, "fraction": fraction, "exclude": exclude or []}}
    return _merge(base or {}, body)


def distill_for_experiment(runner: Any, arm: Any, seed: int, teacher: Path, out: Path, resume: bool) -> None:
    """The runner's CompRess arm: the arm's pre-training settings, method compress, clean subset."""
    from corruptencoder.ssl.config import PretrainConfig
    from corruptencoder.ssl.train import pretrain

    cfg = runner.pretrain_config(arm.model_copy(update={"defence": "none", "attack": "none"}), seed, None)
    body = cfg.model_dump(mode="json")
    queue = min(16384, max(256, int(runner.n_clean() * arm.compress_fraction) // 2))
    body["method"] = {"name": "compress", "teacher": str(teacher), "queue_size": queue}
    body["data"]["fraction"] = arm.compress_fraction
    body["data"]["poisons"] = []
    pretrain(PretrainConfig.model_validate(body), out, resume=resume, overwrite=not resume, progress=runner.progress)
