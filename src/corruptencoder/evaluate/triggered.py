"""Triggered test images: the trigger pasted at a seeded random spot of the central box.

The placement for test image ``i`` depends only on (seed, i), so it is the same in every run, batch
size and worker count. The trigger goes on the *preprocessed* image (after resize + centre crop),
as in the SSL-Backdoor and CorruptEncoder evaluation code, wholly inside the ``[lo, hi]`` box.

Beyond the paper, every target is also scored with a *control patch* (:func:`control_patch`): an unrelated
random patch of the trigger's size at the same spots. A backdoor keyed to its trigger gives a control ASR near
the clean encoder's; a control ASR near the ASR means the encoder learnt "a patch of this kind -> target",
which the ASR alone cannot tell apart (measured on the demo world's CLIP runs: README, "On image-text pairs").
A solid trigger (purple, white) is also scored with a *solid control* (:func:`solid_control_patch`): a solid
patch of a far colour, which tells a backdoor keyed to the trigger's colour from one to "any solid patch", the
question a noise-patch control cannot answer for a solid trigger.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from corruptencoder.poison.geometry import Box, location_box, place_in_region
from corruptencoder.poison.triggers import TriggerSpec, make_trigger


def resize_trigger(trigger: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Box-filter down (what a downscaled view of a poison shows), nearest-neighbour up."""
    if size is None or (trigger.shape[1], trigger.shape[0]) == tuple(size):
        return trigger
    im = Image.fromarray(trigger, "RGB")
    down = size[0] <= im.size[0] and size[1] <= im.size[1]
    return np.asarray(im.resize(size, Image.Resampling.BOX if down else Image.Resampling.NEAREST), dtype=np.uint8)


#: the control patch's seed: no default trigger seed of a target (a crc32 of its name) is drawn this way, and
#: :func:`control_patch` steps past a user's trigger that happens to equal it
CONTROL_SEED = 1_000_003


def control_patch(trigger: np.ndarray) -> np.ndarray:
    """A per-pixel random patch of ``trigger``'s size that is not ``trigger`` (the specificity control)."""
    h, w = trigger.shape[:2]
    seed = CONTROL_SEED
    while True:
        patch = make_trigger(TriggerSpec("random", (w, h), seed))
        if not np.array_equal(patch, trigger):
            return patch
        seed += 1


#: the solid control's colours: the RGB cube's corners, the one farthest from the trigger's colour is used
SOLID_CONTROL_COLOURS = ((0, 255, 0), (255, 255, 0), (0, 255, 255), (255, 0, 0), (0, 0, 255), (255, 0, 255),
                         (255, 255, 255), (0, 0, 0))


def is_solid(trigger: np.ndarray) -> bool:
    """One colour everywhere (a purple or white trigger, not a random or image one)."""
    flat = trigger.reshape(-1, trigger.shape[-1])
    return bool(flat.size) and bool((flat == flat[0]).all())


def solid_control_patch(trigger: np.ndarray) -> np.ndarray | None:
    """For a solid trigger, a solid patch of its size in the corner colour farthest from it (green for purple,
    black for white); ``None`` for any other trigger, whose kind the random control already is."""
    if not is_solid(trigger):
        return None
    c = trigger.reshape(-1, trigger.shape[-1])[0].astype(np.int64)
    colour = max(SOLID_CONTROL_COLOURS, key=lambda k: int(((np.array(k) - c) ** 2).sum()))  # first of ties
    return np.broadcast_to(np.array(colour, np.uint8), trigger.shape).copy()


def control_scores(trigger: np.ndarray, asr: Callable[[np.ndarray, str], float]) -> dict[str, float | None]:
    """The specificity controls' ASRs, ``asr(patch, progress label)``, by metric key; ``None`` where a control does
    not apply to the trigger. One place for the probe and the zero-shot scorer."""
    controls = (("control_asr", "control patch", control_patch(trigger)),
                ("solid_control_asr", "solid control", solid_control_patch(trigger)))
    return {key: None if patch is None else round(asr(patch, label), 3) for key, label, patch in controls}


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
