"""The image store: torchvision's JPEG path gives Pillow's pixels, and the cache is sized from the real
decoded size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import corruptencoder.data.datasets as ds
from corruptencoder.data.datasets import ImageStore, decode_tensor, to_tensor
from corruptencoder.utils.imageio import load_rgb


def _photo(w: int, h: int, seed: int) -> np.ndarray:
    """Smooth gradients plus noise and a sharp edge: chroma subsampling and the IDCT both matter."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / max(1, w - 1) * 255, yy / max(1, h - 1) * 255, (xx + yy) % 64 * 4], axis=-1)
    base[h // 3: 2 * h // 3, w // 4: w // 2] = (250, 10, 40)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def _jpegs(folder: Path) -> list[Path]:
    """Tiny JPEGs of the kinds a data set holds: odd sizes, 4:2:0 / 4:4:4 / 4:2:2, progressive, grayscale,
    an EXIF rotation."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (w, h, kw) in enumerate([(37, 23, {"quality": 90}), (64, 48, {"quality": 95, "subsampling": 0}),
                                    (33, 41, {"quality": 75, "subsampling": 1}),
                                    (50, 30, {"quality": 85, "progressive": True}), (17, 17, {"quality": 60})]):
        p = folder / f"rgb{i}.jpg"
        Image.fromarray(_photo(w, h, i), "RGB").save(p, **kw)
        out.append(p)
    gray = folder / "gray.jpeg"
    Image.fromarray(_photo(29, 35, 9)[..., 0], "L").save(gray, quality=90)
    rotated = folder / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(_photo(40, 24, 11), "RGB").save(rotated, quality=90, exif=exif)
    return [*out, gray, rotated]


def _pillow(path: Path, short: int | None) -> torch.Tensor:
    """The Pillow path every non-JPEG (and every JPEG that needs shrinking) takes."""
    return to_tensor(load_rgb(path, draft_short_side=short), short)


def test_torchvision_jpeg_decode_gives_pillows_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """datasets.decode_tensor decodes JPEGs that need no shrinking with torchvision and claims 'the same pixels
    as Pillow's': exactly equal, orientation (EXIF) and grayscale included."""
    import torchvision.io

    calls: list[int] = []
    real = torchvision.io.decode_jpeg

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", spy)
    files = _jpegs(tmp_path)
    for short in (None, 64):  # no shrink asked, or a cap larger than every image: both take torchvision's path
        for f in files:
            fast, slow = decode_tensor(f, short), _pillow(f, short)
            assert fast.dtype == torch.uint8 and fast.shape == slow.shape, f.name
            assert torch.equal(fast, slow), (f.name, (fast.int() - slow.int()).abs().max().item())
    assert len(calls) == 2 * len(files), "every one of these JPEGs went through torchvision"
    rotated = decode_tensor(tmp_path / "rotated.jpg", None)
    assert rotated.shape == (3, 40, 24)  # displayed upright: 24 wide, 40 high


def test_every_exif_orientation_decodes_as_pillow_displays_it(tmp_path: Path) -> None:
    """torchvision's EXIF rotation (host path) gives Pillow's exif_transpose pixels for all 8 orientations; an XMP
    orientation, which only Pillow applies, sends the file to Pillow's path."""
    photo = Image.fromarray(_photo(40, 24, 5), "RGB")
    for value in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = value
        f = tmp_path / f"o{value}.jpg"
        photo.save(f, quality=90, exif=exif)
        fast, slow = decode_tensor(f, None), _pillow(f, None)
        assert fast.shape == slow.shape and torch.equal(fast, slow), value
    xmp = tmp_path / "xmp.jpg"
    photo.save(xmp, quality=90, xmp=b'<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>')
    assert _pillow(xmp, None).shape == (3, 40, 24)  # Pillow turns it upright ...
    assert torch.equal(decode_tensor(xmp, None), _pillow(xmp, None))  # ... and so does the host path


def test_jpegs_to_shrink_and_other_formats_take_pillows_path(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.io

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("torchvision's decoder must not be used here")

    monkeypatch.setattr(torchvision.io, "decode_jpeg", refuse)
    big = tmp_path / "big.jpg"
    Image.fromarray(_photo(80, 60, 1), "RGB").save(big, quality=90)
    png = tmp_path / "a.png"
    Image.fromarray(_photo(30, 20, 2), "RGB").save(png)
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(_photo(30, 20, 3), "RGB").convert("CMYK").save(cmyk, quality=90)
    assert decode_tensor(big, 30).shape == (3, 30, 40)  # shorter side shrunk to 30
    assert torch.equal(decode_tensor(big, 30), _pillow(big, 30))
    assert torch.equal(decode_tensor(png, None), _pillow(png, None))
    assert torch.equal(decode_tensor(cmyk, None), _pillow(cmyk, None))


def test_decoded_bytes_is_the_real_decoded_size(tmp_path: Path) -> None:
    """The cache decision (``cache: auto``) uses the size the store will hold: the decoded tensors' bytes
    after the short-side shrink, not a guess."""
    rng = np.random.default_rng(0)
    sizes = [(int(rng.integers(20, 90)), int(rng.integers(20, 90))) for _ in range(12)]
    files = []
    for i, (w, h) in enumerate(sizes):
        p = tmp_path / f"{i}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(_photo(w, h, i), "RGB").save(p)
        files.append(p)

    def real(store: ImageStore) -> int:
        assert store.cached is not None
        return sum(t.numel() * t.element_size() for t in store.cached if t is not None)

    whole = ImageStore(files, None, cache=True)
    assert whole.decoded_bytes() == real(whole) == sum(w * h * 3 for w, h in sizes)  # every header read
    shrunk = ImageStore(files, 32, cache=True)
    assert shrunk.decoded_bytes() == pytest.approx(real(shrunk), rel=0.02)  # rounding of the shrunk sides only
    # more files than the header sample: the sample's mean times the count, still close to the truth
    many = ImageStore(files * 5, None, cache=True)
    assert many.decoded_bytes(sample=32) == pytest.approx(real(many), rel=0.1)
    assert ImageStore([], None, cache=False).decoded_bytes() == 0.0


def test_auto_cache_follows_the_decoded_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "a.jpg"
    Image.fromarray(_photo(40, 30, 0), "RGB").save(p)
    one = 40 * 30 * 3
    monkeypatch.setattr(ds, "AUTO_CACHE_BYTES", 3 * one)
    assert ImageStore([p] * 3, None, cache="auto").cached is not None  # exactly the budget: cached
    assert ImageStore([p] * 4, None, cache="auto").cached is None  # one image over it: decoded per access
