"""Triggered test images: the trigger pasted at a seeded random spot of the central box.

The placement for test image ``i`` depends only on (seed, i), so it is the same in every run, batch
size and worker count. The trigger goes on the *preprocessed* image (after resize + centre crop),
as in the SSL-Backdoor and CorruptEncoder evaluation code, wholly inside the ``[lo, hi]`` box.

Beyond the paper, every target is also scored with control patches at the same spots (a random patch, a far
solid colour for a solid trigger, the trigger turned round for a patterned one, another trigger of its kind for
an image or a drawn pattern): see
:mod:`corruptencoder.evaluate.controls`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from corruptencoder.evaluate.controls import (  # noqa: F401  (their home before evaluate/controls)
    CONTROL_SEED,
    control_patch,
    control_scores,
    is_solid,
    solid_control_patch,
)
from corruptencoder.poison.geometry import Box, location_box, place_in_region


def resize_trigger(trigger: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Box-filter down (what a downscaled view of a poison shows), nearest-neighbour up."""
    if size is None or (trigger.shape[1], trigger.shape[0]) == tuple(size):
        return trigger
    im = Image.fromarray(trigger, "RGB")
    down = size[0] <= im.size[0] and size[1] <= im.size[1]
    return np.asarray(im.resize(size, Image.Resampling.BOX if down else Image.Resampling.NEAREST), dtype=np.uint8)


@dataclass
class TriggerPaste:
    """Paste the trigger; with ``jpeg_quality`` the triggered image is then saved and read back as JPEG, as
    the authors' test-set script does (it writes the triggered images under their .JPEG names: quality 75)."""

    trigger: np.ndarray  # (h, w, 3) uint8
    seed: int = 0
    lo: float = 0.25
    hi: float = 0.75
    jpeg_quality: int | None = None

    def __post_init__(self) -> None:
        self._t = torch.from_numpy(np.array(self.trigger, dtype=np.uint8)).permute(2, 0, 1).contiguous()

    @property
    def size(self) -> tuple[int, int]:
        return self.trigger.shape[1], self.trigger.shape[0]

    def box(self, index: int, image_size: tuple[int, int]) -> Box:
        u = np.random.default_rng([self.seed, index]).random(2)
        return place_in_region(location_box(image_size, self.lo, self.hi), self.size, float(u[0]), float(u[1]))

    def __call__(self, image: torch.Tensor, index: int) -> torch.Tensor:
        """uint8 (3, H, W) -> a copy with the trigger pasted."""
        h, w = image.shape[-2:]
        x0, y0, x1, y1 = self.box(index, (w, h))
        out = image.clone()
        out[:, y0:y1, x0:x1] = self._t
        if self.jpeg_quality:
            out = jpeg_round_trip(out, self.jpeg_quality)
        return out


def pasted_inputs(files: Sequence[Any], idx: torch.Tensor,
                  paste: TriggerPaste) -> tuple[list[Any], Callable[[torch.Tensor, int], torch.Tensor]]:
    """The test files ``idx`` and the transform pasting into the j-th of them at test image ``idx[j]``'s spot."""
    index_map = idx.tolist()
    return [files[i] for i in index_map], lambda img, j: paste(img, index_map[j])


def jpeg_round_trip(image: torch.Tensor, quality: int) -> torch.Tensor:
    """uint8 (3, H, W) -> the same image after a JPEG encode (Pillow, 4:2:0) and decode."""
    import io

    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
