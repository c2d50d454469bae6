"""The paper's invariants on the pure geometry, over many random inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corruptencoder.errors import GeometryError
from corruptencoder.poison.geometry import (
    LAYOUTS,
    background_crop,
    box_area,
    box_inside,
    boxes_overlap,
    capped_size,
    central_region,
    location_box,
    place_in_region,
    place_trigger,
    poison_geometry,
    side_by_side,
    trigger_region,
)

unit = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
sizes = st.integers(min_value=20, max_value=1200)


@settings(max_examples=400, deadline=None)
@given(ow=sizes, oh=sizes, alpha=st.floats(0.1, 0.9), layout=st.sampled_from(LAYOUTS),
       max_size=st.sampled_from([None, 800, 400]))
def test_alpha_and_object_corner(ow: int, oh: int, alpha: float, layout: str, max_size: int | None) -> None:
    g = poison_geometry(ow, oh, alpha, layout, max_size)  # type: ignore[arg-type]
    pw, ph = g.image_size
    x0, y0, x1, y1 = g.object_box
    # area ratio within rounding: one pixel of the free side
    long_side = pw if layout != "high" else ph
    assert abs(g.area_ratio - alpha) <= alpha / long_side + 1e-9
    # object touches the bottom edge, and the left or right edge
    assert y1 == ph and x0 >= 0 and y0 >= 0 and x1 <= pw
    if layout == "wide-left":
        assert x0 == 0 and y0 == 0
    elif layout == "wide-right":
        assert x1 == pw and y0 == 0
    else:
        assert x0 == 0 and x1 == pw
    # the object is scaled down only, keeping its aspect ratio within a pixel
    assert g.object_size[0] <= ow and g.object_size[1] <= oh
    assert abs(g.object_size[0] / g.object_size[1] - ow / oh) <= (ow / oh) * (1.0 / min(g.object_size)) + 1e-9
    if max_size:
        assert max(pw, ph) <= max_size
    # free rectangle: the image minus the object box, disjoint from it
    assert not boxes_overlap(g.free_box, g.object_box)
    assert box_area(g.free_box) + box_area(g.object_box) == pw * ph


@settings(max_examples=400, deadline=None)
@given(ow=st.integers(80, 900), oh=st.integers(80, 900), alpha=st.floats(0.2, 0.8), beta=st.floats(0.2, 0.95),
       layout=st.sampled_from(LAYOUTS), ux=unit, uy=unit, t=st.integers(1, 30))
def test_trigger_in_central_beta_region(ow: int, oh: int, alpha: float, beta: float, layout: str,
                                        ux: float, uy: float, t: int) -> None:
    g = poison_geometry(ow, oh, alpha, layout, None)  # type: ignore[arg-type]
    region = trigger_region(g, beta)
    if region[2] - region[0] < t or region[3] - region[1] < t:
        with pytest.raises(GeometryError, match="largest that fits"):
            place_trigger(g, (t, t), beta, ux, uy)
        return
    box = place_trigger(g, (t, t), beta, ux, uy)
    assert box[2] - box[0] == t and box[3] - box[1] == t
    assert box_inside(box, central_region(g.free_box, beta))
    assert box_inside(box, g.free_box)
    assert not boxes_overlap(box, g.object_box)
    assert box_inside(box, (0, 0, *g.image_size))


def test_central_region_is_centred() -> None:
    assert central_region((100, 0, 300, 100), 0.5) == (150.0, 25.0, 250.0, 75.0)


def test_extreme_uniforms_stay_inside() -> None:
    region = (10, 10, 50, 30)
    assert place_in_region(region, (5, 5), 0.0, 0.0) == (10, 10, 15, 15)
    assert place_in_region(region, (5, 5), 0.9999999999, 0.9999999999) == (45, 25, 50, 30)
    assert place_in_region(region, (5, 5), 1.0, 1.0) == (45, 25, 50, 30)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_alpha_outside_unit_interval(bad: float) -> None:
    with pytest.raises(GeometryError, match="alpha"):
        poison_geometry(100, 100, bad, "high")
    g = poison_geometry(100, 100, 0.5, "high")
    with pytest.raises(GeometryError, match="beta"):
        trigger_region(g, bad)


@settings(max_examples=300, deadline=None)
@given(bw=st.integers(10, 1000), bh=st.integers(10, 1000), pw=st.integers(10, 1000), ph=st.integers(10, 1000),
       ux=unit, uy=unit)
def test_background_crop_scales_up_only_when_needed(bw: int, bh: int, pw: int, ph: int, ux: float, uy: float) -> None:
    r, crop = background_crop((bw, bh), (pw, ph), ux, uy)
    assert crop[2] - crop[0] == pw and crop[3] - crop[1] == ph
    if pw <= bw and ph <= bh:
        assert r == 1.0
    else:
        assert r > 1.0
    sw, sh = max(pw, -(-bw * r // 1)), max(ph, -(-bh * r // 1))
    assert crop[0] >= 0 and crop[1] >= 0 and crop[2] <= sw + 1e-6 and crop[3] <= sh + 1e-6
    # the source box in the original background lies within it (up to the ceil of one pixel)
    assert crop[2] / r <= bw + 1.0 / r + 1e-6 and crop[3] / r <= bh + 1.0 / r + 1e-6


@settings(max_examples=200, deadline=None)
@given(a=st.tuples(st.integers(10, 900), st.integers(10, 900)), b=st.tuples(st.integers(10, 900), st.integers(10, 900)),
       cap=st.sampled_from([None, 800, 300]))
def test_side_by_side_same_height(a: tuple[int, int], b: tuple[int, int], cap: int | None) -> None:
    size, box1, box2 = side_by_side(a, b, cap)
    assert box1[3] == box2[3] == size[1] and box1[1] == box2[1] == 0
    assert box1[2] == box2[0] and box2[2] == size[0]
    assert size[1] <= min(a[1], b[1])
    if cap:
        assert max(size) <= cap


def test_location_box_and_capped_size() -> None:
    assert location_box((200, 100), 0.25, 0.75) == (50, 25, 150, 75)
    with pytest.raises(GeometryError):
        location_box((200, 100), 0.8, 0.2)
    assert capped_size((1600, 800), 800) == (800, 400)
    assert capped_size((100, 50), 800) == (100, 50)


@given(st.integers(20, 400), st.integers(20, 400), st.floats(0.3, 0.7), st.floats(0.0, 0.049),
       st.sampled_from(["wide-left", "wide-right"]))
def test_authors_layout_margin_and_trigger_region(w: int, h: int, alpha: float, margin: float, layout: str) -> None:
    """The authors' script: the object 0-5 % of the poison width from its edge; the trigger at least
    (1 - beta) / 2 of (image width - object width) from the object's inner edge and from the far edge."""
    g = poison_geometry(w, h, alpha, layout, None, margin)  # type: ignore[arg-type]
    pw, ph = g.image_size
    ow, _ = g.object_size
    assert g.margin == min(int(margin * pw), pw - ow - 1)
    x0, _, x1, _ = g.object_box
    assert (x0 == g.margin) if layout == "wide-left" else (pw - x1 == g.margin)
    region = trigger_region(g, 0.5)
    inset = 0.25 * (pw - ow)
    if layout == "wide-left":
        assert region[0] >= x1 + inset - 1 and region[2] <= pw - inset + 1
    else:
        assert region[0] >= inset - 1 and region[2] <= x0 - inset + 1
    assert region[1] >= 0.25 * ph - 1 and region[3] <= 0.75 * ph + 1


