"""Every configs/paper file runs end to end on a miniature of its data layouts (marked slow; CI runs it).

The miniature: ImageNet ``train/<wnid>``, ``val/<wnid>`` with a few tiny images per class (fake
ImageNet100-A/B class lists holding every wnid the configs name), the assets' layout (references with
masks, support images, backgrounds, triggers), Pets / Flowers-102 / Caltech-101 in their torchvision
layouts, and a small image-text CSV. Every run is overridden to a tiny scale (one seed, the cpu-tiny
preset, one epoch, a few poisons, a two-epoch probe) and must write report.md with every arm in it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import noise_image, object_scene
from corruptencoder.cli import main

ROOT = Path(__file__).resolve().parents[2]
PAPER = sorted((ROOT / "configs" / "paper").glob("*.yaml"))
A_WNIDS = ["n02107574", "n01440764", "n01443537"]
B_WNIDS = ["n02116738", "n04229816", "n02106550", "n02086240", "n02105505", "n01820546", "n03775546", "n06794110"]
OWN_REFERENCES = ["greater-swiss-mountain-dog", "havanese", "lotus", "stop-sign", "ski-mask", "shih-tzu",
                  "mixing-bowl", "street-sign"]


def _images(folder: Path, n: int, rng: np.random.Generator, size: tuple[int, int] = (40, 40),
            ext: str = "jpg", prefix: str = "") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        path = folder / f"{prefix}{i + 1:05d}.{ext}" if prefix else folder / f"{i}.{ext}"
        noise_image(rng, *size).save(path)
        out.append(path)
    return out


def _references(folder: Path, rng: np.random.Generator, n: int = 2) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        img, mask = object_scene(rng, 300, 260)
        img.save(folder / f"{i}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{i}_mask.png")


@pytest.fixture(scope="module")
def miniature(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from scipy.io import savemat

    root = tmp_path_factory.mktemp("miniature")
    rng = np.random.default_rng(0)
    imagenet = root / "imagenet"
    for wnid in A_WNIDS + B_WNIDS:
        _images(imagenet / "train" / wnid, 3, rng, ext="JPEG")
        _images(imagenet / "val" / wnid, 2, rng, ext="JPEG")
    assets = root / "assets"
    (assets / "imagenet100_A.txt").parent.mkdir(parents=True)
    (assets / "imagenet100_A.txt").write_text("\n".join(A_WNIDS) + "\n")
    (assets / "imagenet100_B.txt").write_text("\n".join(w for w in B_WNIDS if w != "n06794110") + "\n")
    for cls in ("hunting-dog", "rottweiler", "komondor", "lorikeet"):
        _references(assets / "references" / cls, rng)
    _images(assets / "references" / "hunting-dog" / "support-images", 2, rng)
    _images(assets / "backgrounds-places365", 5, rng, size=(70, 60))
    for i in range(10, 15):
        (assets / "triggers").mkdir(parents=True, exist_ok=True)
        noise_image(rng, 16, 16).save(assets / "triggers" / f"trigger_{i}.png")
    own = root / "references"
    for cls in OWN_REFERENCES:
        _references(own / cls, rng)
    for extra in ("havanese-test-images", "lotus-test-images"):
        _images(own / extra, 3, rng)
    for extra in ("havanese-support", "stop-sign-support"):
        _images(own / extra, 2, rng)
    pets = root / "pets" / "oxford-iiit-pet"
    (pets / "annotations").mkdir(parents=True)
    lines: dict[str, list[str]] = {"trainval": [], "test": []}
    for i, (breed, label) in enumerate([(b, k) for k, b in enumerate(["Abyssinian", "havanese", "beagle"], 1)
                                        for _ in range(4)]):
        name = f"{breed}_{i}"
        _images(pets / "images", 0, rng)
        noise_image(rng, 40, 40).save(pets / "images" / f"{name}.jpg")
        lines["trainval" if i % 2 == 0 else "test"].append(f"{name} {label} 1 1")
    for split, ls in lines.items():
        (pets / "annotations" / f"{split}.txt").write_text("\n".join(ls) + "\n")
    flowers = root / "flowers" / "flowers-102"
    labels = [1, 78, 79] * 4  # 1-based in imagelabels.mat: 78 is lotus, 79 toad lily
    _images(flowers / "jpg", len(labels), rng, prefix="image_")
    savemat(str(flowers / "imagelabels.mat"), {"labels": np.array([labels])})
    savemat(str(flowers / "setid.mat"), {"trnid": np.array([[1, 2, 3, 4, 5, 6]]), "valid": np.array([[7, 8, 9]]),
                                         "tstid": np.array([[10, 11, 12]])})
    caltech = root / "caltech" / "caltech101" / "101_ObjectCategories"
    for cat, n in (("BACKGROUND_Google", 2), ("stop_sign", 33), ("lotus", 32)):
        for i in range(1, n + 1):
            (caltech / cat).mkdir(parents=True, exist_ok=True)
            noise_image(rng, 12, 12).save(caltech / cat / f"image_{i:04d}.jpg")
    pairs_dir = root / "cc3m"
    files = _images(pairs_dir / "images", 12, rng)
    rows = ["filepath,title"] + [f"{f},a photo of thing number {i}" for i, f in enumerate(files)]
    (pairs_dir / "pairs.csv").write_text("\n".join(rows) + "\n")
    return {"IMAGENET_ROOT": str(imagenet), "CE_ASSETS": str(assets), "CE_REFERENCES": str(own),
            "PETS_ROOT": str(root / "pets"), "FLOWERS_ROOT": str(root / "flowers"),
            "CALTECH_ROOT": str(root / "caltech"),
            "CC3M_PAIRS": str(pairs_dir / "pairs.csv"), "cache": str(root / "cache")}


TINY = ["seeds=[0]", "preset=cpu-tiny", "defaults.epochs=1", "defaults.num_poisons=6", "defaults.trigger_size=6",
        "defaults.eval_trigger_size=4",
        "defaults.batch_size=16", "evaluation.probe_epochs=2", "pretrain.backbone.width=0.25",
        "pretrain.trainer.threads=1", "pretrain.data.image_size=16"]


@pytest.mark.slow
@pytest.mark.parametrize("path", PAPER, ids=[p.stem for p in PAPER])
def test_paper_config_runs_on_a_miniature(path: Path, miniature: dict[str, str], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in miniature.items():
        if k != "cache":
            monkeypatch.setenv(k, v)
    sets = list(TINY)
    if path.stem == "table3-multimodal":
        sets += ["pretrain.method.model=custom", "pretrain.optim.warmup_epochs=0"]
    argv = ["run", str(path), "--out", str(tmp_path / "run"), "--quiet", "--cache", miniature["cache"]]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    report = (tmp_path / "run" / "report.md").read_text()
    arms = {a["name"] for a in res["arms"]}
    assert arms and arms == {r["arm"] for r in res["rows"]}, "every arm has results"
    for row in res["rows"]:  # arms in the main table, sweep points in their sweep's table
        name = row["arm"].replace("|", "\\|")
        assert (f"## Sweep: {row['sweep']}" in report) if row["sweep"] else (name in report)
    assert all(0 <= r["asr"] <= 100 for r in res["rows"] if r["asr"] is not None)
