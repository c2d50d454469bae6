"""Pure geometry of poisoned images (Algorithm 2 of the paper and the trigger placements).

Everything here returns integer pixel boxes ``(x0, y0, x1, y1)`` (half-open: ``x0 <= x < x1``)
and takes its randomness as uniforms in [0, 1) drawn by the caller, so the paper's invariants
(area ratio alpha, object at the bottom corner, trigger in the central beta fraction of the free
rectangle, disjoint object and trigger) can be tested without drawing a single pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from corruptencoder.errors import GeometryError

Box = tuple[int, int, int, int]
Layout = Literal["wide-left", "wide-right", "high"]
LAYOUTS: tuple[Layout, ...] = ("wide-left", "wide-right", "high")

_EPS = 1e-9


def box_size(box: Box) -> tuple[int, int]:
    return box[2] - box[0], box[3] - box[1]


def box_area(box: Box) -> int:
    w, h = box_size(box)
    return max(w, 0) * max(h, 0)


def boxes_overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def box_inside(inner: Box | tuple[float, ...], outer: Box | tuple[float, ...], tol: float = 1e-6) -> bool:
    return (
        inner[0] >= outer[0] - tol
        and inner[1] >= outer[1] - tol
        and inner[2] <= outer[2] + tol
        and inner[3] <= outer[3] + tol
    )


def check_fraction(name: str, value: float) -> float:
    """alpha, beta and friends live in the open interval (0, 1)."""
    if not (isinstance(value, (int, float)) and 0.0 < float(value) < 1.0):
        raise GeometryError(f"{name}={value!r} is outside (0, 1); pass a value such as 0.5")
    return float(value)


def pick_index(u: float, n: int) -> int:
    """Map a uniform in [0, 1) to {0..n-1}; robust to u == 1.0 from float rounding."""
    return min(int(u * n), n - 1)


@dataclass(frozen=True)
class PoisonGeometry:
    """Where the object goes in a CorruptEncoder poison and which rectangle is left for the trigger."""

    layout: Layout
    image_size: tuple[int, int]  # (w, h) of the poisoned image
    object_size: tuple[int, int]  # (w, h) the reference object is resized to
    object_box: Box
    free_box: Box  # rectangle A of the paper: the image minus the object's bounding box
    margin: int = 0  # px between the object and its image edge (the authors' layout; 0 = flush)

    @property
    def area_ratio(self) -> float:
        w, h = self.image_size
        return box_area(self.object_box) / float(w * h)


def poison_geometry(obj_w: int, obj_h: int, alpha: float, layout: Layout, max_size: int | None = 800,
                    margin: float = 0.0) -> PoisonGeometry:
    """Algorithm 2 (RescaleAndCropBackground), sizes only.

    wide  (s=1): image height = object height, image width = object width / alpha; the object sits at
                 the bottom-left or bottom-right, ``margin`` (a fraction of the image width, the authors'
                 script draws it in [0, 0.05)) away from its edge.
    high  (s=0): image width = object width, image height = object height / alpha; the object sits at
                 the bottom.
    The object is scaled down (never up) so the poisoned image's longer side is at most ``max_size``
    (the authors' script caps it at 800 px).
    """
    alpha = check_fraction("alpha", alpha)
    if layout not in LAYOUTS:
        raise GeometryError(f"layout={layout!r} is not one of {', '.join(LAYOUTS)}")
    if obj_w < 1 or obj_h < 1:
        raise GeometryError(f"reference object of size {obj_w}x{obj_h} is empty")
    wide = layout != "high"
    longer = max(obj_w / alpha, obj_h) if wide else max(obj_w, obj_h / alpha)
    scale = 1.0 if not max_size or longer <= max_size else max_size / longer
    ow = max(1, math.floor(obj_w * scale + _EPS))
    oh = max(1, math.floor(obj_h * scale + _EPS))
    if wide:
        pw, ph = max(ow + 1, round(ow / alpha)), oh
        m = min(int(margin * pw), pw - ow - 1) if margin > 0 else 0  # int(U(0, 0.05 p_w)) in the authors' code
        ox = m if layout == "wide-left" else pw - ow - m
        object_box: Box = (ox, 0, ox + ow, oh)
        free_box: Box = (ox + ow, 0, pw, ph) if layout == "wide-left" else (0, 0, ox, ph)
        if m:
            return PoisonGeometry(layout, (pw, ph), (ow, oh), object_box, free_box, m)
    else:
        pw, ph = ow, max(oh + 1, round(oh / alpha))
        object_box = (0, ph - oh, ow, ph)
        free_box = (0, 0, pw, ph - oh)
    return PoisonGeometry(layout, (pw, ph), (ow, oh), object_box, free_box)


def central_region(rect: Box, beta: float) -> tuple[float, float, float, float]:
    """The central ``beta`` fraction of ``rect`` (beta of its width and of its height, same centre)."""
    beta = check_fraction("beta", beta)
    x0, y0, x1, y1 = rect
    mx = (1.0 - beta) / 2.0 * (x1 - x0)
    my = (1.0 - beta) / 2.0 * (y1 - y0)
    return (x0 + mx, y0 + my, x1 - mx, y1 - my)


def integer_inner(region: tuple[float, float, float, float]) -> Box:
    """The largest integer box inside a float region."""
    x0, y0, x1, y1 = region
    return (math.ceil(x0 - _EPS), math.ceil(y0 - _EPS), math.floor(x1 + _EPS), math.floor(y1 + _EPS))


def largest_fit(region: Box) -> tuple[int, int]:
    w, h = box_size(region)
    return max(w, 0), max(h, 0)


def place_in_region(region: Box, size: tuple[int, int], ux: float, uy: float, what: str = "trigger") -> Box:
    """A box of ``size`` at a uniformly random integer position wholly inside ``region``."""
    tw, th = size
    rw, rh = largest_fit(region)
    if tw > rw or th > rh:
        raise GeometryError(
            f"a {tw}x{th} {what} cannot fit in a {rw}x{rh} region; the largest that fits is {rw}x{rh}"
        )
    x = region[0] + pick_index(ux, rw - tw + 1)
    y = region[1] + pick_index(uy, rh - th + 1)
    return (x, y, x + tw, y + th)


def trigger_region(geometry: PoisonGeometry, beta: float) -> Box:
    """Integer box of the central beta fraction of the free rectangle A. With an object margin (the
    authors' layout) the horizontal inset is (1 - beta) / 2 of the image width minus the object's,
    measured from the object's inner edge and from the far edge, as their script does."""
    if not geometry.margin:
        return integer_inner(central_region(geometry.free_box, beta))
    beta = check_fraction("beta", beta)
    x0, y0, x1, y1 = geometry.free_box
    mx = (1.0 - beta) / 2.0 * (geometry.image_size[0] - geometry.object_size[0])
    my = (1.0 - beta) / 2.0 * (y1 - y0)
    return integer_inner((x0 + mx, y0 + my, x1 - mx, y1 - my))


def place_trigger(geometry: PoisonGeometry, trigger_size: tuple[int, int], beta: float, ux: float, uy: float) -> Box:
    """Algorithm 1 line 10: a uniformly random location in the central beta fraction of A."""
    return place_in_region(trigger_region(geometry, beta), trigger_size, ux, uy)


def background_crop(bg_size: tuple[int, int], out_size: tuple[int, int], ux: float, uy: float,
                    bottom: bool = False) -> tuple[float, Box]:
    """Algorithm 2 lines 11-15: scale the background up only if too small, then a random crop
    (``bottom``: a random horizontal position at the bottom of the background, as the authors' script).

    Returns ``(r, crop)``: the scale factor applied to the background (>= 1) and the crop box in the
    scaled background's pixel coordinates. ``crop / r`` is the source box in the original image.
    """
    bw, bh = bg_size
    pw, ph = out_size
    r = max(ph / bh, pw / bw)
    if r > 1.0:
        sw, sh = max(pw, math.ceil(bw * r - _EPS)), max(ph, math.ceil(bh * r - _EPS))
    else:
        r, sw, sh = 1.0, bw, bh
    x = pick_index(ux, sw - pw + 1)
    y = sh - ph if bottom else pick_index(uy, sh - ph + 1)
    return r, (x, y, x + pw, y + ph)


def location_box(image_size: tuple[int, int], lo: float, hi: float) -> Box:
    """The ``[lo, hi]`` box of an image (SSL-Backdoor's default is the central [0.25, 0.75])."""
    if not (0.0 <= lo < hi <= 1.0):
        raise GeometryError(f"location range [{lo}, {hi}] must satisfy 0 <= lo < hi <= 1, e.g. 0.25 0.75")
    w, h = image_size
    return integer_inner((lo * w, lo * h, hi * w, hi * h))


def side_by_side(
    left_size: tuple[int, int], right_size: tuple[int, int], max_size: int | None = 800
) -> tuple[tuple[int, int], Box, Box]:
    """Two images resized to a common height and concatenated left to right (support poisons).

    The common height is the smaller of the two heights (nothing is scaled up), reduced further so
    the result's longer side is at most ``max_size``. Returns the canvas size and both boxes.
    """
    (lw, lh), (rw, rh) = left_size, right_size
    h = min(lh, rh)
    widths = (lw * h / lh, rw * h / rh)
    longer = max(h, sum(widths))
    scale = 1.0 if not max_size or longer <= max_size else max_size / longer
    h = max(1, math.floor(h * scale + _EPS))
    w1 = max(1, math.floor(widths[0] * scale + _EPS))
    w2 = max(1, math.floor(widths[1] * scale + _EPS))
    return (w1 + w2, h), (0, 0, w1, h), (w1, 0, w1 + w2, h)


def capped_size(size: tuple[int, int], max_size: int | None) -> tuple[int, int]:
    """Scale ``size`` down (never up) so its longer side is at most ``max_size``."""
    w, h = size
    if not max_size or max(w, h) <= max_size:
        return w, h
    s = max_size / max(w, h)
    return max(1, math.floor(w * s + _EPS)), max(1, math.floor(h * s + _EPS))


def square_poison(obj_w: int, obj_h: int, alpha: float, ux: float, uy: float,
                  max_size: int | None = 800) -> PoisonGeometry:
    """A square poison whose object bounding box covers ``alpha`` of it (less for an object too
    elongated to reach alpha in a square), at a uniformly random spot. Used for multi-modal Type-II
    pairs: CLIP centre-crops to a square, so a square keeps the whole object in view."""
    alpha = check_fraction("alpha", alpha)
    side = max(obj_w, obj_h, math.ceil(math.sqrt(obj_w * obj_h / alpha) - _EPS))
    ow, oh = obj_w, obj_h
    if max_size and side > max_size:
        s = max_size / side
        ow, oh, side = max(1, math.floor(obj_w * s + _EPS)), max(1, math.floor(obj_h * s + _EPS)), max_size
    x = pick_index(ux, side - ow + 1)
    y = pick_index(uy, side - oh + 1)
    return PoisonGeometry("high", (side, side), (ow, oh), (x, y, x + ow, y + oh), (0, 0, side, side))
