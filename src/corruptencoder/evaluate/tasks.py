"""Downstream tasks: a labelled train split and test split from a user's disk, never downloaded.

Kinds:
* ``imagefolder``: ``root/train/<class>/*`` and ``root/test/<class>/*`` (or ``val``);
* ``imagenet``: an ImageNet root plus a class list (e.g. ImageNet100-B wnids): ``root/train/<wnid>``,
  ``root/val/<wnid>``; ``train_fraction: 0.1`` gives the paper's ImageNet100-A downstream split;
* ``filelist``: ``train`` and ``test`` are text files of ``path label`` lines;
* ``pets``, ``flowers102``, ``caltech101``: the torchvision dataset classes on a local root
  (``download=False``), with the splits of Chen et al. 2020 / Ericsson et al. 2021 (Appendix A):
  Pets trainval/test, Flowers train+val/test, Caltech-101 30 images per class for training, the
  rest for testing (seeded).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from corruptencoder.data.folders import (
    ImageCollection,
    file_list,
    image_folder,
    read_class_list,
    stratified_subset,
)
from corruptencoder.errors import UserError
from corruptencoder.poison.classnames import FLOWERS102, readable
from corruptencoder.utils.config import StrictModel

TaskKind = Literal["imagefolder", "imagenet", "filelist", "pets", "flowers102", "caltech101"]

LAYOUTS = {
    "imagefolder": "ROOT/train/<class>/<image> and ROOT/test/<class>/<image> (or ROOT/val/...)",
    "imagenet": "ROOT/train/<wnid>/*.JPEG and ROOT/val/<wnid>/*.JPEG plus a class list file of wnids",
    "filelist": "two text files of 'path label' lines (train: and test:)",
    "pets": "ROOT/oxford-iiit-pet/images/*.jpg and ROOT/oxford-iiit-pet/annotations/{trainval,test}.txt",
    "flowers102": "ROOT/flowers-102/jpg/image_*.jpg, ROOT/flowers-102/imagelabels.mat and setid.mat",
    "caltech101": "ROOT/caltech101/101_ObjectCategories/<category>/image_*.jpg",
}


class TaskConfig(StrictModel):
    """A downstream task (the labelled data a linear probe is trained and tested on)."""

    name: str = "task"
    kind: TaskKind = "imagefolder"
    root: str = Field(description="data root (see the layouts per kind)")
    train: str | None = Field(None, description="imagefolder: sub-folder (default train); filelist: the list file")
    test: str | None = Field(None, description="imagefolder: sub-folder (default test, else val); filelist: list file")
    classes: str | list[str] | None = Field(
        None, description="class list file (imagenet: wnids, e.g. imagenet100_B.txt) or an inline list of classes")
    extra_classes: list[str] = Field(default_factory=list, description="classes appended to the class list (e.g. "
                                     "a target class the published list lacks)")
    train_fraction: float | None = Field(None, gt=0.0, le=1.0, description="seeded fraction of each class for training")
    train_per_class: int | None = Field(None, ge=1, description="seeded count per class for training")
    test_per_class: int | None = Field(None, ge=1, description="seeded cap per class for testing (quick runs)")
    image_size: int = Field(224, ge=8, description="evaluation crop size (resize then centre crop)")
    resize: int | None = Field(None, description="shorter side before the centre crop (default size*256/224)")
    seed: int = 0


@dataclass
class Task:
    config: TaskConfig
    train: ImageCollection
    test: ImageCollection

    @property
    def classes(self) -> list[str]:
        assert self.train.classes is not None
        return self.train.classes

    @property
    def names(self) -> list[str]:
        """What prompts call each class: ImageNet wnids by name, the rest with ``_``/``-`` as spaces."""
        return [readable(c) for c in self.classes]

    def class_index(self, name: str) -> int:
        """Index of a class by its label (a folder name, a wnid) or its name ("ski mask", "lotus"); a name
        the task lacks is an error listing some of its classes (never a guess by number)."""
        found = find_class(self.classes, name)
        if found is None:
            raise UserError(not_a_class(name, self.config.name, self.classes))
        return found

    def digest(self) -> str:
        """Identifies the exact files and labels (for feature caches)."""
        h = hashlib.sha256()
        for coll in (self.train, self.test):
            for f, y in zip(coll.files, coll.labels or [0] * len(coll.files), strict=True):
                h.update(f"{f}\t{y}\n".encode())
        h.update(json.dumps(self.config.model_dump(mode="json"), sort_keys=True).encode())
        return h.hexdigest()[:16]


def find_class(classes: Sequence[str], name: str) -> int | None:
    """Index of the class ``name`` (a label, or its name: ``ski mask``, ``stop sign``) in ``classes``, or None."""
    if name in classes:
        return list(classes).index(name)

    def norm(text: str) -> str:
        return text.lower().replace(" ", "_").replace("-", "_")

    key = norm(name)
    for i, label in enumerate(classes):
        if key in (norm(label), norm(readable(label))):
            return i
    return None


def not_a_class(name: str, task: str, classes: Sequence[str]) -> str:
    return (f"target class {name!r} is not a class of task {task} "
            f"(classes: {', '.join(classes[:8])}{', ...' if len(classes) > 8 else ''}); "
            "give the class's folder name, wnid or name")


def listed_classes(cfg: TaskConfig) -> list[str] | None:
    """The task's classes where they are known without reading its images: a class list (a file or inline),
    an ImageFolder's class sub-folders, Flowers-102's names; None otherwise (Pets, Caltech-101, a file list
    without a class list, a root or class list file that is not there)."""
    if cfg.kind == "flowers102":
        return list(FLOWERS102)
    if cfg.kind not in ("imagefolder", "imagenet", "filelist"):
        return None
    if isinstance(cfg.classes, str) and not Path(cfg.classes).is_file():
        return None
    listed = _classes(cfg)
    if listed is not None or cfg.kind != "imagefolder":
        return listed
    train = Path(cfg.root) / (cfg.train or "train")
    if not train.is_dir():
        return None
    return sorted(d.name for d in train.iterdir() if d.is_dir() and not d.name.startswith(".")) or None


def _classes(cfg: TaskConfig) -> list[str] | None:
    if cfg.classes is None:
        return list(cfg.extra_classes) or None
    listed = list(cfg.classes) if isinstance(cfg.classes, list) else read_class_list(cfg.classes)
    return listed + [c for c in cfg.extra_classes if c not in listed]


def _missing(kind: str, root: Path, detail: str = "") -> UserError:
    return UserError(f"{root}: {kind} data not found{(' (' + detail + ')') if detail else ''}; "
                     f"expected {LAYOUTS[kind]}")


def _imagefolder(cfg: TaskConfig) -> tuple[ImageCollection, ImageCollection]:
    root = Path(cfg.root)
    if not root.is_dir():
        raise _missing("imagefolder", root)
    train_dir = root / (cfg.train or "train")
    test_name = cfg.test or ("test" if (root / "test").is_dir() else "val")
    test_dir = root / test_name
    if not train_dir.is_dir() or not test_dir.is_dir():
        raise _missing("imagefolder", root, f"no {train_dir.name}/ or {test_dir.name}/ folder")
    train = image_folder(train_dir, _classes(cfg), what="downstream train folder")
    test = image_folder(test_dir, train.classes, what="downstream test folder", require_all=False)
    return train, test


def _imagenet(cfg: TaskConfig) -> tuple[ImageCollection, ImageCollection]:
    root = Path(cfg.root)
    if not cfg.classes:
        raise UserError(f"task {cfg.name}: kind imagenet needs 'classes' (a wnid list such as imagenet100_B.txt)")
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        raise _missing("imagenet", root)
    classes = _classes(cfg)
    assert classes is not None
    return (image_folder(root / "train", classes, what="ImageNet train folder"),
            image_folder(root / "val", classes, what="ImageNet val folder"))


def _filelist(cfg: TaskConfig) -> tuple[ImageCollection, ImageCollection]:
    if not cfg.train or not cfg.test:
        raise UserError(f"task {cfg.name}: kind filelist needs 'train' and 'test' list files")
    base = Path(cfg.root)
    train = file_list(base / cfg.train, _classes(cfg), what="train file list")
    test = file_list(base / cfg.test, train.classes, what="test file list")
    if train.labels is None or test.labels is None:
        raise UserError(f"task {cfg.name}: downstream file lists need a label on every line")
    return train, test


def _torchvision(cfg: TaskConfig) -> tuple[ImageCollection, ImageCollection]:
    root = Path(cfg.root)
    kind = cfg.kind
    try:
        if kind == "pets":
            if not (root / "oxford-iiit-pet" / "annotations" / "trainval.txt").is_file():
                raise _missing(kind, root)
            from torchvision.datasets import OxfordIIITPet

            tr, te = OxfordIIITPet(str(root), "trainval"), OxfordIIITPet(str(root), "test")
            classes = list(tr.classes)
            return (ImageCollection(list(tr._images), list(tr._labels), classes, str(root)),
                    ImageCollection(list(te._images), list(te._labels), classes, str(root)))
        if kind == "flowers102":
            return _flowers102(root)
        if kind == "caltech101":
            cats_dir = root / "caltech101" / "101_ObjectCategories"
            if not cats_dir.is_dir():  # checked first: torchvision would create folders under root
                raise _missing(kind, root)
            from torchvision.datasets import Caltech101

            ds = Caltech101(str(root))
            files = [cats_dir / ds.categories[y] / f"image_{i:04d}.jpg"
                     for i, y in zip(ds.index, ds.y, strict=True)]
            full = ImageCollection(files, list(ds.y), list(ds.categories), str(root))
            train = stratified_subset(full, per_class=cfg.train_per_class or 30, seed=cfg.seed)
            chosen = set(map(str, train.files))
            rest = [i for i, f in enumerate(full.files) if str(f) not in chosen]
            return train, full.subset(rest)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted ..."
        raise _missing(kind, root, str(exc).split(".")[0]) from None
    raise UserError(f"task kind {kind!r} is unknown")  # pragma: no cover


def _flowers102(root: Path) -> tuple[ImageCollection, ImageCollection]:
    """Oxford Flowers-102 from its own files (``imagelabels.mat``, ``setid.mat``, ``jpg/``), read as
    torchvision's ``Flowers102`` does (labels 1-based in the file, 0-based here; train + val for training,
    test for testing) but without its checksum of the .mat files, so re-saved copies load too."""
    from scipy.io import loadmat

    base = root / "flowers-102"
    if not (base / "jpg").is_dir() or not (base / "setid.mat").is_file() or not (base / "imagelabels.mat").is_file():
        raise _missing("flowers102", root)
    try:
        labels = [int(v) - 1 for v in loadmat(str(base / "imagelabels.mat"))["labels"][0]]
        setid = loadmat(str(base / "setid.mat"))
        ids = {k: [int(v) for v in setid[k][0]] for k in ("trnid", "valid", "tstid")}
    except (KeyError, ValueError, OSError) as exc:
        raise UserError(f"{base}: imagelabels.mat / setid.mat are not Flowers-102's ({exc}); "
                        f"expected {LAYOUTS['flowers102']}") from None

    def split(image_ids: list[int]) -> tuple[list[Path], list[int]]:
        return [base / "jpg" / f"image_{i:05d}.jpg" for i in image_ids], [labels[i - 1] for i in image_ids]

    train_files, train_labels = split(ids["trnid"] + ids["valid"])
    test_files, test_labels = split(ids["tstid"])
    classes = list(FLOWERS102)  # 0-based labels in imagelabels.mat order: "lotus" is 77, "toad lily" 78
    return (ImageCollection(train_files, train_labels, classes, str(root)),
            ImageCollection(test_files, test_labels, classes, str(root)))


def load_task(cfg: TaskConfig) -> Task:
    loaders = {"imagefolder": _imagefolder, "imagenet": _imagenet, "filelist": _filelist}
    train, test = loaders.get(cfg.kind, _torchvision)(cfg)
    if cfg.train_fraction or (cfg.train_per_class and cfg.kind != "caltech101"):
        train = stratified_subset(train, fraction=cfg.train_fraction, per_class=cfg.train_per_class, seed=cfg.seed)
    if cfg.test_per_class:
        test = stratified_subset(test, per_class=cfg.test_per_class, seed=cfg.seed + 1)
    if train.labels is None or not train.files or not test.files:
        raise UserError(f"task {cfg.name}: empty train or test split under {cfg.root}")
    return Task(cfg, train, test)


def class_counts(coll: ImageCollection) -> np.ndarray:
    assert coll.labels is not None and coll.classes is not None
    return np.bincount(np.asarray(coll.labels), minlength=len(coll.classes))
