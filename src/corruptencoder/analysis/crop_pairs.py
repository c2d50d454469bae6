"""Monte-Carlo crop-pair analysis: how often do two views split the object and the trigger?

CorruptEncoder works when one random view covers mainly the reference object and the other holds
the trigger; it fails when one view holds both. The paper argues P(exactly one view in the object
box) ~ 2 alpha (1 - alpha) and that a smaller beta moves the trigger away from the borders and the
object. This module measures those probabilities with the *same* crop samplers as pre-training
(``corruptencoder.ssl.crops``), for a poison folder's real boxes or for synthetic geometries over a
grid of alpha and beta, under a view policy: random crops, localized cropping (delta), or none.

Definitions (per view pair, fractions configurable):
* object view: at least ``object_frac`` of the view's area lies in the object box;
* trigger view: the view contains at least ``trigger_frac`` of the trigger's area;
* split: one view is an object view and the other a trigger view (and not an object view);
* both: some view is a trigger view that also overlaps the object box by ``part_frac`` of its area.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from corruptencoder.poison.geometry import LAYOUTS, Box, place_trigger, poison_geometry
from corruptencoder.ssl.crops import CropPolicy, CropPolicyName

#: view pairs per poison: beyond this the estimate stops improving and the run takes hours
MAX_PAIRS = 1_000_000


@dataclass(frozen=True)
class PoisonBoxes:
    image_size: tuple[int, int]
    object_box: Box
    trigger_box: Box


@dataclass(frozen=True)
class Criteria:
    object_frac: float = 0.5
    trigger_frac: float = 0.5
    part_frac: float = 0.1


def _inter(a: Box, b: Box) -> int:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0


def _area(b: Box) -> int:
    return max(0, b[2] - b[0]) * max(0, b[3] - b[1])


def classify(view: Box, p: PoisonBoxes, c: Criteria) -> tuple[bool, bool, bool]:
    """(object view, trigger view, both) for one view."""
    va = _area(view)
    obj = _inter(view, p.object_box) / va
    trig = _inter(view, p.trigger_box) / max(1, _area(p.trigger_box))
    is_obj = obj >= c.object_frac
    is_trig = trig >= c.trigger_frac
    return is_obj, is_trig and not is_obj, is_trig and obj >= c.part_frac


@dataclass
class PairStats:
    split: float          # one view mainly object, the other with the trigger
    both: float           # one view with both the trigger and a part of the object
    object_view: float    # P(a single view is an object view) ~ alpha for random crops
    trigger_view: float   # P(a single view holds the trigger): p1 of the paper
    one_object: float     # P(exactly one of the two views is an object view) ~ 2 alpha (1 - alpha)
    pairs: int

    def as_dict(self) -> dict[str, float]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def estimate(poisons: Sequence[PoisonBoxes], policy: CropPolicy, pairs_per_poison: int = 200, seed: int = 0,
             criteria: Criteria = Criteria()) -> PairStats:
    rng = np.random.default_rng(seed)
    split = both = obj1 = trig1 = one_obj = 0
    n = 0
    for p in poisons:
        w, h = p.image_size
        for _ in range(pairs_per_poison):
            v1, v2 = policy.sample(rng, w, h, 2)
            o1, t1, b1 = classify(v1, p, criteria)
            o2, t2, b2 = classify(v2, p, criteria)
            split += (o1 and t2) or (o2 and t1)
            both += b1 or b2
            obj1 += o1 + o2
            trig1 += t1 + t2
            one_obj += o1 != o2
            n += 1
    n = max(n, 1)
    return PairStats(split / n, both / n, obj1 / (2 * n), trig1 / (2 * n), one_obj / n, n)


def poisons_from_manifest(records: Iterable[dict[str, Any]]) -> list[PoisonBoxes]:
    return [PoisonBoxes(tuple(r["image_size"]), tuple(r["object_box"]), tuple(r["trigger_box"]))
            for r in records if r.get("object_box") and r.get("trigger_box") and r.get("image_size")]


def synthetic_poisons(alpha: float, beta: float, n: int = 24, trigger_frac_of_side: float = 0.1,
                      object_size: tuple[int, int] = (320, 280), seed: int = 0) -> list[PoisonBoxes]:
    """Geometries of Algorithm 2 for one (alpha, beta): random layouts and trigger positions, a trigger
    side of ``trigger_frac_of_side`` of the object's shorter side (40 px for a 400 px object)."""
    rng = np.random.default_rng(seed)
    out = []
    t = max(1, int(round(min(object_size) * trigger_frac_of_side)))
    for i in range(n):
        layout = LAYOUTS[i % 3]
        g = poison_geometry(object_size[0], object_size[1], alpha, layout, None)
        try:
            tb = place_trigger(g, (t, t), beta, rng.random(), rng.random())
        except Exception:  # noqa: BLE001 - the trigger does not fit this (alpha, beta): skip the cell
            continue
        out.append(PoisonBoxes(g.image_size, g.object_box, tb))
    return out


