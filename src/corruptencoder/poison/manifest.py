"""The poison folder format: images, ``manifest.jsonl``, ``poisons.txt``, ``craft.json``, triggers.

::

    OUT/
      images/<target>/00000.png     the poisoned images
      triggers/<target>.png         the exact trigger pixels (evaluation pastes these)
      manifest.jsonl                one JSON object per poison: file, attack, target, seed, boxes, ...
      poisons.txt                   the image paths, relative to OUT (a plain file list)
      craft.json                    run-level record: resolved config, per-target facts, counts
      pairs.csv                     multi-modal poisons: open_clip CSV (filepath, title), paths relative

Any PyTorch pipeline can read the poisons as an ImageFolder (``images/``) or a file list.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from corruptencoder.errors import UserError

MANIFEST = "manifest.jsonl"
POISON_LIST = "poisons.txt"
SUMMARY = "craft.json"
PAIRS = "pairs.csv"
TRIGGERS = "triggers"
IMAGES = "images"


def trigger_file(target: str) -> str:
    return f"{TRIGGERS}/{target}.png"


def write_manifest(folder: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> int:
    folder = Path(folder)
    n = 0
    with open(folder / MANIFEST, "w", encoding="utf-8") as mf, open(folder / POISON_LIST, "w", encoding="utf-8") as pl:
        for rec in records:
            mf.write(json.dumps(rec, ensure_ascii=False) + "\n")
            pl.write(rec["file"] + "\n")
            n += 1
    return n


def write_pairs(folder: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> None:
    """open_clip's CSV format (columns ``filepath`` and ``title``; paths relative to the CSV)."""
    import csv

    with open(Path(folder) / PAIRS, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["filepath", "title"])
        for r in records:
            if "caption" in r:
                w.writerow([r["file"], r["caption"]])


def is_poison_folder(folder: str | os.PathLike[str]) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def read_manifest(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        if not folder.exists():
            raise UserError(f"{folder}: poison folder does not exist; check the path")
        raise UserError(f"{folder}: no {MANIFEST}; is this a folder written by 'corruptencoder craft'?")
    out = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file; the manifest is damaged, craft the folder again") from None
    for lineno, line in enumerate(text.split("\n"), 1):  # not splitlines: captions may hold U+2028
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{path}:{lineno}: not valid JSON; the manifest is damaged, craft again") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("file"), str):
            raise UserError(f"{path}:{lineno}: a manifest record needs a 'file' key (a path)")
        _check_record(rec, f"{path}:{lineno}")
        out.append(rec)
    return out


#: the boxes a manifest record may carry, [x0, y0, x1, y1] in the poison's pixels
BOX_KEYS = ("object_box", "trigger_box", "reference_box", "support_box")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_record(rec: dict[str, Any], where: str) -> None:
    """Boxes and sizes are what readers compute with: a damaged one is one line, not a crash later."""
    for key in BOX_KEYS:
        box = rec.get(key)
        if box is not None and not (isinstance(box, list) and len(box) == 4 and all(map(_number, box))
                                    and box[0] <= box[2] and box[1] <= box[3]):
            raise UserError(f"{where}: {key} must be [x0, y0, x1, y1] numbers with x0 <= x1 and y0 <= y1, not "
                            f"{box!r}; the manifest is damaged, craft the folder again")
    size = rec.get("image_size")
    if size is not None and not (isinstance(size, list) and len(size) == 2 and all(map(_number, size))
                                 and min(size) > 0):
        raise UserError(f"{where}: image_size must be [width, height], not {size!r}; the manifest is damaged, "
                        "craft the folder again")


def read_summary(folder: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(folder) / SUMMARY
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path}: not valid JSON; the poison folder is damaged, craft it again") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a craft summary (a JSON object); craft the folder again")
    return data


def poison_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Absolute paths of the poisons of a folder, in manifest order; missing files are an error."""
    folder = Path(folder)
    files = [folder / rec["file"] for rec in read_manifest(folder)]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise UserError(f"{folder}: {len(missing)} poison file(s) listed in {MANIFEST} are missing, "
                        f"e.g. {missing[0]}; craft the folder again")
    return files
