"""CorruptEncoder (Algorithms 1 and 2): reference object + trigger, well apart, on a background.

Reference objects are decoded once in the parent; each worker keeps a small cache of objects
resized to the sizes its layouts need, so a poison costs one background decode, a crop (or an
upscaling resize of just the cropped region), two pastes and one encode.
"""

from __future__ import annotations

from typing import Any, Literal, cast

import numpy as np
from PIL import Image
from pydantic import Field, field_validator

from corruptencoder.errors import GeometryError
from corruptencoder.poison.base import BackgroundSet, ImageAttack, Job, RenderResult, feathered
from corruptencoder.poison.config import ATTACKS, AttackOptions, fraction
from corruptencoder.poison.geometry import (
    LAYOUTS,
    Layout,
    PoisonGeometry,
    background_crop,
    largest_fit,
    pick_index,
    place_trigger,
    poison_geometry,
    trigger_region,
)
from corruptencoder.poison.objects import Reference, discover_references, load_references

_LAYOUT_CHOICES: dict[str, tuple[Layout, ...]] = {
    "random": LAYOUTS,
    "wide": ("wide-left", "wide-right"),
    "high": ("high",),
    "wide-left": ("wide-left",),
    "wide-right": ("wide-right",),
    "authors": ("wide-left", "wide-right"),
}


#: Algorithm 2's layouts: random (a random bit picks wide or high), or one of them; "authors" is what the
#: authors' generate_poisoned_images.py does (the code behind the paper's tables): the object left or right
#: only, 0 to ``object_margin`` of the poison's width from its edge, the background cropped at its bottom
LayoutChoice = Literal["random", "wide", "high", "wide-left", "wide-right", "authors"]
ReferenceMode = Literal["object", "image"]


class CorruptEncoderOptions(AttackOptions):
    alpha: float = Field(0.5, description="object bounding-box area / poisoned-image area, in (0, 1)")
    beta: float = Field(0.5, description="the trigger lies in the central beta fraction of the free rectangle")
    layout: LayoutChoice = Field("random", description="Algorithm 2 layout; 'authors' = the authors' script's")
    object_margin: float = Field(0.05, ge=0.0, lt=0.5, description="layout 'authors': the object lies 0 to this "
                                 "fraction of the poison's width away from its edge (their script: 0.05), less where "
                                 "the trigger would not fit beside it")
    reference_mode: ReferenceMode = Field(
        "object", description="embed the masked reference object (paper) or the whole reference image (Table 7)")

    @field_validator("alpha", "beta")
    @classmethod
    def _unit(cls, v: float, info: Any) -> float:
        return fraction(info.field_name, v)


