"""The momentum update of buffers (BN statistics): one fused ``torch._foreach_copy_`` where torch has it, the
same result as the per-buffer loop it replaced (kept as the fallback)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from corruptencoder.ssl.base import SSLMethod


def _pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    online = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    online(torch.randn(2, 3, 8, 8))
    target = SSLMethod.momentum_copy(online)
    online.train()
    for _ in range(3):  # online BN statistics move on, the target's stay behind
        online(torch.randn(4, 3, 8, 8) * 3 + 1)
    with torch.no_grad():
        for p in online.parameters():
            p.add_(0.1)
    return online, target


def _expected(online: nn.Module, target: nn.Module, m: float) -> dict[str, torch.Tensor]:
    out = {}
    params = dict(online.named_parameters())
    for name, t in target.named_parameters():
        out[name] = m * t.detach() + (1 - m) * params[name].detach()
    for name, b in online.named_buffers():
        out[name] = b.detach().clone()  # buffers: copied exactly
    return out


@pytest.mark.parametrize("foreach", [True, False])
def test_ema_moves_parameters_and_copies_buffers(monkeypatch: pytest.MonkeyPatch, foreach: bool) -> None:
    if not foreach:
        monkeypatch.delattr(torch, "_foreach_copy_")  # an older torch: the per-buffer loop
    online, target = _pair()
    want = _expected(online, target, 0.9)
    SSLMethod.ema(None, online, target, 0.9)  # type: ignore[arg-type]  # uses nothing of self
    got = dict(target.named_parameters()) | dict(target.named_buffers())
    assert set(got) == set(want)
    for name, value in want.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=1e-7, msg=name)
    assert int(target[1].num_batches_tracked) == int(online[1].num_batches_tracked)  # integer buffers too
    assert all(not p.requires_grad for p in target.parameters())


def test_foreach_and_loop_agree_bit_for_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    online, target = _pair()
    other = copy.deepcopy(target)
    SSLMethod.ema(None, online, target, 0.99)  # type: ignore[arg-type]
    monkeypatch.delattr(torch, "_foreach_copy_")
    SSLMethod.ema(None, online, other, 0.99)  # type: ignore[arg-type]
    for (name, a), b in zip(target.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_copy_with_other_buffers_is_refused() -> None:
    online, target = _pair()
    target.register_buffer("extra", torch.zeros(3))
    with pytest.raises(ValueError, match="buffers"):
        SSLMethod.ema(None, online, target, 0.9)  # type: ignore[arg-type]
