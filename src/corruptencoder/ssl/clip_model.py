"""CLIP models for pre-training from scratch: open_clip's architectures, tokenizer and ``clip.pt``.

``model`` names an open_clip config (the paper: ``RN50``, a ResNet-50 image tower and a 12-layer text
transformer) or ``custom`` with the tiny towers below for CPUs. The tokenizer ships inside open_clip,
so nothing downloads. The training loop is the ``clip`` method (``ssl/methods/clip.py``); it exports
the image tower as ``encoder.pt`` (linear probes treat it like any encoder) and the whole model as
``clip.pt`` (for zero-shot classification with the text tower).
"""

from __future__ import annotations

import math
import os
from typing import Any, cast

import torch
from torch import nn

from corruptencoder.errors import ConfigError, UserError

CLIP_FORMAT = "corruptencoder.clip/1"


def clip_spec(method: Any, image_size: int, backbone: dict[str, Any] | None = None) -> dict[str, Any]:
    """Plain-data description of a CLIP model (stored in encoder.pt and clip.pt)."""
    if method.model == "custom":
        return {"model": "custom", "embed_dim": method.embed_dim, "image_size": image_size, "backbone": backbone,
                "text_width": method.text_width, "text_heads": method.text_heads, "text_layers": method.text_layers,
                "context_length": method.context_length}
    return {"model": method.model, "image_size": image_size}


class TinyCLIP(nn.Module):
    """A CLIP for CPUs: one of the toolkit's image backbones + a linear projection, and open_clip's text
    transformer; the same encode_image / encode_text / logit_scale interface as open_clip's CLIP."""

    def __init__(self, spec: dict[str, Any]) -> None:
        from open_clip.transformer import TextTransformer

        from corruptencoder.ssl.backbones import build_backbone

        super().__init__()
        self.backbone = build_backbone(spec["backbone"])
        self.image_projection = nn.Linear(cast(int, self.backbone.out_dim), spec["embed_dim"], bias=False)
        self.text = TextTransformer(context_length=spec["context_length"], vocab_size=49408, width=spec["text_width"],
                                    heads=spec["text_heads"], layers=spec["text_layers"], output_dim=spec["embed_dim"])
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
        self.visual = self.backbone

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.image_projection(self.backbone(x))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text(tokens)


def build_clip(spec: dict[str, Any]) -> nn.Module:
    import open_clip
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    if spec["model"] == "custom":
        return TinyCLIP(spec)
    cfg = open_clip.get_model_config(spec["model"])
    if cfg is None:
        raise ConfigError(f"open_clip has no model config {spec['model']!r}; e.g. RN50, RN101, ViT-B-32, or 'custom'")
    cfg = dict(cfg)
    vision = dict(cfg["vision_cfg"])
    vision["image_size"] = spec["image_size"]
    return CLIP(embed_dim=cfg["embed_dim"], vision_cfg=CLIPVisionCfg(**vision), text_cfg=CLIPTextCfg(**cfg["text_cfg"]),
                quick_gelu=cfg.get("quick_gelu", False))


class VisualTower(nn.Module):
    """CLIP's image tower as a backbone: (B, 3, H, W) -> (B, embed_dim)."""

    def __init__(self, visual: nn.Module, out_dim: int) -> None:
        super().__init__()
        self.visual = visual
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)


def visual_tower(spec: dict[str, Any]) -> VisualTower:
    model = build_clip(spec["clip"])
    visual = cast(nn.Module, model.visual)
    dim = int(getattr(visual, "output_dim", 0) or cast(torch.Tensor, model.text_projection).shape[1])
    return VisualTower(visual, dim)


def context_length(spec: dict[str, Any]) -> int:
    if spec["model"] == "custom":
        return int(spec["context_length"])
    import open_clip

    return int(open_clip.get_model_config(spec["model"])["text_cfg"].get("context_length", 77))


class CaptionTokens:
    """One caption -> its token tensor (picklable, for data-loader workers)."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __call__(self, caption: str) -> torch.Tensor:
        return tokenize([caption], self.length)[0]


def tokenize(texts: list[str], length: int) -> torch.Tensor:
    import open_clip

    return open_clip.tokenize(texts, context_length=length)


def save_clip(path: str | os.PathLike[str], model: nn.Module, spec: dict[str, Any], meta: dict[str, Any]) -> None:
    from corruptencoder.ssl.encoder import save_atomic

    save_atomic({"format": CLIP_FORMAT, "clip": dict(spec), "meta": dict(meta),
                 "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}}, path)


def load_clip(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    from corruptencoder.ssl.encoder import read_checkpoint

    obj = read_checkpoint(path)
    if not isinstance(obj, dict) or obj.get("format") != CLIP_FORMAT:
        raise UserError(f"{path}: not a clip.pt written by 'corruptencoder pretrain --method clip'")
    model = build_clip(obj["clip"])
    model.load_state_dict(obj["state_dict"])
    return model.eval(), obj["clip"]
