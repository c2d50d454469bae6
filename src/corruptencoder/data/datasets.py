"""PyTorch datasets over file lists: decode once, skip unreadable files, crop on small tensors.

:class:`ImageStore` decodes every image once into memory when the set is small enough (the demo
world, CIFAR-sized sets), or per access otherwise (ImageNet on a GPU box, with loader workers).
An unreadable file is skipped with a warning and counted (in memory, and in ``skip_log`` when
given, so worker processes report too), never a crash in the middle of an epoch.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from corruptencoder.errors import ImageError
from corruptencoder.utils.imageio import JpegFrame, load_rgb

log = logging.getLogger(__name__)

#: Decoded-cache budget for ``cache: auto``.
AUTO_CACHE_BYTES = 3 * 1024**3


def to_tensor(im: Image.Image, short_side: int | None) -> torch.Tensor:
    """uint8 (3, H, W) tensor of a PIL image whose shorter side is shrunk to at most ``short_side``."""
    if short_side and min(im.size) > short_side:
        s = short_side / min(im.size)
        im = im.resize((max(1, round(im.size[0] * s)), max(1, round(im.size[1] * s))), Image.Resampling.BILINEAR,
                       reducing_gap=2.0)
    return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


_JPEG = (".jpg", ".jpeg", ".jfif")
# torchvision 0.29 deprecates its decoders in favour of TorchCodec, which is not a dependency here; set once, not
# per decoded image (the hot loop), and only for torchvision's own warnings
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\.io")


def read_plain_jpeg(path: str | os.PathLike[str]) -> tuple[JpegFrame, bytes] | None:
    """A JPEG file's header and bytes, read once, when torchvision decodes it to Pillow's display pixels
    (:func:`~corruptencoder.utils.imageio.plain_jpeg`); None for anything else, which Pillow's path decodes or
    names the fault of."""
    if not str(path).lower().endswith(_JPEG):
        return None
    from corruptencoder.utils.imageio import plain_jpeg

    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    frame = plain_jpeg(data)
    return None if frame is None else (frame, data)


def decode_tensor(path: str | os.PathLike[str], short_side: int | None) -> torch.Tensor:
    """Decode to a uint8 (3, H, W) tensor whose shorter side is at most ``short_side``.

    A JPEG that needs no shrinking is decoded by torchvision straight into a CHW tensor (libjpeg-turbo, the
    same pixels as Pillow's: checked on the Places365 backgrounds; about 5x faster than Pillow + a copy);
    everything else (other formats, CMYK, shrinking, a file torchvision refuses) goes through Pillow's path,
    which also reports any problem with the file."""
    jpeg = read_plain_jpeg(path)
    if jpeg is not None and (not short_side or min(jpeg[0].width, jpeg[0].height) <= short_side):
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            return decode_jpeg(torch.frombuffer(bytearray(jpeg[1]), dtype=torch.uint8), mode=ImageReadMode.RGB,
                               apply_exif_orientation=True)
        except RuntimeError:
            pass  # Pillow's path below decodes it or says what is wrong
    return to_tensor(load_rgb(path, draft_short_side=short_side), short_side)


class ImageStore:
    """Images by index; decoded once (``cache=True``) or on every access.

    ``files`` are paths, or names when ``loader(index) -> PIL image`` does the reading (image-text
    shards, in-memory sources).
    """

    def __init__(self, files: Sequence[Any], short_side: int | None = None, cache: bool | str = "auto",
                 progress: bool = False, skip_log: str | os.PathLike[str] | None = None,
                 loader: Callable[[int], Image.Image] | None = None) -> None:
        self.files = [str(f) for f in files]
        self.short_side = short_side
        self.loader = loader
        self.skip_log = str(skip_log) if skip_log else None
        self.skipped: dict[str, str] = {}
        if cache == "auto":
            cache = self.decoded_bytes() <= AUTO_CACHE_BYTES
        self.cached: list[torch.Tensor | None] | None = None
        if cache:
            self.cached = self._decode_all(progress)

    def _decode_all(self, progress: bool) -> list[torch.Tensor | None]:
        from corruptencoder.utils.progress import progress as show

        out: list[torch.Tensor | None] = []
        for i in show(range(len(self.files)), desc="decoding", unit="img", enabled=progress, leave=False):
            out.append(self._try(i))
        if self.skipped:
            log.warning("skipped %d unreadable image(s), e.g. %s", len(self.skipped), next(iter(self.skipped.values())))
        if all(t is None for t in out):
            raise ImageError(f"none of the {len(out)} images could be decoded, e.g. {self.files[0]}")
        return out

    def decoded_bytes(self, sample: int = 32) -> float:
        """Memory the decoded images would take: the mean decoded size (after the short-side shrink) of a spread
        sample of headers times the count (a square of ``short_side``, 256 by default, when headers cannot be
        read, e.g. images served by a loader)."""
        side = self.short_side or 256
        if not self.files:
            return 0.0
        sizes = []
        if self.loader is None:
            from corruptencoder.utils.imageio import open_image

            for i in np.linspace(0, len(self.files) - 1, min(sample, len(self.files))).astype(int):
                try:
                    with open_image(self.files[int(i)]) as im:
                        w, h = im.size
                except ImageError:
                    continue
                s = min(1.0, side / min(w, h)) if self.short_side else 1.0
                sizes.append(w * s * h * s * 3)
        mean = float(np.mean(sizes)) if sizes else side * side * 3 * 1.4
        return mean * len(self.files)

    def log_skipped_to(self, path: str | os.PathLike[str]) -> None:
        """From now on record unreadable files in ``path`` (worker processes too), starting with those found so
        far: a store is built before its run's output folder exists, which must hold nothing on bad input."""
        self.skip_log = str(path)
        if self.skipped:
            with open(self.skip_log, "a", encoding="utf-8") as fh:
                fh.writelines(f"{f}\t{why}\n" for f, why in self.skipped.items())

    def _try(self, index: int) -> torch.Tensor | None:
        path = self.files[index]
        try:
            if self.loader is not None:
                return to_tensor(self.loader(index), self.short_side)
            return decode_tensor(path, self.short_side)
        except ImageError as exc:
            if path not in self.skipped:
                self.skipped[path] = str(exc)
                if self.cached is not None or self.skip_log:
                    log.warning("skipping unreadable image: %s", exc)
                if self.skip_log:
                    with open(self.skip_log, "a", encoding="utf-8") as fh:
                        fh.write(f"{path}\t{exc}\n")
            return None

    def __len__(self) -> int:
        return len(self.files)

    def get(self, index: int) -> tuple[torch.Tensor, int]:
        """The image at ``index``, or the next readable one (deterministic), and the index used."""
        n = len(self.files)
        for k in range(n):
            i = (index + k) % n
            img = self.cached[i] if self.cached is not None else self._try(i)
            if img is not None:
                return img, i
        raise ImageError("no readable image left in the data set")


class ArrayStore:
    """In-memory (H, W, 3) uint8 images with the same interface as :class:`ImageStore`."""

    def __init__(self, arrays: Sequence[np.ndarray]) -> None:
        self.tensors = [torch.from_numpy(np.array(a, dtype=np.uint8)).permute(2, 0, 1).contiguous() for a in arrays]

    def __len__(self) -> int:
        return len(self.tensors)

    def get(self, index: int) -> tuple[torch.Tensor, int]:
        return self.tensors[index], index


def _worker_rng() -> np.random.Generator:
    # torch seeds every loader worker differently (and reproducibly with Lightning's
    # seed_everything(workers=True)); derive numpy's generator from it.
    if torch.utils.data.get_worker_info() is not None:
        _leave_signals_to_the_main_process()
    return np.random.default_rng(torch.initial_seed() % (2**63))


def _leave_signals_to_the_main_process() -> None:
    """In a loader worker: ignore SIGINT / SIGTERM (a scheduler may send them to every process of a job),
    which the main process turns into one line and a clean stop that ends its workers; inherited, the
    CLI's handler would print a traceback per worker. Touches no random state."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


class ViewDataset(Dataset[tuple[list[torch.Tensor], int]]):
    """Unlabelled images -> (list of uint8 views, index) for contrastive pre-training."""

    def __init__(self, store: ImageStore,
                 crop: Callable[[torch.Tensor, np.random.Generator], list[torch.Tensor]]) -> None:
        self.store = store
        self.crop = crop
        self._rng: np.random.Generator | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.store)

    def generator(self) -> np.random.Generator:
        """This process's crop generator (a loader worker gets its own, derived from torch's seed)."""
        if self._rng is None or self._pid != os.getpid():
            self._rng, self._pid = _worker_rng(), os.getpid()
        return self._rng

    def __getitem__(self, index: int) -> tuple[list[torch.Tensor], int]:
        img, _ = self.store.get(index)
        return self.crop(img, self.generator()), index


def center_crop_tensor(img: torch.Tensor, resize: int, size: int) -> torch.Tensor:
    """Evaluation transform: shorter side to ``resize``, then the central ``size`` square."""
    from torchvision.transforms.v2 import functional as TF

    img = TF.resize(img, [resize], antialias=True)
    return TF.center_crop(img, [size, size])


class LabelledDataset(Dataset[tuple[torch.Tensor, int, int]]):
    """Labelled images -> (uint8 (3, size, size), label, index), resize + centre crop; an optional
    per-index ``transform`` (e.g. pasting a trigger) runs on the cropped tensor."""

    def __init__(self, store: "ImageStore | ArrayStore", labels: Sequence[int], size: int, resize: int | None = None,
                 transform: Callable[[torch.Tensor, int], torch.Tensor] | None = None) -> None:
        self.store = store
        self.labels = list(labels)
        self.size = size
        self.resize = resize or int(round(size * 256 / 224))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        img, _ = self.store.get(index)
        img = center_crop_tensor(img, self.resize, self.size)
        if self.transform is not None:
            img = self.transform(img, index)
        return img, self.labels[index], index


def collate_views(batch: list[tuple[list[torch.Tensor], Any]]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Stack each view; the second field (image index, or caption tokens) is stacked too."""
    views = list(zip(*[b[0] for b in batch], strict=True))
    second = [b[1] for b in batch]
    extra = torch.stack(second) if isinstance(second[0], torch.Tensor) else torch.tensor(second, dtype=torch.long)
    return [torch.stack(v) for v in views], extra


class PairDataset(ViewDataset):
    """Image-text pairs -> (list of uint8 views, caption tokens) for CLIP; ``tokenize`` maps one caption to
    its token tensor (the model's tokenizer, given by the trainer)."""

    def __init__(self, store: ImageStore, captions: Sequence[str], crop: Callable[..., list[torch.Tensor]],
                 tokenize: Callable[[str], torch.Tensor]) -> None:
        super().__init__(store, crop)
        self.captions = list(captions)
        self.tokenize = tokenize

    def __getitem__(  # type: ignore[override]  # returns caption tokens, not an index
        self, index: int
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        img, used = self.store.get(index)
        return self.crop(img, self.generator()), self.tokenize(self.captions[used])


def read_skip_log(path: str | os.PathLike[str]) -> dict[str, str]:
    p = Path(path)
    if not p.is_file():
        return {}
    out: dict[str, str] = {}
    for line in p.read_text(encoding="utf-8").splitlines():
        f, _, why = line.partition("\t")
        out.setdefault(f, why)
    return out
