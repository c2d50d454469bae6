"""Decode and crop on the training device: loader workers only read JPEG bytes and draw the crop boxes.

At 224 px the host path (decode, shrink, one antialiased resize per view, in loader workers) costs
160-370 images/s per core: a 16-core host cannot feed a GPU that trains ResNet-18 MoCo at several
thousand two-view samples/s. Here a worker does what needs no pixels (read the file, read the JPEG
header, draw the views' boxes with the *same* sampler as the host path, :meth:`ViewPlan.boxes`), and
the device decodes the batch at once (``torchvision.io.decode_jpeg(device="cuda")``: nvJPEG, shipped in
torch's CUDA wheels, so no extra package) and crops every view with one ``roi_align`` per image.

The views' distribution is the host path's: the boxes come from the same sampler on the same size
(the host's short-side shrink is applied to the box coordinates instead of the pixels), and
``roi_align`` with adaptive sampling averages the source pixels under each output pixel (antialiased,
as the host's resize). Tested on CPU against the host path: same boxes for the same generator, pixel
and colour statistics within a fraction of a grey level. A file the device cannot decode exactly as
the host would (not a JPEG, CMYK, an EXIF rotation) is decoded by the worker and travels as pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from corruptencoder.data.datasets import _JPEG, ImageStore, ViewDataset, read_plain_jpeg

FloatBox = tuple[float, float, float, float]


class BoxPlan(Protocol):
    """What the workers need of a method's views (:class:`corruptencoder.ssl.views.ViewPlan`): the boxes."""

    def boxes(self, rng: np.random.Generator, width: int, height: int) -> list[tuple[int, int, int, int]]: ...


@dataclass
class EncodedItem:
    """One image as it leaves a worker: JPEG bytes (1-D uint8) or decoded pixels (3, H, W) uint8, and its views'
    boxes in the decoded image's pixels."""

    payload: torch.Tensor
    encoded: bool
    boxes: list[FloatBox]


def _shrunk(w: int, h: int, short_side: int | None) -> tuple[int, int]:
    """The size the host path decodes to (its :func:`~corruptencoder.data.datasets.to_tensor` rule)."""
    if short_side and min(w, h) > short_side:
        s = short_side / min(w, h)
        return max(1, round(w * s)), max(1, round(h * s))
    return w, h


def read_jpeg(path: str) -> tuple[int, int, torch.Tensor] | None:
    """(width, height, the file's bytes) when the device may decode this file exactly as the host would (a plain
    RGB or grey JPEG stored upright), else None: the worker decodes it on the host path, which also names a fault.
    One read: the header comes from the bytes that travel."""
    jpeg = read_plain_jpeg(path)
    if jpeg is None or jpeg[0].orientation != 1:
        return None
    return jpeg[0].width, jpeg[0].height, _as_tensor(jpeg[1])


class EncodedViewDataset(ViewDataset):
    """Unlabelled images -> (bytes or pixels + view boxes, index); the device does the rest."""

    def __init__(self, store: ImageStore, plan: BoxPlan) -> None:
        super().__init__(store, crop=lambda img, rng: [])  # never called: the device crops
        self.plan = plan

    def __getitem__(self, index: int) -> tuple[EncodedItem, int]:  # type: ignore[override]  # bytes, not views
        rng = self.generator()
        path = self.store.files[index]
        jpeg = read_jpeg(path) if self.store.loader is None else None
        if jpeg is None:
            img, _ = self.store.get(index)  # decoded (and shrunk) by the host path, or the next readable image
            h, w = img.shape[-2:]
            boxes = [(float(a), float(b), float(c), float(d)) for a, b, c, d in self.plan.boxes(rng, w, h)]
            return EncodedItem(img, False, boxes), index
        w, h, data = jpeg
        sw, sh = _shrunk(w, h, self.store.short_side)
        fx, fy = w / sw, h / sh
        boxes = [(x0 * fx, y0 * fy, x1 * fx, y1 * fy) for x0, y0, x1, y1 in self.plan.boxes(rng, sw, sh)]
        return EncodedItem(data, True, boxes), index


def _as_tensor(data: bytes) -> torch.Tensor:
    """Bytes as a 1-D uint8 tensor in torch's own memory. Not ``torchvision.io.read_file``: its tensor is a private
    file mapping, which a loader worker cannot hand to the main process (the worker's queue thread fails on its
    file descriptor and the loader waits for ever)."""
    out = torch.empty(len(data), dtype=torch.uint8)
    out.numpy()[:] = np.frombuffer(data, dtype=np.uint8)
    return out


_CROP_CHUNK = 64  # images of one shape per roi_align call: bounds the float copy (64 x 3 x 1024^2 x 4 B = 0.8 GB)


