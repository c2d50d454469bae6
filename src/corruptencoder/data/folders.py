"""Image collections on a user's disk: ImageFolder trees, file lists, ImageNet class subsets.

No torch here: the collections are lists of paths (and labels), shared by pre-training, the
linear probe and the crafting tools. Nothing is ever downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from corruptencoder.errors import UserError
from corruptencoder.utils.files import LIST_SUFFIXES
from corruptencoder.utils.imageio import is_image_file


@dataclass
class ImageCollection:
    """Files with optional integer labels into ``classes``."""

    files: list[Path]
    labels: list[int] | None = None
    classes: list[str] | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, indices: Sequence[int]) -> "ImageCollection":
        return ImageCollection(
            [self.files[i] for i in indices],
            None if self.labels is None else [self.labels[i] for i in indices],
            self.classes, self.source, dict(self.meta),
        )

    def counts(self) -> dict[str, int]:
        if self.labels is None or self.classes is None:
            return {}
        c = np.bincount(np.asarray(self.labels, dtype=np.int64), minlength=len(self.classes))
        return {name: int(n) for name, n in zip(self.classes, c, strict=False)}


def read_class_list(path: str | os.PathLike[str]) -> list[str]:
    """One class per line (first token; e.g. ImageNet wnids ``n01558993``); ``#`` comments allowed."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: class list not found; give a text file with one class (e.g. wnid) per line")
    names = [ln.split()[0] for ln in path.read_text(encoding="utf-8").splitlines()
             if ln.strip() and not ln.startswith("#")]
    if not names:
        raise UserError(f"{path}: class list is empty")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"{path}: class list repeats {', '.join(dup[:5])}")
    return names


def _walk_images(folder: Path) -> list[Path]:
    return sorted((Path(r) / f for r, _d, fs in os.walk(folder, followlinks=True) for f in fs if is_image_file(f)),
                  key=lambda p: p.as_posix())


def image_folder(root: str | os.PathLike[str], classes: Sequence[str] | None = None, *, what: str = "image folder",
                 require_all: bool = True) -> ImageCollection:
    """``root/<class>/**/<image>``: labels follow ``classes`` (default: sorted sub-folders)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: {what} not found; expected a folder with one sub-folder per class")
    present = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if classes is None:
        classes = present
        if not classes:
            raise UserError(f"{root}: {what} has no class sub-folders (expected {root}/<class>/<image>)")
    missing = [c for c in classes if not (root / c).is_dir()]
    if missing and require_all:
        raise UserError(f"{root}: {len(missing)} class folder(s) missing, e.g. {root / missing[0]}; "
                        "check the root or the class list")
    files: list[Path] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        if cls in missing:
            continue
        found = _walk_images(root / cls)
        files += found
        labels += [label] * len(found)
    if not files:
        raise UserError(f"{root}: {what} has no images in its class folders")
    return ImageCollection(files, labels, list(classes), str(root))


def flat_folder(root: str | os.PathLike[str], *, what: str = "image folder") -> ImageCollection:
    """Every image under ``root`` (recursive), unlabelled."""
    root = Path(root)
    files = _walk_images(root)
    if not files:
        raise UserError(f"{root}: {what} has no images; check the path")
    return ImageCollection(files, None, None, str(root))


def file_list(path: str | os.PathLike[str], classes: Sequence[str] | None = None, *,
              what: str = "file list") -> ImageCollection:
    """``path [label]`` per line; labels are integers or class names; paths relative to the list."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    files: list[Path] = []
    raw_labels: list[str] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "\t" in line:
            name, _, lab = line.partition("\t")
        else:
            name, _, lab = line.rpartition(" ") if " " in line else (line, "", "")
            if not name:
                name, lab = lab, ""
        p = Path(name.strip())
        p = p if p.is_absolute() else path.parent / p
        if not p.is_file():
            raise UserError(f"{path}:{lineno}: file {name.strip()!r} does not exist; fix or remove the line")
        files.append(p)
        raw_labels.append(lab.strip())
    if not files:
        raise UserError(f"{path}: {what} is empty")
    if not any(raw_labels):
        return ImageCollection(files, None, None, str(path))
    if any(not lab for lab in raw_labels):
        raise UserError(f"{path}: some lines have a label and some do not; label every line or none")
    if all(lab.lstrip("-").isdigit() for lab in raw_labels):
        labels = [int(lab) for lab in raw_labels]
        classes = list(classes) if classes else [str(i) for i in range(max(labels) + 1)]
    else:
        classes = list(classes) if classes else sorted(set(raw_labels))
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted(set(raw_labels) - set(index))
        if unknown:
            raise UserError(f"{path}: labels {', '.join(unknown[:5])} are not in the class list")
        labels = [index[lab] for lab in raw_labels]
    return ImageCollection(files, labels, classes, str(path))


def load_collection(spec: str | os.PathLike[str], classes: Sequence[str] | str | os.PathLike[str] | None = None, *,
                    labelled: bool = False, what: str = "images") -> ImageCollection:
    """A folder (class sub-folders -> labelled ImageFolder, else a flat folder), or a file list."""
    p = Path(spec)
    cls: Sequence[str] | None
    if isinstance(classes, (str, os.PathLike)):
        cls = read_class_list(classes)
    else:
        cls = classes
    if p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
        return file_list(p, cls, what=what)
    if p.is_dir():
        subdirs = [d for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")]
        has_images_at_top = any(is_image_file(f) for f in p.iterdir() if f.is_file())
        if cls is not None or (subdirs and not has_images_at_top):
            return image_folder(p, cls, what=what)
        if labelled:
            raise UserError(f"{p}: {what} needs labels: expected {p}/<class>/<image> sub-folders")
        return flat_folder(p, what=what)
    raise UserError(f"{p}: {what} not found (expected a folder or a .txt file list)")


def stratified_subset(coll: ImageCollection, fraction: float | None = None, per_class: int | None = None,
                      total: int | None = None, seed: int = 0) -> ImageCollection:
    """A seeded subset: a fraction or count of each class (or of all files when unlabelled)."""
    rng = np.random.default_rng(seed)
    n = len(coll)
    if coll.labels is None or total is not None:
        k = total if total is not None else (n if fraction is None else max(1, int(round(n * fraction))))
        idx = np.sort(rng.permutation(n)[: min(k, n)])
        return coll.subset(idx.tolist())
    labels = np.asarray(coll.labels)
    keep: list[int] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = len(members)
        if fraction is not None:
            k = max(1, int(round(len(members) * fraction)))
        if per_class is not None:
            k = min(k, per_class)
        keep += rng.permutation(members)[:k].tolist()
    return coll.subset(sorted(keep))