@ATTACKS.register
class CorruptEncoderAttack(ImageAttack[CorruptEncoderOptions]):
    name = "corruptencoder"
    title = "CorruptEncoder"
    table_order = 20
    summary = "CorruptEncoder (Algorithms 1-2): reference object and trigger apart on a background"
    options = CorruptEncoderOptions
    needs = frozenset({"references", "backgrounds"})

    def prepare(self) -> None:
        super().prepare()
        t = self.target
        need_object = self.opts.reference_mode == "object"
        self.references: list[Reference] = load_references(discover_references(t.references), self.labels, need_object)
        if not need_object:
            self.references = [Reference(r.source, r.image, None) for r in self.references]
        self.objects = [ref.object_rgba() for ref in self.references]
        self.backgrounds = BackgroundSet.scan(t.backgrounds)
        self.layouts = _LAYOUT_CHOICES[self.opts.layout]
        self._cache: dict[tuple[int, tuple[int, int]], tuple[Image.Image, Image.Image | None]] = {}
        self._check_trigger_fits()

    def geometry(self, ref: int, layout: Layout, margin: float = 0.0) -> PoisonGeometry:
        """The poison's boxes; ``margin`` (the authors' layout, a fraction of the width) is reduced where the
        trigger would no longer fit the central region beside the object, so small beta stays craftable."""
        w, h = self.objects[ref].size
        g = poison_geometry(w, h, self.opts.alpha, layout, self.run.max_size)
        if margin <= 0:
            return g
        slack = largest_fit(trigger_region(g, self.opts.beta))[0] - self.trigger_size[0]
        px = min(int(margin * g.image_size[0]), max(0, slack))
        return poison_geometry(w, h, self.opts.alpha, layout, self.run.max_size, px / g.image_size[0] + 1e-9)

    @property
    def authors(self) -> bool:
        return self.opts.layout == "authors"

    def _check_trigger_fits(self) -> None:
        """Refuse, before any work, a trigger that cannot fit for some reference and layout."""
        tw, th = self.trigger_size
        worst: tuple[int, int, str, Layout, PoisonGeometry] | None = None
        for i, ref in enumerate(self.references):
            for layout in self.layouts:
                g = self.geometry(i, layout)  # the authors' margin gives way to the trigger (see geometry)
                fw, fh = largest_fit(trigger_region(g, self.opts.beta))
                if (tw > fw or th > fh) and (worst is None or min(fw, fh) < min(worst[0], worst[1])):
                    worst = (fw, fh, ref.source, layout, g)
        if worst is not None:
            fw, fh, source, layout, g = worst
            raise GeometryError(
                f"{source}: a {tw}x{th} trigger cannot fit in the central beta={self.opts.beta} fraction "
                f"({fw}x{fh}) of the free rectangle of a {layout} poison of {g.image_size[0]}x{g.image_size[1]} px; "
                + (f"the largest that fits is {fw}x{fh}: use --trigger-size {min(fw, fh)} or less, "
                   if min(fw, fh) >= 1 else "no trigger fits there: use ")  # never "--trigger-size 0 or less"
                + "a larger --beta, a smaller --alpha, --layout to avoid this layout, or a larger --max-size"
            )

    def plan(self, rng: np.random.Generator, count: int | None = None) -> list[Job]:
        n = self.target.num if count is None else count
        nb = len(self.backgrounds.paths)
        jobs: list[Job] = []
        perm = rng.permutation(nb)
        for i in range(n):
            if i and i % nb == 0:  # every background once before any repeats
                perm = rng.permutation(nb)
            ref = int(rng.integers(len(self.objects)))
            pick = rng.random()
            u = rng.random(4)
            job: Job = {
                "attack": "corruptencoder",
                "ref": ref,
                "layout": _choose_layout(self.opts.layout, pick),
                "background": int(perm[i % nb]),
                "u_background": [float(u[0]), float(u[1])],
                "u_trigger": [float(u[2]), float(u[3])],
            }
            if self.authors:  # drawn only for this layout, so the other layouts' streams are unchanged
                job["margin"] = float(rng.random()) * self.opts.object_margin
            jobs.append(job)
        return jobs

    def _resized(self, ref: int, size: tuple[int, int]) -> tuple[Image.Image, Image.Image | None]:
        key = (ref, size)
        if key not in self._cache:
            obj = self.objects[ref]
            if obj.size != size:
                rgb = obj.convert("RGB").resize(size, Image.Resampling.LANCZOS)
                matte = obj.getchannel("A").resize(size, Image.Resampling.BILINEAR)
            else:
                rgb, matte = obj.convert("RGB"), obj.getchannel("A")
            opaque = self.references[ref].matte is None
            self._cache[key] = (rgb, None if opaque else feathered(matte, self.run.soft_edge))
        return self._cache[key]

    def render(self, job: Job) -> RenderResult:
        return self.render_poison(job)

    def render_poison(self, job: Job) -> RenderResult:
        g = self.geometry(job["ref"], job["layout"], job.get("margin", 0.0))
        rgb, matte = self._resized(job["ref"], g.object_size)
        bg, bg_path, skipped = self.backgrounds.load(job["background"])
        ux, uy = job["u_background"]
        r, crop = background_crop(bg.size, g.image_size, ux, uy, bottom=self.authors)
        if r > 1.0:
            src = (crop[0] / r, crop[1] / r, min(crop[2] / r, bg.size[0]), min(crop[3] / r, bg.size[1]))
            canvas = bg.resize(g.image_size, Image.Resampling.BICUBIC, box=src)
        else:
            src = cast(tuple[float, float, float, float], tuple(float(c) for c in crop))
            canvas = bg.crop(crop)
        canvas.paste(rgb, g.object_box[:2], matte)
        tbox = place_trigger(g, self.trigger_size, self.opts.beta, *job["u_trigger"])
        self.paste_trigger(canvas, tbox)
        rec: dict[str, Any] = self.base_record(job)
        rec.update({
            "image_size": list(g.image_size),
            "object_box": list(g.object_box),
            "trigger_box": list(tbox),
            "layout": g.layout,
            "reference": self.references[job["ref"]].source,
            "background": bg_path,
            "background_box": [round(v, 3) for v in src],
            "background_scale": round(r, 6),
            "object_size": list(g.object_size),
            "object_margin": g.margin,
            "alpha": self.opts.alpha,
            "beta": self.opts.beta,
        })
        return RenderResult(canvas, rec, skipped)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"alpha": self.opts.alpha, "beta": self.opts.beta, "layout": self.opts.layout,
                  "reference_mode": self.opts.reference_mode,
                  "references": [r.source for r in self.references],
                  "backgrounds": len(self.backgrounds.paths),
                  "backgrounds_unreadable": [p for p, _ in self.backgrounds.skipped]})
        return d


def _choose_layout(choice: str, u: float) -> Layout:
    """Algorithm 2: a random bit picks wide or high; a wide poison puts the object left or right."""
    if choice == "random":
        return "high" if u < 0.5 else ("wide-left" if u < 0.75 else "wide-right")
    options = _LAYOUT_CHOICES[choice]
    return options[pick_index(u, len(options))]
