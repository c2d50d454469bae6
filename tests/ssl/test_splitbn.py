"""Shuffled BN on one device: split statistics, plain state dict, MoCo keys in image order."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from corruptencoder.ssl.backbones import backbone_spec, build_backbone
from corruptencoder.ssl.config import PretrainConfig
from corruptencoder.ssl.splitbn import SplitBatchNorm2d, set_splits, use_split_batchnorm
from corruptencoder.ssl.train import method_class


def make(name: str, **method: object) -> nn.Module:
    cfg = PretrainConfig.model_validate({
        "method": {"name": name, "queue_size": 64, **method}, "data": {"clean": "unused", "image_size": 16},
        "backbone": {"name": "small_cnn", "width": 0.5}, "optim": {"batch_size": 16, "epochs": 1},
        "trainer": {"channels_last": False}})
    torch.manual_seed(0)
    return method_class(name)(cfg)


def test_split_statistics_equal_separate_batch_norms() -> None:
    torch.manual_seed(0)
    x = (torch.randn(8, 4, 5, 5) * 3 + 1).contiguous(memory_format=torch.channels_last)
    split = SplitBatchNorm2d(4, splits=2).train()
    ref = [nn.BatchNorm2d(4).train() for _ in range(2)]
    y = split(x)
    for j in range(2):  # split j holds samples [4 j, 4 j + 4)
        torch.testing.assert_close(y[4 * j:4 * j + 4], ref[j](x[4 * j:4 * j + 4]))
    torch.testing.assert_close(split.running_mean, (ref[0].running_mean + ref[1].running_mean) / 2)
    torch.testing.assert_close(split.running_var, (ref[0].running_var + ref[1].running_var) / 2)
    assert int(split.num_batches_tracked) == 1
    plain = nn.BatchNorm2d(4)
    plain.load_state_dict(split.state_dict())  # the same keys and shapes as BatchNorm2d
    torch.testing.assert_close(split.eval()(x), plain.eval()(x))
    assert split.train()(x).is_contiguous(memory_format=torch.channels_last)  # the layout convolutions want


def test_uneven_batch_falls_back_to_ordinary_bn() -> None:
    x = torch.randn(7, 3, 4, 4)
    split, plain = SplitBatchNorm2d(3, splits=2).train(), nn.BatchNorm2d(3).train()
    torch.testing.assert_close(split(x), plain(x))


def test_converted_backbone_exports_a_plain_state_dict() -> None:
    spec = backbone_spec("resnet18", 0.25, image_size=32)
    model = build_backbone(spec)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert use_split_batchnorm(model, 4) == n_bn
    model.train()(torch.randn(8, 3, 32, 32))
    fresh = build_backbone(spec)
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(fresh.eval()(x), model.eval()(x))


def test_moco_keys_come_back_in_image_order() -> None:
    moco = make("moco", bn_splits=2)
    assert any(isinstance(m, SplitBatchNorm2d) for m in moco.backbone_k.modules())
    x = torch.rand(8, 3, 16, 16)
    x[4:] = x[:4]  # images 4..7 repeat 0..3: their keys must repeat too, whatever the shuffle
    moco.eval()  # eval: statistics do not depend on the split, so equal images give equal keys
    k = moco.key(x)
    torch.testing.assert_close(k[4:], k[:4])
    moco.train()
    loss, _ = moco.compute_loss([x, x.flip(-1)])
    assert torch.isfinite(loss)


@pytest.mark.parametrize("splits", [1, 2])
def test_moco_split_count_is_configurable(splits: int) -> None:
    moco = make("moco", bn_splits=splits)
    has_split = any(isinstance(m, SplitBatchNorm2d) for m in moco.backbone.modules())
    assert has_split == (splits > 1)


def test_shuffled_bn_is_on_by_default_with_statistics_per_virtual_device() -> None:
    """Without any bn_splits setting, one-device MoCo splits its key encoder's BN into virtual devices: in train
    mode the keys of one split do not depend on the other split's images (plain BN would leak them)."""
    cfg = PretrainConfig.model_validate({"method": {"name": "moco"}, "data": {"clean": "unused"}})
    assert cfg.method.bn_splits > 1
    moco = make("moco")  # queue_size and the tiny backbone only; bn_splits left at its default
    k = moco.cfg.method.bn_splits
    assert k == cfg.method.bn_splits
    for encoder in (moco.backbone_k, moco.backbone):
        splits = [m for m in encoder.modules() if isinstance(m, SplitBatchNorm2d)]
        assert splits and all(m.splits == k for m in splits)
    assert not any(type(m) is nn.BatchNorm2d for m in moco.backbone_k.modules())
    key_encoder = moco.backbone_k.train()
    n = 4 * k
    x = torch.rand(n, 3, 16, 16)
    other = x.clone()
    other[n // k:] = torch.rand(n - n // k, 3, 16, 16) * 3  # every split but the first sees other images
    with torch.no_grad():
        first, again = key_encoder(x)[: n // k], key_encoder(other)[: n // k]
    torch.testing.assert_close(first, again)  # the first virtual device's statistics are its own
    set_splits(key_encoder, 1)
    with torch.no_grad():
        assert not torch.allclose(key_encoder(x)[: n // k], key_encoder(other)[: n // k])  # ordinary BN leaks
