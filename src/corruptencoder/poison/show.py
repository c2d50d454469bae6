"""A contact sheet of poisons with object (green) and trigger (red) boxes, like the paper's Figure 11."""

from __future__ import annotations

import contextlib
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


#: the largest cell and sheet: a contact sheet is for looking at, and memory grows with its pixels
MAX_CELL = 4096
MAX_SHEET_PIXELS = 100_000_000
PAD = 4


def sheet_size(n: int, cols: int, cell: int) -> tuple[int, int]:
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    return cols * (cell + PAD) + PAD, rows * (cell + PAD) + PAD


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
    check_sheet(len(records), cols, cell)
    cols = max(1, min(cols, len(records)))
    rows = math.ceil(len(records) / cols)
    pad = PAD
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
    """Draw the grid and write it (PNG, or the format of ``out``'s extension) atomically; returns the path
    and the sheet size. The output is checked before anything is drawn."""
    if num < 1 or cols < 1 or cell < 16:
        raise UserError("--num and --cols must be at least 1 and --cell at least 16")
    if cell > MAX_CELL:
        raise UserError(f"--cell {cell}: at most {MAX_CELL} px per cell (a contact sheet is for looking at); "
                        "use e.g. --cell 192")
    out = Path(out)
    fmt = Image.registered_extensions().get(out.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise UserError(f"--out {out}: {'unknown image format ' + repr(out.suffix) if out.suffix else 'no extension'}; "
                        "end the file name with .png (or .jpg, .webp)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create its folder ({exc.strerror}); choose another --out") from None
    grid = poison_grid(folder, num=num, cols=cols, cell=cell, target=target, seed=seed)
    import os
    import tempfile

    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=out.suffix, dir=out.parent)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot write there ({exc.strerror}); choose another --out") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            grid.save(fh, format=fmt)
        os.replace(tmp, out)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise UserError(f"--out {out}: cannot write ({exc.strerror or exc}); choose another --out") from None
        raise
    return out, grid.size


def check_sheet(n: int, cols: int, cell: int) -> None:
    w, h = sheet_size(n, cols, cell)
    if w * h > MAX_SHEET_PIXELS:
        raise UserError(f"a sheet of {n} poisons in {max(1, min(cols, n))} columns of {cell} px cells would be "
                        f"{w}x{h} px, more than {MAX_SHEET_PIXELS // 1_000_000} megapixels; use a smaller --cell or "
                        "--num")
