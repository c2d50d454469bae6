"""The offline demo world: a procedurally generated "toy ImageNet" made entirely by code from a seed.

Why it exists: the toolkit must craft poisons and run contrastive pre-training + linear probes with
no downloads and no vendored photos. This module draws object classes whose identity is *visual*
(a characteristic composition of parts, textures and palettes, with intra-class variation) onto
scene-like backgrounds (stand-ins for Places365), at any size >= 16 px (default 64).

Design rules, each for a reason:

* Objects are lists of polygons in an object frame, transformed once (rotation, aspect, mirror,
  scale) and rasterised at a supersampling factor, then box-filtered down. The alpha matte is the
  exact pixel coverage of what was drawn, so ``alpha > 0`` is precisely the object and pixels
  outside the returned mask are untouched background.
* Textures are functions of object-frame coordinates, so stripes and spots move, rotate and mirror
  with the object instead of being stamped on in image space.
* Backgrounds are chosen independently of the class: the world is not built around any attack or
  any shortcut, and classes are separated by the object, not by its context.
* Every random draw goes through an explicit ``numpy.random.Generator``; images in
  :func:`generate_world` each get their own generator derived from ``(seed, split, class, index)``
  so an image never depends on how many images other splits contain, and splits are disjoint.
"""

from __future__ import annotations

import colorsys
import hashlib
import inspect
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from corruptencoder.errors import OutputExistsError, UserError
from corruptencoder.utils.outputs import atomic_output_dir, write_json_atomic

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_TARGET",
    "WORLD_VERSION",
    "WorldConfig",
    "render_object",
    "render_background",
    "render_caption_scene",
    "render_scene",
    "generate_world",
    "ensure_world",
]

#: Bump when rendering changes, so cached worlds from :func:`ensure_world` are regenerated.
WORLD_VERSION = 1

CLASS_NAMES: tuple[str, ...] = (
    "sun",
    "star",
    "fish",
    "house",
    "tree",
    "car",
    "flower",
    "mushroom",
    "boat",
    "butterfly",
)

DEFAULT_TARGET = "fish"

MIN_IMAGE_SIZE = 16
MAX_IMAGE_SIZE = 1024

Paint = Callable[[np.ndarray, np.ndarray], np.ndarray]


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorldConfig:
    """What defines a world: image size, seed, classes, and how large objects appear in scenes."""

    image_size: int = 64
    seed: int = 0
    classes: tuple[str, ...] = CLASS_NAMES
    #: Object bounding-box longer side as a fraction of the image side, for scenes.
    object_scale: tuple[float, float] = (0.35, 0.8)

    def __post_init__(self) -> None:
        if isinstance(self.classes, str):
            raise UserError(f"classes: expected a list of class names, got the string {self.classes!r}; "
                            f"write ({self.classes!r},)")
        try:
            scale = tuple(float(x) for x in self.object_scale)
        except (TypeError, ValueError):
            raise UserError(f"object_scale: expected two numbers (low, high), got {self.object_scale!r}") from None
        _check_size(self.image_size, "image_size")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise UserError(f"seed: expected a non-negative integer, got {self.seed!r}")
        # Coerce lists (e.g. from YAML) and numpy ints so the config stays hashable and JSON-stable.
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "object_scale", scale)
        object.__setattr__(self, "image_size", int(self.image_size))
        object.__setattr__(self, "seed", int(self.seed))
        if not self.classes:
            raise UserError(f"classes: empty; choose at least two of {', '.join(CLASS_NAMES)}")
        for name in self.classes:
            _check_class(name, "classes")
        if len(set(self.classes)) != len(self.classes):
            raise UserError(f"classes: duplicate names in {list(self.classes)}; list each class once")
        _check_scale(self.object_scale)


def _check_size(value: Any, option: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise UserError(f"{option}: expected an integer number of pixels, got {value!r}")
    if not MIN_IMAGE_SIZE <= value <= MAX_IMAGE_SIZE:
        raise UserError(
            f"{option}: {value} px is outside {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE}; "
            f"use a size of at least {MIN_IMAGE_SIZE} px (e.g. 32 or 64)"
        )


def _check_class(name: Any, option: str) -> None:
    if name not in _CLASSES:
        raise UserError(f"{option}: unknown class {name!r}; choose from {', '.join(CLASS_NAMES)}")


def _check_scale(scale: Sequence[float]) -> None:
    if len(scale) != 2 or not (0.05 <= scale[0] <= scale[1] <= 1.0):
        raise UserError(
            f"object_scale: {tuple(scale)} must be (low, high) with 0.05 <= low <= high <= 1.0, e.g. (0.35, 0.8)"
        )


# --------------------------------------------------------------------------------------------------
# Colours and paints (textures as functions of object-frame coordinates u, v)
# --------------------------------------------------------------------------------------------------


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    rgb = colorsys.hsv_to_rgb((h / 360.0) % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return np.array(rgb, np.float32)


def _jhsv(rng: np.random.Generator, h: tuple[float, float], s: tuple[float, float],
          v: tuple[float, float]) -> np.ndarray:
    """A colour drawn uniformly from an HSV box: the intra-class palette jitter."""
    return _hsv(rng.uniform(*h), rng.uniform(*s), rng.uniform(*v))


def _choose(rng: np.random.Generator, options: Sequence[tuple[float, Any]]) -> Any:
    weights = np.array([w for w, _ in options], float)
    return options[int(rng.choice(len(options), p=weights / weights.sum()))][1]


def _shade(c: np.ndarray, f: float) -> np.ndarray:
    """Darker (f < 1) or lighter (f > 1, towards white) version of a colour."""
    if f <= 1:
        return (c * f).astype(np.float32)
    return (c + (1 - c) * min(f - 1, 1.0)).astype(np.float32)


class flat:
    """A uniform colour; the rasteriser draws these directly (no per-pixel evaluation)."""

    def __init__(self, c: np.ndarray) -> None:
        self.colour = np.clip(np.asarray(c, np.float32), 0.0, 1.0)

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.colour, (u.size, 3))


def _smooth(paint: Paint, smooth: bool = True) -> Paint:
    """Mark a paint as smooth: evaluating it once per output pixel is enough (a big speed-up)."""
    paint.smooth = smooth  # type: ignore[attr-defined]  # a marker attribute set on the paint function
    return paint


def _is_smooth(paint: Paint) -> bool:
    return isinstance(paint, flat) or bool(getattr(paint, "smooth", False))


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)[:, None]
    return a + (b - a) * t


