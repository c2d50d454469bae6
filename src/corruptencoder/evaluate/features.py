"""Frozen-encoder features, extracted once and cached on disk by a hash of everything they depend on.

The cache key covers the encoder file's content, the exact image list, the evaluation transform and
any trigger (pixels, seed, box), so a re-run or another probe on the same features costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from corruptencoder.data.datasets import ArrayStore, ImageStore, LabelledDataset
from corruptencoder.ssl.augment import normalize_batch

log = logging.getLogger(__name__)
_FILE_HASHES: dict[tuple[str, float, int], str] = {}


def file_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a file (memoised by path, mtime and size)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_mtime, st.st_size)
    if key not in _FILE_HASHES:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _FILE_HASHES[key] = h.hexdigest()
    return _FILE_HASHES[key]


def cache_key(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


@torch.no_grad()
def extract_features(encoder: nn.Module, files: Sequence[str | os.PathLike[str]] | Sequence[np.ndarray], size: int,
                     resize: int | None = None,
                     transform: Callable[[torch.Tensor, int], torch.Tensor] | None = None, batch_size: int = 256,
                     device: str = "cpu", workers: int = 0, progress: bool = False,
                     desc: str = "features") -> torch.Tensor:
    """(N, D) float32 features of image files or (H, W, 3) uint8 arrays (resize + centre crop
    [+ transform], normalised)."""
    from corruptencoder.utils.progress import progress as show

    if len(files) and isinstance(files[0], np.ndarray):
        store: ImageStore | ArrayStore = ArrayStore(cast(Sequence[np.ndarray], files))
    else:
        store = ImageStore(files, cache=False)
    ds = LabelledDataset(store, [0] * len(files), size, resize, transform)
    if isinstance(store, ImageStore):
        store.short_side = ds.resize  # decode (JPEG draft) straight to the evaluation resolution
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=device != "cpu")
    encoder = encoder.to(device).eval().to(memory_format=torch.channels_last)
    out = []
    for x, _y, _i in show(loader, desc=desc, unit="batch", enabled=progress, leave=False):
        x = normalize_batch(x.to(device, non_blocking=True).float().div_(255.0)).contiguous(
            memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            f = encoder(x)
        out.append(f.float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


class FeatureCache:
    """``<dir>/<key>.pt`` files of feature tensors (loaded with weights_only=True)."""

    def __init__(self, folder: str | os.PathLike[str] | None) -> None:
        self.folder = Path(folder) if folder else None
        self.hits = 0
        self.misses = 0

    def get(self, key: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        if self.folder is not None:
            path = self.folder / f"{key}.pt"
            if path.is_file():
                try:
                    t = torch.load(path, map_location="cpu", weights_only=True)
                    self.hits += 1
                    return t
                except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed
                    log.warning("recomputing damaged feature cache entry %s", path)
        self.misses += 1
        t = compute()
        if self.folder is not None:
            from corruptencoder.ssl.encoder import save_atomic

            save_atomic(t, self.folder / f"{key}.pt")
        return t
