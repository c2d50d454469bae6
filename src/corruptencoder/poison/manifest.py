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
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise UserError(f"{path}:{lineno}: not valid JSON; the manifest is damaged, craft again") from None
            if not isinstance(rec, dict) or "file" not in rec:
                raise UserError(f"{path}:{lineno}: a manifest record needs a 'file' key")
            out.append(rec)
    return out


def read_summary(folder: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(folder) / SUMMARY
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def poison_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Absolute paths of the poisons of a folder, in manifest order; missing files are an error."""
    folder = Path(folder)
    files = [folder / rec["file"] for rec in read_manifest(folder)]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise UserError(f"{folder}: {len(missing)} poison file(s) listed in {MANIFEST} are missing, "
                        f"e.g. {missing[0]}; craft the folder again")
    return files
