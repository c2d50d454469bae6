"""Optimizers and schedules of the SSL recipes: SGD, LARS, AdamW; linear warm-up then cosine.

LARS is written here because neither torch nor lightly ships one; it follows the SimCLR/BYOL
convention (trust coefficient 0.001; biases and norm layers excluded from adaptation and decay).
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 0.001) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars=True))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if g["lars"]:
                    if g["weight_decay"]:
                        d = d.add(p, alpha=g["weight_decay"])
                    pn, dn = torch.norm(p), torch.norm(d)
                    q = torch.where((pn > 0) & (dn > 0), g["eta"] * pn / dn, torch.ones_like(pn))
                    d = d.mul(q)
                buf = self.state[p].get("mu")
                if buf is None:
                    buf = self.state[p]["mu"] = torch.clone(d).detach()
                else:
                    buf.mul_(g["momentum"]).add_(d)
                p.add_(buf, alpha=-g["lr"])
        return loss


def param_groups(model: nn.Module, weight_decay: float, exclude_norm_bias: bool) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if exclude_norm_bias and (p.ndim <= 1 or name.endswith(".bias")):
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lars": False})
    return groups


def build_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    if name == "lars":
        return LARS(param_groups(model, weight_decay, True), lr=lr, momentum=momentum, weight_decay=weight_decay)
    groups = param_groups(model, weight_decay, False)
    for g in groups:
        g.pop("lars", None)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)


def warmup_cosine(step: int, total: int, warmup: int, final_ratio: float = 0.0) -> float:
    """Multiplier of the base lr at ``step``: linear warm-up, then cosine down to ``final_ratio``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def cosine_momentum(step: int, total: int, base: float) -> float:
    """BYOL's target momentum: base -> 1 along a cosine."""
    return 1 - (1 - base) * (math.cos(math.pi * min(1.0, step / max(1, total))) + 1) / 2
