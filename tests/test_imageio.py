"""Odd and broken images arrive as 8-bit RGB in display orientation, or as one clear error."""

from __future__ import annotations

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
        assert jpeg_frame(f.read_bytes()) == _frame_by_pillow(f), f.name
    assert jpeg_frame((tmp_path / "cmyk.jpg").read_bytes())[2] == 4  # type: ignore[index]
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
        assert jpeg_frame(f.read_bytes()) == _frame_by_pillow(f), f.name
