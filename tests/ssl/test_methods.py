"""Each contrastive method: its loss goes down on a fixed tiny batch; head and queue shapes; EMA."""

from __future__ import annotations

import copy

import pytest
import torch

from corruptencoder.ssl.config import PretrainConfig
from corruptencoder.ssl.methods.msf import mean_shift_loss
from corruptencoder.ssl.train import method_class

SMALL = {
    "moco": {"queue_size": 64, "momentum": 0.9},
    "simclr": {},
    "swav": {"n_prototypes": 16, "queue_size": 64, "queue_start_epoch": 0, "n_local": 2, "proj_hidden": 64},
    "byol": {"proj_hidden": 64, "proj_dim": 32, "pred_hidden": 64},
    "msf": {"bank_size": 128, "proj_hidden": 64, "proj_dim": 32, "pred_hidden": 64, "topk": 2},
}


def make(name: str, **method: object):  # type: ignore[no-untyped-def]
    cfg = PretrainConfig.model_validate({
        "method": {"name": name, **SMALL[name], **method}, "data": {"clean": "unused", "image_size": 16},
        "backbone": {"name": "small_cnn", "width": 0.5}, "optim": {"batch_size": 16, "epochs": 1},
        "trainer": {"channels_last": False}})
    torch.manual_seed(0)
    return method_class(name)(cfg)


def fixed_views(model, n: int = 16):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(0)
    views = [(torch.rand(n, 3, s.size, s.size, generator=g) * 255).to(torch.uint8) for s in model.plan.views]
    torch.manual_seed(1)
    out, _ = model.on_after_batch_transfer((views, torch.arange(n)), 0)
    return out


@pytest.mark.parametrize("name", list(SMALL))
def test_loss_decreases_on_fixed_batch(name: str) -> None:
    model = make(name)
    views = fixed_views(model)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    losses = []
    for _ in range(30):
        loss, _ = model.compute_loss([v.clone() for v in views])
        opt.zero_grad()
        loss.backward()
        model.on_after_backward() if name != "swav" else None
        opt.step()
        losses.append(loss.detach().item())
    early, late = sum(losses[3:8]) / 5, sum(losses[-5:]) / 5
    assert late < early - 0.05 * abs(early), (name, losses)


def test_head_and_queue_shapes() -> None:
    moco = make("moco")
    assert moco.criterion.memory_bank.bank.shape == (64, 128)  # (queue, dim)
    q = moco.projection(moco.backbone(torch.randn(4, 3, 16, 16)))
    assert q.shape == (4, 128)
    swav = make("swav")
    assert swav.prototypes.heads[0].weight.shape == (16, 128)
    assert len(swav.plan.views) == 4 and swav.plan.views[2].size < swav.plan.views[0].size
    msf = make("msf")
    assert msf.bank.shape == (128, 32)
    byol = make("byol")
    assert byol.prediction(byol.projection(byol.backbone(torch.randn(4, 3, 16, 16)))).shape == (4, 32)


@pytest.mark.parametrize("name,target", [("moco", "backbone_k"), ("byol", "backbone_t"), ("msf", "backbone_t")])
def test_momentum_encoder_moves_only_by_ema(name: str, target: str) -> None:
    model = make(name)
    views = fixed_views(model)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):  # make online and target differ
        loss, _ = model.compute_loss([v.clone() for v in views])
        opt.zero_grad()
        loss.backward()
        opt.step()
    online_before = copy.deepcopy(list(model.backbone.parameters()))
    target_before = copy.deepcopy(list(getattr(model, target).parameters()))
    m = model.momentum() if name == "byol" else model.cfg.method.momentum
    loss, _ = model.compute_loss([v.clone() for v in views])
    for po, pt_old, pt in zip(online_before, target_before, getattr(model, target).parameters(), strict=True):
        torch.testing.assert_close(pt, m * pt_old + (1 - m) * po)
        assert not pt.requires_grad
    opt.zero_grad()
    loss.backward()
    assert all(p.grad is None for p in getattr(model, target).parameters())


def test_mean_shift_loss_k1_is_byol_and_uses_neighbours() -> None:
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    t = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    bank = torch.nn.functional.normalize(torch.randn(32, 8), dim=1)
    byol = (2 - 2 * (q * t).sum(1)).mean()
    torch.testing.assert_close(mean_shift_loss(q, t, bank, 1), byol)
    # a bank entry equal to the query is found as the target's neighbour when it is the target
    assert float(mean_shift_loss(t, t, bank, 1)) == pytest.approx(0.0, abs=1e-6)


def test_moco_v2_defaults_are_the_authors_code() -> None:
    """lr 0.06 per 256 images (the authors' run_pretraining.sh; the paper's 0.6 is a typo) and a 65,536-key queue
    (their main_moco.py), as resolved for training, in the method's defaults and under the paper preset."""
    from corruptencoder.presets import build_pretrain_config

    plain = PretrainConfig.model_validate({"method": {"name": "moco"}, "data": {"clean": "unused"}})
    paper = build_pretrain_config(None, "paper", {"method.name": "moco", "data.clean": "unused"})
    for cfg in (plain, paper):
        assert cfg.method.queue_size == 65536
        assert cfg.optim.batch_size == 256
        optimizer, lr, weight_decay, _ = cfg.resolved_optim()
        assert (optimizer, weight_decay) == ("sgd", 1e-4)
        assert lr == pytest.approx(0.06)
    big = PretrainConfig.model_validate({"method": {"name": "moco"}, "data": {"clean": "unused"},
                                         "optim": {"batch_size": 512}})
    assert big.resolved_optim()[1] == pytest.approx(0.12)  # 0.06 per 256 images, scaled linearly
