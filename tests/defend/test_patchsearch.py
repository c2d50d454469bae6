"""PatchSearch finds planted patches: a fixed encoder stand-in (a SmallCNN whose weights are set by hand) gives
an image with a red square a large embedding component of its own; the flip test, the search and the poison
classifier must rank the patched images first and the filtered list must drop them and keep the rest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from corruptencoder.cli import main
from corruptencoder.defend.patchsearch import (
    Images,
    PatchSearchOptions,
    feature_layer,
    kmeans,
    patchsearch,
    resolve_params,
    search,
)
from corruptencoder.evaluate.metrics import auroc

SIZE, PATCH = 32, 6
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
COLOURS = [(0.25, 0.6, 0.3), (0.3, 0.35, 0.7), (0.7, 0.6, 0.2), (0.5, 0.5, 0.5)]
FAST = {"flip_images": 40, "classifier_steps": 100, "classifier_width": 0.125, "classifier_lr": 0.05}


def patch_encoder() -> torch.nn.Module:
    """SmallCNN(0.25) by hand: channel 0 of the first layer fires on saturated red (R - G - B > 0.5, strongly),
    channels 1-6 carry the colours; the three stride-2 layers average 3x3 neighbourhoods of channels 0-7."""
    from corruptencoder.ssl.backbones import SmallCNN

    model = SmallCNN(0.25)
    f = model.features
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.zero_()
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
                m.running_mean.zero_()
                m.running_var.fill_(1.0 - m.eps)
        s, mu = torch.tensor(STD), torch.tensor(MEAN)
        sign, gain = torch.tensor([1.0, -1.0, -1.0]), 200.0  # inputs are normalised: undo it in the weights
        f[0].weight[0, :, 1, 1] = gain * sign * s
        f[1].bias[0] = gain * float((sign * mu).sum()) - gain * 0.5
        for c in range(3):
            f[0].weight[1 + c, c, 1, 1] = s[c]
            f[1].bias[1 + c] = mu[c]
            f[0].weight[4 + c, c, 1, 1] = -s[c]
            f[1].bias[4 + c] = 1 - mu[c]
        for i in (3, 6, 9):
            for c in range(8):
                f[i].weight[c, c] = 1.0 / 9
    return model.eval()


def planted(seed: int = 0, per_class: int = 30, poisons: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """Smooth textures around four colours; a red square pasted on copies of ``poisons`` of them."""
    rng = np.random.default_rng(seed)
    imgs = []
    for colour in COLOURS:
        for _ in range(per_class):
            small = ((rng.normal(0, 0.12, (4, 4, 3)) + 0.5) * 255).clip(0, 255).astype(np.uint8)
            smooth = np.asarray(Image.fromarray(small).resize((SIZE, SIZE), Image.Resampling.BICUBIC), float) / 255
            img = np.clip(np.asarray(colour) + smooth - 0.5 + rng.normal(0, 0.03, (SIZE, SIZE, 3)), 0, 1)
            imgs.append((img * 255).astype(np.uint8))
    truth = [False] * len(imgs)
    for i in rng.choice(len(imgs), poisons, replace=False):
        img = imgs[i].copy()
        y, x = rng.integers(2, SIZE - PATCH - 2, 2)
        img[y: y + PATCH, x: x + PATCH] = (255, 0, 0)
        imgs.append(img)
        truth.append(True)
    return np.stack(imgs), np.asarray(truth)


def as_tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


def test_patched_images_rank_first_and_are_removed() -> None:
    x, truth = planted()
    p = resolve_params(PatchSearchOptions(**FAST), "cpu-tiny", len(x), SIZE)
    assert p.window == 9 and p.clusters == 10  # 60/224 of 32 px; the cpu-tiny preset
    out = patchsearch(patch_encoder(), Images(as_tensor(x)), p, seed=0)
    scores = np.asarray(out.scores)
    assert auroc(scores[truth], scores[~truth]) >= 0.9
    # the search alone: the flip test scores patched images far above the clean ones it looked at
    flips = {i: s for i, s in enumerate(out.search.scores) if s is not None}
    pos = [s for i, s in flips.items() if truth[i]]
    neg = [s for i, s in flips.items() if not truth[i]]
    assert pos and neg and auroc(pos, neg) >= 0.8
    removed = set(range(len(x))) - set(out.keep)
    assert sum(truth[i] for i in removed) >= 0.9 * truth.sum()  # the patched ones go
    assert len(set(out.keep) & set(np.flatnonzero(~truth).tolist())) >= 0.85 * (~truth).sum()  # most others stay
    assert out.report["removed"] == len(removed) and out.report["scored_by_search"] == len(flips)


def test_search_and_classifier_are_deterministic_and_seeded() -> None:
    x, _ = planted(poisons=10, per_class=20)
    images = Images(as_tensor(x))
    p = resolve_params(PatchSearchOptions(**{**FAST, "classifier_steps": 5}), "cpu-tiny", len(x), SIZE)
    model = patch_encoder()
    a = patchsearch(model, images, p, seed=3)
    b = patchsearch(model, images, p, seed=3)
    assert a.scores == b.scores and a.keep == b.keep and a.search.corners == b.search.corners
    c = search(model, images, p, seed=4, device="cpu")
    assert a.search.scores != c.scores or a.search.assign != c.assign


def test_kmeans_separates_blobs_and_is_seeded() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(4, 16, generator=g), dim=1)
    x = torch.nn.functional.normalize(centres.repeat_interleave(25, 0) + 0.05 * torch.randn(100, 16, generator=g),
                                      dim=1)
    c1, a1 = kmeans(x, 4, seed=1)
    c2, a2 = kmeans(x, 4, seed=1)
    assert torch.equal(a1, a2) and torch.equal(c1, c2)
    truth = torch.arange(4).repeat_interleave(25)
    # every true blob is one cluster
    assert all(len(set(a1[truth == k].tolist())) == 1 for k in range(4))
    assert len(set(a1.tolist())) == 4


def test_feature_layer_is_the_last_convolutional_map() -> None:
    from corruptencoder.ssl.backbones import backbone_spec, build_backbone

    assert feature_layer(build_backbone(backbone_spec("resnet18", 0.25, image_size=32)).eval(), 32, "cpu")[0] == \
        "layer4"
    assert feature_layer(build_backbone(backbone_spec("small_cnn", 0.25)).eval(), 32, "cpu")[0] == "features"


def write_data(root: Path, x: np.ndarray, truth: np.ndarray) -> list[Path]:
    paths = []
    for i, (img, bad) in enumerate(zip(x, truth, strict=True)):
        folder = root / ("patched" if bad else f"c{i // 30}")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i}.png")
        paths.append(folder / f"{i}.png")
    return paths


def save_standin(path: Path) -> Path:
    from corruptencoder.ssl.backbones import backbone_spec
    from corruptencoder.ssl.encoder import save_encoder

    save_encoder(path, patch_encoder(), backbone_spec("small_cnn", 0.25, image_size=SIZE),
                 {"method": "test", "image_size": SIZE})
    return path


def test_cli_writes_the_filtered_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x, truth = planted(seed=1)
    paths = write_data(tmp_path / "data", x, truth)
    enc = save_standin(tmp_path / "encoder.pt")
    out = tmp_path / "ps"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in FAST.items()]
    assert main(["defend", "patchsearch", "--encoder", str(enc), "--data", str(tmp_path / "data"), "--out", str(out),
                 "--preset", "cpu-tiny", "--quiet", *flags]) == 0
    line = capsys.readouterr().out.strip()
    assert len(line.splitlines()) == 1 and line.startswith("PatchSearch scored 135 images")
    keep = set(out.joinpath("keep.txt").read_text().splitlines())
    removed = set(out.joinpath("removed.txt").read_text().splitlines())
    bad = {str(p) for p, t in zip(paths, truth, strict=True) if t}
    assert len(keep) + len(removed) == len(paths) and len(bad & removed) >= 0.9 * len(bad)
    assert len(keep - bad) >= 0.85 * (len(paths) - len(bad))
    rows = out.joinpath("scores.csv").read_text().splitlines()[1:]
    assert len(rows) == len(paths)
    scores = {r.split(",")[0]: float(r.split(",")[1]) for r in rows}
    assert auroc([scores[str(p)] for p in paths if str(p) in bad],
                 [scores[str(p)] for p in paths if str(p) not in bad]) >= 0.9
    report = json.loads(out.joinpath("report.json").read_text())
    assert report["top"][0]["file"] in bad and len(report["top"][0]["window"]) == 4
    sheet = Image.open(out / report["contact_sheet"])
    assert sheet.size[0] > 128
    assert main(["defend", "patchsearch", "--encoder", str(enc), "--data", str(tmp_path / "data"), "--out", str(out),
                 "--quiet"]) == 2  # an existing --out is refused
    assert "--overwrite" in capsys.readouterr().err


def test_cli_poisons_give_precision_and_recall(tmp_path: Path, assets: dict[str, Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import class_folder, random_encoder
    from corruptencoder.poison.config import CraftConfig
    from corruptencoder.poison.craft import craft

    clean = class_folder(tmp_path / "clean", ["a", "b"], 12, (20, 20))
    craft(CraftConfig.model_validate({"targets": [{"name": "dog", "num": 8, "trigger_size": 4,
          "references": [str(assets["references"])], "backgrounds": [str(assets["backgrounds"])]}]}),
          tmp_path / "poisons", progress=False)
    enc = random_encoder(tmp_path / "enc.pt", image_size=16)
    out = tmp_path / "o"
    assert main(["defend", "patchsearch", "--encoder", str(enc), "--data", str(clean), "--poisons",
                 str(tmp_path / "poisons"), "--out", str(out), "--quiet", "--clusters", "4", "--flip-images", "8",
                 "--rounds", "1", "--classifier-steps", "2", "--classifier-models", "1", "--classifier-width",
                 "0.125"]) == 0
    line = capsys.readouterr().out.strip()
    assert "PatchSearch scored 32 images" in line and "of 8 poisons among them" in line
    det = json.loads((out / "report.json").read_text())["detection"]
    assert det["poisons"] == 8 and 0.0 <= det["auroc"] <= 1.0
    assert len((out / "scores.csv").read_text().splitlines()) == 33


def run_cli_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import class_folder

    x, truth = planted(per_class=5, poisons=2)
    write_data(tmp_path / "data", x, truth)
    enc = save_standin(tmp_path / "encoder.pt")
    out = tmp_path / "out"
    base = ["defend", "patchsearch", "--out", str(out), "--quiet"]
    # an encoder file that is not ours: arbitrary pickled objects are refused, a list is not a state dict
    import pickle

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Path("x")))
    err = run_cli_error([*base, "--encoder", str(evil), "--data", str(tmp_path / "data")], capsys)
    assert "evil.pt" in err and "refused to load" in err
    notdict = tmp_path / "list.pt"
    torch.save([1, 2, 3], notdict)
    err = run_cli_error([*base, "--encoder", str(notdict), "--data", str(tmp_path / "data")], capsys)
    assert "list.pt" in err and "not a state dict" in err
    # an empty folder, a tiny one
    (tmp_path / "empty").mkdir()
    err = run_cli_error([*base, "--encoder", str(enc), "--data", str(tmp_path / "empty")], capsys)
    assert "empty" in err and "no images" in err
    tiny = class_folder(tmp_path / "tiny", ["a"], 5, (32, 32))
    err = run_cli_error([*base, "--encoder", str(enc), "--data", str(tiny)], capsys)
    assert "at least 8 images" in err
    # a window larger than the images
    err = run_cli_error([*base, "--encoder", str(enc), "--data", str(tmp_path / "data"), "--window", "40"], capsys)
    assert "--window" in err and "32-px" in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp folder left