@dataclass
class EncodedBatch:
    """A collated batch of :class:`EncodedItem`; :meth:`decode` turns it into the host path's (views, index)."""

    items: list[EncodedItem]
    sizes: tuple[int, ...]
    index: torch.Tensor

    def pin_memory(self) -> "EncodedBatch":
        for it in self.items:
            if not it.encoded:
                it.payload = it.payload.pin_memory()
        return self

    def decode(self, device: torch.device | str) -> tuple[list[torch.Tensor], torch.Tensor]:
        """uint8 views (B, 3, s, s) per view on ``device``, as the host path's collate gives them."""
        from torchvision.io import ImageReadMode, decode_jpeg
        from torchvision.ops import roi_align

        device = torch.device(device)
        jpegs = [it.payload for it in self.items if it.encoded]
        decoded = iter(decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device) if jpegs else [])
        images = [next(decoded) if it.encoded else it.payload.to(device, non_blocking=True) for it in self.items]
        n_views = len(self.sizes)
        # every box of the batch in one host tensor, copied once (indexing it on the device costs no sync)
        boxes = torch.tensor([b for it in self.items for b in it.boxes], dtype=torch.float32)
        boxes = boxes.view(len(self.items), n_views, 4).to(device, non_blocking=True)
        views = [torch.empty((len(images), 3, s, s), dtype=torch.uint8, device=device) for s in self.sizes]
        groups: dict[int, list[int]] = {}
        for v, s in enumerate(self.sizes):
            groups.setdefault(s, []).append(v)
        # images of one shape are cropped together: one roi_align per shape and view size instead of one per image
        # (a per-image loop held a GPU at ~1,400 images/s, measured on an H200); each box's output is the same
        shapes: dict[tuple[int, ...], list[int]] = {}
        for i, img in enumerate(images):
            shapes.setdefault(tuple(img.shape), []).append(i)
        chunks = [m[c:c + _CROP_CHUNK] for m in shapes.values() for c in range(0, len(m), _CROP_CHUNK)]
        for members in chunks:
            x = torch.stack([images[i] for i in members]).float()
            rows = torch.tensor(members, dtype=torch.long).to(device, non_blocking=True)
            local = torch.arange(len(members), dtype=torch.float32, device=device)
            chunk_boxes = boxes[rows]
            for s, vs in groups.items():
                k = len(vs)
                rois = torch.cat((local.repeat_interleave(k)[:, None], chunk_boxes[:, vs].reshape(-1, 4)), dim=1)
                # aligned=True: pixel centres at +0.5, as the host's resize; sampling_ratio=-1: ceil(bin) samples per
                # output pixel and side, averaged (the antialiasing of a downscaling resize)
                out = roi_align(x, rois, output_size=(s, s), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
                out = out.round_().clamp_(0, 255).to(torch.uint8).view(len(members), k, 3, s, s)
                for j, v in enumerate(vs):
                    views[v].index_copy_(0, rows, out[:, j])
        return views, self.index.to(device, non_blocking=True)


def collate_encoded(sizes: tuple[int, ...]) -> Any:
    """A collate function for :class:`EncodedViewDataset` whose views have these output sides."""

    def collate(batch: list[tuple[EncodedItem, int]]) -> EncodedBatch:
        return EncodedBatch([b[0] for b in batch], sizes, torch.tensor([b[1] for b in batch], dtype=torch.long))

    return collate


# Loader workers per GPU under which ``auto`` decodes on the device. Measured on an H200 with 16 cores (ResNet-18
# MoCo-v2, 224 px, batch 256, Places365 JPEGs, 2026-12-04): the host path gave 4,202 images/s with 15 workers (280
# per worker, 88 % of model-only), the device path 2,458 whatever the workers (its GPU half, nvJPEG + roi_align in
# the main process, is the limit): the device wins only below about 9 workers.
DEVICE_DECODE_BELOW_WORKERS = 8


def device_decode_wanted(mode: str, gpu: bool, store: ImageStore, workers: int = 0) -> bool:
    """``data.decode``: ``device`` always, ``host`` never, ``auto`` on a GPU for an uncached JPEG set when the host
    has too few loader workers to out-decode the device (:data:`DEVICE_DECODE_BELOW_WORKERS`)."""
    if mode != "auto":
        return mode == "device"
    if not gpu or workers >= DEVICE_DECODE_BELOW_WORKERS:
        return False
    if store.cached is not None or store.loader is not None or not store.files:
        return False
    sample = store.files[:: max(1, len(store.files) // 64)]
    return sum(f.lower().endswith(_JPEG) for f in sample) >= 0.9 * len(sample)
