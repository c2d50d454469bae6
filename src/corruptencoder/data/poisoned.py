"""A poisoned pre-training set: the clean collection plus poison folders, as one file list.

Nothing is copied: the clean files stay where they are and the poisons are read through their
``manifest.jsonl``, so the poisoned set of a 1.3 M-image ImageNet costs a list of paths.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from corruptencoder.data.folders import ImageCollection
from corruptencoder.poison.manifest import poison_files, read_manifest


@dataclass
class PretrainFiles:
    files: list[Path]
    is_poison: list[bool]
    poison_targets: list[str | None]

    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_poisons(self) -> int:
        return sum(self.is_poison)

    @property
    def poison_ratio(self) -> float:
        return self.num_poisons / max(1, len(self.files))


def pretraining_files(clean: ImageCollection, poison_dirs: Sequence[str | os.PathLike[str]] = ()) -> PretrainFiles:
    files = list(clean.files)
    flags = [False] * len(files)
    targets: list[str | None] = [None] * len(files)
    for folder in poison_dirs:
        records = read_manifest(folder)
        paths = poison_files(folder)
        files += paths
        flags += [True] * len(paths)
        targets += [r.get("target") for r in records]
    return PretrainFiles(files, flags, targets)
