"""Reading user images safely: EXIF orientation, odd modes, bombs and corrupt files.

Every image that enters the toolkit goes through :func:`load_rgb` (or :func:`load_mask` /
:func:`load_rgba`), so a CMYK JPEG, a 16-bit PNG, a palette GIF or a phone photo with an EXIF
rotation all arrive as 8-bit RGB in display orientation, and a broken file becomes one
:class:`~corruptencoder.errors.ImageError` naming it.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO, Literal, NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from corruptencoder.errors import ImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm", ".jfif"}
)

#: Same order of magnitude as Pillow's own bomb threshold (~89 MP): a larger image is refused.
DEFAULT_MAX_PIXELS = 89_478_485

Source = str | os.PathLike[str] | bytes | BinaryIO


def is_image_file(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _describe(source: Source, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return "<in-memory image>"


# start-of-frame markers (baseline, extended, progressive, lossless; Huffman and arithmetic), not DHT / JPG / DAC
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


class JpegFrame(NamedTuple):
    """What a JPEG's header says: its stored size, colour components, and EXIF orientation (1 = as stored; 0 = an
    EXIF block this parser does not follow, which callers treat as "let Pillow decide")."""

    width: int
    height: int
    components: int
    orientation: int


def jpeg_frame(data: bytes) -> JpegFrame | None:
    """The frame header (and EXIF orientation) of a JPEG, or None where the bytes are not a JPEG this can read.

    A few byte comparisons on the bytes about to be decoded, where Pillow's header parse (``Image.open``) opened
    and read the file again marker by marker: the loader's host path at 224 px went from 454 to 473 images/s in
    process on the Places365 backgrounds (2 cores, 2026-12-04). None sends the file to Pillow, which decodes it
    or names the fault.
    """
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    exif: int | None = None  # the EXIF tag's value; None: no tag
    unknown = seen_exif = xmp = False
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # segments without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data, before any frame header
            return None
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if length < 2:
            return None
        if marker == 0xE1:
            payload = data[i + 4:i + 2 + length]
            if payload.startswith(b"Exif\0\0"):
                # Pillow joins every Exif segment into one block: a second one (rare) is not followed here
                exif = _exif_orientation(payload[6:])
                unknown = unknown or seen_exif or exif == 0
                seen_exif = True
            elif payload.startswith(b"http://ns.adobe.com/xap/1.0/\0") and b"tiff:Orientation" in payload:
                xmp = True  # Pillow's getexif() takes it where EXIF has no tag; torchvision does not
        if marker in _SOF_MARKERS:
            if length < 8 or i + 10 > n:
                return None
            height = int.from_bytes(data[i + 5:i + 7], "big")
            width = int.from_bytes(data[i + 7:i + 9], "big")
            if not (width and height):  # height 0: set by a DNL marker
                return None
            orientation = 0 if unknown or (exif is None and xmp) else (exif or 1)
            return JpegFrame(width, height, data[i + 9], orientation)
        i += 2 + length
    return None


def plain_jpeg(data: bytes) -> JpegFrame | None:
    """The frame of a JPEG that torchvision decodes to the same display pixels as :func:`load_rgb` (RGB or grey,
    under the bomb limit, an orientation EXIF states plainly), else None: Pillow's path decodes it or names the
    fault."""
    frame = jpeg_frame(data)
    if frame is None or frame.components not in (1, 3) or frame.orientation == 0:
        return None
    return frame if frame.width * frame.height <= DEFAULT_MAX_PIXELS else None


def _exif_orientation(tiff: bytes) -> int | None:
    """Tag 0x0112 of a TIFF block's first IFD: None where absent, 0 where the block is not one this can follow."""
    order: Literal["little", "big"]
    if tiff[:2] == b"II":
        order = "little"
    elif tiff[:2] == b"MM":
        order = "big"
    else:
        return 0

    def u16(at: int) -> int:
        return int.from_bytes(tiff[at:at + 2], order)

    if len(tiff) < 8 or u16(2) != 42:
        return 0
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd < 8 or ifd + 2 > len(tiff) or ifd + 2 + 12 * u16(ifd) > len(tiff):
        return 0
    for k in range(u16(ifd)):
        at = ifd + 2 + 12 * k
        if u16(at) == 0x0112:
            if u16(at + 2) != 3 or int.from_bytes(tiff[at + 4:at + 8], order) != 1:  # one SHORT
                return 0
            value = u16(at + 8)
            return value if 1 <= value <= 8 else 0
    return None


