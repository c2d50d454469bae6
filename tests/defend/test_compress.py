"""CompRess distillation: the student learns the teacher, the teacher is untouched, the subset is clean."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import random_encoder
from corruptencoder.cli import main
from corruptencoder.ssl.backbones import build_backbone
from corruptencoder.ssl.config import PretrainConfig
from corruptencoder.ssl.encoder import load_encoder
from corruptencoder.ssl.methods.compress import compress_loss
from corruptencoder.ssl.train import pretrain, pretrain_files


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "clean"
    for c in range(4):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(16):
            # smooth random patterns: each image its own structure, which a random student does not share
            small = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
            Image.fromarray(small).resize((20, 20), Image.Resampling.BICUBIC).save(root / f"c{c}" / f"{i}.png")
    return root


@pytest.fixture()
def teacher(tmp_path: Path) -> Path:
    return random_encoder(tmp_path / "teacher.pt", width=0.5, seed=1, method="moco")


def distill_cfg(data: Path, teacher: Path, **over: object) -> PretrainConfig:
    body = {"method": {"name": "compress", "teacher": str(teacher), "queue_size": 48, "momentum": 0.9},
            "data": {"clean": str(data), "image_size": 16, "fraction": over.pop("fraction", None)},
            "backbone": {"name": "small_cnn", "width": 0.5}, "views": {"crop": "none"},
            "optim": {"batch_size": 16, "epochs": over.pop("epochs", 12), "lr": 0.2},
            "trainer": {"progress": False, "threads": 1, "seed": over.pop("seed", 0)}}
    body["data"].update(over)  # type: ignore[union-attr]
    return PretrainConfig.model_validate(body)


def nn_agreement(a: torch.Tensor, b: torch.Tensor, k: int = 5) -> float:
    """Mean overlap of the k nearest neighbours of each image under two encoders."""
    def knn(f: torch.Tensor) -> torch.Tensor:
        f = torch.nn.functional.normalize(f, dim=1)
        s = f @ f.T
        s.fill_diagonal_(-2)
        return s.topk(k, dim=1).indices
    ka, kb = knn(a), knn(b)
    shared = sum(len(set(x.tolist()) & set(y.tolist())) for x, y in zip(ka, kb, strict=True))
    return float(shared / (k * len(ka)))


def features(model: torch.nn.Module, files: list[Path]) -> torch.Tensor:
    from corruptencoder.evaluate.features import extract_features

    return extract_features(model, files, 16, 16)


def test_student_learns_the_teacher_and_teacher_is_untouched(data: Path, teacher: Path, tmp_path: Path) -> None:
    before = {k: v.clone() for k, v in torch.load(teacher, weights_only=True)["state_dict"].items()}
    res = pretrain(distill_cfg(data, teacher, epochs=30), tmp_path / "student")
    import csv

    losses = [float(r["train/loss_epoch"]) for r in csv.DictReader(open(tmp_path / "student" / "logs" / "metrics.csv"))
              if r.get("train/loss_epoch")]
    assert losses[-1] < losses[1], losses
    after = torch.load(teacher, weights_only=True)["state_dict"]
    assert all(torch.equal(before[k], after[k]) for k in before)
    files = sorted(data.rglob("*.png"))
    t_model, _, _ = load_encoder(teacher)
    s_model, spec, meta = load_encoder(res.encoder)
    assert meta["method"] == "compress" and meta["teacher"] == str(teacher)
    torch.manual_seed(123)
    random_student = build_backbone(spec).eval()
    ft = features(t_model, files)
    distilled = nn_agreement(ft, features(s_model, files))
    random = nn_agreement(ft, features(random_student, files))
    assert distilled > random + 0.1, (distilled, random)


def test_compress_loss_zero_when_student_equals_teacher() -> None:
    g = torch.Generator().manual_seed(0)
    t = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=1)
    bank = torch.nn.functional.normalize(torch.randn(32, 16, generator=g), dim=1)
    assert float(compress_loss(t, t, bank, bank, 0.04)) == pytest.approx(0.0, abs=1e-5)
    s = torch.nn.functional.normalize(torch.randn(8, 16, generator=g), dim=1)
    assert float(compress_loss(s, t, bank, bank, 0.04)) > 0.1


def test_clean_subset_never_holds_poisons_and_is_seeded(data: Path, teacher: Path, tmp_path: Path,
                                                        assets: dict[str, Path]) -> None:
    from corruptencoder.poison.config import CraftConfig
    from corruptencoder.poison.craft import craft

    poisons = tmp_path / "poisons"
    craft(CraftConfig.model_validate({"targets": [{"name": "dog", "num": 10, "trigger_size": 4,
          "references": [str(assets["references"])], "backgrounds": [str(assets["backgrounds"])]}]}),
          poisons, progress=False)
    mixed = tmp_path / "mixed.txt"  # a defender's list that (wrongly) contains the poisons too
    mixed.write_text("".join(f"{p}\n"
                             for p in sorted(data.rglob("*.png")) + sorted((poisons / "images").rglob("*.png"))))
    a = pretrain_files(distill_cfg(mixed, teacher, fraction=0.5, exclude=[str(poisons)]))
    b = pretrain_files(distill_cfg(mixed, teacher, fraction=0.5, exclude=[str(poisons)]))
    c = pretrain_files(distill_cfg(mixed, teacher, fraction=0.5, exclude=[str(poisons)], seed=1))
    assert not any("poisons" in str(f) for f in a.files)
    assert a.files == b.files and a.files != c.files and len(a.files) == 32


def test_bad_teacher_and_fraction_one_line(tmp_path: Path, teacher: Path, data: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "plain.pt"
    torch.save(torch.load(teacher, weights_only=True)["state_dict"], plain)
    out = tmp_path / "o"
    code = main(["defend", "compress", "--teacher", str(plain), "--teacher-backbone", "resnet18", "--data", str(data),
                 "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "do not fit backbone resnet18" in err and "features.0.weight" in err
    for bad in ("0", "1.5", "-0.1"):
        code = main(["defend", "compress", "--teacher", str(teacher), "--data", str(data), "--fraction", bad,
                     "--out", str(out), "--quiet"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and "--fraction" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_cli_distils(tmp_path: Path, teacher: Path, data: Path) -> None:
    out = tmp_path / "student"
    assert main(["defend", "compress", "--teacher", str(teacher), "--data", str(data), "--fraction", "0.5",
                 "--epochs", "1", "--out", str(out), "--quiet", "--set", "method.queue_size=32",
                 "--set", "optim.batch_size=16"]) == 0
    assert (out / "encoder.pt").is_file()
    assert len((out / "train_files.txt").read_text().splitlines()) == 32


def test_student_epochs_option_sets_the_schedule_and_stays_out_of_old_cache_keys(
        tmp_path: Path, teacher: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A suspect refreshed for 30 epochs from a base gets a student as long as asked; left unset, the option
    does not enter the cache key (every CompRess result cached before it existed stays valid)."""
    import corruptencoder.ssl.train as train
    from corruptencoder.defend.base import DefenceContext, make_defence

    seen: dict[str, PretrainConfig] = {}

    def fake_pretrain(cfg: PretrainConfig, out: Path, **_: object) -> object:
        seen["cfg"] = cfg
        return type("R", (), {"encoder": out / "encoder.pt", "num_images": 1})()

    monkeypatch.setattr(train, "pretrain", fake_pretrain)
    body = PretrainConfig.model_validate({"data": {"clean": "demo"}, "optim": {"epochs": 30}}).model_dump(mode="json")
    for epochs, want in ((None, 30), (200, 200)):
        args = {"fraction": 0.05} | ({"epochs": epochs} if epochs else {})
        defence = make_defence("compress", args)
        defence.apply(DefenceContext(out=tmp_path / str(epochs), pretrain=body, encoder=teacher, clean_count=100))
        assert seen["cfg"].optim.epochs == want and seen["cfg"].method.name == "compress"
        assert ("epochs" in defence.opts.key_fields()) == (epochs is not None)