def policy_for(method: str, crop: CropPolicyName = "random", delta: float = 0.2,
               scale: tuple[float, float] | None = None) -> CropPolicy:
    """The crop policy of ``method``'s global views (its declared crop scale, unless ``scale`` is given)."""
    if scale is None:
        from corruptencoder.ssl.config import METHODS

        scale = METHODS.get(method).crop_scale
    return CropPolicy(crop, scale, delta=delta)


def sweep(alphas: Sequence[float], betas: Sequence[float], policy: CropPolicy, pairs_per_poison: int = 150,
          seed: int = 0, criteria: Criteria = Criteria()) -> list[dict[str, float]]:
    rows = []
    for a in alphas:
        for b in betas:
            ps = synthetic_poisons(a, b, seed=seed)
            if not ps:
                rows.append({"alpha": a, "beta": b, "split": float("nan"), "both": float("nan"),
                             "one_object": float("nan"), "theory_2a1a": 2 * a * (1 - a)})
                continue
            s = estimate(ps, policy, pairs_per_poison, seed, criteria)
            rows.append({"alpha": a, "beta": b, **s.as_dict(), "theory_2a1a": round(2 * a * (1 - a), 4)})
    return rows


def crop_report(poisons: str | None, method: str = "moco",
                policies: Sequence[CropPolicyName] = ("random", "localized", "none"),
                delta: float = 0.2, pairs: int = 200, alphas: Sequence[float] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
                betas: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9), grid: bool = True,
                seed: int = 0, scale: tuple[float, float] | None = None) -> tuple[list[str], dict[str, object]]:
    """The ``analyze crops`` report: the printed lines and the numbers (for ``--json``).

    ``scale`` overrides the method's crop-scale range, as a pre-training config's ``views.scale`` does, so the
    prediction can be set beside an arm trained with another lower bound."""
    import math

    from corruptencoder.errors import UserError
    from corruptencoder.poison.manifest import read_manifest

    if not 1 <= pairs <= MAX_PAIRS:
        raise UserError(f"--pairs {pairs}: use 1 to {MAX_PAIRS:,} view pairs per poison (200 is plenty)")
    if not (math.isfinite(delta) and 0.0 <= delta <= 10.0):
        raise UserError(f"--delta {delta}: the localized-cropping enlargement must be between 0 and 10 (e.g. 0.2)")
    for flag, values in (("--alphas", alphas), ("--betas", betas)):
        bad = [v for v in values if not 0.0 < v < 1.0]  # nan fails too
        if bad and grid:
            raise UserError(f"{flag}: {bad[0]} is outside (0, 1); give fractions such as 0.3 0.5 0.7")
    if scale is not None and not (0.0 < scale[0] <= scale[1] <= 1.0):  # nan fails too
        raise UserError(f"--scale {scale[0]} {scale[1]}: the crop-scale range must satisfy 0 < low <= high <= 1, "
                        "e.g. --scale 0.2 1.0")
    lines: list[str] = []
    result: dict[str, object] = {"method": method, "delta": delta,
                                 "scale": list(policy_for(method, "random", delta, scale).scale)}
    if poisons:
        boxes = poisons_from_manifest(read_manifest(poisons))
        if not boxes:
            raise UserError(f"{poisons}: no poison with both an object box and a trigger box "
                            "(SSL-Backdoor and support poisons have no object box)")
        lines.append(f"{poisons}: {len(boxes)} poisons, {pairs} view pairs each, {method} crops"
                     + (f" at scale {scale[0]:g}-{scale[1]:g}" if scale else ""))
        lines.append(f"{'policy':<12}{'split':>8}{'both':>8}{'P(obj view)':>13}{'P(trig view)':>14}{'P(one obj)':>12}")
        folder: dict[str, object] = {}
        for pol in policies:
            s = estimate(boxes, policy_for(method, pol, delta, scale), pairs, seed)
            folder[pol] = s.as_dict()
            lines.append(f"{pol:<12}{s.split:>8.3f}{s.both:>8.3f}{s.object_view:>13.3f}{s.trigger_view:>14.3f}"
                         f"{s.one_object:>12.3f}")
        result["folder"] = folder
    if grid:
        grids: dict[str, object] = {}
        for pol in policies:
            rows = sweep(alphas, betas, policy_for(method, pol, delta, scale), max(20, pairs // 2), seed)
            grids[pol] = rows
            lines += ["", f"P(split) / P(both) over alpha (rows) and beta (columns), {pol} crops; "
                      "last column: 2*alpha*(1-alpha) vs measured P(exactly one object view)",
                      "alpha " + "".join(f"{'beta=' + format(b, 'g'):>14}" for b in betas) + f"{'2a(1-a) | meas':>18}"]
            for a in alphas:
                cells = [r for r in rows if r["alpha"] == a]
                txt = "".join(f"{r['split']:>7.3f}/{r['both']:<6.3f}" if r["split"] == r["split"] else f"{'n/a':>14}"
                              for r in cells)
                meas = next((r.get("one_object") for r in cells if r.get("one_object") == r.get("one_object")),
                            float("nan"))
                lines.append(f"{a:<6g}{txt}{2 * a * (1 - a):>10.3f} | {meas:.3f}")
        result["grid"] = grids
    return lines, result