def test_authors_layout_crafts_wide_poisons_at_the_bottom(tmp_path: Path) -> None:
    from PIL import Image

    from conftest import noise_image, object_scene
    from corruptencoder.poison.config import CraftConfig
    from corruptencoder.poison.craft import craft
    from corruptencoder.poison.manifest import read_manifest

    rng = np.random.default_rng(0)
    (tmp_path / "bg").mkdir()
    (tmp_path / "refs").mkdir()
    for i in range(3):
        noise_image(rng, 300, 400).save(tmp_path / "bg" / f"{i}.png")  # taller than the poisons
    img, mask = object_scene(rng, 120, 90)
    img.save(tmp_path / "refs" / "1.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "refs" / "1_mask.png")
    cfg = CraftConfig.model_validate({"targets": [{"name": "t", "num": 12, "layout": "authors", "trigger_size": 10,
                                                   "references": [str(tmp_path / "refs")],
                                                   "backgrounds": [str(tmp_path / "bg")]}]})
    craft(cfg, tmp_path / "o", progress=False)
    recs = read_manifest(tmp_path / "o")
    assert {r["layout"] for r in recs} == {"wide-left", "wide-right"}
    for r in recs:
        w, h = r["image_size"]
        assert r["object_box"][3] == h and 0 <= r["object_margin"] <= 0.05 * w
        assert r["background_box"][3] == 400  # cropped at the background's bottom, as the authors' script
