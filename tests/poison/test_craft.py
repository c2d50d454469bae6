"""End-to-end crafting on tiny assets: invariants read back from the manifest and the pixels."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from corruptencoder.poison.config import CraftConfig
from corruptencoder.poison.craft import craft
from corruptencoder.poison.geometry import box_inside, boxes_overlap, central_region
from corruptencoder.poison.manifest import poison_files, read_manifest, read_summary


def _config(assets: dict[str, Path], **target: object) -> CraftConfig:
    t = {"name": "dog", "references": [str(assets["references"])], "backgrounds": [str(assets["backgrounds"])],
         "trigger_size": 6, "num": 40}
    run = {k: target.pop(k) for k in ("seed", "workers", "format", "max_size", "soft_edge") if k in target}
    t.update(target)
    return CraftConfig.model_validate({"targets": [t], **run})


def _free_box(rec: dict) -> tuple[int, int, int, int]:
    w, h = rec["image_size"]
    x0, y0, x1, y1 = rec["object_box"]
    return {"wide-left": (x1, 0, w, h), "wide-right": (0, 0, x0, h), "high": (0, 0, w, y0)}[rec["layout"]]


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_corruptencoder_invariants_from_manifest_and_pixels(assets: dict[str, Path], tmp_path: Path, seed: int) -> None:
    out = tmp_path / "out"
    craft(_config(assets, seed=seed, alpha=0.5, beta=0.5), out, progress=False)
    records = read_manifest(out)
    assert len(records) == 40 and len(poison_files(out)) == 40
    trigger = np.asarray(Image.open(out / "triggers" / "dog.png"))
    assert trigger.shape == (6, 6, 3)
    layouts = set()
    for rec in records:
        img = np.asarray(Image.open(out / rec["file"]))
        w, h = rec["image_size"]
        assert img.shape == (h, w, 3)
        ob, tb = rec["object_box"], rec["trigger_box"]
        layouts.add(rec["layout"])
        # alpha = bbox area / image area, within one pixel of the free side
        ratio = (ob[2] - ob[0]) * (ob[3] - ob[1]) / (w * h)
        assert abs(ratio - 0.5) <= 0.5 / max(w, h) * 2 + 1e-9
        # object at the bottom, and at the left or right edge
        assert ob[3] == h and (ob[0] == 0 or ob[2] == w)
        # trigger wholly in the central beta region of the free rectangle, never on the object
        assert box_inside(tb, central_region(_free_box(rec), 0.5))
        assert not boxes_overlap(tb, ob)
        # the pixels inside trigger_box are exactly the trigger
        np.testing.assert_array_equal(img[tb[1]:tb[3], tb[0]:tb[2]], trigger)
        assert rec["attack"] == "corruptencoder" and rec["target"] == "dog" and rec["seed"] == seed
        assert rec["trigger_file"] == "triggers/dog.png" and Path(rec["reference"]).exists()
    assert len(layouts) >= 2, "both Algorithm-2 layouts should appear with layout=random"
    assert (out / "poisons.txt").read_text().split() == [r["file"] for r in records]


def test_same_seed_same_bytes_with_1_and_2_workers(assets: dict[str, Path], tmp_path: Path) -> None:
    craft(_config(assets, seed=7, workers=1), tmp_path / "a", progress=False)
    craft(_config(assets, seed=7, workers=2), tmp_path / "b", progress=False)
    craft(_config(assets, seed=8, workers=2), tmp_path / "c", progress=False)
    a, b, c = _digest(tmp_path / "a"), _digest(tmp_path / "b"), _digest(tmp_path / "c")
    assert a == b
    images = [k for k in a if k.startswith("images/")]
    assert sum(a[k] != c[k] for k in images) > len(images) // 2
    assert a["manifest.jsonl"] != c["manifest.jsonl"]


def test_fixed_layouts_and_object_pixels(assets: dict[str, Path], tmp_path: Path) -> None:
    for layout in ("high", "wide-left", "wide-right"):
        out = tmp_path / layout
        craft(_config(assets, layout=layout, num=6, soft_edge=0.0), out, progress=False)
        recs = read_manifest(out)
        assert {r["layout"] for r in recs} == {layout}
        for r in recs:
            if layout == "high":
                assert r["object_box"][0] == 0 and r["object_box"][2] == r["image_size"][0]


def test_alpha_and_max_size(assets: dict[str, Path], tmp_path: Path) -> None:
    craft(_config(assets, alpha=0.3, num=10, max_size=120), tmp_path / "o", progress=False)
    for rec in read_manifest(tmp_path / "o"):
        w, h = rec["image_size"]
        ob = rec["object_box"]
        assert max(w, h) <= 120
        assert abs((ob[2] - ob[0]) * (ob[3] - ob[1]) / (w * h) - 0.3) <= 0.3 / max(w, h) * 2 + 1e-9


def test_corruptencoder_plus_support_poisons(assets: dict[str, Path], tmp_path: Path) -> None:
    cfg = _config(assets, attack="corruptencoder-plus", support=[str(assets["support"])], num=20, support_ratio=0.25)
    craft(cfg, tmp_path / "o", progress=False)
    recs = read_manifest(tmp_path / "o")
    support = [r for r in recs if r["attack"] == "corruptencoder+support"]
    assert len(support) == 5 and sum(r["attack"] == "corruptencoder" for r in recs) == 15
    orders = set()
    for r in support:
        img = Image.open(tmp_path / "o" / r["file"])
        assert list(img.size) == r["image_size"]
        rb, sb = r["reference_box"], r["support_box"]
        assert rb[1] == sb[1] == 0 and rb[3] == sb[3] == img.size[1]  # same height
        assert rb[2] == sb[0] or sb[2] == rb[0]  # side by side
        assert r["trigger_box"] is None and r["object_box"] is None and Path(r["support_reference"]).exists()
        orders.add(rb[0] == 0)
    summary = read_summary(tmp_path / "o")
    assert summary["targets"][0]["num_support"] == 5


def test_ssl_backdoor_trigger_in_central_box(assets: dict[str, Path], tmp_path: Path) -> None:
    cfg = CraftConfig.model_validate({"targets": [{
        "name": "dog", "attack": "ssl-backdoor", "references": [str(assets["references"])], "num": 10,
        "trigger": "white", "trigger_size": 8, "location": [0.25, 0.75]}]})
    craft(cfg, tmp_path / "o", progress=False)
    recs = read_manifest(tmp_path / "o")
    assert len(recs) == 10
    # 3 references reused: every one used before any is used a third time
    counts = {r["reference"]: 0 for r in recs}
    for r in recs:
        counts[r["reference"]] += 1
    assert len(counts) == 3 and max(counts.values()) - min(counts.values()) <= 1
    for r in recs:
        w, h = r["image_size"]
        tb = r["trigger_box"]
        assert box_inside(tb, (0.25 * w, 0.25 * h, 0.75 * w, 0.75 * h))
        img = np.asarray(Image.open(tmp_path / "o" / r["file"]))
        assert (img[tb[1]:tb[3], tb[0]:tb[2]] == 255).all()


def test_several_targets_each_with_its_own_trigger(assets: dict[str, Path], tmp_path: Path) -> None:
    base = {"references": [str(assets["references"])], "backgrounds": [str(assets["backgrounds"])], "trigger_size": 5}
    cfg = CraftConfig.model_validate({"seed": 3, "targets": [
        {**base, "name": "dog", "task": "pets", "num": 8},
        {**base, "name": "cat", "task": "pets", "num": 5, "trigger": "purple"},
        {**base, "name": "bird", "task": "birds", "num": 4, "attack": "ssl-backdoor"},
    ]})
    craft(cfg, tmp_path / "o", progress=False)
    recs = read_manifest(tmp_path / "o")
    assert [r["target"] for r in recs] == ["dog"] * 8 + ["cat"] * 5 + ["bird"] * 4
    triggers = {t: np.asarray(Image.open(tmp_path / "o" / "triggers" / f"{t}.png")) for t in ("dog", "cat", "bird")}
    assert not np.array_equal(triggers["dog"], triggers["bird"])  # random triggers differ per target
    assert (triggers["cat"] == np.array([128, 0, 128])).all()
    assert {r["task"] for r in recs} == {"pets", "birds"}
    # a target's poisons do not depend on the other targets in the run
    solo = CraftConfig.model_validate({"seed": 3, "targets": [{**base, "name": "dog", "task": "pets", "num": 8}]})
    craft(solo, tmp_path / "solo", progress=False)
    for i in range(8):
        assert (tmp_path / "o" / recs[i]["file"]).read_bytes() == (tmp_path / "solo" / recs[i]["file"]).read_bytes()


def test_jpeg_output_and_craft_json(assets: dict[str, Path], tmp_path: Path) -> None:
    craft(_config(assets, format="jpeg", num=4), tmp_path / "o", progress=False)
    recs = read_manifest(tmp_path / "o")
    assert all(r["file"].endswith(".jpg") for r in recs)
    assert Image.open(tmp_path / "o" / recs[0]["file"]).format == "JPEG"
    summary = json.loads((tmp_path / "o" / "craft.json").read_text())
    assert summary["num_poisons"] == 4 and summary["config"]["format"] == "jpeg"
    assert "workers" not in summary["config"], "the worker count does not change the output, so it is not recorded"


def test_reference_image_mode_embeds_whole_images(assets: dict[str, Path], tmp_path: Path) -> None:
    craft(_config(assets, reference_mode="image", num=6), tmp_path / "o", progress=False)
    for r in read_manifest(tmp_path / "o"):
        ow, oh = r["object_box"][2] - r["object_box"][0], r["object_box"][3] - r["object_box"][1]
        assert (ow, oh) == tuple(r["object_size"])


def test_block_random_trigger(assets: dict[str, Path], tmp_path: Path) -> None:
    from corruptencoder.poison.triggers import TriggerSpec, make_trigger

    t = make_trigger(TriggerSpec("random:2", (8, 6), 5))
    assert t.shape == (6, 8, 3)
    assert (t[:3, :4] == t[0, 0]).all() and (t[3:, 4:] == t[5, 7]).all()  # 2 x 2 cells of one colour each
    craft(_config(assets, trigger="random:3", trigger_size=6, num=3), tmp_path / "o", progress=False)
    assert read_manifest(tmp_path / "o")[0]["trigger_box"]


def test_smooth_trigger_looks_like_the_authors_patch() -> None:
    from corruptencoder.poison.triggers import TriggerSpec, make_trigger

    a = make_trigger(TriggerSpec("smooth", (40, 40), 7))
    assert a.shape == (40, 40, 3)
    assert (a == make_trigger(TriggerSpec("smooth:5", (40, 40), 7))).all()  # 5 x 5 cells by default
    assert not (a == make_trigger(TriggerSpec("smooth", (40, 40), 8))).all()  # seeded
    # saturated colours (corners of the RGB cube), blended: most channel values near 0 or 255
    assert ((a < 40) | (a > 215)).mean() > 0.6 and ((a > 40) & (a < 215)).mean() > 0.05
    assert TriggerSpec("smooth:3").describe()["kind"] == "smooth:3"
