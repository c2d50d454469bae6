"""Odd and broken images arrive as 8-bit RGB in display orientation, or as one clear error."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from corruptencoder.errors import ImageError
from corruptencoder.utils.imageio import load_rgb, load_rgba


def test_16bit_png_scaled_not_clipped(tmp_path: Path) -> None:
    arr = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    out = np.asarray(load_rgb(tmp_path / "g16.png"))
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    assert out[..., 0].max() == round(15 * 4000 / 257) and out[0, 1, 0] == round(4000 / 257)


def test_cmyk_palette_and_la(tmp_path: Path) -> None:
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    assert load_rgb(tmp_path / "c.jpg").mode == "RGB"
    p = Image.new("P", (8, 6))
    p.putpalette([255, 0, 0] * 256)
    p.save(tmp_path / "p.gif")
    assert np.asarray(load_rgb(tmp_path / "p.gif"))[0, 0].tolist() == [255, 0, 0]
    Image.new("LA", (8, 6), (100, 128)).save(tmp_path / "la.png")
    assert load_rgb(tmp_path / "la.png").mode == "RGB"
    assert load_rgba(tmp_path / "la.png") is not None
    assert load_rgba(tmp_path / "c.jpg") is None


def test_exif_rotation_applied(tmp_path: Path) -> None:
    im = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    im.save(tmp_path / "r.jpg", exif=exif.tobytes())
    assert load_rgb(tmp_path / "r.jpg").size == (20, 40)


def test_corrupt_and_truncated(tmp_path: Path) -> None:
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match=r"junk.jpg: not a readable image"):
        load_rgb(tmp_path / "junk.jpg")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.jpg")
    data = (tmp_path / "t.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"t.jpg: corrupt or truncated"):
        load_rgb(tmp_path / "t.jpg")
    with pytest.raises(ImageError, match="file not found"):
        load_rgb(tmp_path / "missing.png")


def test_decompression_bomb_refused_before_decoding(tmp_path: Path) -> None:
    Image.new("L", (12000, 9000)).save(tmp_path / "bomb.png", compress_level=1)
    with pytest.raises(ImageError, match=r"bomb.png: 12000x9000 = 108 MP is over the 89 MP limit"):
        load_rgb(tmp_path / "bomb.png")


def _frame_by_pillow(path: Path) -> tuple[int, int, int]:
    with Image.open(path) as im:
        return im.size[0], im.size[1], {"L": 1, "RGB": 3, "CMYK": 4}[im.mode]


def test_jpeg_frame_reads_the_header_as_pillow_does(tmp_path: Path) -> None:
    """Size and components from the frame header: baseline, progressive, grey, CMYK, EXIF and comment segments
    before the frame; anything that is not a readable JPEG header gives None (Pillow's path then decides)."""
    from corruptencoder.utils.imageio import jpeg_frame

    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8), "RGB")
    cases = {"base.jpg": dict(quality=90), "prog.jpg": dict(progressive=True), "comment.jpg": dict(comment=b"x" * 300)}
    for name, kw in cases.items():
        photo.save(tmp_path / name, **kw)
    exif = Image.Exif()
    exif[0x0112] = 6
    photo.save(tmp_path / "exif.jpg", exif=exif)
    photo.convert("L").save(tmp_path / "grey.jpg")
    photo.convert("CMYK").save(tmp_path / "cmyk.jpg")
    for f in sorted(tmp_path.glob("*.jpg")):
        assert jpeg_frame(f.read_bytes())[:3] == _frame_by_pillow(f), f.name  # type: ignore[index]
    assert jpeg_frame((tmp_path / "cmyk.jpg").read_bytes()).components == 4  # type: ignore[union-attr]
    photo.save(tmp_path / "a.png")
    data = (tmp_path / "base.jpg").read_bytes()
    sof = data.index(b"\xff\xc0")
    for bad in (b"", (tmp_path / "a.png").read_bytes(), data[:sof + 6], data[:2] + b"\x00" * 20,
                data[:sof + 5] + b"\x00\x00" + data[sof + 7:]):  # empty, PNG, cut inside the frame, junk, height 0
        assert jpeg_frame(bad) is None


def test_jpeg_frame_agrees_with_pillow_on_the_real_backgrounds() -> None:
    from conftest import shared_assets
    from corruptencoder.utils.imageio import jpeg_frame

    files = sorted((shared_assets() / "backgrounds-places365").glob("*.jpg"))
    assert len(files) == 650
    for f in files:
        frame = jpeg_frame(f.read_bytes())
        assert frame is not None and frame[:3] == _frame_by_pillow(f), f.name
        assert frame.orientation == _orientation_by_pillow(f.read_bytes()), f.name


