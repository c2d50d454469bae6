"""CorruptEncoder for multi-modal CL (Section 3.2): Type-I and Type-II image-text pairs.

* Type-I pair: the trigger at a uniformly random spot of a background image, with a caption from a
  prompt template naming the target class (as Carlini & Terzis);
* Type-II pair: a reference object of the target class embedded in a rescaled/cropped background
  (a square whose object box covers alpha of it, object at a random spot), with such a caption.

N/2 of each (for odd N, Type-I gets the extra pair: ceil(N/2) Type-I and floor(N/2) Type-II).
"""

from __future__ import annotations

import math
from typing import Any, Literal, cast

from PIL import Image
from pydantic import Field, field_validator

from corruptencoder.poison.attacks.carlini_terzis import CaptionOptions, CarliniTerzisAttack
from corruptencoder.poison.base import Job, feathered
from corruptencoder.poison.config import ATTACKS, fraction
from corruptencoder.poison.geometry import background_crop, square_poison
from corruptencoder.poison.objects import Reference, discover_references, load_references


class CorruptEncoderMMOptions(CaptionOptions):
    alpha: float = Field(0.5, description="Type-II: object bounding-box area / image area, in (0, 1)")
    reference_mode: Literal["object", "image"] = Field("object", description="embed the masked object or the image")

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: float) -> float:
        return fraction("alpha", v)


@ATTACKS.register
class CorruptEncoderMMAttack(CarliniTerzisAttack):
    name = "corruptencoder-mm"
    title = "CorruptEncoder (multi-modal)"
    table_order = 50
    summary = "CorruptEncoder multi-modal: N/2 Type-I and N/2 Type-II pairs (reference object + caption)"
    options = CorruptEncoderMMOptions
    needs = frozenset({"references", "backgrounds"})

    opts: CorruptEncoderMMOptions  # the options model above (a subclass of Carlini & Terzis')

    def prepare(self) -> None:
        super().prepare()
        need_object = self.opts.reference_mode == "object"
        self.references: list[Reference] = load_references(discover_references(self.target.references), self.labels,
                                                           need_object)
        self.objects = [r.object_rgba() for r in self.references]
        self._cache: dict[tuple[int, tuple[int, int]], tuple[Image.Image, Image.Image | None]] = {}

    def counts(self, n: int) -> tuple[int, int]:
        return math.ceil(n / 2), n // 2

    def _type2(self, job: Job, bg: Image.Image, bg_path: str) -> tuple[Image.Image, dict[str, Any]]:
        obj = self.objects[job["ref"]]
        ux, uy = job["u_place"]
        g = square_poison(obj.size[0], obj.size[1], self.opts.alpha, ux, uy, self.run.max_size)
        key = (job["ref"], g.object_size)
        if key not in self._cache:
            sized_rgb = obj.convert("RGB").resize(g.object_size, Image.Resampling.LANCZOS)
            sized_matte = obj.getchannel("A").resize(g.object_size, Image.Resampling.BILINEAR)
            opaque = self.references[job["ref"]].matte is None
            self._cache[key] = (sized_rgb, None if opaque else feathered(sized_matte, self.run.soft_edge))
        rgb, matte = self._cache[key]
        r, crop = background_crop(bg.size, g.image_size, *job["u_background"])
        if r > 1.0:
            src = [crop[0] / r, crop[1] / r, min(crop[2] / r, bg.size[0]), min(crop[3] / r, bg.size[1])]
            box = cast(tuple[float, float, float, float], tuple(src))
            canvas = bg.resize(g.image_size, Image.Resampling.BICUBIC, box=box)
        else:
            src = [float(c) for c in crop]
            canvas = bg.crop(crop)
        canvas.paste(rgb, g.object_box[:2], matte)
        rec = self._record(job, canvas, bg_path, src, list(g.object_box), None, self.references[job["ref"]].source)
        return canvas, rec

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["references"] = [r.source for r in self.references]
        return d
