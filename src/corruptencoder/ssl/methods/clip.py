"""CLIP (Radford et al. 2021) on image-text pairs, from scratch, with open_clip's models and ClipLoss."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, cast

import torch
from pydantic import Field
from torch import nn

from corruptencoder.errors import ConfigError
from corruptencoder.ssl.base import SSLMethod
from corruptencoder.ssl.clip_model import VisualTower, build_clip, clip_spec, save_clip
from corruptencoder.ssl.config import METHODS, MethodConfig, OptimDefaults, Patch
from corruptencoder.ssl.views import CLIP_VIEW


class CLIPConfig(MethodConfig):
    """CLIP from scratch with open_clip's models and loss."""

    name: Literal["clip"] = "clip"
    model: str = Field("RN50", description="open_clip model config (RN50 = the paper's) or 'custom': the "
                       "'backbone' section's image encoder + a small open_clip text transformer (for CPUs)")
    embed_dim: int = 128
    text_width: int = 64
    text_heads: int = 2
    text_layers: int = 2
    context_length: int = 32


@METHODS.register
class CLIP(SSLMethod[CLIPConfig]):
    """open_clip's CLIP model and ClipLoss on (image view, caption tokens) batches."""

    name = "clip"
    config_model = CLIPConfig
    colours = (CLIP_VIEW,)  # open_clip's training transform: a gentle random resized crop only
    crop_scale = (0.9, 1.0)
    optim = OptimDefaults("adamw", 5e-4 * 256 / 128, 0.1, 1.0)  # Carlini & Terzis / open_clip: AdamW 5e-4 at batch 128
    data_kind = "pairs"
    presets = {
        "cpu-tiny": Patch(method=CLIPConfig(model="custom", embed_dim=128, text_width=64, text_layers=2,
                                            context_length=32)),
        "cpu-small": Patch(method=CLIPConfig(embed_dim=256, text_width=128, text_layers=4)),
    }

    def make_backbone(self) -> tuple[dict[str, Any], nn.Module]:
        from corruptencoder.ssl.backbones import backbone_spec

        b = self.cfg.backbone
        if b.init:
            raise ConfigError("backbone.init (continued pre-training) is not supported for CLIP; remove it")
        image = backbone_spec(b.name, b.width, b.small_stem, self.cfg.data.image_size)
        spec = clip_spec(self.m, self.cfg.data.image_size, image)
        self.clip_spec = spec
        self.model: Any = cast(Any, build_clip(spec))  # open_clip's CLIP or TinyCLIP: their attributes differ
        if spec["model"] == "custom":  # the linear probe reads the backbone, as for single-modal encoders
            return image, self.model.backbone
        dim = int(getattr(self.model.visual, "output_dim", 0) or self.model.text_projection.shape[1])
        return {"name": "openclip", "clip": spec}, VisualTower(self.model.visual, dim)

    def build(self) -> None:
        from open_clip.loss import ClipLoss

        world = (torch.distributed.get_world_size()
                 if torch.distributed.is_available() and torch.distributed.is_initialized() else 1)
        rank = torch.distributed.get_rank() if world > 1 else 0
        self.criterion = ClipLoss(local_loss=False, gather_with_grad=world > 1, rank=rank, world_size=world)

    def on_fit_start(self) -> None:
        from open_clip.loss import ClipLoss

        if self.trainer.world_size > 1:  # the process group exists now
            self.criterion = ClipLoss(gather_with_grad=True, rank=self.global_rank, world_size=self.trainer.world_size)

    def compute_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        tokens = self.batch_extra
        image_features = nn.functional.normalize(self.model.encode_image(views[0]), dim=-1)
        text_features = nn.functional.normalize(self.model.encode_text(tokens), dim=-1)
        scale = self.model.logit_scale.exp().clamp(max=100)
        loss = self.criterion(image_features, text_features, scale)
        return loss, {"logit_scale": float(scale.detach())}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        with torch.no_grad():  # CLIP clamps the learnable temperature at 100
            self.model.logit_scale.clamp_(0, 4.6052)

    def export(self, path: str, extra: dict[str, Any] | None = None) -> None:
        super().export(path, extra)
        meta = {"method": "clip", "image_size": self.cfg.data.image_size, "epoch": int(self.current_epoch),
                **(extra or {})}
        p = Path(path)
        full = p.with_name("clip.pt") if p.name == "encoder.pt" else p.with_name(p.stem + ".clip.pt")
        save_clip(full, self.model, self.clip_spec, meta)
