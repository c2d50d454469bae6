"""Batched colour augmentations with per-sample random parameters, on any device.

Per-sample torchvision pipelines spend most CPU time in colour jitter and blur on one image at a
time; here crops are done per sample on small uint8 tensors (:mod:`corruptencoder.ssl.views`)
and the colour stage runs once per batch, on the GPU when there is one. Each op matches
``torchvision.transforms.v2.functional`` for the same parameter (tested), with two documented
differences: the order of the four jitter ops is drawn once per batch (torchvision draws it per
image), and blur uses a separable Gaussian kernel of fixed size ~10 % of the image side.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_GRAY = (0.2989, 0.587, 0.114)


@dataclass(frozen=True)
class ColourAugment:
    """One view's photometric augmentation (the crop is done before, per sample)."""

    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0
    flip_p: float = 0.5

    @classmethod
    def none(cls) -> "ColourAugment":
        return cls(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0, flip_p=0.0)


def _view(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (x.dim() - 1)))


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> luminance (B, 1, H, W), the ITU-R 601-2 weights torchvision uses."""
    r, g, b = x.unbind(dim=-3)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(-3)


def adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * _view(x, f)).clamp_(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    mean = grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)
    f = _view(x, f)
    return (f * x + (1.0 - f) * mean).clamp_(0.0, 1.0)


def adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    f = _view(x, f)
    return (f * x + (1.0 - f) * grayscale(x)).clamp_(0.0, 1.0)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=-3)
    maxc, _ = x.max(dim=-3)
    minc = x.min(dim=-3).values
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_divisor = torch.where(eqc, ones, cr)
    rc = (maxc - r) / cr_divisor
    gc = (maxc - g) / cr_divisor
    bc = (maxc - b) / cr_divisor
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = ((hr + hg + hb) / 6.0 + 1.0).fmod(1.0)
    return torch.stack((h, s, maxc), dim=-3)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(dim=-3)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int32)
    p = (v * (1.0 - s)).clamp_(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp_(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp_(0.0, 1.0)
    i = i.remainder(6)
    mask = i.unsqueeze(-3) == torch.arange(6, device=i.device).view(-1, 1, 1)
    a1 = torch.stack((v, q, p, p, t, v), dim=-3)
    a2 = torch.stack((t, v, v, q, p, p), dim=-3)
    a3 = torch.stack((p, p, t, v, v, q), dim=-3)
    a4 = torch.stack((a1, a2, a3), dim=-4)
    return (a4.mul_(mask.unsqueeze(-4).to(x.dtype))).sum(dim=-3)


def adjust_hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    hsv = _rgb_to_hsv(x)
    h = (hsv[:, 0] + f.view(-1, 1, 1)).remainder(1.0)
    return _hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), dim=1))


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample sigma, reflect padding (as torchvision)."""
    b, c, h, w = x.shape
    half = (kernel_size - 1) * 0.5
    t = torch.linspace(-half, half, kernel_size, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t.view(1, -1) / sigma.view(-1, 1).to(x.dtype)) ** 2)
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (B*C, K)
    pad = kernel_size // 2
    y = x.reshape(1, b * c, h, w)
    y = F.pad(y, (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, 1, kernel_size), groups=b * c)
    y = F.conv2d(y, k.view(b * c, 1, kernel_size, 1), groups=b * c)
    return y.view(b, c, h, w)


def blur_kernel_size(image_size: int) -> int:
    """~10 % of the side, odd, at least 3 (SimCLR/MoCo-v2 use 23 at 224 px)."""
    k = max(3, int(round(0.1 * image_size)))
    return k if k % 2 == 1 else k + 1


def apply_colour(x: torch.Tensor, aug: ColourAugment, generator: torch.Generator | None = None,
                 normalize: bool = True) -> torch.Tensor:
    """Augment a batch: uint8 or float (B, 3, H, W) -> float normalized (ImageNet mean/std)."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    else:
        x = x.float()
    b = x.shape[0]
    dev = x.device

    def rand(n: int) -> torch.Tensor:
        return torch.rand(n, generator=generator, device="cpu").to(dev, non_blocking=True)

    def pick(p: float) -> torch.Tensor:
        """Which images get an op: drawn and indexed on the host, then copied (no device sync for nonzero)."""
        chosen = torch.nonzero(torch.rand(b, generator=generator, device="cpu") < p).flatten()
        return chosen.to(dev, non_blocking=True)

    if aug.jitter_p > 0:
        idx = pick(aug.jitter_p)
        if idx.numel():
            sub = x[idx]
            n = idx.numel()
            order = torch.randperm(4, generator=generator).tolist()
            for op in order:
                if op == 0 and aug.brightness > 0:
                    sub = adjust_brightness(sub, 1.0 + (rand(n) * 2 - 1) * aug.brightness)
                elif op == 1 and aug.contrast > 0:
                    sub = adjust_contrast(sub, 1.0 + (rand(n) * 2 - 1) * aug.contrast)
                elif op == 2 and aug.saturation > 0:
                    sub = adjust_saturation(sub, 1.0 + (rand(n) * 2 - 1) * aug.saturation)
                elif op == 3 and aug.hue > 0:
                    sub = adjust_hue(sub, (rand(n) * 2 - 1) * aug.hue)
            x[idx] = sub
    if aug.grayscale_p > 0:
        idx = pick(aug.grayscale_p)
        if idx.numel():
            x[idx] = grayscale(x[idx]).expand(-1, 3, -1, -1)
    if aug.blur_p > 0:
        idx = pick(aug.blur_p)
        if idx.numel():
            lo, hi = aug.blur_sigma
            sigma = lo + rand(idx.numel()) * (hi - lo)
            x[idx] = gaussian_blur(x[idx], sigma, blur_kernel_size(x.shape[-1]))
    if aug.solarize_p > 0:
        idx = pick(aug.solarize_p)
        if idx.numel():
            sub = x[idx]
            x[idx] = torch.where(sub >= 0.5, 1.0 - sub, sub)
    if aug.flip_p > 0:
        idx = pick(aug.flip_p)
        if idx.numel():
            x[idx] = x[idx].flip(-1)
    if normalize:
        x = normalize_batch(x)
    return x


def normalize_batch(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std