def test_a_clip_image_tower_distils_into_the_same_tower(tmp_path: Path, data: Path) -> None:
    """An open_clip image tower (what a CLIP run exports as encoder.pt) as the teacher: the student defaults to
    the same tower (it crashed with a KeyError until 2026-12-04: the student's spec lacked the CLIP model)."""
    from corruptencoder.ssl.backbones import backbone_spec
    from corruptencoder.ssl.clip_model import visual_tower
    from corruptencoder.ssl.encoder import save_encoder

    spec = backbone_spec("openclip", image_size=32, clip_model="ViT-S-32")  # a small open_clip tower
    torch.manual_seed(0)
    save_encoder(tmp_path / "clip-tower.pt", visual_tower(spec), spec, {"method": "clip", "image_size": 32})
    out = tmp_path / "student"
    assert main(["defend", "compress", "--teacher", str(tmp_path / "clip-tower.pt"), "--data", str(data),
                 "--fraction", "0.5", "--epochs", "1", "--out", str(out), "--quiet", "--set", "method.queue_size=16",
                 "--set", "optim.batch_size=8"]) == 0
    student, s_spec, meta = load_encoder(out / "encoder.pt")
    assert s_spec["name"] == "openclip" and s_spec["clip"] == {"model": "ViT-S-32", "image_size": 32}
    assert meta["method"] == "compress" and student(torch.zeros(2, 3, 32, 32)).shape == (2, 384)


