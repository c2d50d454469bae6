"""Captions for the demo world's pre-training images: image-text pairs for multi-modal CL offline.

Each image gets a short templated sentence with distractor words (adjectives, places). With
probability ``name_prob`` (per class; default 0.8) the sentence names the image's class, otherwise a
generic noun stands in, so a class can be made *rare in the captions* (the situation in which
Carlini & Terzis' attack fails in the paper's Table 3) without touching the images. Deterministic
per (seed, image index).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from corruptencoder.data.folders import image_folder
from corruptencoder.poison.prompts import class_text

TEMPLATES = (
    "a photo of a {noun} {where}", "a {adj} {noun} {where}", "{noun} {where}", "my {adj} {noun}",
    "look at this {noun}", "a {adj} picture of a {noun}", "the {noun} {where}, {adj}", "an old photo of the {noun}",
    "this {noun} is {adj}", "a {noun} seen {where}",
)
WHERE = ("on the grass", "near the water", "in front of a wall", "at the beach", "under a cloudy sky",
         "in the room", "outdoors", "on a sunny day", "in the evening", "by the road")
ADJ = ("nice", "small", "big", "colourful", "old", "bright", "cute", "strange", "lovely", "simple")
GENERIC = ("thing", "object", "scene", "picture", "something", "view")


def caption(rng: np.random.Generator, name: str, name_prob: float) -> str:
    noun = class_text(name) if rng.random() < name_prob else GENERIC[int(rng.integers(len(GENERIC)))]
    t = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    return t.format(noun=noun, where=WHERE[int(rng.integers(len(WHERE)))], adj=ADJ[int(rng.integers(len(ADJ)))])


def write_demo_pairs(world: str | Path, out_csv: str | Path, *, seed: int = 0, name_prob: float = 0.8,
                     class_name_prob: Mapping[str, float] | None = None) -> Path:
    """Caption every image of ``world/pretrain`` into an open_clip CSV (filepath, title)."""
    world, out_csv = Path(world), Path(out_csv)
    coll = image_folder(world / "pretrain", what="demo pre-training folder")
    assert coll.labels is not None and coll.classes is not None
    probs = dict(class_name_prob or {})
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_csv.with_name(out_csv.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["filepath", "title"])
        for i, (f, y) in enumerate(zip(coll.files, coll.labels, strict=True)):
            cls = coll.classes[y]
            rng = np.random.default_rng([seed, i])
            w.writerow([str(f), caption(rng, cls, probs.get(cls, name_prob))])
    tmp.replace(out_csv)
    return out_csv
