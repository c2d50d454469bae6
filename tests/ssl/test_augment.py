"""The batched colour ops agree with torchvision's per-image ops for the same parameters."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from corruptencoder.ssl.augment import (
    ColourAugment,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    apply_colour,
    gaussian_blur,
    grayscale,
)


@pytest.fixture()
def batch() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, 16, 16, generator=g)


@pytest.mark.parametrize("ours,theirs,factors", [
    (adjust_brightness, TF.adjust_brightness, [0.6, 1.0, 1.3, 1.4]),
    (adjust_contrast, TF.adjust_contrast, [0.6, 1.0, 1.3, 1.4]),
    (adjust_saturation, TF.adjust_saturation, [0.0, 0.6, 1.0, 1.4]),
    (adjust_hue, TF.adjust_hue, [-0.1, 0.0, 0.05, 0.1]),
])
def test_per_sample_factor_matches_torchvision(batch: torch.Tensor, ours, theirs, factors) -> None:  # type: ignore[no-untyped-def]
    got = ours(batch.clone(), torch.tensor(factors))
    want = torch.stack([theirs(img, f) for img, f in zip(batch, factors, strict=True)])
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_grayscale_matches(batch: torch.Tensor) -> None:
    want = torch.stack([TF.rgb_to_grayscale(img) for img in batch])
    torch.testing.assert_close(grayscale(batch), want, atol=1e-6, rtol=1e-5)


def test_blur_matches_torchvision(batch: torch.Tensor) -> None:
    sig = torch.tensor([0.5, 1.0, 1.5, 2.0])
    got = gaussian_blur(batch, sig, 5)
    want = torch.stack([TF.gaussian_blur(img, [5, 5], [float(s), float(s)]) for img, s in zip(batch, sig, strict=True)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_identity_and_determinism(batch: torch.Tensor) -> None:
    u8 = (batch * 255).to(torch.uint8)
    out = apply_colour(u8, ColourAugment.none(), normalize=False)
    torch.testing.assert_close(out, u8.float() / 255)
    a = apply_colour(u8, ColourAugment(), torch.Generator().manual_seed(3))
    b = apply_colour(u8, ColourAugment(), torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    assert a.shape == (4, 3, 16, 16) and a.dtype == torch.float32