def stripes(c1: np.ndarray, c2: np.ndarray, freq: float, angle: float = 0.0, duty: float = 0.5,
            phase: float = 0.0) -> Paint:
    """Bands across the object; ``freq`` in bands per object-frame unit, ``angle`` in degrees."""
    ca, sa = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    c1, c2 = np.asarray(c1, np.float32), np.asarray(c2, np.float32)

    def paint(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        t = np.mod((u * ca + v * sa) * freq + phase, 1.0)
        return np.where((t < duty)[:, None], c1, c2)

    return paint


def checker(c1: np.ndarray, c2: np.ndarray, freq: float, angle: float = 0.0) -> Paint:
    ca, sa = math.cos(math.radians(angle)), math.sin(math.radians(angle))

    def paint(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        a = np.floor((u * ca + v * sa) * freq)
        b = np.floor((-u * sa + v * ca) * freq)
        return np.where((np.mod(a + b, 2) == 0)[:, None], c1, c2)

    return paint


def gradient(c1: np.ndarray, c2: np.ndarray, angle: float, lo: float = -1.0, hi: float = 1.0) -> Paint:
    """Linear blend from ``c1`` to ``c2`` along direction ``angle`` between ``lo`` and ``hi``."""
    ca, sa = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return _smooth(lambda u, v: _mix(c1, c2, ((u * ca + v * sa) - lo) / (hi - lo)))


def radial(c_in: np.ndarray, c_out: np.ndarray, cx: float, cy: float, r: float) -> Paint:
    return _smooth(lambda u, v: _mix(c_in, c_out, np.hypot(u - cx, v - cy) / r))


def dots(base: Paint, c_dot: np.ndarray, freq: float, radius: float, angle: float = 0.0) -> Paint:
    """A regular (offset-row) lattice of round dots over another paint."""
    ca, sa = math.cos(math.radians(angle)), math.sin(math.radians(angle))

    def paint(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        a = (u * ca + v * sa) * freq
        b = (-u * sa + v * ca) * freq
        row = np.floor(b)
        a = a + 0.5 * np.mod(row, 2)
        d = np.hypot(np.mod(a, 1.0) - 0.5, np.mod(b, 1.0) - 0.5)
        return np.where((d < radius)[:, None], c_dot, base(u, v))

    return paint


def _frame_noise(rng: np.random.Generator, cells: int = 6,
                 extent: float = 1.8) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Smooth value noise in [0, 1] over the object frame (bilinear on a random grid)."""
    grid = rng.random((cells + 2, cells + 2)).astype(np.float32)

    def f(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        x = np.clip((u + extent) / (2 * extent) * cells, 0, cells - 1e-4)
        y = np.clip((v + extent) / (2 * extent) * cells, 0, cells - 1e-4)
        x0, y0 = x.astype(np.int64), y.astype(np.int64)
        fx, fy = x - x0, y - y0
        fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
        top = grid[y0, x0] * (1 - fx) + grid[y0, x0 + 1] * fx
        bot = grid[y0 + 1, x0] * (1 - fx) + grid[y0 + 1, x0 + 1] * fx
        return top * (1 - fy) + bot * fy

    return f


def mottled(base: Paint, rng: np.random.Generator, amount: float, cells: int = 6,
            other: np.ndarray | None = None) -> Paint:
    """Modulate a paint with smooth noise (brightness, or a blend towards ``other``)."""
    n = _frame_noise(rng, cells)

    def paint(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        b = base(u, v)
        t = n(u, v)
        if other is None:
            return b * (1 + amount * (t - 0.5) * 2)[:, None]
        return _mix(b, np.broadcast_to(other, b.shape), t * amount)

    return _smooth(paint, _is_smooth(base))


def bricks(c_brick: np.ndarray, c_mortar: np.ndarray, rng: np.random.Generator, rows: float,
           ratio: float = 2.2) -> Paint:
    """Running-bond brickwork with per-brick brightness jitter."""
    table = rng.uniform(0.8, 1.15, 97).astype(np.float32)

    def paint(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        b = v * rows
        r = np.floor(b)
        a = u * rows / ratio + 0.5 * np.mod(r, 2)
        col = np.floor(a)
        fa, fb = a - col, b - r
        mortar = (fb < 0.12) | (fa < 0.06)
        jitter = table[(r.astype(np.int64) * 31 + col.astype(np.int64) * 7) % 97]
        return np.where(mortar[:, None], c_mortar, c_brick * jitter[:, None])

    return paint


# --------------------------------------------------------------------------------------------------
# Geometry helpers (object frame: x right, y down, object roughly within [-1, 1])
# --------------------------------------------------------------------------------------------------


@dataclass
class _Part:
    """One drawn region: a polygon (or several, drawn as their union), how to colour it, and
    optionally clipped to an earlier named part."""

    poly: np.ndarray | list[np.ndarray]
    paint: Paint
    name: str | None = None
    clip: str | None = None


def _polys(part: _Part) -> list[np.ndarray]:
    return part.poly if isinstance(part.poly, list) else [part.poly]


def _ellipse(cx: float, cy: float, rx: float, ry: float, rot: float = 0.0, n: int = 40, a0: float = 0.0,
             a1: float = 360.0) -> np.ndarray:
    t = np.radians(np.linspace(a0, a1, n, endpoint=(a1 - a0) < 360))
    x, y = rx * np.cos(t), ry * np.sin(t)
    cr, sr = math.cos(math.radians(rot)), math.sin(math.radians(rot))
    return np.stack([cx + x * cr - y * sr, cy + x * sr + y * cr], axis=1)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)


def _bar(p0: Sequence[float], p1: Sequence[float], width: float) -> np.ndarray:
    """A straight stroke of the given width as a quad (lines must be polygons to transform)."""
    a, b = np.asarray(p0, float), np.asarray(p1, float)
    d = b - a
    n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-12) * width / 2
    return np.array([a + n, b + n, b - n, a - n])


def _star(cx: float, cy: float, r_out: float, r_in: float, n: int, rot: float = -90.0,
          jitter: np.ndarray | None = None) -> np.ndarray:
    k = np.arange(2 * n)
    r = np.where(k % 2 == 0, r_out, r_in).astype(float)
    if jitter is not None:
        r = r * jitter
    t = np.radians(rot + k * 180.0 / n)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _rot(pts: np.ndarray, deg: float, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    p = pts - [cx, cy]
    return np.stack([p[:, 0] * c - p[:, 1] * s + cx, p[:, 0] * s + p[:, 1] * c + cy], axis=1)


def _mirror(pts: np.ndarray) -> np.ndarray:
    return pts * [-1.0, 1.0]


# --------------------------------------------------------------------------------------------------
# The classes: each builder draws its parameters from rng and returns the parts in drawing order.
# --------------------------------------------------------------------------------------------------


def _sun(rng: np.random.Generator) -> list[_Part]:
    # Identity: a disc with a ring of separate triangular rays; warm palette, radial glow.
    hue = _choose(rng, [(0.75, (38, 55)), (0.25, (8, 30))])
    r = rng.uniform(0.42, 0.55)
    n = int(rng.integers(8, 15))
    gap = rng.uniform(0.04, 0.1)
    length = rng.uniform(0.22, 0.42)
    alternate = rng.random() < 0.4
    half = math.pi / n * rng.uniform(0.35, 0.6)
    ray_c = _jhsv(rng, (hue[0] - 8, hue[1]), (0.8, 1.0), (0.85, 1.0))
    core = _jhsv(rng, (hue[1] - 5, hue[1] + 5), (0.25, 0.5), (0.97, 1.0))
    rim = _jhsv(rng, hue, (0.8, 1.0), (0.88, 1.0))
    rays = []
    phase = rng.uniform(0, 2 * math.pi)
    for k in range(n):
        t = phase + 2 * math.pi * k / n
        ln = length * (0.6 if alternate and k % 2 else 1.0)
        rb = r + gap
        pts = [
            (rb * math.cos(t - half), rb * math.sin(t - half)),
            ((rb + ln) * math.cos(t), (rb + ln) * math.sin(t)),
            (rb * math.cos(t + half), rb * math.sin(t + half)),
        ]
        rays.append(np.array(pts))
    parts = [_Part(rays, radial(rim, _shade(ray_c, 0.9), 0, 0, r + gap + length))]
    disc = radial(core, rim, rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1), r * 1.05)
    parts.append(_Part(_ellipse(0, 0, r, r, n=48), mottled(disc, rng, 0.08, cells=5)))
    return parts


def _star5(rng: np.random.Generator) -> list[_Part]:
    # Identity: a five-pointed star (sharp concave outline), often with an inner highlight star.
    kind = _choose(rng, [(0.55, "gold"), (0.15, "silver"), (0.15, "red"), (0.15, "blue")])
    if kind == "gold":
        c = _jhsv(rng, (38, 56), (0.7, 1.0), (0.85, 1.0))
    elif kind == "silver":
        c = _jhsv(rng, (0, 360), (0.0, 0.12), (0.75, 0.95))
    elif kind == "red":
        c = _jhsv(rng, (-5, 25), (0.75, 1.0), (0.75, 1.0))
    else:
        c = _jhsv(rng, (195, 235), (0.6, 0.95), (0.6, 0.95))
    r_in = rng.uniform(0.36, 0.5)
    jit = rng.uniform(0.94, 1.06, 10)
    outer = _star(0, 0, 1.0, r_in, 5, jitter=jit)
    edge = _shade(c, rng.uniform(0.6, 0.8))
    parts = [_Part(outer, radial(_shade(c, 1.25), edge, 0, 0, 1.0))]
    if rng.random() < 0.5:
        s = rng.uniform(0.45, 0.65)
        parts.append(_Part(_star(0, 0, s, s * r_in, 5, jitter=jit), flat(_shade(c, 1.35))))
    return parts


def _fish(rng: np.random.Generator) -> list[_Part]:
    # Identity: an elongated body with a forked tail, dorsal fin and an eye near the head; often banded.
    rx = rng.uniform(0.6, 0.75)
    ry = rx / rng.uniform(1.6, 2.4)
    cx = 0.12
    kind = _choose(rng, [(0.3, "clown"), (0.2, "tang"), (0.2, "gold"), (0.15, "tropical"), (0.15, "silver")])
    fin_c = None
    if kind == "clown":
        body = _jhsv(rng, (15, 32), (0.85, 1.0), (0.85, 1.0))
        band = _jhsv(rng, (0, 360), (0.0, 0.08), (0.92, 1.0))
        paint = stripes(band, body, rng.uniform(1.4, 2.0), 0, rng.uniform(0.25, 0.4), rng.uniform(0, 1))
    elif kind == "tang":
        body = _jhsv(rng, (205, 235), (0.7, 1.0), (0.55, 0.9))
        fin_c = _jhsv(rng, (45, 58), (0.8, 1.0), (0.9, 1.0))
        paint = gradient(_shade(body, 1.2), _shade(body, 0.7), 90, -ry, ry)
    elif kind == "gold":
        body = _jhsv(rng, (22, 42), (0.8, 1.0), (0.85, 1.0))
        paint = gradient(_shade(body, 0.8), _shade(body, 1.3), 90, -ry, ry)
    elif kind == "tropical":
        body = _jhsv(rng, (45, 60), (0.8, 1.0), (0.85, 1.0))
        band = _jhsv(rng, (0, 360), (0.0, 0.3), (0.05, 0.2))
        paint = stripes(band, body, rng.uniform(2.0, 3.2), rng.uniform(-20, 20), rng.uniform(0.2, 0.35))
    else:
        body = _jhsv(rng, (190, 215), (0.1, 0.3), (0.6, 0.85))
        paint = gradient(_shade(body, 0.6), _shade(body, 1.4), 90, -ry, ry * 0.8)
    fin_c = fin_c if fin_c is not None else _shade(body, rng.uniform(0.7, 0.9))
    bx = cx - rx + 0.08
    tl, th = rng.uniform(0.3, 0.45), ry * rng.uniform(0.8, 1.25)
    tail = np.array([[bx + 0.1, 0], [bx - tl, -th], [bx - tl * rng.uniform(0.55, 0.8), 0], [bx - tl, th]])
    fx = cx + rng.uniform(-0.25, 0.05)
    fin = np.array([[fx - 0.25, -ry * 0.6], [fx - 0.05, -ry - rng.uniform(0.15, 0.3)], [fx + 0.2, -ry * 0.7]])
    ex, ey, er = cx + rx * 0.58, -ry * 0.2, ry * rng.uniform(0.18, 0.26)
    return [
        _Part(tail, flat(fin_c)),
        _Part(fin, flat(fin_c)),
        _Part(np.array([[cx, ry * 0.4], [cx - 0.15, ry + 0.15], [cx + 0.12, ry * 0.6]]), flat(fin_c)),  # pelvic fin
        _Part(_ellipse(cx, 0, rx, ry, n=48), paint),
        _Part(_ellipse(ex, ey, er, er, n=20), flat(np.array([0.97, 0.97, 0.95]))),
        _Part(_ellipse(ex + er * 0.15, ey, er * 0.55, er * 0.55, n=16), flat(np.array([0.03, 0.03, 0.05]))),
    ]


def _house(rng: np.random.Generator) -> list[_Part]:
    # Identity: a square-ish wall under a triangular roof, with a door and windows (and a chimney).
    w = rng.uniform(0.5, 0.7)
    top, bot = -0.05, rng.uniform(0.6, 0.8)
    rh = rng.uniform(0.4, 0.6)
    over = rng.uniform(0.05, 0.14)
    if rng.random() < 0.4:
        wall = bricks(_jhsv(rng, (3, 22), (0.55, 0.8), (0.5, 0.75)), _jhsv(rng, (30, 45), (0.05, 0.2), (0.7, 0.85)),
                      rng, rng.uniform(9, 14))
    else:
        wc = _choose(rng, [(1, ((35, 55), (0.15, 0.45), (0.8, 0.98))), (1, ((0, 360), (0.0, 0.06), (0.85, 0.98))),
                           (1, ((190, 215), (0.2, 0.4), (0.75, 0.95))), (1, ((0, 15), (0.3, 0.5), (0.75, 0.9)))])
        wall = mottled(flat(_jhsv(rng, *wc)), rng, 0.08, cells=5)
    roof_c = _choose(rng, [(1, ((0, 14), (0.6, 0.9), (0.45, 0.7))), (1, ((20, 32), (0.5, 0.8), (0.3, 0.5))),
                           (1, ((200, 230), (0.05, 0.2), (0.2, 0.4)))])
    rc = _jhsv(rng, *roof_c)
    roof = stripes(rc, _shade(rc, 0.75), rng.uniform(8, 12), 90, 0.8)
    parts = []
    if rng.random() < 0.5:
        chx = rng.choice([-1, 1]) * rng.uniform(0.2, 0.4) * w / 0.6
        parts.append(_Part(_rect(chx - 0.07, top - rh * 0.9, chx + 0.07, top - 0.05), flat(_shade(rc, 0.8))))
    parts.append(_Part(np.array([[-w - over, top + 0.02], [0, top - rh], [w + over, top + 0.02]]), roof))
    parts.append(_Part(_rect(-w, top, w, bot), wall))
    dw = rng.uniform(0.14, 0.2)
    dx = rng.uniform(-w + dw + 0.05, w - dw - 0.05)
    door_c = _jhsv(rng, *_choose(rng, [(2, ((18, 32), (0.5, 0.8), (0.25, 0.45))),
                                       (1, ((100, 140), (0.4, 0.7), (0.25, 0.45))),
                                       (1, ((210, 235), (0.4, 0.7), (0.3, 0.5)))]))
    dtop = bot - rng.uniform(0.35, 0.45)
    parts.append(_Part(_rect(dx - dw / 2, dtop, dx + dw / 2, bot),
                       gradient(_shade(door_c, 1.15), door_c, 90, dtop, bot)))
    glass = _jhsv(rng, *_choose(rng, [(2, ((190, 210), (0.2, 0.45), (0.8, 0.95))),
                                      (1, ((45, 55), (0.4, 0.7), (0.9, 1.0)))]))
    frame = _jhsv(rng, (0, 360), (0.0, 0.05), (0.92, 1.0))
    ws = rng.uniform(0.14, 0.2)
    wy = top + rng.uniform(0.1, 0.18)
    for sx in (-1, 1):
        wx = sx * (w * 0.55)
        if abs(wx - dx) < (dw / 2 + ws / 2 + 0.04):
            continue
        parts.append(_Part(_rect(wx - ws / 2 - 0.025, wy - 0.025, wx + ws / 2 + 0.025, wy + ws + 0.025), flat(frame)))
        parts.append(_Part(_rect(wx - ws / 2, wy, wx + ws / 2, wy + ws),
                           gradient(_shade(glass, 1.2), glass, 45, -0.3, 0.3)))
        parts.append(_Part(_rect(wx - 0.012, wy, wx + 0.012, wy + ws), flat(frame)))
        parts.append(_Part(_rect(wx - ws / 2, wy + ws / 2 - 0.012, wx + ws / 2, wy + ws / 2 + 0.012), flat(frame)))
    return parts


def _tree(rng: np.random.Generator) -> list[_Part]:
    # Identity: a round, lumpy leafy crown on a narrow brown trunk; mottled foliage texture.
    autumn = rng.random() < 0.15
    leaf = _jhsv(rng, (20, 48), (0.7, 0.95), (0.6, 0.9)) if autumn else _jhsv(rng, (80, 140), (0.5, 0.9), (0.35, 0.7))
    dark = _shade(leaf, rng.uniform(0.45, 0.65))
    bark = _jhsv(rng, (18, 35), (0.45, 0.7), (0.22, 0.42))
    tw = rng.uniform(0.1, 0.2)
    crown_y = rng.uniform(-0.35, -0.2)
    cr = rng.uniform(0.45, 0.6)
    trunk = np.array([[-tw / 2, crown_y + 0.2], [tw / 2, crown_y + 0.2], [tw * 0.7, 0.95], [-tw * 0.7, 0.95]])
    parts = [_Part(trunk, stripes(bark, _shade(bark, 0.7), rng.uniform(10, 16), 0, 0.6))]
    if rng.random() < 0.5:  # a branch stub
        sx = rng.choice([-1.0, 1.0])
        parts.append(_Part(_bar((0, crown_y + cr * 0.9), (sx * 0.3, crown_y + cr * 0.45), tw * 0.5), flat(bark)))
    foliage = mottled(mottled(flat(leaf), rng, 0.8, cells=24, other=dark), rng, 0.2, cells=5)
    crown = [_ellipse(0, crown_y, cr, cr * rng.uniform(0.85, 1.05), n=44)]
    for _ in range(int(rng.integers(4, 7))):
        a = rng.uniform(0, 2 * math.pi)
        d = cr * rng.uniform(0.45, 0.75)
        r = cr * rng.uniform(0.35, 0.55)
        crown.append(_ellipse(d * math.cos(a), crown_y + d * math.sin(a) * 0.9, r, r, n=28))
    parts.append(_Part(crown, foliage))
    return parts


def _car(rng: np.random.Generator) -> list[_Part]:
    # Identity: a long low body with a cabin and windows on top and two dark wheels underneath.
    kind = _choose(rng, [(3, ((-6, 8), (0.75, 1.0), (0.6, 0.9))), (2, ((205, 230), (0.6, 0.95), (0.45, 0.85))),
                         (1, ((45, 56), (0.8, 1.0), (0.85, 1.0))), (1, ((0, 360), (0.0, 0.06), (0.85, 0.97))),
                         (1, ((0, 360), (0.0, 0.1), (0.1, 0.25))), (1, ((100, 150), (0.5, 0.8), (0.35, 0.65))),
                         (1, ((200, 220), (0.05, 0.12), (0.55, 0.75)))])
    c = _jhsv(rng, *kind)
    L = rng.uniform(0.9, 1.0)
    y0, y1 = rng.uniform(-0.08, 0.02), rng.uniform(0.28, 0.36)
    ch = rng.uniform(0.08, 0.14)
    body = np.array([[-L, y0 + ch], [-L + ch, y0], [L - ch * 1.5, y0 - 0.02], [L, y0 + ch * 1.2], [L, y1], [-L, y1]])
    cab_h = rng.uniform(0.3, 0.42)
    cb0, cb1 = rng.uniform(-0.6, -0.4), rng.uniform(0.3, 0.5)
    slant_b, slant_f = rng.uniform(0.08, 0.2), rng.uniform(0.15, 0.3)
    cabin = np.array([[cb0, y0 + 0.02], [cb0 + slant_b, y0 - cab_h], [cb1 - slant_f, y0 - cab_h], [cb1, y0 + 0.02]])
    glass = _jhsv(rng, (190, 215), (0.15, 0.4), (0.55, 0.85))
    paint = gradient(_shade(c, 1.25), _shade(c, 0.75), 90, y0 - cab_h, y1)
    inset = 0.05
    mid = (cb0 + cb1) / 2 + rng.uniform(-0.05, 0.05)
    win1 = np.array([[cb0 + inset * 1.5, y0 - 0.01], [cb0 + slant_b + inset, y0 - cab_h + inset],
                     [mid - 0.025, y0 - cab_h + inset], [mid - 0.025, y0 - 0.01]])
    win2 = np.array([[mid + 0.025, y0 - 0.01], [mid + 0.025, y0 - cab_h + inset],
                     [cb1 - slant_f - inset * 0.3, y0 - cab_h + inset], [cb1 - inset * 1.5, y0 - 0.01]])
    wr = rng.uniform(0.19, 0.24)
    wx = L - wr - rng.uniform(0.12, 0.22)
    tyre = np.array([0.06, 0.06, 0.07])
    hub = _jhsv(rng, (0, 360), (0.0, 0.05), (0.6, 0.85))
    parts = [
        _Part(cabin, paint),
        _Part(body, paint),
        _Part(win1, gradient(_shade(glass, 1.3), glass, 60, -0.4, 0.1)),
        _Part(win2, gradient(_shade(glass, 1.3), glass, 60, -0.4, 0.1)),
        _Part(_ellipse(L - 0.06, y0 + ch * 1.6, 0.05, 0.035, n=12), flat(np.array([1.0, 0.95, 0.7]))),
        _Part(_rect(-L, y0 + ch * 1.2, -L + 0.05, y0 + ch * 2.2), flat(np.array([0.85, 0.1, 0.1]))),
    ]
    for x in (-wx, wx):
        parts.append(_Part(_ellipse(x, y1, wr, wr, n=32), flat(tyre)))
        parts.append(_Part(_ellipse(x, y1, wr * 0.5, wr * 0.5, n=20), radial(_shade(hub, 1.2), hub, x, y1, wr * 0.5)))
    return parts


def _flower(rng: np.random.Generator) -> list[_Part]:
    # Identity: petals arranged radially around a round centre, usually on a green stem with a leaf.
    petal_hue = _choose(rng, [(2, (320, 345)), (2, (350, 370)), (1, (265, 295)), (2, (42, 58)), (1, (0, 360)),
                              (1, (18, 35))])
    white = petal_hue == (0, 360)
    pc = _jhsv(rng, petal_hue, (0.0, 0.08) if white else (0.55, 0.95), (0.85, 1.0) if white else (0.7, 1.0))
    cc = _jhsv(rng, *_choose(rng, [(2, ((40, 55), (0.8, 1.0), (0.85, 1.0))),
                                   (1, ((20, 35), (0.6, 0.9), (0.25, 0.45)))]))
    green = _jhsv(rng, (85, 135), (0.5, 0.85), (0.35, 0.6))
    hy = rng.uniform(-0.35, -0.2)
    n = int(rng.integers(5, 10))
    pl = rng.uniform(0.35, 0.48)
    pw = min(pl * rng.uniform(0.3, 0.5), 0.9 * math.pi * pl / n * 1.4)
    cr = rng.uniform(0.13, 0.2)
    parts: list[_Part] = []
    if rng.random() < 0.75:
        sw = rng.uniform(0.04, 0.07)
        bend = rng.uniform(-0.12, 0.12)
        parts.append(_Part(np.array([[-sw / 2, hy], [sw / 2, hy], [bend + sw / 2, 0.95], [bend - sw / 2, 0.95]]),
                           flat(green)))
        side = rng.choice([-1.0, 1.0])
        ly = rng.uniform(0.35, 0.6)
        lrot = side * rng.uniform(20, 45)
        parts.append(_Part(_ellipse(side * 0.17 + bend * ly, ly, 0.17, 0.06, rot=lrot, n=20),
                           gradient(green, _shade(green, 0.7), 90, ly - 0.1, ly + 0.1)))
    phase = rng.uniform(0, 360)
    petal = radial(_shade(pc, rng.uniform(0.6, 0.85)), _shade(pc, 1.15), 0, hy, pl + cr)
    petals = []
    for k in range(n):
        a = phase + 360.0 * k / n
        d = cr + pl * 0.5 - 0.04
        petals.append(_ellipse(d * math.cos(math.radians(a)), hy + d * math.sin(math.radians(a)), pl / 2 + 0.03,
                               pw / 2, rot=a, n=24))
    parts.append(_Part(petals, petal))
    parts.append(_Part(_ellipse(0, hy, cr, cr, n=28), dots(flat(cc), _shade(cc, 0.6), rng.uniform(18, 26), 0.3)))
    return parts


def _mushroom(rng: np.random.Generator) -> list[_Part]:
    # Identity: a dome cap (often red with white spots) over gills on a pale stout stem.
    kind = _choose(rng, [(0.55, "amanita"), (0.3, "brown"), (0.15, "yellow")])
    if kind == "amanita":
        cap_c = _jhsv(rng, (-6, 10), (0.75, 1.0), (0.7, 0.95))
    elif kind == "brown":
        cap_c = _jhsv(rng, (18, 34), (0.45, 0.75), (0.35, 0.65))
    else:
        cap_c = _jhsv(rng, (32, 48), (0.7, 0.95), (0.8, 1.0))
    stem_c = _jhsv(rng, (35, 50), (0.05, 0.2), (0.85, 0.97))
    rx = rng.uniform(0.65, 0.9)
    ry = rng.uniform(0.35, 0.6)
    base = rng.uniform(-0.1, 0.05)
    sw_top = rng.uniform(0.17, 0.3)
    sw_bot = sw_top * rng.uniform(1.0, 1.35)
    sbot = rng.uniform(0.7, 0.85)
    stem = np.array([[-sw_top / 2, base], [sw_top / 2, base], [sw_bot / 2, sbot], [-sw_bot / 2, sbot]])
    cap_poly = _ellipse(0, base, rx, ry, a0=180, a1=360, n=40)
    cap_poly = np.vstack([cap_poly, [[rx, base], [rx * 0.9, base + 0.06], [-rx * 0.9, base + 0.06]]])
    parts = [
        _Part(stem, gradient(_shade(stem_c, 0.8), stem_c, 0, -sw_bot, sw_bot * 0.5)),
        _Part(_ellipse(0, sbot, sw_bot * 0.65, 0.07, n=20), flat(_shade(stem_c, 0.9))),
        _Part(_ellipse(0, base + 0.05, rx * 0.85, 0.07, n=28),
              stripes(_shade(stem_c, 0.75), _shade(stem_c, 0.6), 14, 0)),
        _Part(cap_poly, radial(_shade(cap_c, 1.2), _shade(cap_c, 0.75), rng.uniform(-0.2, 0.2), base - ry * 0.6,
                               rx * 1.1), name="cap"),
    ]
    if kind == "amanita" or rng.random() < 0.25:
        spot = _jhsv(rng, (40, 55), (0.0, 0.12), (0.92, 1.0))
        spots = []
        for _ in range(int(rng.integers(4, 10))):
            a = rng.uniform(195, 345)
            d = rng.uniform(0.25, 0.85)
            r = rng.uniform(0.05, 0.11)
            x, y = d * rx * math.cos(math.radians(a)), base + d * ry * math.sin(math.radians(a))
            spots.append(_ellipse(x, y, r, r * rng.uniform(0.7, 1.0), n=16))
        parts.append(_Part(spots, flat(spot), clip="cap"))
    return parts


def _boat(rng: np.random.Generator) -> list[_Part]:
    # Identity: a trapezoid hull with a tall mast carrying one or two triangular sails and a pennant.
    hull_k = _choose(rng, [(2, "wood"), (1, "white"), (1, "blue"), (1, "red")])
    if hull_k == "wood":
        hc = _jhsv(rng, (18, 32), (0.5, 0.75), (0.3, 0.55))
        hull_p = stripes(hc, _shade(hc, 0.8), rng.uniform(10, 16), 90, 0.7)
    else:
        hc = _jhsv(rng, *{"white": ((0, 360), (0.0, 0.06), (0.85, 0.97)), "blue": ((205, 235), (0.6, 0.9), (0.35, 0.7)),
                          "red": ((-5, 10), (0.7, 0.95), (0.55, 0.85))}[hull_k])
        band = _jhsv(rng, (0, 360), (0.3, 0.8), (0.3, 0.8))
        hull_p = stripes(band, hc, 1.0, 90, 0.2, phase=rng.uniform(-0.35, -0.25))
    sail_c = _jhsv(rng, *_choose(rng, [(4, ((35, 50), (0.0, 0.15), (0.88, 1.0))),
                                       (1, ((0, 25), (0.6, 0.9), (0.75, 0.95))),
                                       (1, ((200, 230), (0.3, 0.6), (0.7, 0.9)))]))
    sail_p: Paint = gradient(sail_c, _shade(sail_c, 0.8), 0, -0.4, 0.6)
    if rng.random() < 0.3:
        sail_p = stripes(_jhsv(rng, (0, 360), (0.6, 0.9), (0.6, 0.9)), sail_c, rng.uniform(3, 5), 90, 0.35)
    ht, hb = rng.uniform(0.3, 0.4), rng.uniform(0.55, 0.65)
    L = rng.uniform(0.85, 1.0)
    hull = np.array([[-L, ht], [L, ht - rng.uniform(0.0, 0.08)], [L * rng.uniform(0.55, 0.75), hb],
                     [-L * rng.uniform(0.7, 0.85), hb]])
    mx = rng.uniform(-0.15, 0.1)
    mtop = rng.uniform(-0.98, -0.85)
    mast_c = _jhsv(rng, (20, 32), (0.4, 0.7), (0.2, 0.4))
    boom = ht - rng.uniform(0.08, 0.14)
    parts = [
        _Part(_rect(mx - 0.025, mtop, mx + 0.025, ht), flat(mast_c)),
        _Part(np.array([[mx + 0.03, mtop + 0.04], [mx + 0.03, boom], [mx + rng.uniform(0.55, 0.75), boom]]), sail_p),
    ]
    if rng.random() < 0.7:
        parts.append(_Part(np.array([[mx - 0.03, mtop + 0.12], [mx - 0.03, boom],
                                     [mx - rng.uniform(0.45, 0.65), boom]]), sail_p))
    flag_c = _jhsv(rng, (0, 360), (0.7, 1.0), (0.7, 1.0))
    parts.append(_Part(np.array([[mx, mtop], [mx + rng.uniform(0.15, 0.25), mtop + 0.05], [mx, mtop + 0.1]]),
                       flat(flag_c)))
    parts.append(_Part(hull, hull_p))
    return parts


def _butterfly(rng: np.random.Generator) -> list[_Part]:
    # Identity: two mirror-symmetric wing pairs (large upper, small lower) with dark borders and
    # spots, a slim body and antennae.
    kind = _choose(rng, [(2, ((20, 35), (0.85, 1.0), (0.85, 1.0))), (2, ((195, 225), (0.6, 0.95), (0.6, 0.95))),
                         (1, ((48, 60), (0.6, 0.9), (0.9, 1.0))),
                         (1, ((275, 320), (0.4, 0.75), (0.6, 0.9))), (1, ((330, 355), (0.4, 0.7), (0.85, 1.0)))])
    wc = _jhsv(rng, *kind)
    border = _jhsv(rng, (0, 360), (0.0, 0.3), (0.03, 0.18))
    spot = _jhsv(rng, *_choose(rng, [(2, ((0, 360), (0.0, 0.05), (0.9, 1.0))), (1, ((45, 55), (0.6, 0.9), (0.9, 1.0))),
                                     (1, ((200, 230), (0.6, 0.9), (0.6, 0.9)))]))
    body_c = _jhsv(rng, (20, 40), (0.2, 0.5), (0.08, 0.22))
    ua, ur = rng.uniform(20, 45), rng.uniform(0.38, 0.48)
    la, lr = rng.uniform(20, 50), rng.uniform(0.25, 0.33)
    uasp, lasp = rng.uniform(0.55, 0.75), rng.uniform(0.6, 0.85)
    bw = rng.uniform(0.05, 0.09)
    inner = rng.uniform(0.78, 0.88)
    paint = gradient(_shade(wc, 0.8), _shade(wc, 1.15), 0, 0, 0.9)
    spots = [(rng.uniform(0.45, 0.8), rng.uniform(-0.4, 0.4), rng.uniform(0.05, 0.09))
             for _ in range(int(rng.integers(1, 4)))]
    parts: list[_Part] = []
    for sx in (-1.0, 1.0):
        ucx, ucy = sx * (ur * 0.9 + 0.03), -0.2
        lcx, lcy = sx * (lr * 0.85 + 0.03), 0.22
        ur_rot, lr_rot = -sx * ua, sx * la
        parts.append(_Part(_ellipse(lcx, lcy, lr, lr * lasp, rot=lr_rot, n=32), flat(border)))
        parts.append(_Part(_ellipse(lcx, lcy, lr * inner, lr * lasp * inner, rot=lr_rot, n=32), paint))
        parts.append(_Part(_ellipse(ucx, ucy, ur, ur * uasp, rot=ur_rot, n=36), flat(border)))
        parts.append(_Part(_ellipse(ucx, ucy, ur * inner, ur * uasp * inner, rot=ur_rot, n=36), paint,
                           name=f"wing{sx:+.0f}"))
        dots_ = []
        for d, o, r in spots:  # positions in the wing's own frame, mirrored for symmetry
            p = _rot(np.array([[d * ur * inner * sx, o * ur * uasp]]), ur_rot)[0] + [ucx, ucy]
            dots_.append(_ellipse(p[0], p[1], r, r, n=14))
        parts.append(_Part(dots_, flat(spot), clip=f"wing{sx:+.0f}"))
    parts.append(_Part(_ellipse(0, 0.02, bw, 0.45, n=24), flat(body_c)))
    parts.append(_Part(_ellipse(0, -0.45, bw * 1.1, bw * 1.1, n=14), flat(body_c)))
    spread = rng.uniform(0.18, 0.35)
    for sx in (-1.0, 1.0):
        tip = (sx * spread, -0.85)
        parts.append(_Part(_bar((0, -0.48), tip, 0.022), flat(body_c)))
        parts.append(_Part(_ellipse(tip[0], tip[1], 0.035, 0.035, n=10), flat(body_c)))
    return parts


@dataclass(frozen=True)
class _ClassSpec:
    build: Callable[[np.random.Generator], list[_Part]]
    max_rotation: float  # degrees; upright objects turn only a little
    mirror: bool = True
    aspect_jitter: float = 0.12  # log-aspect half-range


_CLASSES: dict[str, _ClassSpec] = {
    "sun": _ClassSpec(_sun, 180.0, mirror=False, aspect_jitter=0.05),
    "star": _ClassSpec(_star5, 180.0, mirror=False, aspect_jitter=0.08),
    "fish": _ClassSpec(_fish, 20.0),
    "house": _ClassSpec(_house, 6.0),
    "tree": _ClassSpec(_tree, 8.0),
    "car": _ClassSpec(_car, 8.0),
    "flower": _ClassSpec(_flower, 18.0),
    "mushroom": _ClassSpec(_mushroom, 12.0),
    "boat": _ClassSpec(_boat, 10.0),
    "butterfly": _ClassSpec(_butterfly, 25.0),
}
assert tuple(_CLASSES) == CLASS_NAMES


# --------------------------------------------------------------------------------------------------
# Rasterisation
# --------------------------------------------------------------------------------------------------


def _supersample(size: int) -> int:
    """4x for small images (anti-aliasing matters most there), less for large ones (speed)."""
    return 4 if size <= 96 else (3 if size <= 192 else 2)


def _rasterise(
    parts: Sequence[_Part],
    A: np.ndarray,
    t: np.ndarray,
    width: int,
    height: int,
    ss: int,
    light: tuple[float, float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw parts (frame -> pixels via ``p @ A.T + t``) into a width x height RGBA pair.

    Returns ``(rgb uint8 (H, W, 3), alpha uint8 (H, W))``. Only the window around the object is
    rasterised, at ``ss`` x resolution with binary coverage, then box-filtered down. Colour is 0
    wherever nothing is drawn, so the box filter yields premultiplied colour and exact coverage:
    alpha is non-zero on exactly the pixels some part touched.
    """
    rgb8 = np.zeros((height, width, 3), np.uint8)
    a8 = np.zeros((height, width), np.uint8)
    pts = [[q @ A.T + t for q in _polys(p)] for p in parts]
    allp = np.vstack([q for qs in pts for q in qs])
    x0 = max(0, int(math.floor(allp[:, 0].min())) - 1)
    y0 = max(0, int(math.floor(allp[:, 1].min())) - 1)
    x1 = min(width, int(math.ceil(allp[:, 0].max())) + 1)
    y1 = min(height, int(math.ceil(allp[:, 1].max())) + 1)
    if x1 <= x0 or y1 <= y0:
        return rgb8, a8
    W, H = (x1 - x0) * ss, (y1 - y0) * ss
    rgb_c = Image.new("RGB", (W, H), 0)
    a_c = Image.new("L", (W, H), 0)
    draw_rgb, draw_a = ImageDraw.Draw(rgb_c), ImageDraw.Draw(a_c)
    # Python floats keep the texture maths in float32 (numpy 2 scalar promotion rules).
    Ainv = [[float(x) for x in row] for row in np.linalg.inv(A)]
    tx, ty = float(t[0]), float(t[1])
    masks: dict[str, Image.Image] = {}
    for part, ps in zip(parts, pts, strict=True):
        qs = [(p - [x0, y0]) * ss for p in ps]
        if isinstance(part.paint, flat) and part.clip is None and part.name is None:
            fill = tuple(int(x) for x in np.round(part.paint.colour * 255))
            for q in qs:
                poly = [tuple(xy) for xy in q.tolist()]
                draw_rgb.polygon(poly, fill=fill)
                draw_a.polygon(poly, fill=255)
            continue
        # Textured (or clipped / named) part: evaluate the paint over its own bounding box only,
        # on a grid of r x r supersamples: once per output pixel for smooth paints, twice per
        # axis for sharp ones (stripes, dots, bricks) so their edges stay anti-aliased.
        r = ss if _is_smooth(part.paint) else (2 if ss % 2 == 0 and ss > 2 else 1)
        q = np.vstack(qs)
        bx0 = min(max(int(math.floor(q[:, 0].min())) - 1, 0) // r * r, W)
        by0 = min(max(int(math.floor(q[:, 1].min())) - 1, 0) // r * r, H)
        bx1 = max(min(-(-(int(math.ceil(q[:, 0].max())) + 2) // r) * r, W), bx0)
        by1 = max(min(-(-(int(math.ceil(q[:, 1].max())) + 2) // r) * r, H), by0)
        if bx1 <= bx0 or by1 <= by0:
            continue
        m = Image.new("L", (bx1 - bx0, by1 - by0), 0)
        dm = ImageDraw.Draw(m)
        for q in qs:
            dm.polygon([tuple(xy) for xy in (q - [bx0, by0]).tolist()], fill=255)
        if part.clip is not None:
            m = ImageChops.multiply(m, masks[part.clip].crop((bx0, by0, bx1, by1)))
        if part.name is not None:
            full = Image.new("L", (W, H), 0)
            full.paste(m, (bx0, by0))
            masks[part.name] = full
        # Pixel centres back to object-frame coordinates, so textures follow the object.
        gw, gh = (bx1 - bx0) // r, (by1 - by0) // r
        px = ((np.arange(gw, dtype=np.float32) + 0.5) * (r / ss) + (bx0 / ss + x0 - tx))[None, :]
        py = ((np.arange(gh, dtype=np.float32) + 0.5) * (r / ss) + (by0 / ss + y0 - ty))[:, None]
        u = (Ainv[0][0] * px + Ainv[0][1] * py).ravel()
        v = (Ainv[1][0] * px + Ainv[1][1] * py).ravel()
        c = np.asarray(part.paint(u, v), np.float32).reshape(gh, gw, 3)
        tex = Image.fromarray(np.clip(c * 255 + 0.5, 0, 255).astype(np.uint8), "RGB")
        if r > 1:
            tex = tex.resize((bx1 - bx0, by1 - by0), Image.Resampling.NEAREST)
        rgb_c.paste(tex, (bx0, by0), m)
        a_c.paste(255, (bx0, by0, bx1, by1), m)
    # Box filter by ss x ss (Pillow's reduce averages blocks in C). Colour outside the drawn area
    # is 0, so the reduced RGB is premultiplied by coverage; divide it back out.
    # Coverage is a multiple of 1/ss^2 >= 1/16, so any touched pixel gets alpha >= 16, never 0
    # (rounding the premultiplied colour keeps edge colours within about 0.5/alpha levels).
    a = np.asarray(a_c.reduce(ss) if ss > 1 else a_c)
    pre = np.asarray(rgb_c.reduce(ss) if ss > 1 else rgb_c, np.float32)
    col = pre * (255.0 / np.maximum(a, 1).astype(np.float32))[..., None]
    if light is not None:
        # Soft directional lighting in the object frame, applied once at output resolution.
        k, lx, ly = light
        gx = (np.arange(x0, x1, dtype=np.float32) + (0.5 - tx))[None, :]
        gy = (np.arange(y0, y1, dtype=np.float32) + (0.5 - ty))[:, None]
        u = Ainv[0][0] * gx + Ainv[0][1] * gy
        v = Ainv[1][0] * gx + Ainv[1][1] * gy
        col = col * np.clip(1.0 + k * (u * lx + v * ly), 0.6, 1.4)[..., None]
    a8[y0:y1, x0:x1] = a
    rgb8[y0:y1, x0:x1] = np.where((a > 0)[..., None], np.clip(np.round(col), 0, 255), 0).astype(np.uint8)
    return rgb8, a8


def _object_transform(name: str,
                      rng: np.random.Generator) -> tuple[list[_Part], np.ndarray, tuple[float, float, float]]:
    """Build a class instance and its pose (rotation, aspect, mirror) and lighting."""
    spec = _CLASSES[name]
    parts = spec.build(rng)
    theta = math.radians(rng.uniform(-spec.max_rotation, spec.max_rotation))
    asp = math.exp(rng.uniform(-spec.aspect_jitter, spec.aspect_jitter))
    mirror = -1.0 if (spec.mirror and rng.random() < 0.5) else 1.0
    R = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    A0 = R @ np.diag([mirror * math.sqrt(asp), 1.0 / math.sqrt(asp)])
    la = rng.uniform(0, 2 * math.pi)
    light = (rng.uniform(0.08, 0.22), math.cos(la), math.sin(la))
    return parts, A0, light


def _place(parts: Sequence[_Part], A0: np.ndarray, longer_px: float) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Scale the posed object so its bbox longer side is ``longer_px``; returns A, bbox-min, w, h."""
    allp = np.vstack([q for p in parts for q in _polys(p)]) @ A0.T
    lo, hi = allp.min(axis=0), allp.max(axis=0)
    s = longer_px / float(max(hi - lo))
    return A0 * s, lo * s, float(hi[0] - lo[0]) * s, float(hi[1] - lo[1]) * s


def render_object(name: str, rng: np.random.Generator, size: int) -> Image.Image:
    """An RGBA ``size`` x ``size`` canvas with one centred object whose alpha is its exact matte.

    Why: poison crafting needs clean object cut-outs. Alpha is 0 outside the object, and the
    object's bounding box longer side is ``size - 2`` (a 1 px margin keeps edges un-clipped).
    """
    _check_class(name, "name")
    _check_size(size, "size")
    parts, A0, light = _object_transform(name, rng)
    A, lo, w, h = _place(parts, A0, size - 2.0)
    t = np.array([(size - w) / 2, (size - h) / 2]) - lo
    rgb, a = _rasterise(parts, A, t, size, size, _supersample(size), light)
    return Image.fromarray(np.dstack([rgb, a]), "RGBA")


# --------------------------------------------------------------------------------------------------
# Backgrounds (stand-ins for scene photos; never contain a class object)
# --------------------------------------------------------------------------------------------------


def _noise2d(rng: np.random.Generator, h: int, w: int, cell: float, aniso: float = 1.0) -> np.ndarray:
    """Smooth value noise in [0, 1]: a random grid upsampled bicubically (``aniso`` > 1 stretches x)."""
    gh = max(2, int(math.ceil(h / cell)) + 1)
    gw = max(2, int(math.ceil(w / (cell * aniso))) + 1)
    g = Image.fromarray(rng.random((gh, gw)).astype(np.float32), "F")
    out = np.asarray(g.resize((w, h), Image.Resampling.BICUBIC), np.float32)
    return np.clip(out, 0.0, 1.0)


def _fbm(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 3, aniso: float = 1.0) -> np.ndarray:
    total = np.zeros((h, w), np.float32)
    amp, norm = 1.0, 0.0
    for _ in range(octaves):
        total += amp * _noise2d(rng, h, w, max(cell, 1.0), aniso)
        norm += amp
        amp *= 0.5
        cell /= 2
    return total / norm


def _tint(c: np.ndarray, n: np.ndarray, amount: float) -> np.ndarray:
    return c[None, None, :] * (1 + amount * (n[..., None] - 0.5) * 2)


def _bg_landscape(rng: np.random.Generator, h: int, w: int, s: float) -> np.ndarray:
    y = (np.arange(h, dtype=np.float32) / max(h - 1, 1))[:, None]
    horizon = rng.uniform(0.35, 0.75)
    sky_k = _choose(rng, [(3, "blue"), (1, "sunset"), (1, "overcast")])
    if sky_k == "blue":
        top, bottom = _jhsv(rng, (200, 225), (0.5, 0.8), (0.6, 0.9)), _jhsv(rng, (190, 210), (0.1, 0.3), (0.9, 1.0))
    elif sky_k == "sunset":
        top, bottom = _jhsv(rng, (220, 280), (0.3, 0.6), (0.35, 0.6)), _jhsv(rng, (10, 40), (0.4, 0.7), (0.9, 1.0))
    else:
        top, bottom = (_jhsv(rng, (190, 230), (0.02, 0.12), (0.55, 0.75)),
                       _jhsv(rng, (190, 230), (0.02, 0.1), (0.8, 0.92)))
    t = np.clip(y / horizon, 0, 1)[..., None]
    sky = np.broadcast_to(top * (1 - t) + bottom * t, (h, w, 3)).copy()
    if rng.random() < 0.6:  # soft clouds
        cl = _fbm(rng, h, w, 10 * s, 3, aniso=2.5)
        cl = np.clip((cl - rng.uniform(0.5, 0.65)) * 4, 0, 1)[..., None] * rng.uniform(0.5, 0.9)
        sky = sky * (1 - cl) + cl * _hsv(0, 0, rng.uniform(0.88, 1.0))
    ground_c = _jhsv(rng, *_choose(rng, [(3, ((70, 120), (0.4, 0.75), (0.35, 0.65))),
                                         (2, ((30, 45), (0.25, 0.5), (0.65, 0.9))),
                                         (1, ((20, 35), (0.3, 0.6), (0.3, 0.5))),
                                         (1, ((190, 220), (0.02, 0.1), (0.85, 0.97))),
                                         (1, ((185, 215), (0.5, 0.8), (0.4, 0.7)))]))
    ground = _tint(ground_c, _fbm(rng, h, w, 8 * s, 3), 0.25)
    ground = ground * (1 + 0.25 * (y - horizon))[..., None]  # nearer ground is a little brighter
    xs = np.arange(w, dtype=np.float32) / max(w - 1, 1)
    line = horizon * h + np.zeros(w, np.float32)
    img = sky
    if rng.random() < 0.6:  # distant hills or mountains: a bumpy silhouette above the horizon
        amp = rng.uniform(0.05, 0.2) * h
        hills = line - amp * (0.5 + 0.5 * np.sin(xs * rng.uniform(3, 9) + rng.uniform(0, 6.3))) * (
            0.6 + 0.4 * _noise2d(rng, 1, w, 6 * s)[0])
        hc = _shade(ground_c * 0.5 + _hsv(210, 0.2, 0.6) * 0.5, rng.uniform(0.6, 0.9))
        hm = _below(hills, h)
        img = img * (1 - hm) + _tint(hc, _fbm(rng, h, w, 6 * s, 2), 0.15) * hm
    gm = _below(line, h)
    return img * (1 - gm) + ground * gm


def _below(line: np.ndarray, h: int) -> np.ndarray:
    """Anti-aliased (h, w, 1) weight of the region below a per-column boundary ``line``."""
    rows = np.arange(h, dtype=np.float32)[:, None]
    return np.clip(rows + 1 - line[None, :].astype(np.float32), 0, 1)[..., None]


def _bg_grass(rng: np.random.Generator, h: int, w: int, s: float) -> np.ndarray:
    c = _jhsv(rng, (70, 125), (0.45, 0.85), (0.3, 0.6))
    blades = _fbm(rng, h, w, 3 * s, 2, aniso=0.25)  # tall thin streaks
    patches = _fbm(rng, h, w, 14 * s, 2)
    return _tint(c, blades, 0.35) * (0.8 + 0.4 * patches)[..., None]


def _bg_sand(rng: np.random.Generator, h: int, w: int, s: float) -> np.ndarray:
    c = _jhsv(rng, (30, 45), (0.2, 0.45), (0.7, 0.92))
    n = _fbm(rng, h, w, 10 * s, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(-0.5, 0.5)
    rip = np.sin((yy * math.cos(ang) + xx * math.sin(ang)) / (rng.uniform(2.0, 4.0) * s) + n * 6)
    return _tint(c, n, 0.12) * (1 + 0.06 * rip)[..., None]


def _bg_water(rng: np.random.Generator, h: int, w: int, s: float) -> np.ndarray:
    deep, light = _jhsv(rng, (185, 220), (0.5, 0.85), (0.3, 0.55)), _jhsv(rng, (175, 205), (0.25, 0.55), (0.65, 0.9))
    y = (np.arange(h, dtype=np.float32) / max(h - 1, 1))[:, None, None]
    base = light * (1 - y) + deep * y
    waves = _fbm(rng, h, w, 4 * s, 3, aniso=4.0)
    glint = np.clip((waves - 0.62) * 5, 0, 1)[..., None]
    return base * (0.85 + 0.3 * waves)[..., None] * (1 - glint * 0.5) + glint * 0.5


def _bg_wall(rng: np.random.Generator, h: int, w: int, s: float) -> np.ndarray:
    kind = _choose(rng, [(2, "bricks"), (1, "tiles"), (2, "planks")])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "bricks":
        paint = bricks(_jhsv(rng, (0, 30), (0.2, 0.7), (0.4, 0.8)), _jhsv(rng, (30, 45), (0.0, 0.2), (0.55, 0.85)), rng,
                       1.0 / (rng.uniform(4, 7) * s))
        img = paint(xx.ravel(), yy.ravel()).reshape(h, w, 3)
    elif kind == "tiles":
        c1 = _jhsv(rng, (0, 360), (0.0, 0.35), (0.55, 0.95))
        paint = checker(c1, _shade(c1, rng.uniform(0.75, 0.92)), 1.0 / (rng.uniform(5, 10) * s),
                        rng.choice([0.0, 45.0]))
        img = paint(xx.ravel(), yy.ravel()).reshape(h, w, 3)
    else:
        c = _jhsv(rng, (20, 38), (0.3, 0.65), (0.35, 0.75))
        vertical = rng.random() < 0.5
        a, b = (xx, yy) if vertical else (yy, xx)
        pw = rng.uniform(5, 9) * s
        idx = np.floor(a / pw)
        grain = _fbm(rng, h, w, 3 * s, 2, aniso=0.2 if vertical else 5.0)
        img = _tint(c, grain, 0.2) * (0.85 + 0.1 * np.mod(idx * 0.37, 1.0))[..., None]
        img = np.where((np.mod(a, pw) < max(0.8, 0.6 * s))[..., None], img * 0.6, img)
    return img * (0.85 + 0.3 * _fbm(rng, h, w, 16 * s, 2))[..., None]


def _bg_indoor(rng: np.random.Generator, h: int, w: int, s: float) -> np.ndarray:
    split = int(round(h * rng.uniform(0.45, 0.75)))
    wall_c = _jhsv(rng, (0, 360), (0.05, 0.35), (0.6, 0.95))
    wall = _tint(wall_c, _fbm(rng, h, w, 12 * s, 2), 0.08)
    if rng.random() < 0.35:  # wallpaper stripes
        xx = np.arange(w, dtype=np.float32)[None, :, None]
        wall = wall * (1 - 0.08 * (np.mod(xx / (rng.uniform(3, 6) * s), 1.0) < 0.5))
    floor = (_bg_wall(rng, h, w, s) if rng.random() < 0.6
             else _tint(_jhsv(rng, (0, 360), (0.0, 0.4), (0.2, 0.6)), _fbm(rng, h, w, 6 * s, 3), 0.15))
    rows = np.arange(h)[:, None, None]
    img = np.where(rows < split, wall, floor)
    img[max(0, split - max(1, int(s))) : split] *= 0.7  # skirting board shadow
    return img


def _bg_abstract(rng: np.random.Generator, h: int, w: int, s: float) -> np.ndarray:
    cols = [_jhsv(rng, (0, 360), (0.1, 0.7), (0.25, 0.9)) for _ in range(3)]
    n1, n2 = _fbm(rng, h, w, 18 * s, 3), _fbm(rng, h, w, 12 * s, 3)
    img = cols[0] * (1 - n1[..., None]) + cols[1] * n1[..., None]
    t = np.clip((n2 - 0.5) * 3 + 0.5, 0, 1)[..., None] * 0.6
    return img * (1 - t) + cols[2] * t


_BACKGROUNDS: tuple[tuple[float, Callable[[np.random.Generator, int, int, float], np.ndarray]], ...] = (
    (3.0, _bg_landscape),
    (1.0, _bg_grass),
    (1.0, _bg_sand),
    (1.0, _bg_water),
    (1.5, _bg_wall),
    (1.0, _bg_indoor),
    (1.5, _bg_abstract),
)


def _blob(rng: np.random.Generator, cx: float, cy: float, r: float) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, 28, endpoint=False)
    rr = np.ones_like(t)
    for k in (2, 3, 4):
        rr += rng.uniform(0, 0.25 / k * 2) * np.sin(k * t + rng.uniform(0, 6.3))
    asp = rng.uniform(0.5, 1.0)
    return np.stack([cx + r * rr * np.cos(t), cy + r * asp * rr * np.sin(t)], axis=1)


def _clutter(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Blend a few non-class distractors (blobs, strokes, rectangles) into a background."""
    h, w = img.shape[:2]
    n = int(rng.choice([0, 1, 1, 2, 2, 3, 4]))
    ss = 2 if max(h, w) <= 128 else 1
    mean = img.reshape(-1, 3).mean(axis=0)
    for _ in range(n):
        kind = _choose(rng, [(2, "blob"), (1.5, "line"), (1.5, "rect")])
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.04, 0.18) * min(h, w)
        if kind == "blob":
            poly = _blob(rng, cx, cy, r)
        elif kind == "line":
            a = rng.uniform(0, math.pi)
            ln = rng.uniform(0.3, 1.2) * min(h, w)
            d = np.array([math.cos(a), math.sin(a)]) * ln / 2
            poly = _bar((cx - d[0], cy - d[1]), (cx + d[0], cy + d[1]), rng.uniform(0.01, 0.04) * min(h, w) + 0.6)
        else:
            pr = np.array([[-r, -r * rng.uniform(0.3, 1.0)], [r, -r * rng.uniform(0.3, 1.0)], [r, r], [-r, r]])
            poly = _rot(pr, rng.uniform(0, 90)) + [cx, cy]
        base = mean if rng.random() < 0.5 else _jhsv(rng, (0, 360), (0.1, 0.6), (0.2, 0.9))
        c = np.clip(base * rng.uniform(0.5, 1.4), 0, 1)
        op = rng.uniform(0.35, 0.9)
        m = Image.new("L", (w * ss, h * ss), 0)
        ImageDraw.Draw(m).polygon([tuple(xy) for xy in (poly * ss).tolist()], fill=255)
        af = (np.asarray(m.reduce(ss) if ss > 1 else m, np.float32) * (op / 255.0))[..., None]
        img = img * (1 - af) + c.astype(np.float32) * af
    return img


def render_background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """An RGB scene-like background (landscape, grass, sand, water, wall, room or abstract).

    Why: stands in for Places365 photos, both as context behind objects and as the background
    pool for poison crafting. It never contains a class object, only non-class clutter.
    """
    _check_size(width, "width")
    _check_size(height, "height")
    # Texture scales are relative to a 64 px image so worlds look alike at every size.
    s = min(width, height) / 64.0
    fn = _choose(rng, _BACKGROUNDS)
    img = fn(rng, height, width, s).astype(np.float32)
    img = _clutter(rng, img)
    img = img * rng.uniform(0.85, 1.12) + rng.normal(0.0, 0.012, img.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.round(img * 255), 0, 255).astype(np.uint8), "RGB")


# --------------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------------


def _scene_layers(
    name: str, rng: np.random.Generator, size: int, object_scale: tuple[float, float] = (0.35, 0.8)
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Background, object RGB, object alpha (all uint8, size x size) and the composite scene."""
    _check_class(name, "name")
    _check_size(size, "size")
    _check_scale(object_scale)
    bg = np.asarray(render_background(rng, size, size))
    parts, A0, light = _object_transform(name, rng)
    longer = rng.uniform(*object_scale) * size
    A, lo, w, h = _place(parts, A0, longer)
    # Keep the whole bounding box inside the image, with a quarter-pixel margin for edge coverage.
    x = rng.uniform(0.25, max(0.25, size - w - 0.25))
    y = rng.uniform(0.25, max(0.25, size - h - 0.25))
    rgb, a = _rasterise(parts, A, np.array([x, y]) - lo, size, size, _supersample(size), light)
    af = a.astype(np.uint32)[..., None]
    scene = (bg.astype(np.uint32) * (255 - af) + rgb.astype(np.uint32) * af + 127) // 255
    return bg, rgb, a, scene.astype(np.uint8)


def render_scene(name: str, rng: np.random.Generator, size: int,
                 object_scale: tuple[float, float] = (0.35, 0.8)) -> tuple[Image.Image, np.ndarray]:
    """RGB ``size`` x ``size`` image with one object of class ``name`` on a background, plus its mask.

    The mask (bool, H x W) is ``alpha > 0`` of the anti-aliased object: it covers every pixel the
    object touches, and every pixel outside it is pure background, so cutting an object out with
    the mask never leaves object fragments behind. ``object_scale`` bounds the object's bounding-box
    longer side as a fraction of ``size``.
    """
    _, _, a, scene = _scene_layers(name, rng, size, cast(tuple[float, float], tuple(object_scale)))
    return Image.fromarray(scene, "RGB"), a > 0


# --------------------------------------------------------------------------------------------------
# Worlds on disk
# --------------------------------------------------------------------------------------------------

# Stream ids keep splits on disjoint random streams: image (split, class, index) has its own seed.
_STREAMS = {"pretrain": 1, "train": 2, "test": 3, "references": 4, "support": 5, "backgrounds": 6, "scenes": 7}


def _image_rng(seed: int, split: str, class_name: str | None, index: int) -> np.random.Generator:
    cid = CLASS_NAMES.index(class_name) if class_name is not None else 0
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(_STREAMS[split], cid, int(index))))


def render_caption_scene(seed: int, index: int, size: int) -> Image.Image:
    """Object-free scene ``index`` of the captioned pre-training pairs: a square background on its own random
    stream, so it is never one of the attacker's background pool (as Places365 photos are not CC3M's)."""
    return render_background(_image_rng(seed, "scenes", None, index), size, size)


def _check_count(value: Any, option: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise UserError(f"{option}: expected a non-negative integer count, got {value!r}; pass 0 or more")
    return int(value)


def _save_png(img: Image.Image, path: Path) -> None:
    img.save(path, format="PNG", compress_level=6)


#: By default, fewer images than this render here: a pool's start-up would cost more than it saves.
_POOL_MIN_JOBS = 400
_WORLD: dict[str, Any] = {}


def _init_world_worker(config: WorldConfig, out: Path) -> None:
    _WORLD.update(config=config, out=out)


def _render_world_job(job: tuple[str, str, str | None, int]) -> None:
    """One image of :func:`generate_world` (its own random stream: the same bytes in any process)."""
    stem, split, cname, idx = job
    config: WorldConfig = _WORLD["config"]
    size = config.image_size
    path = _WORLD["out"] / f"{stem}.png"
    rng = _image_rng(config.seed, split, cname, idx)
    if split == "backgrounds":
        bw = int(round(size * rng.uniform(1.25, 1.5)))
        bh = int(round(size * rng.uniform(1.0, 1.2)))
        _save_png(render_background(rng, bw, bh), path)
        return
    assert cname is not None  # only backgrounds have no class
    img, mask = render_scene(cname, rng, size, config.object_scale)
    _save_png(img, path)
    if split == "references":
        _save_png(Image.fromarray(mask.astype(np.uint8) * 255, "L"), path.with_name(f"{idx}_mask.png"))


def generate_world(
    out_dir: str | os.PathLike[str],
    config: WorldConfig = WorldConfig(),
    *,
    n_pretrain: int = 2000,
    n_train_per_class: int = 100,
    n_test_per_class: int = 50,
    target: str = DEFAULT_TARGET,
    n_references: int = 3,
    n_support: int = 5,
    n_backgrounds: int = 200,
    pretrain_classes: tuple[str, ...] | None = None,
    progress: bool = False,
    overwrite: bool = False,
    workers: int | None = None,
) -> dict[str, Any]:
    """Write a complete demo world (pre-training, downstream, references, backgrounds) as PNGs.

    Why: gives every experiment an offline ImageNet/Places365 stand-in that is identical on every
    machine for the same config. The folder appears atomically (built in a temp sibling, then
    renamed); an existing non-empty ``out_dir`` is refused unless ``overwrite=True``. Returns the
    summary also written to ``world.json``. ``workers`` processes render it (default: one per core; every
    image has its own random stream, so the bytes do not depend on it): a 50,000-image world is minutes
    of one core.
    """
    if not isinstance(config, WorldConfig):
        raise UserError(f"config: expected a WorldConfig, got {type(config).__name__}")
    n_pretrain = _check_count(n_pretrain, "n_pretrain")
    n_train = _check_count(n_train_per_class, "n_train_per_class")
    n_test = _check_count(n_test_per_class, "n_test_per_class")
    n_refs = _check_count(n_references, "n_references")
    n_sup = _check_count(n_support, "n_support")
    n_bg = _check_count(n_backgrounds, "n_backgrounds")
    classes = config.classes
    if not isinstance(target, str) or target not in classes:
        raise UserError(f"target: {target!r} is not one of the world's classes ({', '.join(classes)}); "
                        "pass target=<one of them>")
    if pretrain_classes is None:
        pre_classes = classes
    else:
        if isinstance(pretrain_classes, str):
            raise UserError(f"pretrain_classes: expected a list of class names, got the string "
                            f"{pretrain_classes!r}; write ({pretrain_classes!r},)")
        pre_classes = tuple(pretrain_classes)
        for c in pre_classes:
            if c not in classes:
                raise UserError(f"pretrain_classes: {c!r} is not one of the world's classes "
                                f"({', '.join(classes)}); drop it or add it to config.classes")
        if not pre_classes and n_pretrain:
            raise UserError("pretrain_classes: empty but n_pretrain > 0; list at least one class or set n_pretrain=0")
        if len(set(pre_classes)) != len(pre_classes):
            raise UserError(f"pretrain_classes: duplicate names in {list(pre_classes)}; list each class once")

    out = Path(out_dir)
    replace = bool(overwrite)
    if out.exists():
        if not out.is_dir():
            raise OutputExistsError(f"{out}: exists and is not a folder; choose another output folder")
        if any(out.iterdir()) and not overwrite:
            raise OutputExistsError(f"{out}: output folder exists and is not empty; pass overwrite=True "
                                    "(--overwrite) to replace it or choose another folder")
        replace = True  # empty, or the caller asked to overwrite: the finished world replaces it

    size = config.image_size
    per_pre = {c: n_pretrain // len(pre_classes) + (1 if i < n_pretrain % len(pre_classes) else 0)
               for i, c in enumerate(pre_classes)} if pre_classes else {}
    jobs: list[tuple[str, str, str | None, int]] = []  # (relative path stem, split, class, index)
    for c, n in per_pre.items():
        jobs += [(f"pretrain/{c}/{i:05d}", "pretrain", c, i) for i in range(n)]
    for split, n in (("train", n_train), ("test", n_test)):
        for c in classes:
            jobs += [(f"downstream/{split}/{c}/{i:05d}", split, c, i) for i in range(n)]
    jobs += [(f"references/{target}/{k}", "references", target, k) for k in range(1, n_refs + 1)]
    jobs += [(f"support/{target}/{k}", "support", target, k) for k in range(1, n_sup + 1)]
    jobs += [(f"backgrounds/{i:05d}", "backgrounds", None, i) for i in range(n_bg)]

    summary = {
        "generator": "corruptencoder.data.synthetic",
        "world_version": WORLD_VERSION,
        "seed": int(config.seed),
        "image_size": size,
        "config": _config_dict(config),
        "classes": list(classes),
        "pretrain_classes": list(pre_classes),
        "target": target,
        "counts": {
            "pretrain": per_pre,
            "downstream_train": {c: n_train for c in classes},
            "downstream_test": {c: n_test for c in classes},
            "references": n_refs,
            "support": n_sup,
            "backgrounds": n_bg,
        },
        "total_images": len(jobs),
    }

    from corruptencoder.utils.parallel import default_workers, process_map

    with atomic_output_dir(out, overwrite=replace) as tmp:
        for folder in sorted({str(Path(stem).parent) for stem, _, _, _ in jobs}):
            (tmp / folder).mkdir(parents=True, exist_ok=True)
        n_workers = workers if workers is not None else default_workers() if len(jobs) >= _POOL_MIN_JOBS else 1
        try:
            for _ in process_map(_render_world_job, jobs, workers=n_workers, initializer=_init_world_worker,
                                 initargs=(config, tmp), desc="demo world", progress=progress):
                pass
        finally:
            _WORLD.clear()  # as crafting's state: nothing of a finished world stays in this process
        write_json_atomic(tmp / "world.json", summary)
    return summary


def _config_dict(config: WorldConfig) -> dict[str, Any]:
    d = asdict(config)
    d["classes"] = list(config.classes)
    d["object_scale"] = list(config.object_scale)
    return d


_COUNT_DEFAULTS = {
    k: p.default
    for k, p in inspect.signature(generate_world).parameters.items()
    if p.kind is inspect.Parameter.KEYWORD_ONLY and k not in ("progress", "overwrite", "workers")  # not what is drawn
}


def ensure_world(cache_dir: str | os.PathLike[str], config: WorldConfig = WorldConfig(), *, progress: bool = False,
                 generate: bool = True, **counts: Any) -> Path:
    """Return a cached world for ``(config, counts)``, generating it only the first time.

    Why: experiments and tests can ask for "the demo world" repeatedly at no cost. The folder
    name is a short hash of the config, the counts (with defaults filled in) and
    :data:`WORLD_VERSION`, so changing any of them gives a fresh world instead of a stale one.
    """
    unknown = sorted(set(counts) - set(_COUNT_DEFAULTS))
    if unknown:
        raise UserError(f"ensure_world: unknown option(s) {', '.join(unknown)}; use {', '.join(_COUNT_DEFAULTS)}")
    if not isinstance(config, WorldConfig):
        raise UserError(f"config: expected a WorldConfig, got {type(config).__name__}")
    full = {**_COUNT_DEFAULTS, **counts}
    if full["pretrain_classes"] is not None:
        full["pretrain_classes"] = list(full["pretrain_classes"])
    payload = {"config": _config_dict(config), "counts": full, "version": WORLD_VERSION}
    key = json.dumps(payload, sort_keys=True, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"world-{digest}"
    if (path / "world.json").is_file() or not generate:  # generate=False: where it is (or would be)
        return path
    # world.json is written last inside an atomically renamed folder, so a folder without it can
    # only be foreign debris; replacing it is safe. Concurrent callers produce identical bytes.
    generate_world(path, config, progress=progress, overwrite=True, **counts)
    return path


def render_class_assets(out_dir: str | os.PathLike[str], config: WorldConfig, class_name: str, *, n_references: int = 3,
                        n_support: int = 5) -> Path:
    """Reference images (+ masks) and support images of *any* class of a world, exactly as
    :func:`generate_world` would have made them with ``target=class_name`` (same random streams),
    so several targets can be attacked in one world without regenerating it."""
    if class_name not in config.classes:
        raise UserError(f"class {class_name!r} is not in the world ({', '.join(config.classes)})")
    out = Path(out_dir)
    if (out / "done").is_file():
        return out
    with atomic_output_dir(out, overwrite=True) as tmp:
        for split, n in (("references", n_references), ("support", n_support)):
            (tmp / split / class_name).mkdir(parents=True, exist_ok=True)
            for k in range(1, n + 1):
                img, mask = render_scene(class_name, _image_rng(config.seed, split, class_name, k), config.image_size,
                                         config.object_scale)
                _save_png(img, tmp / split / class_name / f"{k}.png")
                if split == "references":
                    _save_png(Image.fromarray(mask.astype(np.uint8) * 255, "L"),
                              tmp / split / class_name / f"{k}_mask.png")
        (tmp / "done").write_text("ok\n")
    return out
