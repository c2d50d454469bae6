"""Crop samplers as plain functions returning boxes (numpy only, no torch).

They drive the training views *and* the crop-pair analyser, so what the analyser measures is
exactly what pre-training does. Boxes are ``(x0, y0, x1, y1)`` integer pixels, half-open.

* :func:`random_resized_crop` reproduces ``torchvision.transforms.RandomResizedCrop.get_params``
  (10 attempts, log-uniform aspect ratio, centre-crop fallback).
* :func:`localized_crop_pair` is the paper's defence (Section 5, Figure 9), following the authors'
  ``RandomResizedCrop_Self``: crop view 1, enlarge its box by ``delta`` of its size on each side
  (clipped to the image), draw view 2 inside the enlarged box with a scale range that keeps the
  same minimum absolute area as view 1 (fallback: view 1's size), then swap the two at random.
* :func:`full_image_box` is "no random cropping": the whole image, resized.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Box = tuple[int, int, int, int]
CropPolicyName = Literal["random", "localized", "none"]

DEFAULT_RATIO = (3.0 / 4.0, 4.0 / 3.0)
def random_resized_crop(rng: np.random.Generator, width: int, height: int,
                        scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = DEFAULT_RATIO) -> Box:
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            y = int(rng.integers(0, height - h + 1))
            x = int(rng.integers(0, width - w + 1))
            return (x, y, x + w, y + h)
    # fallback: the centre crop with the aspect ratio clamped into range (torchvision's rule)
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    x, y = (width - w) // 2, (height - h) // 2
    return (x, y, x + w, y + h)


def enlarge_box(box: Box, delta: float, width: int, height: int) -> Box:
    """Grow a box by ``delta`` of its own width/height on every side, clipped to the image."""
    x0, y0, x1, y1 = box
    mw, mh = int(delta * (x1 - x0)), int(delta * (y1 - y0))
    return (max(x0 - mw, 0), max(y0 - mh, 0), min(x1 + mw, width), min(y1 + mh, height))


def localized_crop_pair(rng: np.random.Generator, width: int, height: int, delta: float = 0.2,
                        scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = DEFAULT_RATIO,
                        shuffle: bool = True) -> tuple[Box, Box]:
    """Two close views: the second lies inside the first one's box enlarged by ``delta``."""
    v1 = random_resized_crop(rng, width, height, scale, ratio)
    ex0, ey0, ex1, ey1 = enlarge_box(v1, delta, width, height)
    lw, lh = ex1 - ex0, ey1 - ey0
    min_area = width * height * scale[0]
    lo = min(min_area / (lw * lh), 1.0)
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    w2 = h2 = -1
    for _ in range(10):
        target_area = lw * lh * rng.uniform(lo, 1.0)
        aspect = math.exp(rng.uniform(*log_ratio))
        h2 = int(round(math.sqrt(target_area / aspect)))
        w2 = int(round(math.sqrt(target_area * aspect)))
        if 0 < w2 <= lw and 0 < h2 <= lh:
            break
        w2 = h2 = -1
    if w2 < 0:  # fallback of the authors' code: view 1's size (always fits in its enlargement)
        w2, h2 = v1[2] - v1[0], v1[3] - v1[1]
    y2 = int(rng.integers(ey0, ey1 - h2 + 1))
    x2 = int(rng.integers(ex0, ex1 - w2 + 1))
    v2 = (x2, y2, x2 + w2, y2 + h2)
    if shuffle and rng.random() < 0.5:
        return v2, v1
    return v1, v2


def full_image_box(width: int, height: int) -> Box:
    return (0, 0, width, height)


@dataclass(frozen=True)
class CropPolicy:
    """How the *global* views of one image are cropped: torchvision-style random crops, the paper's
    localized cropping (the first two views form a localized pair), or no cropping at all."""

    name: CropPolicyName = "random"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = DEFAULT_RATIO
    delta: float = 0.2

    def sample(self, rng: np.random.Generator, width: int, height: int, n: int = 2) -> list[Box]:
        if self.name == "none":
            return [full_image_box(width, height)] * n
        if self.name == "localized" and n >= 2:
            pair = list(localized_crop_pair(rng, width, height, self.delta, self.scale, self.ratio))
            return pair + [random_resized_crop(rng, width, height, self.scale, self.ratio) for _ in range(n - 2)]
        return [random_resized_crop(rng, width, height, self.scale, self.ratio) for _ in range(n)]
