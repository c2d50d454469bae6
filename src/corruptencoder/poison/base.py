"""What every image attack shares: planning in the parent, rendering in workers.

An attack is split in three so the output depends on the seed only, never on the number of
worker processes:

* ``prepare()`` (parent process): read and validate every input, decode the few reference
  objects once, fail early with a :class:`~corruptencoder.errors.UserError`;
* ``plan(rng)`` (parent process): draw *every* random value of every poison into plain dicts;
* ``render(job)`` (any worker): a pure function of the job and the prepared inputs, returning
  the image and its manifest record.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, cast

import numpy as np
from PIL import Image, ImageFilter

from corruptencoder.errors import ImageError, UserError
from corruptencoder.poison.config import AttackOptions, CraftConfig, CraftTarget
from corruptencoder.poison.geometry import Box
from corruptencoder.poison.objects import LabelOptions
from corruptencoder.poison.triggers import TriggerSpec, default_trigger_seed, make_trigger, parse_size
from corruptencoder.utils.files import list_images
from corruptencoder.utils.imageio import load_rgb, open_image

log = logging.getLogger(__name__)
OptionsT = TypeVar("OptionsT", bound=AttackOptions)

Job = dict[str, Any]


@dataclass
class RenderResult:
    image: Image.Image
    record: dict[str, Any]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) of unusable backgrounds


class ImageAttack(Generic[OptionsT]):
    """Base class: holds the target spec, the run options and the resolved trigger. An attack module
    registers a subclass with ``@ATTACKS.register`` and declares:"""

    name: ClassVar[str] = "base"
    #: one line for help texts
    summary: ClassVar[str] = ""
    #: the attack's column heading in report tables (default: its name) and the column's place (lower first;
    #: ties by name), so a new attack reaches the defence table without editing experiment/report.py
    title: ClassVar[str] = ""
    table_order: ClassVar[int] = 100
    #: the attack's own options (flat keys of a target in YAML, ``--flags`` of ``craft``)
    options: ClassVar[type[AttackOptions]] = AttackOptions
    #: which of a target's inputs it cannot do without: references, backgrounds, support
    needs: ClassVar[frozenset[str]] = frozenset({"references"})
    #: where an experiment target keeps this attack's references ('saha_references' for SSL-Backdoor)
    reference_source: ClassVar[str] = "references"
    #: writes image-text pairs (pairs.csv) for CLIP rather than images
    multimodal: ClassVar[bool] = False
    #: trigger size when the target does not give one
    default_trigger_size: ClassVar[tuple[int, int]] = (40, 40)

    def __init__(self, target: CraftTarget, run: CraftConfig) -> None:
        self.target = target
        self.run = run
        self.opts = cast(OptionsT, target.options)
        self.labels = LabelOptions(
            keep=tuple(target.object_labels) if target.object_labels else None, cut=tuple(target.cut_labels)
        )
        seed = target.trigger_seed if target.trigger_seed is not None else default_trigger_seed(target.name)
        self.trigger_spec = TriggerSpec(target.trigger, parse_size(target.trigger_size), seed)
        self.trigger: np.ndarray | None = None
        self._trigger_img: Image.Image | None = None

    # -- parent process ------------------------------------------------------------------------
    def prepare(self) -> None:
        self.trigger = make_trigger(self.trigger_spec)

    def plan(self, rng: np.random.Generator) -> list[Job]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Run-level facts for craft.json."""
        t = self.target
        return {"name": t.name, "attack": self.name, "task": t.task, "label": t.label or t.name, "num": t.num,
                "trigger": self.trigger_spec.describe()}

    # -- any process ---------------------------------------------------------------------------
    def render(self, job: Job) -> RenderResult:
        raise NotImplementedError

    @property
    def trigger_size(self) -> tuple[int, int]:
        assert self.trigger is not None, "prepare() first"
        return self.trigger.shape[1], self.trigger.shape[0]

    def paste_trigger(self, canvas: Image.Image, box: Box) -> None:
        if self._trigger_img is None:
            assert self.trigger is not None
            self._trigger_img = Image.fromarray(self.trigger, "RGB")
        canvas.paste(self._trigger_img, box[:2])

    def base_record(self, job: Job) -> dict[str, Any]:
        return {"file": job["file"], "index": job["index"], "attack": job.get("attack", self.name),
                "target": self.target.name, "task": self.target.task, "seed": self.run.seed}


# ---------------------------------------------------------------------------------------------
# backgrounds


@dataclass(frozen=True)
class BackgroundSet:
    """Readable background images (decoded in the worker that uses them)."""

    paths: tuple[str, ...]
    sizes: tuple[tuple[int, int], ...]
    skipped: tuple[tuple[str, str], ...] = ()

    @classmethod
    def scan(cls, sources: list[str]) -> "BackgroundSet":
        """List the images and read their headers; unreadable files are skipped with a warning."""
        paths, sizes, skipped = [], [], []
        for p in list_images(sources, what="background"):
            try:
                with open_image(p) as im:
                    sizes.append(im.size)
                paths.append(str(p))
            except ImageError as exc:
                skipped.append((str(p), str(exc)))
        if skipped:
            log.warning("skipped %d unreadable background(s), e.g. %s", len(skipped), skipped[0][1])
        if not paths:
            raise UserError(f"{', '.join(sources)}: no readable background images; check --backgrounds")
        return cls(tuple(paths), tuple(sizes), tuple(skipped))

    def load(self, index: int) -> tuple[Image.Image, str, list[tuple[str, str]]]:
        """Decode background ``index``; a file that fails to decode is skipped in favour of the next
        one in list order, which keeps the choice deterministic for every worker count."""
        skipped: list[tuple[str, str]] = []
        n = len(self.paths)
        for k in range(n):
            path = self.paths[(index + k) % n]
            try:
                return load_rgb(path), path, skipped
            except ImageError as exc:
                skipped.append((path, str(exc)))
        raise UserError(f"none of the {n} background images could be decoded; check --backgrounds")


def feathered(matte: Image.Image, radius: float) -> Image.Image:
    """Soften the matte's edge (the authors' script blurs the mask with radius 1)."""
    return matte.filter(ImageFilter.GaussianBlur(radius)) if radius > 0 else matte


def save_image(image: Image.Image, path: Path, run: CraftConfig) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if run.format == "png":
        image.save(path, format="PNG", compress_level=run.png_compress_level)
    else:
        image.save(path, format="JPEG", quality=run.jpeg_quality, subsampling=0)