def _orientation_by_pillow(data: bytes) -> int:
    with Image.open(io.BytesIO(data)) as im:
        return int(im.getexif().get(0x0112, 1))


def _with_segment(jpeg: bytes, marker: int, payload: bytes) -> bytes:
    """``jpeg`` with one more APPn segment right after its start-of-image marker."""
    return jpeg[:2] + bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def _tiff(order: str, entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """A TIFF block (EXIF payload) with one IFD of (tag, type, count, 4-byte value) entries."""
    bo = "little" if order == "II" else "big"
    out = order.encode() + (42).to_bytes(2, bo) + (8).to_bytes(4, bo) + len(entries).to_bytes(2, bo)
    for tag, typ, count, value in entries:
        out += tag.to_bytes(2, bo) + typ.to_bytes(2, bo) + count.to_bytes(4, bo) + value
    return out + (0).to_bytes(4, bo)


def test_jpeg_frame_reads_the_orientation_pillow_applies(tmp_path: Path) -> None:
    """The orientation the header states, as Pillow's getexif() reads it (Pillow's own EXIF writer, both byte
    orders by hand, other tags around it); 0 ("let Pillow decide") for what this parser does not follow: a second
    EXIF segment, a malformed block, an XMP orientation (Pillow applies it, torchvision does not)."""
    from corruptencoder.utils.imageio import jpeg_frame

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (12, 20, 3), dtype=np.uint8), "RGB").save(buf, "JPEG")
    plain = buf.getvalue()
    assert jpeg_frame(plain).orientation == 1  # type: ignore[union-attr]
    for value in range(1, 9):
        exif = Image.Exif()
        exif[0x010F] = "maker"  # a tag before it
        exif[0x0112] = value
        exif[0x0131] = "software"
        buf = io.BytesIO()
        Image.open(io.BytesIO(plain)).save(buf, "JPEG", exif=exif)
        data = buf.getvalue()
        assert jpeg_frame(data).orientation == _orientation_by_pillow(data) == value  # type: ignore[union-attr]
        for order in ("II", "MM"):
            bo = "little" if order == "II" else "big"
            short = value.to_bytes(2, bo) + b"\0\0"
            data = _with_segment(plain, 0xE1, b"Exif\0\0" + _tiff(order, [(0x0100, 3, 1, b"\0\0\0\0"),
                                                                        (0x0112, 3, 1, short)]))
            assert jpeg_frame(data).orientation == _orientation_by_pillow(data) == value, order  # type: ignore
    no_tag = _with_segment(plain, 0xE1, b"Exif\0\0" + _tiff("II", [(0x0100, 3, 1, b"\x05\0\0\0")]))
    assert jpeg_frame(no_tag).orientation == _orientation_by_pillow(no_tag) == 1  # type: ignore[union-attr]
    six = _with_segment(plain, 0xE1, b"Exif\0\0" + _tiff("II", [(0x0112, 3, 1, b"\x06\0\0\0")]))
    unknown = {
        "two EXIF segments": _with_segment(six, 0xE1, b"Exif\0\0" + _tiff("II", [(0x0112, 3, 1, b"\x03\0\0\0")])),
        "truncated block": _with_segment(plain, 0xE1, b"Exif\0\0II*\0\x08\0\0\0\x05\0"),
        "not TIFF": _with_segment(plain, 0xE1, b"Exif\0\0XX*\0\x08\0\0\0\0\0"),
        "a LONG, not a SHORT": _with_segment(plain, 0xE1, b"Exif\0\0" + _tiff("II", [(0x0112, 4, 1, b"\x06\0\0\0")])),
        "out of range": _with_segment(plain, 0xE1, b"Exif\0\0" + _tiff("II", [(0x0112, 3, 1, b"\x09\0\0\0")])),
        "XMP": _with_segment(plain, 0xE1, b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta><rdf:Description "
                                          b'tiff:Orientation="6"/></x:xmpmeta>'),
    }
    for why, data in unknown.items():
        frame = jpeg_frame(data)
        assert frame is not None and frame.orientation == 0 and frame[:2] == (20, 12), why
    assert _orientation_by_pillow(unknown["XMP"]) == 6  # why XMP must go to Pillow
