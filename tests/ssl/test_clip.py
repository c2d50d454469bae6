"""CLIP: a training step lowers the loss; pre-training on pairs + multi-modal poisons; zero-shot ASR."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from corruptencoder.data.captions import write_pairs_csv
from corruptencoder.ssl.config import PretrainConfig
from corruptencoder.ssl.train import method_class, pretrain


def clip_config(pairs: str, poisons: list[str] | None = None, epochs: int = 1) -> PretrainConfig:
    return PretrainConfig.model_validate({
        "method": {"name": "clip", "model": "custom", "embed_dim": 16, "text_width": 16, "text_heads": 2,
                   "text_layers": 1, "context_length": 16},
        "data": {"pairs": pairs, "poisons": poisons or [], "image_size": 16},
        "backbone": {"name": "small_cnn", "width": 0.25},
        "optim": {"batch_size": 8, "epochs": epochs}, "trainer": {"progress": False, "threads": 1}})


@pytest.fixture()
def pairs_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    imgs, caps = [], []
    for i in range(24):
        c = i % 3
        arr = np.clip(rng.normal(50 + 70 * c, 20, (20, 20, 3)), 0, 255).astype(np.uint8)
        p = tmp_path / "img" / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(arr).save(p)
        imgs.append(p)
        caps.append(["a dark thing", "a grey object, plain", "a bright, light picture"][c])
    path = tmp_path / "pairs.csv"
    write_pairs_csv(path, imgs, caps)
    return path


def test_clip_step_lowers_loss(pairs_csv: Path) -> None:
    from corruptencoder.ssl.clip_model import tokenize

    model = method_class("clip")(clip_config(str(pairs_csv)))
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(8, 3, 16, 16, generator=g) * 255).to(torch.uint8)
    tokens = tokenize([f"caption number {i}" for i in range(8)], 16)
    views, extra = model.on_after_batch_transfer(([x], tokens), 0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(25):
        model.batch_extra = extra
        loss, _ = model.compute_loss([v.clone() for v in views])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach().item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_pretrain_clip_on_pairs_and_mm_poisons(pairs_csv: Path, tmp_path: Path, assets: dict[str, Path]) -> None:
    from corruptencoder.poison.config import CraftConfig
    from corruptencoder.poison.craft import craft
    from corruptencoder.ssl.clip_model import load_clip
    from corruptencoder.ssl.encoder import load_encoder

    craft(CraftConfig.model_validate({"targets": [{"name": "dog", "attack": "corruptencoder-mm", "num": 6,
          "trigger_size": 4, "type1_size": 24, "references": [str(assets["references"])],
          "backgrounds": [str(assets["backgrounds"])]}]}), tmp_path / "mm", progress=False)
    res = pretrain(clip_config(str(pairs_csv), [str(tmp_path / "mm")]), tmp_path / "run")
    assert res.num_images == 30 and res.num_poisons == 6
    enc, spec, meta = load_encoder(res.encoder)
    assert spec["name"] == "small_cnn" and meta["method"] == "clip"
    model, cspec = load_clip(tmp_path / "run" / "clip.pt")
    assert model.encode_image(torch.zeros(2, 3, 16, 16)).shape == (2, 16)


def test_single_modal_poisons_refused_for_clip(pairs_csv: Path, tmp_path: Path, assets: dict[str, Path]) -> None:
    from corruptencoder.errors import UserError
    from corruptencoder.poison.config import CraftConfig
    from corruptencoder.poison.craft import craft

    craft(CraftConfig.model_validate({"targets": [{"name": "dog", "num": 3, "trigger_size": 4,
          "references": [str(assets["references"])], "backgrounds": [str(assets["backgrounds"])]}]}),
          tmp_path / "p", progress=False)
    with pytest.raises(UserError, match="multi-modal poisons"):
        pretrain(clip_config(str(pairs_csv), [str(tmp_path / "p")]), tmp_path / "run")


def test_zero_shot_asr_arithmetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hand-made 'CLIP' that maps every image to the target's text embedding: ASR 100, accuracy 1/3."""
    import corruptencoder.evaluate.zeroshot as zs
    from corruptencoder.evaluate.run import EvalTarget
    from corruptencoder.evaluate.tasks import TaskConfig, load_task

    root = tmp_path / "task"
    for split in ("train", "test"):
        for c in ("cat", "dog", "fish"):
            (root / split / c).mkdir(parents=True)
            for i in range(4):
                Image.new("RGB", (12, 12), (i * 30, 0, 0)).save(root / split / c / f"{i}.png")
    task = load_task(TaskConfig(root=str(root), image_size=8, resize=8))

    class HandMade(torch.nn.Module):
        def encode_image(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tensor([0.0, 0.0, 1.0]).expand(x.shape[0], 3)

    monkeypatch.setattr("corruptencoder.ssl.clip_model.load_clip", lambda p: (HandMade(), {"model": "custom"}))
    monkeypatch.setattr(zs, "class_embeddings", lambda m, s, classes, t: torch.eye(len(classes)))
    res = zs.zero_shot("unused.pt", task, [EvalTarget("fish", "fish", np.zeros((2, 2, 3), np.uint8))])
    assert res["accuracy"] == pytest.approx(100 / 3, abs=0.01)
    t = res["targets"][0]
    assert t["asr"] == 100.0 and t["n_triggered"] == 8
    assert t["control_asr"] == 100.0  # it answers any patch (here: no patch at all) as the target
    assert t["solid_control_asr"] == 100.0  # the black trigger is solid: a white patch is scored too
    assert t["rotated_control_asr"] is None  # and turning it round changes nothing
    assert t["sibling_control_asr"] is None  # no sibling given
    sibling = np.full((2, 2, 3), 255, np.uint8)
    res = zs.zero_shot("unused.pt", task, [EvalTarget("fish", "fish", np.zeros((2, 2, 3), np.uint8), sibling=sibling)])
    assert res["targets"][0]["sibling_control_asr"] == 100.0  # the zero-shot scorer reads the sibling too

    # with the evaluation's trigger_jpeg_quality, the zero-shot's triggered and control images go through JPEG
    # as the probe's do (they did not before)
    import corruptencoder.evaluate.triggered as triggered

    qualities: list[int] = []
    real = triggered.jpeg_round_trip
    monkeypatch.setattr(triggered, "jpeg_round_trip", lambda im, q: qualities.append(q) or real(im, q))
    zs.zero_shot("unused.pt", task, [EvalTarget("fish", "fish", np.zeros((2, 2, 3), np.uint8))], jpeg_quality=75)
    assert qualities == [75] * 24  # 8 triggered + 8 control + 8 solid-control images


def test_zero_shot_prompts_use_the_targets_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An experiment target's ``text:`` names its class in the zero-shot prompts too (as in its captions); the
    other classes keep their names (a wnid by its ImageNet class name)."""
    import yaml

    import corruptencoder.evaluate.zeroshot as zs
    from corruptencoder.evaluate.tasks import TaskConfig, load_task
    from corruptencoder.experiment.config import load_experiment
    from corruptencoder.experiment.runner import Runner

    root = tmp_path / "task"
    for split in ("train", "test"):
        for c in ("n04229816", "stop_sign", "fish"):
            (root / split / c).mkdir(parents=True)
            Image.new("RGB", (32, 32)).save(root / split / c / "0.png")
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({
        "name": "zs", "tasks": [{"name": "t", "root": str(root)}], "data": {"clean": str(root / "train")},
        "targets": [{"name": "fish", "task": "t", "text": "goldfish"},
                    {"name": "sign", "task": "t", "label": "stop_sign"}],
        "arms": [{"name": "no-attack", "attack": "none", "method": "clip"}]}))
    cfg = load_experiment(config)
    runner = Runner(cfg, tmp_path / "run", progress=False, say=lambda s: None)
    targets = runner.eval_targets(cfg.expanded_arms()[0], None, "t")
    assert [(t.name, t.text) for t in targets] == [("fish", "goldfish"), ("sign", None)]
    task = load_task(TaskConfig(root=str(root), image_size=32, resize=32))
    assert task.classes == ["fish", "n04229816", "stop_sign"]
    assert zs.prompt_names(task, targets) == ["goldfish", "balaclava ski mask", "stop sign"]

    class HandMade(torch.nn.Module):
        def encode_image(self, x: torch.Tensor) -> torch.Tensor:
            return torch.ones(x.shape[0], 3)

    seen: list[list[str]] = []
    monkeypatch.setattr("corruptencoder.ssl.clip_model.load_clip", lambda p: (HandMade(), {"model": "custom"}))
    monkeypatch.setattr(zs, "class_embeddings", lambda m, s, names, t: seen.append(list(names)) or torch.eye(3))
    zs.zero_shot("unused.pt", task, targets)
    assert seen == [["goldfish", "balaclava ski mask", "stop sign"]]  # what the text tower is prompted with
