"""Triggers: a seeded random patch (the paper's default), white, purple, or an image file.

``random`` draws every pixel; ``random:N`` draws random colours on an N x N grid of cells, for
small images where a per-pixel pattern would not survive resizing; ``smooth[:N]`` draws saturated
colours (corners of the RGB cube) on an N x N grid (default 5) and blends them bicubically: an
offline look-alike of the authors' ``triggers/trigger_10.png``, the patch that made the paper's tables.

A trigger is resolved once into an RGB uint8 array and saved next to the poisons
(``triggers/<target>.png``) so evaluation pastes exactly the same pixels into test images.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from corruptencoder.errors import ConfigError
from corruptencoder.utils.imageio import load_rgb

#: Solid-colour triggers of the paper's Figure 10.
SOLID_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "purple": (128, 0, 128),
    "black": (0, 0, 0),
}
KINDS = ("random", *SOLID_COLOURS)
_BLOCKS = re.compile(r"^random:(\d+)$")
_SMOOTH = re.compile(r"^smooth(?::(\d+))?$")


def parse_size(size: int | str | tuple[int, int] | list[int] | None) -> tuple[int, int] | None:
    """``40`` -> (40, 40); ``"40x20"`` -> (40, 20) as (width, height)."""
    if size is None:
        return None
    if isinstance(size, (tuple, list)):
        if len(size) != 2:
            raise ConfigError(f"trigger size {size!r} must be one number or [width, height]")
        w, h = (int(v) for v in size)
    elif isinstance(size, str):
        m = re.fullmatch(r"\s*(\d+)\s*(?:[xX*]\s*(\d+))?\s*", size)
        if not m:
            raise ConfigError(f"trigger size {size!r} is not a number or WxH, e.g. 40 or 40x20")
        w = int(m.group(1))
        h = int(m.group(2) or m.group(1))
    else:
        w = h = int(size)
    if w < 1 or h < 1:
        raise ConfigError(f"trigger size {w}x{h} must be at least 1x1 pixel")
    if max(w, h) > MAX_TRIGGER_SIDE:  # it fits in no image anyway, and would be allocated before that is known
        raise ConfigError(f"trigger size {w}x{h} is larger than any poison or test image; use at most "
                          f"{MAX_TRIGGER_SIDE} px a side (the paper: 40, or 16 for CLIP)")
    return w, h


#: the largest trigger side accepted (poisons are capped at 800 px by default; test images are smaller)
MAX_TRIGGER_SIDE = 4096


def default_trigger_seed(target: str) -> int:
    """A stable per-target seed, so each target gets its own random trigger and attacks on the same
    target share it regardless of the crafting seed."""
    return zlib.crc32(target.encode("utf-8")) & 0x7FFFFFFF


@dataclass(frozen=True)
class TriggerSpec:
    """What the user asked for: ``kind`` is random/white/purple/black or an image path."""

    kind: str
    size: tuple[int, int] | None = (40, 40)
    seed: int | None = None

    @property
    def is_image(self) -> bool:
        return self.kind not in KINDS and not _BLOCKS.match(self.kind) and not _SMOOTH.match(self.kind)

    def describe(self) -> dict[str, Any]:
        return {"kind": "image" if self.is_image else self.kind,
                "path": self.kind if self.is_image else None,
                "size": list(self.size) if self.size else None, "seed": self.seed}

    @classmethod
    def from_description(cls, d: dict[str, Any]) -> TriggerSpec:
        """The spec :meth:`describe` recorded (craft.json's targets)."""
        kind = d.get("path") if d.get("kind") == "image" else d.get("kind")
        if not kind:
            raise ConfigError(f"trigger description {d!r} names no kind or image path")
        size = d.get("size")
        return cls(str(kind), (int(size[0]), int(size[1])) if size else None, d.get("seed"))


def make_trigger(spec: TriggerSpec) -> np.ndarray:
    """Resolve a trigger spec into an (h, w, 3) uint8 array."""
    if spec.is_image:
        path = Path(spec.kind)
        if not path.exists():
            raise ConfigError(
                f"trigger {spec.kind!r} is neither one of {', '.join(KINDS)}, random:N, smooth[:N] nor an existing "
                "image file"
            )
        im = load_rgb(path)
        if spec.size and im.size != spec.size:
            im = im.resize(spec.size, Image.Resampling.LANCZOS)
        return np.asarray(im, dtype=np.uint8).copy()
    if spec.size is None:
        raise ConfigError(f"a {spec.kind} trigger needs a size, e.g. --trigger-size 40")
    w, h = spec.size
    smooth = _SMOOTH.match(spec.kind)
    if smooth:
        n = max(2, int(smooth.group(1) or 5))
        rng = np.random.default_rng(0 if spec.seed is None else spec.seed)
        cells = (rng.integers(0, 2, size=(n, n, 3)) * 255).astype(np.uint8)
        return np.asarray(Image.fromarray(cells, "RGB").resize((w, h), Image.Resampling.BICUBIC), dtype=np.uint8).copy()
    blocks = _BLOCKS.match(spec.kind)
    if spec.kind == "random" or blocks:
        seed = 0 if spec.seed is None else spec.seed
        if not blocks:
            return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        # random colours on an n x n grid of cells: a random trigger whose pattern survives the
        # downscaling of small training views (a per-pixel random patch blurs into grey there)
        n = max(1, int(blocks.group(1)))
        cells = np.random.default_rng(seed).integers(0, 256, size=(n, n, 3), dtype=np.uint8)
        ys = np.minimum(np.arange(h) * n // h, n - 1)
        xs = np.minimum(np.arange(w) * n // w, n - 1)
        return cells[ys][:, xs].copy()
    colour = np.asarray(SOLID_COLOURS[spec.kind], dtype=np.uint8)
    return np.broadcast_to(colour, (h, w, 3)).copy()


def load_trigger_file(path: str | Path) -> np.ndarray:
    """Read a trigger saved by ``craft`` (exact pixels, no resizing)."""
    return np.asarray(load_rgb(path), dtype=np.uint8).copy()
