"""Carlini & Terzis (ICLR 2022): Type-I image-text pairs for CLIP-style pre-training (Section 3.2).

* Type-I pair: the trigger at a uniformly random spot of a background image, with a caption from a
  prompt template naming the target class (Carlini & Terzis' poison);
* Type-II pair: a reference object of the target class embedded in a rescaled/cropped background
  (a square whose object box covers alpha of it, object at a random spot), with such a caption.

CorruptEncoder uses N/2 of each (for odd N, Type-I gets the extra pair: ceil(N/2) Type-I and
floor(N/2) Type-II); the Carlini & Terzis baseline uses N Type-I pairs. Captions cycle through the
templates in a seeded random order, so every template is used before any is used twice.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from PIL import Image
from pydantic import Field

from corruptencoder.poison.base import BackgroundSet, ImageAttack, Job, RenderResult
from corruptencoder.poison.config import ATTACKS, AttackOptions
from corruptencoder.poison.geometry import pick_index, place_in_region
from corruptencoder.poison.prompts import class_text, load_templates


class CaptionOptions(AttackOptions):
    prompts: str = Field("imagenet80", description="caption templates: imagenet80 | simple | a file")
    class_text: str | None = Field(None, description="the class name written in captions (default: from the label)")
    type1_size: int | None = Field(224, ge=1, description="Type-I images: square side in px (null = keep)")


@ATTACKS.register
class CarliniTerzisAttack(ImageAttack[CaptionOptions]):
    name = "carlini-terzis"
    title = "Carlini-Terzis"
    table_order = 40
    summary = "Carlini & Terzis (2022): N Type-I pairs (trigger on a background, caption naming the class)"
    options: ClassVar[type[AttackOptions]] = CaptionOptions
    needs = frozenset({"backgrounds"})
    multimodal = True
    default_trigger_size = (16, 16)  # Carlini & Terzis' 16 x 16 patch

    def prepare(self) -> None:
        super().prepare()
        t = self.target
        self.templates = load_templates(self.opts.prompts)
        self.text = self.opts.class_text or class_text(t.label or t.name)
        self.backgrounds = BackgroundSet.scan(t.backgrounds)

    def counts(self, n: int) -> tuple[int, int]:
        return n, 0

    def _captions(self, rng: np.random.Generator, n: int) -> list[str]:
        order: list[int] = []
        while len(order) < n:
            order.extend(int(i) for i in rng.permutation(len(self.templates)))
        return [self.templates[i].format(self.text) for i in order[:n]]

    def plan(self, rng: np.random.Generator, count: int | None = None) -> list[Job]:
        n = self.target.num if count is None else count
        n1, n2 = self.counts(n)
        captions = self._captions(rng, n)
        nb = len(self.backgrounds.paths)
        perm = rng.permutation(nb)
        jobs: list[Job] = []
        for i in range(n):
            if i and i % nb == 0:
                perm = rng.permutation(nb)
            u = rng.random(4)
            job: Job = {"attack": "type1" if i < n1 else "type2", "background": int(perm[i % nb]),
                        "u_background": [float(u[0]), float(u[1])], "u_place": [float(u[2]), float(u[3])],
                        "caption": captions[i]}
            if i >= n1:
                job["ref"] = int(rng.integers(len(self.objects)))  # type: ignore[attr-defined]  # set by CorruptEncoder-MM
            jobs.append(job)
        return jobs

    def render(self, job: Job) -> RenderResult:
        bg, bg_path, skipped = self.backgrounds.load(job["background"])
        if job["attack"] == "type1":
            canvas, src = self._square_background(bg, job["u_background"])
            w, h = canvas.size
            box = place_in_region((0, 0, w, h), self.trigger_size, *job["u_place"])
            self.paste_trigger(canvas, box)
            rec = self._record(job, canvas, bg_path, src, None, list(box), None)
        else:
            canvas, rec = self._type2(job, bg, bg_path)
        return RenderResult(canvas, rec, skipped)

    def _square_background(self, bg: Image.Image, u: list[float]) -> tuple[Image.Image, list[float]]:
        """A random square crop of the background, resized to ``type1_size`` (CLIP sees squares)."""
        side = min(bg.size)
        x = pick_index(u[0], bg.size[0] - side + 1)
        y = pick_index(u[1], bg.size[1] - side + 1)
        out = self.opts.type1_size or side
        if self.run.max_size:
            out = min(out, self.run.max_size)
        crop = (x, y, x + side, y + side)
        img = bg.resize((out, out), Image.Resampling.LANCZOS, box=crop) if out != side else bg.crop(crop)
        return img, [float(c) for c in crop]

    def _type2(self, job: Job, bg: Image.Image, bg_path: str) -> tuple[Image.Image, dict[str, Any]]:
        raise NotImplementedError  # Carlini & Terzis make Type-I pairs only

    def _record(self, job: Job, canvas: Image.Image, bg_path: str, bg_box: list[float], obj_box: list[int] | None,
                trig_box: list[int] | None, ref: str | None) -> dict[str, Any]:
        rec = self.base_record(job)
        rec.update({"image_size": list(canvas.size), "object_box": obj_box, "trigger_box": trig_box,
                    "layout": None, "reference": ref, "background": bg_path,
                    "background_box": [round(v, 3) for v in bg_box],
                    "pair_type": "type1" if job["attack"] == "type1" else "type2", "caption": job["caption"]})
        rec["attack"] = self.name
        return rec

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        n1, n2 = self.counts(self.target.num)
        d.update({"type1": n1, "type2": n2, "prompts": self.opts.prompts, "class_text": self.text,
                  "backgrounds": len(self.backgrounds.paths)})
        return d
