"""CorruptEncoder+: CorruptEncoder poisons plus *support poisoned images* (Figure 5).

A support poison is a reference image and a support reference image side by side (random order,
same height, no trigger), so random crops pull the reference object's features towards other
images of the target class. The paper uses 130 of its 650 poisons (support_ratio 0.2); with few
support images, duplicates are expected.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from pydantic import Field, field_validator

from corruptencoder.poison.attacks.corruptencoder import CorruptEncoderAttack, CorruptEncoderOptions
from corruptencoder.poison.base import Job, RenderResult
from corruptencoder.poison.config import ATTACKS
from corruptencoder.poison.geometry import side_by_side
from corruptencoder.utils.files import list_images
from corruptencoder.utils.imageio import load_rgb


class CorruptEncoderPlusOptions(CorruptEncoderOptions):
    support_ratio: float = Field(0.2, description="fraction of N that are support poisons (the paper: 130 of 650)")

    @field_validator("support_ratio")
    @classmethod
    def _support_ratio(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"support_ratio={v} is outside [0, 1]; the paper uses 0.2 (130 of 650)")
        return v


@ATTACKS.register
class CorruptEncoderPlusAttack(CorruptEncoderAttack):
    name = "corruptencoder-plus"
    title = "CorruptEncoder+"
    table_order = 30
    summary = "CorruptEncoder+: CorruptEncoder poisons plus support poisons (reference beside support image)"
    options = CorruptEncoderPlusOptions
    needs = frozenset({"references", "backgrounds", "support"})

    opts: CorruptEncoderPlusOptions  # the options model above (a subclass of CorruptEncoder's)

    def prepare(self) -> None:
        super().prepare()
        paths = list_images(self.target.support, what="support image")
        # Few images, reused many times: decode once here.
        self.supports: list[tuple[str, Image.Image]] = [(str(p), load_rgb(p)) for p in paths]
        self.reference_images = [ref.image_pil() for ref in self.references]

    @property
    def num_support(self) -> int:
        return int(round(self.target.num * self.opts.support_ratio))

    def plan(self, rng: np.random.Generator, count: int | None = None) -> list[Job]:
        n = self.target.num if count is None else count
        n_support = int(round(n * self.opts.support_ratio))
        jobs = super().plan(rng, n - n_support)
        for _ in range(n_support):
            ref = int(rng.integers(len(self.reference_images)))
            sup = int(rng.integers(len(self.supports)))
            jobs.append({"attack": "corruptencoder+support", "ref": ref, "support": sup,
                         "reference_first": bool(rng.random() < 0.5)})
        return jobs

    def render(self, job: Job) -> RenderResult:
        if job["attack"] != "corruptencoder+support":
            return self.render_poison(job)
        ref_img = self.reference_images[job["ref"]]
        sup_path, sup_img = self.supports[job["support"]]
        first, second = (ref_img, sup_img) if job["reference_first"] else (sup_img, ref_img)
        size, box1, box2 = side_by_side(first.size, second.size, self.run.max_size)
        canvas = Image.new("RGB", size)
        for img, box in ((first, box1), (second, box2)):
            wh = (box[2] - box[0], box[3] - box[1])
            canvas.paste(img if img.size == wh else img.resize(wh, Image.Resampling.LANCZOS), box[:2])
        ref_box, sup_box = (box1, box2) if job["reference_first"] else (box2, box1)
        rec: dict[str, Any] = self.base_record(job)
        rec.update({
            "image_size": list(size),
            "object_box": None,
            "trigger_box": None,
            "layout": "support-" + ("reference-left" if job["reference_first"] else "reference-right"),
            "reference": self.references[job["ref"]].source,
            "background": None,
            "support_reference": sup_path,
            "reference_box": list(ref_box),
            "support_box": list(sup_box),
        })
        return RenderResult(canvas, rec)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"support_ratio": self.opts.support_ratio, "num_support": self.num_support,
                  "support_images": [p for p, _ in self.supports]})
        return d
