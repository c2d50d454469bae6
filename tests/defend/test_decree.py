"""DECREE's trigger inversion: a stand-in encoder that maps any image carrying a known 4x4 patch to one point
needs a small mask (PL1 well under the paper's 0.1, inside the patch's corner); an encoder without such a
shortcut needs to paint over most of the image. The CLI writes the inverted trigger; bad input is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from corruptencoder.cli import main
from corruptencoder.defend.decree import PAPER_THRESHOLD, DecreeOptions, Params, invert_trigger, resolve_params

SIZE = 16
MEAN = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
STD = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)


def known_patch() -> torch.Tensor:
    p = torch.zeros(3, 4, 4)
    p[0], p[2] = 1.0, 1.0
    p[:, ::2, ::2] = torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1)
    return p


class StandIn(torch.nn.Module):
    """Embedding = the image's 4x4-block layout (zero-mean), plus, when ``backdoor``, a large fixed vector
    that grows with how well the top-left 4x4 corner matches the known patch."""

    def __init__(self, backdoor: bool) -> None:
        super().__init__()
        self.backdoor = backdoor
        self.register_buffer("target", F.normalize(torch.ones(48), dim=0) * 10)
        self.register_buffer("patch", known_patch())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * STD + MEAN  # our encoders take normalised images
        layout = F.avg_pool2d(x - 0.5, 4).flatten(1)
        if not self.backdoor:
            return layout
        match = ((x[:, :, :4, :4] - 0.5) * (self.patch - 0.5)).mean((1, 2, 3)) * 4  # 1 = the patch exactly
        return layout + 3 * torch.sigmoid(10 * (match - 0.5)).unsqueeze(1) * self.target


def random_images(n: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, SIZE, SIZE, generator=g) * 255).to(torch.uint8)


def params(**over: object) -> Params:
    return resolve_params(DecreeOptions(**{"steps": 300, "batch_size": 16, **over}), "cpu-tiny", SIZE)


def test_backdoored_stand_in_needs_a_small_mask_a_clean_one_a_large_one() -> None:
    images = random_images()
    p = params()
    bad = invert_trigger(StandIn(True), images, p, seed=0)
    good = invert_trigger(StandIn(False), images, p, seed=0)
    assert bad.found and good.found
    assert bad.pl1 < PAPER_THRESHOLD / 2, bad.pl1
    assert good.pl1 > 3 * PAPER_THRESHOLD, good.pl1
    # the small mask sits on the known patch's corner
    assert bad.mask[:4, :4].sum() > 0.8 * bad.mask.sum()
    assert bad.best_similarity > 0.99 and bad.curve and bad.curve[0]["step"] == 1


def test_inversion_is_seeded() -> None:
    images = random_images(32)
    p = params(steps=40)
    a = invert_trigger(StandIn(True), images, p, seed=1)
    b = invert_trigger(StandIn(True), images, p, seed=1)
    assert torch.equal(a.mask, b.mask) and a.pl1 == b.pl1 and a.curve == b.curve


def test_preset_defaults_and_user_values() -> None:
    p = resolve_params(DecreeOptions(), "paper", 224)
    assert (p.images, p.batch_size, p.lr, p.lambda_min, p.patience, p.threshold) == (10000, 32, 0.5, 1e-7, 35, 0.1)
    q = resolve_params(DecreeOptions(steps=7, image_size=24), "cpu-small", 32)
    assert q.steps == 7 and q.image_size == 24 and q.images == 1000


def clean_folder(root: Path, n: int, size: int = 20) -> Path:
    g = torch.Generator().manual_seed(n)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n // 2):
            arr = (torch.rand(size, size, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(arr).save(root / c / f"{i}.png")
    return root


def test_cli_writes_report_and_trigger(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import random_encoder

    enc = random_encoder(tmp_path / "enc.pt", image_size=16)
    out = tmp_path / "decree"
    assert main(["defend", "decree", "--encoder", str(enc), "--data", str(clean_folder(tmp_path / "clean", 24)),
                 "--out", str(out), "--steps", "12", "--batch-size", "8", "--images", "16", "--quiet"]) == 0
    line = capsys.readouterr().out.strip()
    assert len(line.splitlines()) == 1 and line.startswith("DECREE: PL1 ")
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 16 and report["image_size"] == 16 and report["threshold"] == 0.1
    assert report["verdict"] in ("backdoored", "clean") and report["backdoored"] == (report["pl1"] < 0.1)
    assert report["optimisation"]["steps"] <= 12 and report["optimisation"]["curve"]
    for name in ("decree_mask.png", "decree_pattern.png", "decree_trigger.png", "decree_inverted.png"):
        assert (out / name).is_file()
    assert Image.open(out / "decree_mask.png").size == (16, 16)


def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pickle

    from conftest import random_encoder

    enc = random_encoder(tmp_path / "enc.pt", image_size=16)
    data = clean_folder(tmp_path / "clean", 8)
    out = tmp_path / "out"
    base = ["defend", "decree", "--out", str(out), "--quiet", "--steps", "2"]

    def error(args: list[str]) -> str:
        assert main([*base, *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: "), err
        return err

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Path("x")))
    assert "refused to load" in error(["--encoder", str(evil), "--data", str(data)])
    plain = tmp_path / "plain.pt"
    torch.save(torch.load(enc, weights_only=True)["state_dict"], plain)  # a state dict, but not a resnet18's
    assert "do not fit backbone resnet18" in error(["--encoder", str(plain), "--data", str(data)])
    notdict = tmp_path / "list.pt"
    torch.save([1, 2], notdict)
    assert "not a state dict" in error(["--encoder", str(notdict), "--data", str(data)])
    (tmp_path / "empty").mkdir()
    assert "no images" in error(["--encoder", str(enc), "--data", str(tmp_path / "empty")])
    tiny = clean_folder(tmp_path / "tiny", 2)
    assert "at least 4 clean images" in error(["--encoder", str(enc), "--data", str(tiny)])
    assert "--images" in error(["--encoder", str(enc), "--data", str(data), "--images", "1"])
    assert not out.exists()