def test_openclip_backbone_needs_its_model(tmp_path: Path) -> None:
    from corruptencoder.errors import ConfigError
    from corruptencoder.ssl.backbones import backbone_spec

    with pytest.raises(ConfigError, match="backbone.clip_model"):
        backbone_spec("openclip")


def test_student_of_a_clip_suspect_learns_from_the_clean_pairs_images(tmp_path: Path, teacher: Path,
                                                                       data: Path) -> None:
    """In an experiment a CLIP suspect's pre-training config has image-text pairs, not images: the student (an
    image method) reads the images of the clean pairs, a seeded fraction of them, never a poison (it found no
    image at all until 2026-12-04)."""
    from corruptencoder.data.captions import write_pairs_csv
    from corruptencoder.defend.base import DefenceContext, make_defence

    images = sorted(data.rglob("*.png"))
    pairs = tmp_path / "pairs.csv"
    write_pairs_csv(pairs, images, [f"a picture {i}" for i in range(len(images))])
    poisons = tmp_path / "mm-poisons"  # never read: the defence drops the suspect's poisons
    body = PretrainConfig.model_validate({
        "method": {"name": "clip", "model": "custom", "embed_dim": 8, "text_width": 8, "text_heads": 2,
                   "text_layers": 1, "context_length": 8},
        "data": {"pairs": str(pairs), "poisons": [str(poisons)], "image_size": 16},
        "backbone": {"name": "small_cnn", "width": 0.5}, "views": {"crop": "none"},
        "optim": {"batch_size": 16, "epochs": 1}, "trainer": {"progress": False, "threads": 1}}).model_dump(mode="json")
    res = make_defence("compress", {"fraction": 0.5, "queue_size": 16}).apply(
        DefenceContext(out=tmp_path / "student", pretrain=body, encoder=teacher, clean_count=len(images)))
    used = (tmp_path / "student" / "train_files.txt").read_text().splitlines()
    assert len(used) == len(images) // 2 and set(used) <= {str(p) for p in images}
    assert res.encoder is not None and load_encoder(res.encoder)[2]["method"] == "compress"
