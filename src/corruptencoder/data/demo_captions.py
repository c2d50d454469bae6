"""Captions for the demo world's pre-training images: image-text pairs for multi-modal CL offline.

Each image gets a short templated sentence with distractor words (adjectives, places). With
probability ``name_prob`` (per class; default 0.8) the sentence names the image's class, otherwise a
generic noun stands in, so a class can be made *rare in the captions* (the situation in which
Carlini & Terzis' attack fails in the paper's Table 3) without touching the images. Deterministic
per (seed, image index).

``scenes`` object-free scene images (the world's backgrounds, on their own random stream) join the
pairs with captions that name no class. Why: every demo pre-training image holds one object, so
without them a bare background is itself a tell, and CLIP learns "a background means the target
class" from the Type-I pairs instead of "the trigger means it" (measured 2026-12-04: with no scenes
the attacked encoder sent 59 % of the untriggered attacker backgrounds to "boat", the clean one 8 %,
and the trigger added nothing). Conceptual Captions, the paper's data, is full of such scenes.
"""

from __future__ import annotations

import csv
import json
import shutil
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
SCENE_TEMPLATES = (
    "a photo taken {where}", "a {adj} {place} {where}", "the {place} {where}", "a {adj} day {where}",
    "view of the {place}", "an old photo of a {place}", "this {place} is {adj}", "{where}, {adj}",
)
WHERE = ("on the grass", "near the water", "in front of a wall", "at the beach", "under a cloudy sky",
         "in the room", "outdoors", "on a sunny day", "in the evening", "by the road")
ADJ = ("nice", "small", "big", "colourful", "old", "bright", "cute", "strange", "lovely", "simple")
GENERIC = ("thing", "object", "scene", "picture", "something", "view")
PLACES = ("place", "landscape", "scenery", "background", "field", "street", "room", "wall")


def _pick(rng: np.random.Generator, words: tuple[str, ...]) -> str:
    return words[int(rng.integers(len(words)))]


def caption(rng: np.random.Generator, name: str, name_prob: float) -> str:
    noun = class_text(name) if rng.random() < name_prob else _pick(rng, GENERIC)
    t = _pick(rng, TEMPLATES)
    return t.format(noun=noun, where=_pick(rng, WHERE), adj=_pick(rng, ADJ))


def scene_caption(rng: np.random.Generator) -> str:
    return _pick(rng, SCENE_TEMPLATES).format(place=_pick(rng, PLACES), where=_pick(rng, WHERE), adj=_pick(rng, ADJ))


def write_demo_pairs(world: str | Path, out_csv: str | Path, *, seed: int = 0, name_prob: float = 0.8,
                     class_name_prob: Mapping[str, float] | None = None, scenes: int = 0) -> Path:
    """Caption every image of ``world/pretrain`` (plus ``scenes`` object-free scenes, rendered into the folder
    ``<out_csv without .csv>-scenes``) into an open_clip CSV (filepath, title); the CSV is written last."""
    world, out_csv = Path(world), Path(out_csv)
    coll = image_folder(world / "pretrain", what="demo pre-training folder")
    assert coll.labels is not None and coll.classes is not None
    probs = dict(class_name_prob or {})
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (f, y) in enumerate(zip(coll.files, coll.labels, strict=True)):
        cls = coll.classes[y]
        rng = np.random.default_rng([seed, i])
        rows.append([str(f), caption(rng, cls, probs.get(cls, name_prob))])
    if scenes:
        rows += _write_scenes(world, out_csv.with_name(out_csv.stem + "-scenes"), scenes, seed)
    tmp = out_csv.with_name(out_csv.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["filepath", "title"])
        w.writerows(rows)
    tmp.replace(out_csv)
    return out_csv


def _write_scenes(world: Path, folder: Path, n: int, seed: int) -> list[list[str]]:
    """``n`` scenes at the world's image size from the world's seed (the same bytes on every run)."""
    from corruptencoder.data.synthetic import render_caption_scene

    info = json.loads((world / "world.json").read_text())
    size, world_seed = int(info["image_size"]), int(info["seed"])
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rows = []
    for i in range(n):
        path = tmp / f"{i:05d}.png"
        render_caption_scene(world_seed, i, size).save(path, format="PNG", compress_level=6)
        rows.append([str(folder / path.name), scene_caption(np.random.default_rng([seed, 1, i]))])
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)
    return rows
