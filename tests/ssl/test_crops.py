"""Crop samplers: torchvision-equivalent random crops, the paper's localized cropping, no cropping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import RandomResizedCrop

from corruptencoder.ssl.crops import CropPolicy, enlarge_box, localized_crop_pair, random_resized_crop


def _inside(inner, outer) -> bool:  # type: ignore[no-untyped-def]
    return inner[0] >= outer[0] and inner[1] >= outer[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


@pytest.mark.parametrize("w,h", [(64, 64), (120, 40), (30, 90)])
def test_random_resized_crop_in_bounds_and_area(w: int, h: int) -> None:
    rng = np.random.default_rng(0)
    areas = []
    for _ in range(2000):
        x0, y0, x1, y1 = random_resized_crop(rng, w, h, (0.2, 1.0))
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        areas.append((x1 - x0) * (y1 - y0) / (w * h))
    assert min(areas) >= 0.2 - 0.05 and max(areas) <= 1.0
    # same area distribution as torchvision's sampler (means within a few percent)
    tv = RandomResizedCrop(8, scale=(0.2, 1.0))
    torch.manual_seed(0)
    img = torch.zeros(3, h, w)
    tv_areas = [np.prod(tv.get_params(img, tv.scale, tv.ratio)[2:]) / (w * h) for _ in range(2000)]
    assert abs(np.mean(areas) - np.mean(tv_areas)) < 0.03


@pytest.mark.parametrize("delta", [0.0, 0.1, 0.2, 0.5])
def test_localized_view2_inside_enlarged_view1(delta: float) -> None:
    rng = np.random.default_rng(1)
    for _ in range(3000):
        v1, v2 = localized_crop_pair(rng, 96, 64, delta, (0.08, 1.0), shuffle=False)
        assert _inside(v2, enlarge_box(v1, delta, 96, 64))
        assert 0 <= v2[0] < v2[2] <= 96 and 0 <= v2[1] < v2[3] <= 64
        if delta == 0.0:
            assert _inside(v2, v1)


def test_localized_shuffles_order_and_policy() -> None:
    rng = np.random.default_rng(2)
    first_is_v1 = 0
    pol = CropPolicy("localized", (0.08, 1.0), delta=0.2)
    for _ in range(1000):
        a, b = pol.sample(rng, 80, 80)
        ok_ab = _inside(b, enlarge_box(a, 0.2, 80, 80))
        ok_ba = _inside(a, enlarge_box(b, 0.2, 80, 80))
        assert ok_ab or ok_ba
        first_is_v1 += ok_ab
    assert 350 < first_is_v1 <= 1000


def test_no_crop_covers_whole_image() -> None:
    rng = np.random.default_rng(3)
    assert CropPolicy("none").sample(rng, 50, 30, 2) == [(0, 0, 50, 30), (0, 0, 50, 30)]


def test_localized_views_are_closer_than_random() -> None:
    """The defence's point: the two views' centres are much closer than with random crops."""
    rng = np.random.default_rng(4)

    def dist(boxes) -> float:  # type: ignore[no-untyped-def]
        (a, b) = boxes
        return float(np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2))

    rand = np.mean([dist(CropPolicy("random").sample(rng, 100, 100)) for _ in range(2000)])
    loc = np.mean([dist(CropPolicy("localized", delta=0.2).sample(rng, 100, 100)) for _ in range(2000)])
    assert loc < 0.6 * rand