def open_image(source: Source, *, name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open (header only) and refuse missing, unidentifiable or bomb-sized images."""
    label = _describe(source, name)
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            # Our own size check below replaces Pillow's warning/error with an actionable message.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                im = Image.open(source)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except FileNotFoundError:
        raise ImageError(f"{label}: file not found; check the path") from None
    except IsADirectoryError:
        raise ImageError(f"{label}: is a folder, expected an image file") from None
    except PermissionError:
        raise ImageError(f"{label}: permission denied; make the file readable") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{label}: not a readable image ({exc}); replace or remove the file") from None
    w, h = im.size
    if w <= 0 or h <= 0:
        raise ImageError(f"{label}: image has zero size {w}x{h}; replace or remove the file")
    if max_pixels and w * h > max_pixels:
        raise ImageError(
            f"{label}: {w}x{h} = {w * h / 1e6:.0f} MP is over the {max_pixels / 1e6:.0f} MP limit "
            "(a decompression bomb?); downscale the image or remove it"
        )
    return im


def _decode(im: Image.Image, label: str) -> Image.Image:
    try:
        im.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{label}: corrupt or truncated image ({exc}); replace or remove the file") from None
    try:
        return ImageOps.exif_transpose(im) or im
    except Exception:  # noqa: BLE001 - a malformed EXIF block must not kill the run; pixels are fine
        return im


def _to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if mode.startswith("I;16") or arr.dtype == np.uint16:
        return np.round(arr.astype(np.float64) / 257.0).astype(np.uint8)
    if mode == "I":
        arr = arr.astype(np.float64)
        if arr.max(initial=0) > 255:  # 16-bit data stored in a 32-bit integer image
            arr = arr / 257.0
        return np.clip(np.round(arr), 0, 255).astype(np.uint8)
    if mode == "F":
        arr = arr.astype(np.float64)
        if arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        return np.clip(np.round(arr), 0, 255).astype(np.uint8)
    return np.clip(arr, 0, 255).astype(np.uint8)


def _rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        gray = _to_uint8(np.asarray(im), im.mode)
        return Image.fromarray(gray, "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return im.convert("RGB")


def load_rgb(source: Source, *, name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
             draft_short_side: int | None = None) -> Image.Image:
    """Decode an image as 8-bit RGB in display (EXIF-corrected) orientation.

    ``draft_short_side`` lets JPEG decode at 1/2, 1/4 or 1/8 scale while keeping the shorter side
    at least that long (much faster for large photos that will be shrunk anyway).
    """
    label = _describe(source, name)
    im = open_image(source, name=name, max_pixels=max_pixels)
    if draft_short_side and im.format == "JPEG":
        w, h = im.size
        s = max(draft_short_side / min(w, h), 1.0 / 8)
        if s < 1.0:
            im.draft("RGB", (max(1, int(w * s + 0.5)), max(1, int(h * s + 0.5))))
    im = _decode(im, label)
    try:
        return _rgb(im)
    except (OSError, ValueError) as exc:
        raise ImageError(f"{label}: cannot convert mode {im.mode} to RGB ({exc}); re-save it as RGB") from None


def load_rgba(source: Source, *, name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image | None:
    """Decode an image with an alpha channel as RGBA; ``None`` when the file has no transparency."""
    label = _describe(source, name)
    im = _decode(open_image(source, name=name, max_pixels=max_pixels), label)
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    if not has_alpha:
        return None
    return im.convert("RGBA")


def load_mask(
    source: Source,
    *,
    name: str | None = None,
    object_index: int | tuple[int, ...] = 1,
    object_rgb: tuple[int, int, int] = (128, 0, 0),
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Read a mask image as a boolean object mask.

    Accepted encodings: binary (0/1 or 0/255) gray images, 16-bit gray, labelme palette exports
    (index ``object_index``, or any of several, is the object; other labels such as holes are not), RGB exports where
    ``object_rgb`` marks the object (any non-black pixel when that colour is absent), and RGBA
    whose alpha is the mask.
    """
    label = _describe(source, name)
    im = _decode(open_image(source, name=name, max_pixels=max_pixels), label)
    if im.mode == "P":
        return np.isin(np.asarray(im), np.atleast_1d(object_index))
    if im.mode in ("RGBA", "LA"):
        return np.asarray(im.getchannel("A")) > 127
    if im.mode in ("RGB", "CMYK", "YCbCr"):
        arr = np.asarray(im.convert("RGB"))
        hit = np.all(arr == np.asarray(object_rgb, np.uint8), axis=-1)
        if hit.any():
            return hit
        return arr.max(axis=-1) > 127 if arr.max() > 1 else arr.max(axis=-1) > 0
    arr = _to_uint8(np.asarray(im), im.mode) if im.mode != "1" else np.asarray(im).astype(np.uint8) * 255
    if arr.ndim == 3:
        arr = arr.max(axis=-1)
    top = int(arr.max(initial=0))
    return arr > (127 if top > 1 else 0)
