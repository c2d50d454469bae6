"""Reference objects from labelme JSON, mask PNGs in several encodings, RGBA cut-outs; discovery."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import object_scene, shared_assets, write_labelme
from corruptencoder.errors import MaskError, UserError
from corruptencoder.poison.objects import (
    LabelOptions,
    ReferenceSource,
    discover_references,
    load_image_mask,
    load_labelme,
    load_references,
)


def test_labelme_polygon_with_nmask_hole_and_stale_image_path(tmp_path: Path) -> None:
    img = Image.fromarray(np.full((50, 60, 3), 90, np.uint8))
    # a stale imagePath that points at a *different* existing image must not be used
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "other.jpg")
    path = write_labelme(tmp_path / "a.json", img,
                         [("mask", [[10, 10], [40, 10], [40, 40], [10, 40]]),
                          ("nmask", [[20, 20], [30, 20], [30, 30], [20, 30]])], image_path="other.jpg")
    ref = load_labelme(path)
    assert ref.size == (60, 50)
    assert ref.matte is not None
    assert ref.matte[15, 15] == 255 and ref.matte[25, 25] == 0 and ref.matte[5, 5] == 0
    assert ref.bbox == (10, 10, 41, 41)
    assert ref.object_rgba().size == (31, 31)


def test_labelme_without_embedded_image_reads_image_path(tmp_path: Path) -> None:
    img = Image.fromarray(np.full((40, 40, 3), 200, np.uint8))
    img.save(tmp_path / "pic.png")
    path = write_labelme(tmp_path / "pic.json", img, [("dog", [[5, 5], [30, 5], [30, 30]])], image_path="pic.png",
                         embed=False)
    assert load_labelme(path).bbox[0] == 5


def test_labelme_named_label_missing(tmp_path: Path) -> None:
    img = Image.fromarray(np.full((40, 40, 3), 200, np.uint8))
    path = write_labelme(tmp_path / "a.json", img, [("cat", [[5, 5], [30, 5], [30, 30]])])
    with pytest.raises(MaskError, match=r"a.json: no shape labelled dog \(found: cat\)"):
        load_labelme(path, LabelOptions(keep=("dog",)))


def test_labelme_empty_mask_after_holes(tmp_path: Path) -> None:
    img = Image.fromarray(np.full((40, 40, 3), 200, np.uint8))
    path = write_labelme(tmp_path / "a.json", img, [("mask", [[5, 5], [20, 5], [20, 20], [5, 20]]),
                                                    ("nmask", [[0, 0], [39, 0], [39, 39], [0, 39]])])
    with pytest.raises(MaskError, match="empty"):
        load_labelme(path)


@pytest.mark.parametrize("encoding", ["binary255", "binary01", "palette", "rgb128", "gray16"])
def test_mask_png_encodings(tmp_path: Path, encoding: str) -> None:
    rng = np.random.default_rng(0)
    img, mask = object_scene(rng, 50, 40)
    img.save(tmp_path / "x.png")
    m8 = mask.astype(np.uint8)
    if encoding == "binary255":
        Image.fromarray(m8 * 255, "L").save(tmp_path / "x_mask.png")
    elif encoding == "binary01":
        Image.fromarray(m8, "L").save(tmp_path / "x_mask.png")
    elif encoding == "palette":
        pal = Image.fromarray(m8, "P")
        pal.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
        arr = np.asarray(pal).copy()
        arr[0:3, 0:3] = 2  # an 'nmask' hole index elsewhere must not count as object
        pal = Image.fromarray(arr, "P")
        pal.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
        pal.save(tmp_path / "x_mask.png")
    elif encoding == "rgb128":
        rgb = np.zeros((*mask.shape, 3), np.uint8)
        rgb[mask] = (128, 0, 0)
        Image.fromarray(rgb, "RGB").save(tmp_path / "x_mask.png")
    else:
        Image.fromarray(m8.astype(np.uint16) * 65535).save(tmp_path / "x_mask.png")
    ref = load_image_mask(tmp_path / "x.png", tmp_path / "x_mask.png")
    assert ref.matte is not None
    np.testing.assert_array_equal(ref.matte > 0, mask)


def test_mask_size_mismatch(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "x.png")
    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(tmp_path / "x_mask.png")
    with pytest.raises(MaskError, match=r"x_mask.png: mask is 40x40 but its image x.png is 50x40"):
        load_image_mask(tmp_path / "x.png", tmp_path / "x_mask.png")


def test_empty_mask_png(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "x.png")
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "x_mask.png")
    with pytest.raises(MaskError, match="x.png: the object mask is empty"):
        load_image_mask(tmp_path / "x.png", tmp_path / "x_mask.png")


def test_discovery_one_reference_per_stem_and_rgba(assets: dict[str, Path]) -> None:
    refs = assets["references"]
    # the same object as a plain JPEG next to its JSON must not count twice
    Image.new("RGB", (10, 10)).save(refs / "1.jpg")
    sources = discover_references(refs)
    assert [(s.kind, Path(s.path).name) for s in sources] == [("labelme", "1.json"), ("mask", "2.jpg"),
                                                              ("image", "3.png")]
    loaded = load_references(sources)
    assert all(r.has_object for r in loaded)  # 3.png is an RGBA cut-out


def test_plain_image_refused_as_object(tmp_path: Path) -> None:
    Image.new("RGB", (20, 20)).save(tmp_path / "plain.jpg")
    with pytest.raises(MaskError, match="needs a mask"):
        ReferenceSource("image", str(tmp_path / "plain.jpg")).load(need_object=True)
    assert not ReferenceSource("image", str(tmp_path / "plain.jpg")).load().has_object


def test_missing_reference_path(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        discover_references(tmp_path / "nope")


@pytest.mark.assets
def test_real_annotations_all_parse() -> None:
    root = shared_assets() / "references"
    for cls in ("hunting-dog", "komondor", "lorikeet", "rottweiler"):
        sources = discover_references(root / cls)
        assert [s.kind for s in sources] == ["labelme"] * 3, cls
        for src in sources:
            ref = src.load(need_object=True)
            export = root / cls / Path(src.path).stem
            # the JSON polygons (with nmask holes) agree with labelme's own exported palette mask
            exported = load_image_mask(export / "img.png", export / "label.png").matte
            assert ref.size == (exported.shape[1], exported.shape[0])
            iou = ((ref.matte > 0) & (exported > 0)).sum() / ((ref.matte > 0) | (exported > 0)).sum()
            assert iou > 0.97, (src.path, iou)
    # komondor JSONs name images that do not exist / are other files: the embedded image is used
    k1 = load_labelme(root / "komondor" / "1.json")
    assert k1.size == (605, 480)
