"""SSL-Backdoor baseline (Saha et al., CVPR 2022): the trigger pasted on reference images.

Following their released generator: the trigger goes at a uniformly random position wholly
inside the central ``[lo, hi]`` box of each reference image of the target class (default
``[0.25, 0.75]``); with fewer reference images than poisons, images are reused (every one once
before any is used twice). Reference images are decoded lazily in the worker that needs them,
since there are usually hundreds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from pydantic import Field, field_validator

from corruptencoder.errors import GeometryError
from corruptencoder.poison.base import ImageAttack, Job, RenderResult
from corruptencoder.poison.config import ATTACKS, AttackOptions
from corruptencoder.poison.geometry import capped_size, largest_fit, location_box, place_in_region
from corruptencoder.poison.objects import Reference, ReferenceSource, discover_references, source_size


class SSLBackdoorOptions(AttackOptions):
    location: tuple[float, float] = Field((0.25, 0.75), description="trigger range as image fractions")

    @field_validator("location")
    @classmethod
    def _location(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"location {list(v)} must satisfy 0 <= lo < hi <= 1, e.g. [0.25, 0.75]")
        return v


@ATTACKS.register
class SSLBackdoorAttack(ImageAttack[SSLBackdoorOptions]):
    name = "ssl-backdoor"
    title = "SSL-Backdoor"
    table_order = 10
    summary = "SSL-Backdoor (Saha et al. 2022): the trigger pasted on reference images of the target class"
    options = SSLBackdoorOptions
    reference_source = "saha_references"

    def prepare(self) -> None:
        super().prepare()
        self.sources: list[ReferenceSource] = discover_references(self.target.references)
        self._last: tuple[int, Reference] | None = None
        lo, hi = self.opts.location
        tw, th = self.trigger_size
        for src in self.sources:  # header-only check, before any work
            size = capped_size(source_size(src), self.run.max_size)
            fw, fh = largest_fit(location_box(size, lo, hi))
            if tw > fw or th > fh:
                raise GeometryError(
                    f"{src.path}: a {tw}x{th} trigger cannot fit in the [{lo}, {hi}] box ({fw}x{fh}) of this "
                    f"{size[0]}x{size[1]} reference image; the largest that fits is {fw}x{fh}: use a smaller "
                    "--trigger-size, a wider --location, or drop this image"
                )

    def plan(self, rng: np.random.Generator, count: int | None = None) -> list[Job]:
        n = self.target.num if count is None else count
        order: list[int] = []
        while len(order) < n:
            order.extend(int(i) for i in rng.permutation(len(self.sources)))
        jobs = []
        for i in range(n):
            u = rng.random(2)
            jobs.append({"attack": self.name, "ref": order[i], "u_trigger": [float(u[0]), float(u[1])]})
        return jobs

    def _reference(self, index: int) -> Reference:
        if self._last is None or self._last[0] != index:
            self._last = (index, self.sources[index].load(self.labels, need_object=False))
        return self._last[1]

    def render(self, job: Job) -> RenderResult:
        ref = self._reference(job["ref"])
        canvas = ref.image_pil()
        size = capped_size(canvas.size, self.run.max_size)
        if size != canvas.size:
            canvas = canvas.resize(size, Image.Resampling.LANCZOS)
        lo, hi = self.opts.location
        box = place_in_region(location_box(size, lo, hi), self.trigger_size, *job["u_trigger"])
        self.paste_trigger(canvas, box)
        rec: dict[str, Any] = self.base_record(job)
        rec.update({
            "image_size": list(size),
            "object_box": None,
            "trigger_box": list(box),
            "layout": None,
            "reference": self.sources[job["ref"]].path,
            "background": None,
            "location": list(self.opts.location),
        })
        return RenderResult(canvas, rec)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"location": list(self.opts.location), "reference_images": len(self.sources)})
        return d
