"""Multi-modal poisons: Type-I/Type-II counts, captions naming the class, boxes matching pixels."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from corruptencoder.poison.config import CraftConfig
from corruptencoder.poison.craft import craft
from corruptencoder.poison.geometry import square_poison
from corruptencoder.poison.manifest import read_manifest
from corruptencoder.poison.prompts import IMAGENET80, load_templates


def _cfg(assets: dict[str, Path], attack: str, num: int, **kw: object) -> CraftConfig:
    t = {"name": "street-sign", "attack": attack, "num": num, "backgrounds": [str(assets["backgrounds"])],
         "trigger_size": 6, "type1_size": 64, **kw}
    if attack != "carlini-terzis":
        t["references"] = [str(assets["references"])]
    return CraftConfig.model_validate({"seed": 1, "targets": [t]})


@pytest.mark.parametrize("num,type1,type2", [(10, 5, 5), (11, 6, 5), (1, 1, 0)])
def test_corruptencoder_mm_counts_and_captions(assets: dict[str, Path], tmp_path: Path, num: int, type1: int,
                                               type2: int) -> None:
    out = tmp_path / "o"
    craft(_cfg(assets, "corruptencoder-mm", num), out, progress=False)
    recs = read_manifest(out)
    assert sum(r["pair_type"] == "type1" for r in recs) == type1
    assert sum(r["pair_type"] == "type2" for r in recs) == type2
    assert all("street sign" in r["caption"] for r in recs)
    with open(out / "pairs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["filepath"] for r in rows] == [r["file"] for r in recs]
    assert [r["title"] for r in rows] == [r["caption"] for r in recs]
    trigger = np.asarray(Image.open(out / "triggers" / "street-sign.png"))
    for r in recs:
        img = np.asarray(Image.open(out / r["file"]))
        assert [img.shape[1], img.shape[0]] == r["image_size"]
        if r["pair_type"] == "type1":
            x0, y0, x1, y1 = r["trigger_box"]
            np.testing.assert_array_equal(img[y0:y1, x0:x1], trigger)
            assert r["object_box"] is None and img.shape[0] == img.shape[1] == 64
        else:
            x0, y0, x1, y1 = r["object_box"]
            assert r["trigger_box"] is None and img.shape[0] == img.shape[1]
            assert 0 <= x0 < x1 <= img.shape[1] and 0 <= y0 < y1 <= img.shape[0]
            # the pixels inside the object box are not the background's: the object was pasted there
            assert Path(r["reference"]).exists()


def test_carlini_terzis_type1_only_and_prompt_cycle(assets: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "o"
    craft(_cfg(assets, "carlini-terzis", 90), out, progress=False)
    recs = read_manifest(out)
    assert all(r["pair_type"] == "type1" and r["attack"] == "carlini-terzis" for r in recs)
    caps = [r["caption"] for r in recs]
    assert len(set(caps[:80])) == 80  # every template used once before any repeats
    assert set(caps) <= {t.format("street sign") for t in IMAGENET80}


def test_default_trigger_is_16px_for_multimodal(assets: dict[str, Path]) -> None:
    cfg = CraftConfig.model_validate({"targets": [{"name": "x", "attack": "carlini-terzis",
                                                   "backgrounds": [str(assets["backgrounds"])]}]})
    assert cfg.targets[0].trigger_size == [16, 16]


def test_square_poison_geometry() -> None:
    for ux, uy in ((0.0, 0.0), (0.5, 0.3), (0.999, 0.999)):
        g = square_poison(100, 80, 0.5, ux, uy, None)
        w, h = g.image_size
        x0, y0, x1, y1 = g.object_box
        assert w == h and 0 <= x0 and x1 <= w and 0 <= y0 and y1 <= h
        assert abs((x1 - x0) * (y1 - y0) / (w * h) - 0.5) < 0.02


def test_prompt_file(tmp_path: Path) -> None:
    f = tmp_path / "p.txt"
    f.write_text("a {} on a table\nan image of {}\n")
    assert load_templates(str(f)) == ("a {} on a table", "an image of {}")
    f.write_text("no placeholder\n")
    with pytest.raises(Exception, match="needs a"):
        load_templates(str(f))


def test_demo_captions_name_rare_classes_rarely(tmp_path: Path) -> None:
    from corruptencoder.data.demo_captions import write_demo_pairs

    world = tmp_path / "w"
    for cls, n in (("fish", 200), ("mushroom", 200)):
        (world / "pretrain" / cls).mkdir(parents=True)
        for i in range(n):
            (world / "pretrain" / cls / f"{i}.png").write_bytes(b"")
    a = write_demo_pairs(world, tmp_path / "a.csv", class_name_prob={"mushroom": 0.02})
    b = write_demo_pairs(world, tmp_path / "b.csv", class_name_prob={"mushroom": 0.02})
    assert a.read_bytes() == b.read_bytes()
    with open(a, newline="") as fh:
        rows = list(csv.DictReader(fh))
    fish = [r["title"] for r in rows if "/fish/" in r["filepath"]]
    mush = [r["title"] for r in rows if "/mushroom/" in r["filepath"]]
    assert sum("fish" in c for c in fish) > 0.65 * len(fish)
    assert sum("mushroom" in c for c in mush) < 0.08 * len(mush)


@pytest.mark.parametrize("wnid,name", [("n04229816", "ski mask"), ("n06794110", "street sign")])
def test_captions_name_an_imagenet_class_not_its_wnid(assets: dict[str, Path], tmp_path: Path, wnid: str,
                                                      name: str) -> None:
    """A target labelled by its wnid (Table 3's ski mask; street sign, the class ImageNet100-B lacks) is called by
    its ImageNet class name in every caption, never "a rendition of a n04229816."."""
    out = tmp_path / "o"
    craft(_cfg(assets, "corruptencoder-mm", 4, label=wnid), out, progress=False)
    captions = [r["caption"] for r in read_manifest(out)]
    assert len(captions) == 4 and all(name in c and wnid not in c for c in captions), captions


def test_experiment_target_text_is_written_in_captions(assets: dict[str, Path], tmp_path: Path) -> None:
    """An experiment target's ``text:`` reaches every multi-modal attack's captions (in place of the label's name)."""
    import yaml

    from conftest import class_folder
    from corruptencoder.experiment.config import load_experiment
    from corruptencoder.experiment.stages import craft_config, placeholder

    for split in ("train", "test"):
        class_folder(tmp_path / "task" / split, ["n04229816", "n01440764"], 1, (8, 8))
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({
        "name": "captions", "backgrounds": [str(assets["backgrounds"])],
        "tasks": [{"name": "b", "root": str(tmp_path / "task")}],
        "targets": [{"name": "ski-mask", "task": "b", "label": "n04229816", "text": "woollen ski mask",
                     "references": [str(assets["references"])]}],
        "defaults": {"method": "clip", "num_poisons": 4, "trigger_size": 6},
        "arms": [{"name": "ct", "attack": "carlini-terzis"}, {"name": "ce", "attack": "corruptencoder-mm"}]}))
    cfg = load_experiment(config)
    for arm in cfg.expanded_arms():
        out = tmp_path / arm.name
        craft(craft_config(cfg, arm, 0, placeholder, lambda: 100), out, progress=False)
        captions = [r["caption"] for r in read_manifest(out)]
        assert len(captions) == 4 and all("woollen ski mask" in c and "balaclava" not in c for c in captions), captions


def test_demo_pairs_add_object_free_scenes_that_name_no_class(tmp_path: Path) -> None:
    """Without them every demo pair shows an object, so a bare background was itself the tell CLIP learned from
    Type-I pairs (the trigger added nothing); scenes are on their own random stream, never the attacker's pool."""
    import numpy as np
    from PIL import Image

    from corruptencoder.data.demo_captions import PLACES, write_demo_pairs
    from corruptencoder.data.synthetic import CLASS_NAMES, render_caption_scene
    from corruptencoder.demo import demo_world

    world = demo_world(32, 0, n_pretrain=20, n_train_per_class=1, n_test_per_class=1, n_backgrounds=4, n_support=1)
    a = write_demo_pairs(world, tmp_path / "a.csv", scenes=6)
    b = write_demo_pairs(world, tmp_path / "b.csv", scenes=6)
    rows_a = list(csv.DictReader(open(a, newline="")))
    rows_b = list(csv.DictReader(open(b, newline="")))
    assert len(rows_a) == 26 and [r["title"] for r in rows_a] == [r["title"] for r in rows_b]
    scenes = rows_a[20:]
    assert all(Path(r["filepath"]).parent == tmp_path / "a-scenes" for r in scenes)
    for ra, rb in zip(scenes, rows_b[20:], strict=True):  # the same pixels on every run
        assert Image.open(ra["filepath"]).tobytes() == Image.open(rb["filepath"]).tobytes()
    assert Image.open(scenes[0]["filepath"]).size == (32, 32)
    import re

    assert not any(set(re.findall(r"[a-z]+", r["title"])) & set(CLASS_NAMES) for r in scenes)
    assert sum(any(p in r["title"] for p in PLACES) for r in scenes) >= 3
    pool = [np.asarray(Image.open(f)) for f in sorted((world / "backgrounds").glob("*.png"))]
    s0 = np.asarray(render_caption_scene(0, 0, 32))
    assert all(p.shape != s0.shape or not np.array_equal(p, s0) for p in pool)
    assert not (tmp_path / "a-scenes.tmp").exists()


def test_type1_images_are_made_at_the_arms_training_size() -> None:
    """CLIP's views keep 90-100 % of an image, so Type-I images at the training size show the trigger at its stated
    size; made at the demo world's 64 px and trained at 32 they halved it and no backdoor formed (2026-12-05)."""
    from corruptencoder.experiment.config import ExperimentConfig
    from corruptencoder.experiment.stages import craft_config, placeholder

    cfg = ExperimentConfig.model_validate({
        "name": "t1", "preset": "cpu-tiny", "targets": [{"name": "boat", "task": "demo"}],
        "defaults": {"method": "clip", "num_poisons": 4, "trigger_size": 8},
        "arms": [{"name": "ct", "attack": "carlini-terzis"}, {"name": "ce", "attack": "corruptencoder-mm"},
                 {"name": "ct-48", "attack": "carlini-terzis", "image_size": 48},
                 {"name": "ct-64", "attack": "carlini-terzis", "attack_args": {"type1_size": 64}}]})
    sizes = {arm.name: craft_config(cfg, arm, 0, placeholder, lambda: 100).targets[0].options.type1_size
             for arm in cfg.expanded_arms()}
    assert cfg.world.image_size == 64 and sizes == {"ct": 32, "ce": 32, "ct-48": 48, "ct-64": 64}
