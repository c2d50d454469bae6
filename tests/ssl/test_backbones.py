"""Backbones beyond the torchvision ResNets: timm models and open_clip image towers, under every method."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from corruptencoder.errors import ConfigError
from corruptencoder.ssl.backbones import backbone_spec, build_backbone
from corruptencoder.ssl.config import PretrainConfig
from corruptencoder.ssl.encoder import load_encoder
from corruptencoder.ssl.train import pretrain


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "d"
    root.mkdir()
    for i in range(24):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def config(images: Path, method: str, backbone: dict[str, object]) -> PretrainConfig:
    body: dict[str, object] = {
        "method": {"name": method} | ({"queue_size": 32} if method == "moco" else {}),
        "data": {"clean": str(images), "image_size": 32}, "backbone": backbone,
        "optim": {"batch_size": 12, "epochs": 1}, "trainer": {"progress": False, "threads": 1}}
    return PretrainConfig.model_validate(body)


@pytest.mark.parametrize("name", ["mobilenetv3_small_050", "resnet18"])
def test_a_timm_backbone_says_the_width_it_returns(name: str) -> None:
    """MobileNetV3's features are 1,024 wide after its head layer, not its num_features (288): every method's
    projection head was built for 288 and the first step failed on a shape error."""
    model = build_backbone(backbone_spec(f"timm:{name}")).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, model.out_dim)


def test_a_timm_backbone_pretrains(images: Path, tmp_path: Path) -> None:
    res = pretrain(config(images, "byol", {"name": "timm:mobilenetv3_small_050"}), tmp_path / "out")
    enc, spec, _ = load_encoder(res.encoder)
    assert spec["name"] == "timm:mobilenetv3_small_050" and enc(torch.zeros(2, 3, 32, 32)).shape == (2, 1024)


def test_a_fixed_size_backbone_refuses_swav_local_views_before_any_output(images: Path, tmp_path: Path) -> None:
    """A ViT built for 32 px cannot take SwAV's 14 px multi-crop views: one ConfigError, nothing written; without
    local views it trains."""
    tower = {"name": "openclip", "clip_model": "ViT-S-32"}
    swav = config(images, "swav", tower)
    with pytest.raises(ConfigError, match=r"cannot take the 14 px local views of swav's multi-crop.*views.n_local: 0"):
        pretrain(swav, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    no_local = swav.model_copy(update={"views": swav.views.model_copy(update={"n_local": 0})})
    assert pretrain(no_local, tmp_path / "out").encoder.is_file()
