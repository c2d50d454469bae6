"""A contact sheet of poisons with object (green) and trigger (red) boxes, like the paper's Figure 11."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from corruptencoder.errors import UserError
from corruptencoder.poison.manifest import read_manifest
from corruptencoder.utils.imageio import load_rgb

OBJECT_COLOUR = (40, 220, 60)
TRIGGER_COLOUR = (255, 40, 40)
SUPPORT_COLOUR = (60, 140, 255)


def poison_grid(folder: str | Path, *, num: int = 16, cols: int = 4, cell: int = 192, target: str | None = None,
                seed: int = 0) -> Image.Image:
    """Draw ``num`` poisons (a seeded sample in manifest order) on a grid of ``cell``-px cells."""
    folder = Path(folder)
    records = [r for r in read_manifest(folder) if target is None or r.get("target") == target]
    if not records:
        raise UserError(f"{folder}: no poisons{' for target ' + target if target else ''} in the manifest")
    if num < len(records):
        pick = np.sort(np.random.default_rng(seed).choice(len(records), size=num, replace=False))
        records = [records[i] for i in pick]
    cols = max(1, min(cols, len(records)))
    rows = math.ceil(len(records) / cols)
    pad = 4
    sheet = Image.new("RGB", (cols * (cell + pad) + pad, rows * (cell + pad) + pad), (255, 255, 255))
    for k, rec in enumerate(records):
        im = load_rgb(folder / rec["file"])
        s = min(cell / im.size[0], cell / im.size[1])
        thumb = im.resize((max(1, round(im.size[0] * s)), max(1, round(im.size[1] * s))), Image.Resampling.LANCZOS)
        draw = ImageDraw.Draw(thumb)
        width = max(1, round(cell / 96))
        for key, colour in (("object_box", OBJECT_COLOUR), ("trigger_box", TRIGGER_COLOUR),
                            ("reference_box", OBJECT_COLOUR), ("support_box", SUPPORT_COLOUR)):
            box = rec.get(key)
            if box:
                x0, y0, x1, y1 = (v * s for v in box)
                draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour, width=width)
        r, c = divmod(k, cols)
        x = pad + c * (cell + pad) + (cell - thumb.size[0]) // 2
        y = pad + r * (cell + pad) + (cell - thumb.size[1]) // 2
        sheet.paste(thumb, (x, y))
    return sheet


def save_poison_grid(folder: str | Path, out: str | Path, *, num: int = 16, cols: int = 4, cell: int = 192,
                     target: str | None = None, seed: int = 0) -> tuple[Path, tuple[int, int]]:
    """Draw the grid and write it as PNG (``corruptencoder show``); returns the path and the sheet size."""
    if num < 1 or cols < 1 or cell < 16:
        raise UserError("--num and --cols must be at least 1 and --cell at least 16")
    grid = poison_grid(folder, num=num, cols=cols, cell=cell, target=target, seed=seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    return out, grid.size
