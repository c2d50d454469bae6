"""Each method's augmented views: crops per sample (cheap, uint8), colours per batch.

A :class:`ViewPlan` lists a method's views (size, crop scale, colour augmentation) and the crop
policy of its global views (random, the paper's localized cropping, or none). The per-sample
half (:meth:`ViewPlan.crop`) runs in the data loader on small uint8 tensors; the colour half
(:func:`corruptencoder.ssl.augment.apply_colour`) runs once per batch on the training device.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from corruptencoder.ssl.augment import ColourAugment
from corruptencoder.ssl.config import METHODS, PretrainConfig
from corruptencoder.ssl.crops import Box, CropPolicy, enlarge_box, random_resized_crop

# Colour recipes of the original papers (the methods' files pick theirs).
MOCO_V2 = ColourAugment(0.8, 0.4, 0.4, 0.4, 0.1, 0.2, 0.5)
SIMCLR = ColourAugment(0.8, 0.8, 0.8, 0.8, 0.2, 0.2, 0.5)
BYOL_1 = ColourAugment(0.8, 0.4, 0.4, 0.2, 0.1, 0.2, 1.0, solarize_p=0.0)
BYOL_2 = ColourAugment(0.8, 0.4, 0.4, 0.2, 0.1, 0.2, 0.1, solarize_p=0.2)
WEAK = ColourAugment(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)  # MSF's target view: crop + flip only
CLIP_VIEW = ColourAugment.none()  # open_clip's training transform: a gentle random resized crop only


@dataclass(frozen=True)
class ViewSpec:
    size: int
    scale: tuple[float, float]
    colour: ColourAugment


@dataclass(frozen=True)
class ViewPlan:
    """Global views (cropped under ``policy``) followed by local views (SwAV multi-crop)."""

    global_views: tuple[ViewSpec, ...]
    local_views: tuple[ViewSpec, ...] = ()
    policy: CropPolicy = CropPolicy()

    @property
    def views(self) -> tuple[ViewSpec, ...]:
        return self.global_views + self.local_views

    def boxes(self, rng: np.random.Generator, width: int, height: int) -> list[Box]:
        """All views' crop boxes for one image; local views under localized cropping stay inside
        view 1's enlarged box (so no view escapes the defence)."""
        g = self.policy.sample(rng, width, height, len(self.global_views))
        locals_: list[Box] = []
        for spec in self.local_views:
            if self.policy.name == "localized":
                ex0, ey0, ex1, ey1 = enlarge_box(g[0], self.policy.delta, width, height)
                x0, y0, x1, y1 = random_resized_crop(rng, ex1 - ex0, ey1 - ey0, spec.scale, self.policy.ratio)
                locals_.append((x0 + ex0, y0 + ey0, x1 + ex0, y1 + ey0))
            else:
                locals_.append(random_resized_crop(rng, width, height, spec.scale, self.policy.ratio))
        return g + locals_

    def crop(self, image: torch.Tensor, rng: np.random.Generator) -> list[torch.Tensor]:
        """uint8 (3, H, W) -> one uint8 (3, s, s) tensor per view (antialiased bilinear resize)."""
        h, w = image.shape[-2:]
        out = []
        for spec, (x0, y0, x1, y1) in zip(self.views, self.boxes(rng, w, h), strict=True):
            out.append(TF.resized_crop(image, y0, x0, y1 - y0, x1 - x0, [spec.size, spec.size], antialias=True))
        return out


def view_plan(cfg: PretrainConfig) -> ViewPlan:
    """The method's declared views, then the config's overrides (crop policy, scale, blur)."""
    method = METHODS.get(cfg.method.name)
    v = cfg.views
    colours = list(method.colours)
    scale = v.scale or method.crop_scale
    if v.blur is not None:
        colours = [c if (c.blur_p > 0) == v.blur else replace(c, blur_p=0.5 if v.blur else 0.0) for c in colours]
    globals_ = tuple(ViewSpec(cfg.data.image_size, scale, c) for c in colours)
    # random local crops would undo "no random cropping": none then
    locals_ = method.local_views(cfg, scale, colours[0]) if v.crop != "none" else ()
    return ViewPlan(globals_, locals_, CropPolicy(v.crop, scale, delta=v.delta))
